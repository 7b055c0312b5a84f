"""Where the Flyte connection comes from, and the cached clients that talk to it.

Resolution order, first match wins:

1. ``--endpoint HOST:PORT`` and/or ``--config FILE`` given explicitly;
2. whatever flytekit's ``Config.auto()`` would find: ``FLYTECTL_CONFIG``, ``./flytekit.config``,
   ``~/.flyte/config[.yaml]``, ``FLYTE_PLATFORM_URL``;
3. nothing configured at all: the embedded sandbox, started in the background if needed.

    backend = resolve_backend()               # Backend(endpoint="127.0.0.1:30080", is_sandbox=True, ...)
    remote = connect(backend, "flytesnacks", "development")

The first contact (``ensure_reachable``) also asks the backend who it is: an ``--endpoint`` or a
hand-written config file that leads to an embedded sandbox answers GetVersion with Build
``fastreg-sandbox``, and is then labelled as the sandbox, without console links: the cell's own run
view is the live one there (the sandbox's read-only console pages are for the links stock tools print,
and its gRPC address, which a guessed console URL would name, serves none).
A backend that does not answer is told as what would bring it back: re-running the cell restarts only
the per-user sandbox the magic started; a config file ``fastreg sandbox`` wrote names the sandbox to
start again; an endpoint FLYTE_PLATFORM_URL set is labelled so; a proxy variable on the way is named
(``proxies.py``: never one to loopback). A config file flytekit would ignore is an error
(``config_file.py``), and a server that answers UNIMPLEMENTED is told apart (``admin_services.py``).

flytekit is imported only inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastreg_magic import config_file as files
from fastreg_magic.errors import BackendError

if TYPE_CHECKING:  # pragma: no cover
    from flytekit.remote import FlyteRemote

    from fastreg_magic.connection import RawCalls

# How long to wait for a TCP connection to the backend before calling it unreachable. flytekit itself
# would retry a dead endpoint for much longer before failing with an opaque message.
REACHABILITY_TIMEOUT_S = 3.0
# Deadline of the cheap RPCs that prove the backend speaks FlyteAdmin and accepts our credentials.
PROBE_DEADLINE_S = 5.0
# What `fastreg sandbox` answers in GetVersion's ``control_plane_version.Build``: how an endpoint or a
# hand-written config file is recognised as the embedded sandbox (no console links shown for it).
SANDBOX_BUILD = "fastreg-sandbox"

_CONFIGURE_HINT = (
    "Check that FlyteAdmin runs there, or point elsewhere: pass --endpoint HOST:PORT or --config FILE, or set "
    "FLYTECTL_CONFIG; with no Flyte configuration at all the embedded sandbox (`fastreg sandbox`) is used."
)


@dataclass(frozen=True)
class Backend:
    """A Flyte backend we can register to: a real cluster or the embedded sandbox."""

    endpoint: str
    config_file: str | None
    insecure: bool
    is_sandbox: bool
    label: str
    console_url: str | None
    console_configured: bool = False  # the console URL was given (config file), not guessed from the endpoint
    restarts_with_cell: bool = False  # the per-user sandbox the magic starts when it is not running
    endpoint_from_variable: bool = False  # FLYTE_PLATFORM_URL named the endpoint (over any config file's)


def resolve_backend(endpoint: str | None = None, config_file: str | None = None, *,
                    start_sandbox: bool = True) -> Backend:
    """Pick the backend from explicit options, flytekit's configuration, or the embedded sandbox
    (started when not running, unless ``start_sandbox`` is False: then refused)."""
    if config_file is not None and not Path(config_file).expanduser().is_file():
        raise BackendError(
            f"Flyte config file {config_file} does not exist.",
            "Pass the path of a flytectl/flytekit config file to --config.",
        )
    if endpoint:
        return _backend_for_endpoint(endpoint, config_file)
    if config_file is not None:
        return _backend_from_config(str(Path(config_file).expanduser().resolve()))
    named = os.environ.get("FLYTECTL_CONFIG")
    if named and not Path(named).expanduser().is_file():
        # flytekit would only warn and look elsewhere: the cell would go to the embedded sandbox
        raise BackendError(
            f"FLYTECTL_CONFIG names {named}, which does not exist.",
            "Point FLYTECTL_CONFIG at your Flyte config file, or unset it (del os.environ['FLYTECTL_CONFIG']).",
        )
    discovered = _discovered_config_file()
    if discovered is not None or os.environ.get("FLYTE_PLATFORM_URL"):
        return _backend_from_config(discovered)
    return _embedded_sandbox(start_sandbox)


def _discovered_config_file() -> str | None:
    from flytekit.configuration.file import get_config_file

    # get_config_file is lru_cached: bypass the cache so a FLYTECTL_CONFIG set in this session counts.
    found = getattr(get_config_file, "__wrapped__", get_config_file)(None)
    # ConfigFile keeps its path only in `_location`; there is no public accessor in flytekit 1.16.
    return str(found._location) if found is not None else None


def _backend_for_endpoint(endpoint: str, config_file: str | None) -> Backend:
    """``--endpoint`` replaces the config file's endpoint only, as flytectl's ``--admin.endpoint`` does:
    the file's ``insecure`` (unless the endpoint says ``http://``/``https://``) and console still count."""
    host, insecure, explicit = _split_endpoint(endpoint)
    console = None
    if config_file is not None:
        path = str(Path(config_file).expanduser().resolve())
        platform, _ = _platform_config(path)
        console = platform.console_endpoint
        if not explicit and _sets_insecure(path):
            insecure = platform.insecure
    return _make_backend(host, config_file, insecure, console_endpoint=console)


