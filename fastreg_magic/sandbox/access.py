"""Who may use a sandbox: only the user who started it, by an access token, as Jupyter Server guards its port.

The sandbox listens on 127.0.0.1, which every local user can reach (a shared JupyterHub host, a lab
server), and it runs tasks as its owner, with the owner's environment. So:

* at start it makes a new random token (``new_token``), kept in ``<data dir>/access-token-<port>``
  (``write_token``), mode 0600, in a data dir tightened to 0700 (``tighten_data_dir``: its secrets dir
  too). The file is named by the port, and removed when the sandbox stops or starts again: a config file
  written for an earlier start, naming another port, names no file, so no client following it sends
  this start's token to whoever holds that port now;
* every gRPC call must carry ``authorization: Bearer <token>`` (``TokenCheck``); a call without it is
  answered UNAUTHENTICATED with ``refusal`` (what to do). Public, as in FlyteAdmin, is only the
  ``AuthMetadataService`` (``AuthMetadata``): flytekit asks it before it has a token;
* the config files the sandbox writes (``config_lines``) give stock flytekit the token the documented
  way: ``authType: ExternalCommand`` with ``command: [cat, <token file>]``, which only the owner can run
  successfully. flytekit sends the call once without a token, runs the command on UNAUTHENTICATED and
  resends; tasks the sandbox runs find the same config file (``server.admin_env``);
* the magic's own connection reads the file once, in process, before its first call
  (``SandboxTokenAuthenticator``, a flytekit auth plugin: no subprocess, no refused call), and finds the
  token for a bare ``--endpoint 127.0.0.1:PORT`` through the per-user list of running sandboxes
  (``announce`` / ``running_sandbox``): an entry counts only while the sandbox it names still holds its
  data dir on exactly that address, so a stale entry never sends a token to whoever took the port since.

The token changes at every start: one that leaked stops working with that sandbox run. A client that
cached the old one reads the file again on the UNAUTHENTICATED answer (flytekit's interceptor retries once).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import threading
from pathlib import Path

import grpc

log = logging.getLogger("fastreg_magic.sandbox")

TOKEN_NAME = "access-token"
HEADER = "authorization"
# The auth type the magic's connection uses for a sandbox's token: registered with flytekit's plugin registry.
AUTH_TYPE = "FastregSandboxToken"
# How the refusal begins: the magic recognises the sandbox's answer by it (config.py).
REFUSAL_START = "this sandbox at "
PUBLIC_SERVICE = "/flyteidl.service.AuthMetadataService/"
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
SANDBOX_HOST = "127.0.0.1"  # the one address the sandbox binds (never a name another listener could answer)


# --- the sandbox's side ---------------------------------------------------------------------------


def token_file(data_dir: Path, endpoint: str | None = None) -> Path:
    """The token file of the sandbox of ``data_dir`` serving ``endpoint`` (default: the one it serves now)."""
    if endpoint is None:
        from fastreg_magic.sandbox.background import read_state

        endpoint = (read_state(Path(data_dir)) or {}).get("endpoint") or ""
    port = endpoint.rpartition(":")[2]
    return Path(data_dir) / (f"{TOKEN_NAME}-{port}" if port.isdigit() else TOKEN_NAME)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def write_token(data_dir: Path, endpoint: str, token: str) -> None:
    """``token`` written to the token file of ``endpoint`` (0600), before anyone can be told about it; the
    token files of earlier starts are removed (their tokens are no longer accepted anyway)."""
    remove_tokens(data_dir)
    write_private(token_file(data_dir, endpoint), token + "\n")


def remove_tokens(data_dir: Path) -> None:
    for old in Path(data_dir).glob(f"{TOKEN_NAME}*"):
        old.unlink(missing_ok=True)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only, whatever the umask; replaced whole (rename)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        try:
            os.fchmod(fd, PRIVATE_FILE_MODE)  # an old temp file of the same name keeps its mode through O_CREAT
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
    except OSError as err:  # named as the file asked for, not the temporary one
        raise OSError(err.errno, err.strerror, str(path)) from err


def tighten_data_dir(data_dir: Path, secrets_dir_name: str = "secrets") -> None:
    """The data dir (and its secrets dir, if there) readable by its owner only; a warning, not a failure,
    when a dir cannot be changed (one the user does not own): the token still guards the sandbox."""
    for directory in (Path(data_dir), Path(data_dir) / secrets_dir_name):
        if not directory.is_dir():
            continue
        try:
            if directory.stat().st_mode & 0o777 != PRIVATE_DIR_MODE:
                os.chmod(directory, PRIVATE_DIR_MODE)
        except OSError as err:
            log.warning("cannot make %s private (mode 0700): %s; other users on this machine may read what is "
                        "in it. Use a data dir you own (--data-dir).", directory, err.strerror or err)


def refusal(endpoint: str, config_file: Path) -> str:
    """What a call without the token is told: which file holds the way in (readable by the owner only)."""
    return (f"{REFUSAL_START}{endpoint} needs its access token: use its config file {config_file} "
            f"(--config {config_file}, pyflyte -c {config_file}, or FLYTECTL_CONFIG={config_file})")


class TokenCheck(grpc.ServerInterceptor):
    """Lets a call through only with ``authorization: Bearer <token>`` (AuthMetadataService: always)."""

    def __init__(self, token: str, refusal_text: str = "") -> None:
        self._expected = f"Bearer {token}".encode()
        self.refusal = refusal_text  # set once the port is bound: it names the endpoint

    def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith(PUBLIC_SERVICE) or self._carries_token(handler_call_details):
            return continuation(handler_call_details)
        return self._refused(continuation(handler_call_details))

    def _carries_token(self, details) -> bool:
        for key, value in details.invocation_metadata or ():
            if key == HEADER:
                # constant time: how much of a guess matched must not show in how long the answer takes
                return hmac.compare_digest(value.encode() if isinstance(value, str) else value, self._expected)
        return False

    def _refused(self, handler):
        """A handler of the same kind as the method's (unary or streaming) that answers UNAUTHENTICATED."""
        def refuse(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, self.refusal)

        if handler is None:
            return None  # an unknown method: gRPC answers UNIMPLEMENTED, as without the check
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(refuse)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(refuse)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(refuse)
        return grpc.unary_unary_rpc_method_handler(refuse)