def _split_endpoint(endpoint: str) -> tuple[str, bool, bool]:
    """``(host:port, insecure, said so)``: ``http://h:p`` → insecure, ``https://h:p`` → TLS (said so);
    ``dns:///h:p`` → TLS, bare ``h:p`` → insecure only on loopback (guessed)."""
    text = endpoint.strip()
    for prefix, insecure, explicit in (("http://", True, True), ("https://", False, True), ("dns:///", False, False)):
        if text.startswith(prefix):
            return text[len(prefix):].rstrip("/"), insecure, explicit
    if not text or "/" in text or " " in text:
        raise BackendError(f"Endpoint `{endpoint}` is not HOST:PORT.", "Pass e.g. --endpoint flyte.example.com:443.")
    host = text.rsplit(":", 1)[0] if ":" in text else text
    return text, host in ("localhost", "127.0.0.1", "::1", "[::1]"), False


def _sets_insecure(config_file: str) -> bool:
    """Whether the config file (or FLYTE_PLATFORM_INSECURE) says `insecure` at all."""
    from flytekit.configuration.file import ConfigFile
    from flytekit.configuration.internal import Platform

    return Platform.INSECURE.read(ConfigFile(config_file)) is not None


def _backend_from_config(config_file: str | None) -> Backend:
    platform, names_endpoint = _platform_config(config_file)
    if files.endpoint_from_environment():
        # flytekit lets the variable win over the file: said so wherever the backend is named
        backend = _make_backend(platform.endpoint, config_file, platform.insecure, platform.console_endpoint)
        return replace(backend, label=f"{backend.endpoint} (from FLYTE_PLATFORM_URL)", endpoint_from_variable=True)
    if config_file is not None and not names_endpoint:
        raise files.no_endpoint_error(config_file)
    if config_file is not None and files.written_by_sandbox(config_file):
        return sandbox_backend(platform.endpoint, config_file)
    return _make_backend(platform.endpoint, config_file, platform.insecure, platform.console_endpoint)


_platform_configs: dict[tuple, Any] = {}


def _platform_config(config_file: str | None):
    """flytekit's ``PlatformConfig.auto`` and whether the file names an endpoint, read again whenever
    the file or the FLYTE_* variables changed, and only then (every cell resolves its backend; parsing
    the YAML each time costs more than the rest of it). A file flytekit would ignore is an error here."""
    from flytekit.configuration import PlatformConfig
    from flytekit.configuration.internal import Platform

    key = settings_key(config_file)
    if key in _platform_configs:
        return _platform_configs[key]
    if config_file is not None:
        files.check_readable(config_file)
    read = fresh_config_file(config_file)
    settings = PlatformConfig.auto(read), read is not None and Platform.URL.read(read) is not None
    st = _stat(config_file)
    # A file changed in the last two seconds may change again within one timestamp tick: not remembered.
    if st is None or time.time_ns() - st.st_mtime_ns > 2_000_000_000:
        if len(_platform_configs) > 64:
            _platform_configs.clear()
        _platform_configs[key] = settings
    return settings


def settings_key(config_file: str | None) -> tuple:
    """What flytekit's settings for a backend are read from, as it is now: the config file (its
    identity and stamp) and the FLYTE_* variables. A client or config built under another key is stale."""
    st = _stat(config_file)
    signature = (st.st_size, st.st_mtime_ns, st.st_ino) if st is not None else None
    environment = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("FLYTE")))
    return (config_file, signature, environment)


def _stat(config_file: str | None):
    try:
        return os.stat(config_file) if config_file is not None else None
    except OSError:
        return None


def fresh_config_file(config_file: str | None):
    """flytekit's ConfigFile for ``config_file``, read now. flytekit keeps the first ConfigFile it read
    per path (and the first one it found, for none) for the whole process: an edited file, or a
    FLYTECTL_CONFIG unset since, would not count."""
    from flytekit.configuration.file import ConfigFile, get_config_file

    if config_file is not None:
        return ConfigFile(config_file)
    get_config_file.cache_clear()  # for none, flytekit looks again, as our own discovery just did
    return None


def _make_backend(endpoint: str, config_file: str | None, insecure: bool, console_endpoint: str | None) -> Backend:
    if console_endpoint is not None and config_file is not None and files.written_by_sandbox(config_file):
        console_endpoint = None  # the sandbox's console pages are for stock tools: no links from cells to them
    backend = Backend(endpoint, config_file, insecure, is_sandbox=False, label=endpoint, console_url=None)
    host, port = host_and_port(backend)
    default_port = 80 if insecure else 443
    address = host if port == default_port else f"{host}:{port}"
    console = (console_endpoint or f"{'http' if insecure else 'https'}://{address}").rstrip("/")
    if not console.endswith("/console"):
        console = f"{console}/console"
    return replace(backend, console_url=console, console_configured=console_endpoint is not None)


def resolve_backend_with_notice(endpoint: str | None = None, config_file: str | None = None, *,
                                start_sandbox: bool = True,
                                how_to_configure: str = "Pass --endpoint/--config",
                                in_kernel: bool = True) -> tuple[Backend, str | None]:
    """``resolve_backend`` plus what to tell the user when, with nothing configured, the embedded
    sandbox was chosen: one line said once per process (and again whenever it had to be started),
    and a warning when the sandbox runs tasks in another Python environment than this one.
    ``how_to_configure`` names the caller's own way to pick a backend (options, or keywords);
    ``in_kernel`` is False for a command (``fastreg register-files``), which runs in no kernel."""
    global _sandbox_announced, _last_sandbox
    _last_sandbox = None
    backend = resolve_backend(endpoint, config_file, start_sandbox=start_sandbox)
    if _last_sandbox is None:  # configured explicitly
        return backend, "\n".join(_configured_sandbox_warning(backend, in_kernel)) or None
    lines = []
    if _last_sandbox.started or not _sandbox_announced:
        _sandbox_announced = True
        how = "started it in the background" if _last_sandbox.started else "it is running"
        lines.append(
            f"No Flyte backend configured: using the embedded sandbox at {backend.endpoint} ({how}). "
            f"{how_to_configure} or set FLYTECTL_CONFIG to use a cluster."
        )
    restart = None if in_kernel else ("stop the sandbox (`fastreg sandbox --stop`) and start it again from this "
                                      "environment (`fastreg sandbox`).")
    lines += _other_environment_warning(_last_sandbox, restart, in_kernel)
    return backend, "\n".join(lines) or None