def auth_metadata_servicer():
    """FlyteAdmin's public AuthMetadataService, answered as a FlyteAdmin without an identity provider does.

    flytekit's ExternalCommand login asks it (for the header name) before it has a token. A client set
    up for a browser login (flytekit's default, Pkce) finds no login page to open (no redirect URI),
    so it fails at once instead of waiting for a login that cannot happen.
    """
    from flyteidl.service import auth_pb2, auth_pb2_grpc

    class AuthMetadata(auth_pb2_grpc.AuthMetadataServiceServicer):
        def GetOAuth2Metadata(self, request, context):  # noqa: N802 - gRPC's naming
            return auth_pb2.OAuth2MetadataResponse()

        def GetPublicClientConfig(self, request, context):  # noqa: N802
            return auth_pb2.PublicClientAuthConfigResponse(authorization_metadata_key=HEADER)

    return AuthMetadata()


def config_lines(data_dir: Path, endpoint: str) -> str:
    """The ``admin:`` settings that give stock flytekit (and flytectl) the token: the owner can ``cat`` it."""
    # JSON strings are YAML scalars: a path with spaces or quotes stays one item
    return ("  authType: ExternalCommand\n"
            "  command:\n"
            "  - cat\n"
            f"  - {json.dumps(str(token_file(data_dir, endpoint)))}\n")


# --- the list of running sandboxes, per user --------------------------------------------------------

_in_process: dict[str, Path] = {}  # sandboxes this process runs: found even if HOME changed since


def _running_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("fastreg")) / "running"


def _entry(endpoint: str) -> Path:
    return _running_dir() / f"{endpoint.rsplit(':', 1)[1]}.json"


def announce(endpoint: str, data_dir: Path) -> None:
    """Note that the sandbox of ``data_dir`` serves ``endpoint`` (so a bare ``--endpoint`` finds its token)."""
    _in_process[endpoint] = Path(data_dir)
    try:
        _running_dir().mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        write_private(_entry(endpoint), json.dumps({"data_dir": str(data_dir), "pid": os.getpid()}))
    except OSError as err:  # the config file still works; only a bare --endpoint will not find the token
        log.warning("cannot note the sandbox in %s (%s): `--endpoint %s` alone will need --config %s",
                    _running_dir(), err.strerror or err, endpoint, Path(data_dir) / "config.yaml")


def withdraw(endpoint: str, data_dir: Path) -> None:
    _in_process.pop(endpoint, None)
    try:
        entry = _entry(endpoint)
        if json.loads(entry.read_text()).get("pid") == os.getpid():
            entry.unlink()
    except (OSError, ValueError):
        pass


def running_sandbox(endpoint: str) -> Path | None:
    """The data dir of this user's sandbox serving exactly ``127.0.0.1:PORT`` now, or None.

    Only while that sandbox holds its data dir and announces this very address: the port of a sandbox
    that stopped may be anyone's by now, and must not be sent its old token.
    """
    host, _, port = endpoint.rpartition(":")
    if host != SANDBOX_HOST or not port.isdigit():
        return None
    candidates = [_in_process.get(endpoint)]
    try:
        candidates.append(Path(json.loads(_entry(endpoint).read_text())["data_dir"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return next((data_dir for data_dir in candidates if data_dir is not None and _serves(data_dir, endpoint)), None)


def _serves(data_dir: Path, endpoint: str) -> bool:
    from fastreg_magic.sandbox.background import read_state
    from fastreg_magic.sandbox.claim import is_claimed

    state = read_state(data_dir) or {}
    return (state.get("endpoint") == endpoint and is_claimed(data_dir)
            and token_file(data_dir, endpoint).is_file())


# --- the client's side ------------------------------------------------------------------------------


def read_token(path: Path) -> str:
    return Path(path).read_text(encoding="utf-8").strip()


def bearer(data_dir: Path) -> list[tuple[str, str]]:
    """The metadata of a raw gRPC call to the sandbox of ``data_dir`` (empty if its token cannot be read)."""
    try:
        return [(HEADER, f"Bearer {read_token(token_file(data_dir))}")]
    except OSError:
        return []


def _authenticator_class():
    from flytekit.clients.auth.authenticator import CommandAuthenticator
    from flytekit.clients.auth.exceptions import AuthenticationError
    from flytekit.clients.auth.keyring import Credentials

    class SandboxTokenAuthenticator(CommandAuthenticator):
        """flytekit's ExternalCommand login for ``cat <token file>``, without the subprocess, and before the
        first call: flytekit's own would send that call without a token, then run ``cat`` on the refusal.

        On a refusal (flytekit's interceptor then refreshes and resends once) the token is read again, of
        the sandbox serving the endpoint now: another data dir's sandbox may have started behind it."""

        def __init__(self, command: list[str], endpoint: str) -> None:
            super().__init__(command=command, header_key=HEADER)
            self._path = Path(command[-1])
            self._endpoint = endpoint.removeprefix("dns:///")
            try:
                self.refresh_credentials()
            except AuthenticationError:
                pass  # the first call goes without; the sandbox's refusal says what to do

        def refresh_credentials(self) -> None:
            serving = running_sandbox(self._endpoint)
            path = token_file(serving, self._endpoint) if serving is not None else self._path
            try:
                self._creds = Credentials(read_token(path))
            except FileNotFoundError:  # token files are named by port and go when their sandbox stops
                raise AuthenticationError(
                    f"the sandbox whose access token this config file names ({path}) is not running any more: "
                    "use the config file the running sandbox wrote (its data dir's config.yaml)"
                ) from None
            except OSError as err:
                raise AuthenticationError(
                    f"cannot read the sandbox's access token {path} ({err.strerror or err}); only the user "
                    "who started the sandbox can"
                ) from None

    return SandboxTokenAuthenticator


_registered = False


def platform_with_token(platform, data_dir: Path | None = None):
    """``platform`` logging in to a sandbox with its token file read in process: that of ``data_dir``, or
    the one its config file's ``cat <token file>`` command names. Unchanged when it names neither."""
    from dataclasses import replace

    if data_dir is not None:
        command = ["cat", str(token_file(data_dir))]
    elif _is_cat_of_token(platform) and _is_sandbox_address(platform.endpoint):
        command = list(platform.command)
    else:
        return platform
    _register_plugin()
    return replace(platform, auth_mode=AUTH_TYPE, command=command)


def _is_sandbox_address(endpoint: str) -> bool:
    """An address a sandbox could serve (it binds 127.0.0.1 only): elsewhere a config's ``cat`` of a token
    file is a cluster's own login, or the way to one (a proxy), and flytekit's own login runs it."""
    return (endpoint or "").removeprefix("dns:///").rpartition(":")[0] == SANDBOX_HOST


def _is_cat_of_token(platform) -> bool:
    auth = getattr(platform.auth_mode, "value", platform.auth_mode)
    command = platform.command or []
    return (str(auth).lower() in ("externalcommand", "external_process") and len(command) == 2
            and command[0] == "cat" and Path(command[1]).name.startswith(TOKEN_NAME))


def _register_plugin() -> None:
    global _registered
    if _registered:
        return
    from flytekit.clients.auth_helper import register_authenticator_plugin

    authenticator = _authenticator_class()
    register_authenticator_plugin(AUTH_TYPE, lambda cfg, _store: authenticator(cfg.command, cfg.endpoint))
    _registered = True