def _other_environment_warning(info, restart: str | None = None, in_kernel: bool = True) -> list[str]:
    """The shared background sandbox runs every kernel's tasks with the Python that started it:
    said once per process and sandbox Python when that is not this kernel's environment."""
    if not info.runs_tasks_elsewhere() or (info.endpoint, info.environment) in _warned_environments:
        return []
    _warned_environments.add((info.endpoint, info.environment))
    restart = restart or ("stop the sandbox (`fastreg sandbox --stop`) and re-run the cell: it starts again "
                          "from here.")
    return [
        f"Warning: the embedded sandbox at {info.endpoint} runs tasks with {info.python}, not with this "
        f"{'kernel' if in_kernel else 'command'}'s Python ({sys.executable}): a task that imports a package only "
        "this environment has fails "
        f"there (ModuleNotFoundError), as does syntax only this Python knows. To run tasks in this environment, {restart}"
    ]


def _configured_sandbox_warning(backend: Backend, in_kernel: bool = True) -> list[str]:
    """The same warning for a sandbox named by its config file (``--config``), once per file: its state
    file, in its data dir, says which Python it runs tasks with."""
    if not (backend.is_sandbox and backend.config_file) or backend.config_file in _checked_sandbox_configs:
        return []
    _checked_sandbox_configs.add(backend.config_file)
    from fastreg_magic.config_file import sandbox_data_dir
    from fastreg_magic.sandbox import background

    data_dir = sandbox_data_dir(backend.config_file)
    state = background.read_state(Path(data_dir)) if data_dir else None
    if not state or "endpoint" not in state or "config_file" not in state:
        return []
    info = background.info_of(state, Path(data_dir), started=False)
    restart = (f"start that sandbox from this environment (`fastreg sandbox --data-dir {data_dir} --config-out "
               f"{backend.config_file}`), after stopping it.")
    return _other_environment_warning(info, restart, in_kernel)


_sandbox_announced = False
_last_sandbox = None  # the SandboxInfo, set when resolution fell through to the sandbox
_warned_environments: set[tuple[str, str]] = set()
_checked_sandbox_configs: set[str] = set()


def _embedded_sandbox(start: bool = True) -> Backend:
    global _last_sandbox
    from fastreg_magic import sandbox

    info = sandbox.ensure_running(start=start)
    if info is None:
        raise BackendError(
            "No Flyte backend is configured, and the embedded sandbox is not running.",
            "Pass --config FILE or --endpoint HOST:PORT (or set FLYTECTL_CONFIG) to register to a cluster; to "
            "register into the embedded sandbox on this machine, start it first (`fastreg sandbox`).",
        )
    _last_sandbox = info
    backend = replace(sandbox_backend(info.endpoint, str(info.config_file) if info.config_file else None),
                      restarts_with_cell=True)
    if info.started:
        _wait_for_channel(backend)
    return backend


def _wait_for_channel(backend: Backend) -> None:
    """After starting the sandbox again behind an address the kernel used before: its channel failed
    while nothing listened there and waits out a reconnect backoff (up to 3 s); the runs, launches and
    registrations that share it would fail meanwhile. Wait until it is connected."""
    import grpc

    try:
        grpc.channel_ready_future(shared_client(backend)._channel).result(timeout=REACHABILITY_TIMEOUT_S * 2)
    except grpc.FutureTimeoutError:
        pass  # ensure_reachable names the problem next


def sandbox_backend(endpoint: str, config_file: str | None) -> Backend:
    """The Backend of an embedded sandbox (no console links; always loopback, always insecure)."""
    return Backend(
        endpoint=endpoint,
        config_file=config_file,
        insecure=True,
        is_sandbox=True,
        label=f"embedded sandbox ({endpoint})",
        console_url=None,
    )


def flytekit_config(backend: Backend, rpc_retries: int | None = None):
    """flytekit's ``Config`` for this backend: the config file's settings, our endpoint."""
    from flytekit.configuration import Config

    cfg = Config.auto(fresh_config_file(backend.config_file))
    platform = _with_sandbox_token(replace(cfg.platform, endpoint=backend.endpoint, insecure=backend.insecure))
    if rpc_retries is not None:
        platform = replace(platform, rpc_retries=rpc_retries)
    return cfg.with_params(platform=platform)


def _with_sandbox_token(platform):
    """The embedded sandbox takes only calls carrying its access token (``sandbox/access.py``): the token of
    this user's sandbox serving that very endpoint (a bare ``--endpoint 127.0.0.1:PORT``, a hand-written
    config), or the one the sandbox's own config file names, read once per connection."""
    from fastreg_magic.sandbox import access

    data_dir = access.running_sandbox(platform.endpoint.removeprefix("dns:///"))
    return access.platform_with_token(platform, data_dir)


_lock = threading.Lock()
_checked: dict[Backend, Backend] = {}  # a backend as configured → as identified by its GetVersion


def _remote(backend: Backend, project: str, domain: str) -> "FlyteRemote":
    return _remote_for(backend, project, domain, settings_key(backend.config_file))


@functools.lru_cache(maxsize=32)
def _remote_for(backend: Backend, project: str, domain: str, settings: tuple) -> "FlyteRemote":
    from fastreg_magic.connection import SharedClientRemote

    # interactive_mode_enabled=False: flytekit's interactive mode pickles the code and overrides the
    # fast-registration settings (flytekit#2848), which is exactly what we avoid.
    return SharedClientRemote(
        flytekit_config(backend, rpc_retries=0),
        shared_client(backend),
        default_project=project,
        default_domain=domain,
        interactive_mode_enabled=False,
    )


def connect(backend: Backend, project: str, domain: str) -> "FlyteRemote":
    """A cached ``FlyteRemote`` for this backend, project and domain; checks reachability once."""
    return _remote(ensure_reachable(backend), project, domain)


def shared_client(backend: Backend):
    """The one flytekit client of this backend in this process (see ``connection.py``): one channel,
    one login, whatever the project, domain or caller."""
    return _shared_client(backend.endpoint, backend.config_file, backend.insecure, settings_key(backend.config_file))


@functools.lru_cache(maxsize=16)
def _shared_client(endpoint: str, config_file: str | None, insecure: bool, settings: tuple):
    """Built again when the settings changed (a CA or a secret fixed in the config file)."""
    from fastreg_magic.connection import open_client

    backend = Backend(endpoint, config_file, insecure, is_sandbox=False, label=endpoint, console_url=None)
    return open_client(flytekit_config(backend, rpc_retries=0).platform)


def admin_client(backend: Backend) -> "RawCalls":
    """flytekit's raw FlyteAdmin calls (protos in, protos out) on the backend's shared client.

    That client does not resend failed calls: flytekit's retry interceptor would resend every failing
    RPC (ALREADY_EXISTS, NOT_FOUND, ...) ``rpc_retries`` times; registration treats ALREADY_EXISTS as
    success and maps the rest itself, so one try is right.
    """
    from fastreg_magic.connection import raw_calls

    return raw_calls(shared_client(backend))


def ensure_reachable(backend: Backend) -> Backend:
    """Fail fast, naming the endpoint, when nothing answers there or it refuses our credentials.

    Returns the backend as it identified itself: an ``--endpoint`` or hand-written config file that
    leads to an embedded sandbox comes back marked as the sandbox (its label says so, no console URL).
    Checked once per backend and process.
    """
    with _lock:
        known = _checked.get(backend)
    if known is not None:
        return known
    _check_tcp(backend)
    client = _open_client(backend)
    identified = _identify(backend, client)
    if not identified.is_sandbox:
        _probe_credentials(identified)
    with _lock:
        _checked[backend] = _checked[identified] = identified
    return identified


def host_and_port(backend: Backend) -> tuple[str, int]:
    """The backend's ``(host, port)``."""
    return endpoint_host_port(backend.endpoint, backend.insecure)


def endpoint_host_port(endpoint: str, insecure: bool = False) -> tuple[str, int]:
    """``dns:///h:p``, ``http://h:p``, ``h:p`` or ``h`` → ``(h, p)`` (gRPC target syntax, default TLS/plain port)."""
    target = endpoint
    for prefix in ("dns:///", "dns:", "http://", "https://", "ipv4:", "ipv6:"):
        if target.startswith(prefix):
            target = target[len(prefix):]
    target = target.rstrip("/")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return target.strip("[]"), 80 if insecure else 443
    return host.strip("[]"), int(port)


def _check_tcp(backend: Backend) -> None:
    """Connect where gRPC will: to the backend, or to the proxy the environment names for it."""
    from fastreg_magic.proxies import grpc_proxy_for, proxy_address, proxy_hint

    host, port = host_and_port(backend)
    proxy = grpc_proxy_for(host)
    try:
        with socket.create_connection(proxy_address(proxy[1]) if proxy else (host, port), timeout=REACHABILITY_TIMEOUT_S):
            pass
    except OSError as exc:
        why = exc.strerror or exc
        if proxy is not None:
            raise BackendError(f"Flyte backend {backend.label} is unreachable: the proxy does not answer ({why}).",
                               proxy_hint(host, proxy)) from exc
        raise BackendError(f"Flyte backend {backend.label} is unreachable ({why}).", _unreachable_hint(backend)) from exc


_TLS_HINT = (
    "Check the TLS settings of your Flyte config: `insecure: true` (or --endpoint http://HOST:PORT) for a "
    "backend without TLS; `caCertFilePath: CA.pem` for one whose certificate a private CA signed (or "
    "`insecureSkipVerify: true` to skip checking it)."
)
# What gRPC says when the two ends disagree about TLS, or the certificate is not trusted.
_TLS_FAILURES = ("handshake", "ssl", "certificate", "socket closed", "wrong_version_number", "tls")


def _looks_like_tls(error, detail: str) -> bool:
    debug = getattr(error, "debug_error_string", None)
    text = f"{detail} {debug() if callable(debug) else ''}".lower()
    return any(marker in text for marker in _TLS_FAILURES)


def _unreachable_hint(backend: Backend) -> str:
    """Only the per-user sandbox comes back when the cell runs again; a sandbox's config file names
    one the user started, and FLYTE_PLATFORM_URL wins over every config file."""
    if backend.restarts_with_cell:
        return "The embedded sandbox stopped; re-run the cell to start it again, or run `fastreg sandbox`."
    if backend.endpoint_from_variable:
        where = f"over the endpoint of {backend.config_file}" if backend.config_file else "as the endpoint"
        return (f"FLYTE_PLATFORM_URL={os.environ['FLYTE_PLATFORM_URL']} is used {where}: fix or unset it "
                "(del os.environ['FLYTE_PLATFORM_URL']), or pass --endpoint HOST:PORT.")
    if backend.is_sandbox and backend.config_file and files.written_by_sandbox(backend.config_file):
        return files.not_running_hint(backend.config_file)
    return _CONFIGURE_HINT


def _open_client(backend: Backend):
    """The backend's shared client; a TLS setting that cannot work is one message naming it.

    Opening it may read the CA file, and with ``insecureSkipVerify`` fetches the server's certificate
    with no timeout (flytekit's ``bootstrap_creds_from_server``): a server that accepts the connection
    but never answers the handshake would hang the cell, so that handshake is tried first, timed.
    """
    settings = flytekit_config(backend).platform
    try:
        if not backend.insecure and settings.insecure_skip_verify:
            import ssl

            ssl.get_server_certificate(host_and_port(backend), timeout=REACHABILITY_TIMEOUT_S)
        return shared_client(backend)
    except (OSError, ValueError) as exc:  # ssl.SSLError, a timeout and a missing CA file are OSErrors
        raise BackendError(
            f"Cannot open a TLS connection to Flyte backend {backend.label}: {exc}.", _TLS_HINT
        ) from exc


def _control_plane_build(client) -> str:
    """The build GetVersion names (``fastreg-sandbox`` for the embedded sandbox), under a short deadline."""
    from flyteidl.admin import version_pb2

    with _deadline():
        # flytekit's get_control_plane_version returns only `.Version`; `.Build` is what names the
        # sandbox, so ask the same authenticated stub directly.
        answer = client._stub.GetVersion(version_pb2.GetVersionRequest(), metadata=client._metadata)
    return answer.control_plane_version.Build


def _identify(backend: Backend, client) -> Backend:
    """GetVersion under a short deadline: proves the protocol, and tells the embedded sandbox apart."""
    try:
        build = _control_plane_build(client)
    except Exception as exc:  # flytekit wraps gRPC errors in its own exception types
        _raise_probe_failure(backend, exc)
        return backend  # an older FlyteAdmin without GetVersion: not the sandbox, which has it
    if build != SANDBOX_BUILD or backend.is_sandbox:
        return backend
    host, port = host_and_port(backend)
    # No console links on the sandbox: a URL guessed from the gRPC address would lead nowhere; one
    # configured by hand stays.
    return replace(sandbox_backend(backend.endpoint, backend.config_file), insecure=backend.insecure,
                   label=f"embedded sandbox ({host}:{port})",
                   console_url=backend.console_url if backend.console_configured else None)


def is_embedded_sandbox(client) -> bool:
    """Whether a FlyteAdmin client (flytekit's, or ``admin_client``'s raw calls) talks to the embedded
    sandbox: it answers GetVersion as ``fastreg-sandbox``. False when that cannot be told."""
    try:
        return _control_plane_build(getattr(client, "client", client)) == SANDBOX_BUILD  # RawCalls wraps flytekit's
    except Exception:  # an older FlyteAdmin without GetVersion, or one not answering: not the sandbox
        return False


def _probe_credentials(backend: Backend) -> None:
    """One cheap listing call: FlyteAdmin may answer GetVersion without checking who we are."""
    from flyteidl.admin import project_pb2

    try:
        with _deadline():
            admin_client(backend).list_projects(project_pb2.ProjectListRequest(limit=1))
    except Exception as exc:  # flytekit wraps gRPC errors in its own exception types
        _raise_probe_failure(backend, exc)


def _deadline():
    from flytekit.clients.grpc_utils.deadline_interceptor import scoped_grpc_deadline

    return scoped_grpc_deadline(PROBE_DEADLINE_S)


def _raise_probe_failure(backend: Backend, exc: Exception) -> None:
    """Turn a failed probe into a BackendError; return quietly when the server merely declined the call."""
    import grpc

    from fastreg_magic.register import grpc_error_of, login_error_of, login_failed

    login = login_error_of(exc)
    if login is not None:
        raise login_failed(backend.label, login) from exc
    error = grpc_error_of(exc)
    code = error.code() if error is not None else None
    if code == grpc.StatusCode.UNIMPLEMENTED:
        _explain_unimplemented(backend, exc)
        return  # an older FlyteAdmin without this call
    if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
        return  # the server speaks gRPC and answered; it just does not serve this call to us
    if error is None or code == grpc.StatusCode.UNAUTHENTICATED:
        _explain_sandbox_refusal(backend, exc)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        raise BackendError(
            f"Flyte backend {backend.label} refused our credentials: {error.details()}",
            "Check the client id/secret or auth settings of your Flyte config (--config), then re-run.",
        ) from exc
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) or error is None:
        detail = error.details() if error is not None else str(exc) or type(exc).__name__
        raise BackendError(
            f"Flyte backend {backend.label} does not answer as FlyteAdmin ({detail}).",
            _TLS_HINT if _looks_like_tls(error, detail) else _unanswered_hint(backend),
        ) from exc


def _explain_sandbox_refusal(backend: Backend, exc: Exception) -> None:
    """The embedded sandbox refused a call without its access token: its words, as one message. flytekit's
    default login, run on that refusal, fails on its own terms (the sandbox has no login page), so the
    sandbox is asked again without one (``admin_services.sandbox_refusal``)."""
    from fastreg_magic.admin_services import sandbox_refusal
    from fastreg_magic.proxies import channel_options

    from fastreg_magic.sandbox.access import SANDBOX_HOST

    host, _ = host_and_port(backend)
    if host != SANDBOX_HOST:
        return
    try:
        refusal = sandbox_refusal(flytekit_config(backend).platform, channel_options(host))
    except Exception:  # asking could not even start: the first answer stands as it was
        return
    if refusal:
        raise BackendError(
            refusal[:1].upper() + refusal[1:] + ".",  # "This sandbox at ... needs its access token: use ..."
            "Only the user who started that sandbox can read its config file and token; start your own "
            "sandbox (`fastreg sandbox`) if it is someone else's.",
        ) from exc


def _unanswered_hint(backend: Backend) -> str:
    from fastreg_magic.proxies import grpc_proxy_for, proxy_hint

    host, _ = host_and_port(backend)
    proxy = grpc_proxy_for(host)
    return proxy_hint(host, proxy) if proxy is not None else _unreachable_hint(backend)


def _explain_unimplemented(backend: Backend, exc: Exception) -> None:
    """UNIMPLEMENTED for a first call: some other gRPC server, or a FlyteAdmin without the auth
    service the config's authType needs (flytekit asks it first, and reports its failure as the call's)."""
    from fastreg_magic.admin_services import offered_services
    from fastreg_magic.proxies import channel_options

    host, port = host_and_port(backend)
    try:
        offered = offered_services(flytekit_config(backend).platform, channel_options(host))
    except Exception:  # asking could not even start (a TLS setting): the first answer stands as it was
        return
    if not any(offered.values()):
        raise BackendError(
            f"Flyte backend {backend.label} answers gRPC but is not a FlyteAdmin: it has none of FlyteAdmin's "
            "services (AdminService, AuthMetadataService, DataProxyService).",
            "Check the endpoint's host and port (FlyteAdmin's gRPC port), or pass --endpoint HOST:PORT or --config FILE.",
        ) from exc
    auth_type = _configured_auth_type(backend)
    if auth_type is not None and not offered["auth"]:
        where = f"The Flyte config {backend.config_file}" if backend.config_file else "FLYTE_CREDENTIALS_AUTH_MODE"
        raise BackendError(
            f"{where} asks for authentication (authType: {auth_type}), but the backend at {host}:{port} has no "
            "auth service.",
            "Remove authType (and its client settings) from the config if this backend needs no login, or check "
            "the endpoint.",
        ) from exc


def _configured_auth_type(backend: Backend) -> str | None:
    """The authType the config file (or FLYTE_CREDENTIALS_AUTH_MODE) sets; None when it sets none."""
    from flytekit.configuration.internal import Credentials

    value = Credentials.AUTH_MODE.read(fresh_config_file(backend.config_file))
    return str(value) if value else None
