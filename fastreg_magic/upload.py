"""Archive -> storage the backend's tasks can read, behind one small interface.

    uploader = FsspecUploader("s3://my-bucket/fast")                  # --distribution-dir
    uploader = SignedUrlUploader(remote.client, "flytesnacks", "development")   # the backend's DataProxy
    upload = uploader.upload(archive, progress=lambda sent, total: ...)
    upload.uri         # "s3://my-bucket/fast/fastreg-3f9c....tar.gz"
    upload.uploaded    # False: that content was already there

Objects are named after the archive's digest, so an existing object is never sent twice; through
the backend's signed URL, not even one another machine's zlib compressed otherwise (the digest is
the members', whatever the compressor).
Transient failures (connection errors, timeouts, HTTP 5xx/429) are retried with exponential
backoff; anything else (HTTP 4xx such as a bad signature or an MD5 mismatch, a missing
bucket, denied access, missing credentials, a read-only or full disk) fails at once. An
address where nothing answers is not retried on object stores reached through fsspec: their
clients (botocore, gcsfs, adlfs) retry connecting already, and retrying their retries made a
wrong endpoint take half a minute to report. Every third-party exception becomes an
``UploadError`` in one place, :func:`_upload_error`, with a hint for its cause.
"""

from __future__ import annotations

import base64
import errno
import os
import posixpath
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from fastreg_magic.config import endpoint_host_port
from fastreg_magic.errors import UploadError, causes
from fastreg_magic.hashing import file_digest
from fastreg_magic.package import ARCHIVE_PREFIX, ARCHIVE_SUFFIX, Archive

Progress = Callable[[int, int], None]
PROGRESS_MIN_BYTES = 4 * 1024 * 1024  # smaller archives go up too fast for a progress bar to help
RETRIES = 4
BACKOFF_SECONDS = 0.5
# An S3 endpoint that accepts the connection and then never answers held an upload for botocore's 60 s
# read timeout × its own retries × s3fs's retries × ours: over twenty minutes, silently (a CI job hangs).
# Bounded here: one attempt each for botocore and s3fs, whose retries would multiply ours (RETRIES, which
# retry only what is worth retrying). A setting of the user's own `config_kwargs` wins.
S3_CLIENT_CONFIG = {"connect_timeout": 10, "read_timeout": 30, "retries": {"max_attempts": 1}}
S3FS_ATTEMPTS = 1
_CHUNK = 1024 * 1024
_PUT_TIMEOUT = (10, 300)  # (connect, read) seconds
_CHECK_TIMEOUT = (5, 10)  # asking whether an uploaded archive is still there
_BACKEND_CHECK_SECONDS = 3.0  # is the backend itself still there, after its signed URL stopped answering


@dataclass(frozen=True)
class Upload:
    uri: str  # where the archive is now, in the form the backend's tasks will read it
    uploaded: bool  # False when the content-addressed object already existed


class Uploader(Protocol):
    def upload(self, archive: Archive, progress: Progress | None = None) -> Upload: ...


def distribution_dir(url: str | None) -> str | None:
    """``url`` without trailing slashes: ``s3://bucket/`` and ``s3://bucket`` are one place, so they
    give one version."""
    if not url:
        return None
    scheme, sep, rest = str(url).rpartition("://")
    return f"{scheme}{sep}{rest.rstrip('/') or rest}"


def object_name(archive: Archive) -> str:
    return f"{ARCHIVE_PREFIX}{archive.digest}{ARCHIVE_SUFFIX}"


def gone_from_this_machine(uri: str, *, sandbox_store: bool) -> bool | None:
    """Whether a stored archive is gone, when finding out is one look at this machine's disk (a few
    microseconds): a ``file://`` distribution dir, or, with ``sandbox_store``, the plain path under
    which the embedded sandbox on this machine keeps its uploads. None for a remote store (``s3://``,
    a cluster's signed URL), where asking costs a round trip."""
    if uri.startswith("file://"):
        return not os.path.exists(uri[len("file://"):])  # fsspec's own spelling: no %-decoding
    if sandbox_store and os.path.isabs(uri):
        return not os.path.exists(uri)
    return None


class _Transient(Exception):
    """A failure worth retrying; carries the original."""

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


def _with_retries(attempt: Callable[[], Upload], what: str, retries: int, backoff: float) -> Upload:
    for number in range(1, retries + 1):
        try:
            return attempt()
        except _Transient as failure:
            if number == retries:
                raise _upload_error(failure.cause, what, attempts=retries) from failure.cause
            time.sleep(backoff * 2 ** (number - 1))
    raise AssertionError("unreachable")  # pragma: no cover


# --- fsspec: --distribution-dir ------------------------------------------------------------


class FsspecUploader:
    """Uploads to any fsspec URL: s3://, gs://, abfs://, file://, memory://, ..."""

    def __init__(
        self,
        distribution_dir: str,
        storage_options: Mapping[str, Any] | None = None,
        *,
        retries: int = RETRIES,
        backoff: float = BACKOFF_SECONDS,
    ):
        self.distribution_dir = str(distribution_dir).rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.retries, self.backoff = retries, backoff
        self._fs = None
        self._root = ""

    def upload(self, archive: Archive, progress: Progress | None = None) -> Upload:
        fs, root = self._filesystem()
        target = f"{root}/{object_name(archive)}" if root else object_name(archive)
        # Keep the user's own spelling of a URL (s3://bucket/dir); a bare path becomes file://.
        has_scheme = "://" in self.distribution_dir
        uri = f"{self.distribution_dir}/{object_name(archive)}" if has_scheme else fs.unstrip_protocol(target)
        return _with_retries(
            lambda: self._attempt(fs, archive, target, uri, progress), f"Uploading to {uri}", self.retries, self.backoff
        )

    def _filesystem(self):
        if self._fs is None:
            try:
                import fsspec.core

                options = _bounded_in_time(self.distribution_dir, self.storage_options)
                self._fs, root = fsspec.core.url_to_fs(self.distribution_dir, **options)
                if hasattr(self._fs, "retries") and "skip_instance_cache" in options:
                    self._fs.retries = S3FS_ATTEMPTS  # s3fs's own loop (a class attribute): this instance only
            except Exception as exc:  # noqa: BLE001 - mapped in one place
                raise _upload_error(exc, f"Opening {self.distribution_dir}") from exc
            self._root = root.rstrip("/")
        return self._fs, self._root

    def _attempt(self, fs, archive: Archive, target: str, uri: str, progress: Progress | None) -> Upload:
        try:
            if _existing_size(fs, target) == archive.size:
                return Upload(uri=uri, uploaded=False)
            report = _reporter(progress, archive.size)
            report(0)
            if _is_local(fs):
                # Write beside the target and rename, so readers never see half an archive.
                fs.makedirs(posixpath.dirname(target), exist_ok=True)
                partial = f"{target}.partial-{os.getpid()}-{threading.get_ident()}"
                try:
                    fs.put_file(str(archive.path), partial, callback=_FsspecCallback(report, archive.size))
                    fs.mv(partial, target)
                finally:
                    if fs.exists(partial):
                        fs.rm_file(partial)
            else:
                fs.put_file(str(archive.path), target, callback=_FsspecCallback(report, archive.size))
            report(archive.size)
            return Upload(uri=uri, uploaded=True)
        except Exception as exc:  # noqa: BLE001 - mapped in one place
            if _is_transient(exc) and (_is_local(fs) or not _cannot_connect(exc)):
                raise _Transient(exc) from exc
            raise _upload_error(exc, f"Uploading to {uri}") from exc


def _bounded_in_time(url: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with S3's timeouts and retries bounded (see S3_CLIENT_CONFIG); other stores as given."""
    import fsspec.utils

    if fsspec.utils.get_protocol(url) not in ("s3", "s3a"):
        return dict(options)
    return {**options, "config_kwargs": {**S3_CLIENT_CONFIG, **(options.get("config_kwargs") or {})}}


def _existing_size(fs, target: str) -> int | None:
    fs.invalidate_cache(posixpath.dirname(target))  # ask the store, not a listing cached earlier
    try:
        return fs.info(target).get("size")
    except FileNotFoundError:
        return None


def _is_local(fs) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return bool({"file", "local"} & set(protocols))


class _FsspecCallback:
    """Adapts fsspec's progress callback to ``progress(bytes_sent, total)``."""

    def __new__(cls, report: Callable[[int], None], total: int):
        from fsspec.callbacks import Callback

        class Adapter(Callback):
            def call(self, *args, **kwargs):
                report(min(self.value, total))

        return Adapter(size=total)


# --- the backend's DataProxy: signed URL + HTTP PUT ----------------------------------------

# (endpoint, project, domain, md5) -> native URL, and the (endpoint, native URL, md5) triples
# uploaded by this process: CreateUploadLocation cannot say whether the object exists.
_SIGNED_UPLOADS: dict[tuple[str, str, str, str], str] = {}
_SIGNED_DONE: set[tuple[str, str, str]] = set()
_MD5S: dict[tuple[str, int, int], bytes] = {}


def forget(endpoint: str | None = None) -> None:
    """Forget which archives this process uploaded through signed URLs, to one endpoint or all (e.g.
    after the backend's storage was reset), so the next upload sends them again."""
    for key in [k for k in _SIGNED_UPLOADS if endpoint is None or k[0] == endpoint]:
        del _SIGNED_UPLOADS[key]
    _SIGNED_DONE.difference_update([k for k in _SIGNED_DONE if endpoint is None or k[0] == endpoint])


class SignedUrlUploader:
    """Uploads the way ``FlyteRemote.upload_file`` does: CreateUploadLocation, then an HTTP PUT
    with Content-MD5 and the extra headers the backend asks for, streamed."""

    def __init__(self, client, project: str, domain: str, *, retries: int = RETRIES, backoff: float = BACKOFF_SECONDS):
        self.client = client  # flytekit SynchronousFlyteClient (FlyteRemote.client)
        self.project, self.domain = project, domain
        self.retries, self.backoff = retries, backoff

    @property
    def endpoint(self) -> str:
        cfg = getattr(self.client, "_cfg", None)
        return str(getattr(cfg, "endpoint", None) or getattr(self.client, "url", "") or "")

    def upload(self, archive: Archive, progress: Progress | None = None) -> Upload:
        md5 = _md5_of(archive.path)
        remembered = (self.endpoint, self.project, self.domain, md5.hex())
        native_url = _SIGNED_UPLOADS.get(remembered)
        if native_url is not None and (self.endpoint, native_url, md5.hex()) in _SIGNED_DONE:
            if self._still_stored(native_url):
                return Upload(uri=native_url, uploaded=False)
            forget(self.endpoint)  # the backend lost its storage (a sandbox started afresh): send it again
        location = self._location(archive, md5)
        if location is None:  # its name holds these members already, compressed by another zlib
            native_url = self._stored_url(archive, md5)
            _SIGNED_DONE.add((self.endpoint, native_url, md5.hex()))
            _SIGNED_UPLOADS[remembered] = native_url
            return Upload(uri=native_url, uploaded=False)
        done = (self.endpoint, location.native_url, md5.hex())
        uploaded = done not in _SIGNED_DONE
        if uploaded:
            try:
                _with_retries(
                    lambda: self._put(archive, md5, location, progress),
                    f"Uploading {archive.path.name} to {self.endpoint}",
                    self.retries,
                    self.backoff,
                )
            except UploadError as err:
                if not self._stopped_answering(err.__cause__):
                    raise
                host, port = endpoint_host_port(self.endpoint)
                raise UploadError(
                    f"The backend at {host}:{port} stopped answering during the upload of the archive.",
                    "Once it is back, re-run the cell; for the embedded sandbox, re-running the cell starts it again.",
                ) from err.__cause__
        _SIGNED_DONE.add(done)
        _SIGNED_UPLOADS[remembered] = location.native_url
        return Upload(uri=location.native_url, uploaded=uploaded)

    def _stopped_answering(self, exc: BaseException | None) -> bool:
        """Whether the upload failed because the backend went away (the embedded sandbox, which serves
        its signed URLs itself, was killed): its URL's storage cannot be reached, nor can the backend."""
        if exc is None or not (_cannot_connect(exc) or _connection_lost(exc)):
            return False
        import socket

        try:
            with socket.create_connection(endpoint_host_port(self.endpoint), timeout=_BACKEND_CHECK_SECONDS):
                return False
        except OSError:
            return True

    def _still_stored(self, native_url: str) -> bool:
        """Whether the backend still has an archive this process uploaded: asked only when the memo
        would skip the upload for a registration the kernel has not made yet (different images,
        options, ...), so a backend that lost its storage in between gets the archive again."""
        try:
            location = self.client.get_download_signed_url(native_url)
            response = _http_session().get(
                location.signed_url, headers={"Range": "bytes=0-0"}, timeout=_CHECK_TIMEOUT, stream=True,
                **_environment_settings(_http_session(), location.signed_url, self._verify()),
            )
            response.close()
        except Exception:  # noqa: BLE001 - cannot tell: uploading again is always right
            return False
        return response.status_code in (200, 206)

    def _location(self, archive: Archive, md5: bytes):
        """Where to PUT the archive; None when an object is stored under its name with other bytes.

        The name is the digest of the archive's members, not of its bytes: another machine's zlib (a
        laptop's kernel, a CI runner's `fastreg serialize`) compresses the same members otherwise, and
        FlyteAdmin refuses a fixed name that holds an object with another MD5 (ALREADY_EXISTS,
        flyteadmin/dataproxy/service.go, CreateUploadLocation). That object holds these very members.
        """
        try:
            return self._ask(archive, md5, object_name(archive))
        except Exception as exc:  # noqa: BLE001 - mapped in one place
            if _grpc_status(exc)[0] == "ALREADY_EXISTS":
                return None
            raise _upload_error(exc, f"Asking {self.endpoint} where to upload") from exc

    def _stored_url(self, archive: Archive, md5: bytes) -> str:
        """The native URL of the object already stored under the archive's name, learnt without uploading.

        Asked again for that name, FlyteAdmin refuses again, with or without an MD5. Asked with no file
        name, it picks a random one in the same folder (``<prefix>/<project>/<domain>/<digest>/``) and
        checks nothing: that answer's folder, and the archive's name, make the stored object's URL.
        """
        try:
            elsewhere = self._ask(archive, md5, None)
        except Exception as exc:  # noqa: BLE001 - mapped in one place
            raise _upload_error(exc, f"Asking {self.endpoint} where the archive is stored") from exc
        return f"{elsewhere.native_url.rsplit('/', 1)[0]}/{object_name(archive)}"

    def _ask(self, archive: Archive, md5: bytes, filename: str | None):
        return self.client.get_upload_signed_url(
            project=self.project,
            domain=self.domain,
            content_md5=md5,
            filename=filename,
            filename_root=archive.digest,
        )

    def _put(self, archive: Archive, md5: bytes, location, progress: Progress | None) -> Upload:
        headers = {"Content-Length": str(archive.size), "Content-MD5": base64.b64encode(md5).decode()}
        if location.native_url.startswith("abfs://"):
            headers["x-ms-blob-type"] = "BlockBlob"  # as FlyteRemote.get_extra_headers_for_protocol
        headers.update(dict(location.headers))
        body = _StreamedFile(archive.path, archive.size, _reporter(progress, archive.size))
        try:
            session = _http_session()
            response = session.put(
                location.signed_url, data=body, headers=headers, timeout=_PUT_TIMEOUT,
                **_environment_settings(session, location.signed_url, self._verify()),
            )
        except Exception as exc:  # noqa: BLE001 - mapped in one place
            if _is_transient(exc):
                raise _Transient(exc) from exc
            raise _upload_error(exc, f"Uploading to {_without_query(location.signed_url)}") from exc
        finally:
            body.close()
        if response.status_code in (200, 201):  # Azure answers 201
            return Upload(uri=location.native_url, uploaded=True)
        failure = _HttpFailure(response.status_code, response.text, location.signed_url)
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise _Transient(failure)
        raise _upload_error(failure, f"Uploading {archive.path.name} to {self.endpoint}")

    def _verify(self):
        cfg = getattr(self.client, "_cfg", None)
        if getattr(cfg, "insecure_skip_verify", False):
            return False
        return getattr(cfg, "ca_cert_file_path", None) or True


def _without_signatures(text: str) -> str:
    """An error's text with each URL's query left out (requests names the signed URL it failed on)."""
    return re.sub(r"((?:url: |://)[^\s?'\"]*)\?[^\s'\")]*", r"\1", text)


def _without_query(url: str) -> str:
    """A signed URL without its query (expiry, signature): long, and a credential while it is valid."""
    return url.split("?", 1)[0]


_sessions = threading.local()
# What requests reads from the environment for a request: proxies and CA bundles.
_ENVIRONMENT_KEYS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def _http_session():
    """This thread's ``requests`` session: its kept-alive connection saves a TCP (and TLS) handshake
    on every upload after the first."""
    session = getattr(_sessions, "session", None)
    if session is None:
        import requests

        session = _sessions.session = requests.Session()
        # The environment is applied by _environment_settings, once per host and environment, not
        # re-read on every request; and no ~/.netrc header, which would void a signed URL's signature.
        session.trust_env = False
        _sessions.settings = {}
    return session


def _environment_settings(session, url: str, verify) -> dict:
    """``proxies``/``verify`` for ``url`` as requests derives them from the environment."""
    import urllib.parse

    from fastreg_magic.proxies import is_loopback

    environment = tuple(os.environ.get(k) or os.environ.get(k.upper()) or os.environ.get(k.lower()) for k in _ENVIRONMENT_KEYS)
    key = (urllib.parse.urlsplit(url)[:2], verify, environment)
    settings = _sessions.settings.get(key)
    if settings is None:
        session.trust_env = True
        try:
            merged = session.merge_environment_settings(url, {}, None, verify, None)
        finally:
            session.trust_env = False
        # A proxy can never be the way to a blob server on this machine's loopback (proxies.py).
        proxies = {} if is_loopback(urllib.parse.urlsplit(url).hostname or "") else merged["proxies"]
        settings = _sessions.settings[key] = {"proxies": proxies, "verify": merged["verify"]}
    return settings


def _md5_of(path: Path) -> bytes:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _MD5S:
        _MD5S[key] = file_digest(path, "md5").digest()
    return _MD5S[key]


class _StreamedFile:
    """A file body for ``requests`` that reports progress as it is read; its length lets
    requests send Content-Length (signed URLs refuse chunked uploads)."""

    def __init__(self, path: Path, size: int, report: Callable[[int], None]):
        self._handle = open(path, "rb")
        self._size = size
        self._sent = 0
        self._report = report
        report(0)

    def __len__(self) -> int:
        return self._size

    def read(self, size: int = -1) -> bytes:
        chunk = self._handle.read(_CHUNK if size is None or size < 0 else size)
        self._sent += len(chunk)
        self._report(self._sent)
        return chunk

    def __iter__(self):
        while chunk := self.read(_CHUNK):
            yield chunk

    def close(self) -> None:
        self._handle.close()


def _reporter(progress: Progress | None, total: int) -> Callable[[int], None]:
    if progress is None or total <= PROGRESS_MIN_BYTES:
        return lambda sent: None
    return lambda sent: progress(sent, total)


# --- errors: every third-party failure becomes an UploadError here -------------------------


@dataclass
class _HttpFailure(Exception):
    status: int
    body: str
    url: str

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.body.strip()[:300]}"


_PERMANENT = (PermissionError, FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError, TypeError, ImportError)
# File-system failures that trying again cannot cure.
_PERMANENT_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
                               errno.EISDIR, errno.ENOENT, errno.ENAMETOOLONG, errno.EEXIST})
# What storage clients raise when no connection could be made at all (refused, unknown host).
_CANNOT_CONNECT = ("EndpointConnectionError", "ClientConnectorError", "ServiceRequestError")


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _PERMANENT) or (isinstance(exc, OSError) and exc.errno in _PERMANENT_ERRNOS):
        return False
    name = type(exc).__name__
    if any(word in name for word in ("Credential", "Auth", "Forbidden", "Denied", "SSL")):
        return False
    if any(word in name for word in ("Timeout", "Connection", "Endpoint", "ChunkedEncoding")):
        return True
    return isinstance(exc, (OSError, ConnectionError, TimeoutError))


def _cannot_connect(exc: BaseException) -> bool:
    import socket

    return any(
        isinstance(cause, (ConnectionRefusedError, socket.gaierror))
        or any(kind.__name__ in _CANNOT_CONNECT for kind in type(cause).__mro__)
        for cause in causes(exc)
    )


def _connection_lost(exc: BaseException) -> bool:
    """A connection that was made, then dropped by the other end mid-request."""
    return any(isinstance(cause, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError))
               for cause in causes(exc))


def _missing_credentials(exc: BaseException) -> str | None:
    """A hint when the storage client found no credentials at all, by the client that says so."""
    names = {kind.__name__ for cause in causes(exc) for kind in type(cause).__mro__}
    if names & {"NoCredentialsError", "PartialCredentialsError"}:
        return ("No AWS credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), "
                "or the storage section of your Flyte config, then run again.")
    if "DefaultCredentialsError" in names:
        return "No Google Cloud credentials were found: run `gcloud auth application-default login`, then run again."
    if "CredentialUnavailableError" in names or "ClientAuthenticationError" in names:
        return "No Azure credentials were accepted: run `az login` or set the storage account key, then run again."
    return None


def _file_system_error(exc: OSError, what: str) -> UploadError | None:
    """A local directory that cannot take the archive; None for errors of other kinds."""
    where = str(exc.filename or "the directory")
    if ".partial-" in os.path.basename(where):  # the file written beside the target: name its directory
        where = os.path.dirname(where)
    hints = {
        errno.EROFS: (f"{where} is on a read-only file system", "Pass a --distribution-dir you can write to."),
        errno.ENOSPC: (f"the disk holding {where} is full", "Free some space, or pass another --distribution-dir."),
        errno.EDQUOT: (f"your disk quota for {where} is used up",
                       "Free some space, or pass another --distribution-dir."),
        errno.EACCES: (f"you may not write to {where} ({exc.strerror})",
                       "Check the directory's permissions, or pass a --distribution-dir you can write to."),
        errno.EPERM: (f"you may not write to {where} ({exc.strerror})",
                      "Check the directory's permissions, or pass a --distribution-dir you can write to."),
    }
    if exc.errno not in hints:
        return None
    why, hint = hints[exc.errno]
    return UploadError(f"{what} failed: {why}.", hint)


def _upload_error(exc: BaseException, what: str, attempts: int = 1) -> UploadError:
    tried = f" (tried {attempts} times)" if attempts > 1 else ""
    if isinstance(exc, ImportError):
        named = re.search(r"[Ii]nstall '?([\w.\[\]-]+)'?", str(exc))
        package = named.group(1) if named else (exc.name or "the fsspec backend")
        return UploadError(
            f"{what} failed: {str(exc).rstrip('.')}.", f"pip install {package} (the fsspec backend for this URL)."
        )
    if isinstance(exc, ValueError) and "Protocol not known" in str(exc):
        return UploadError(f"{what} failed: {exc}.", "Use an fsspec URL such as s3://bucket/dir, gs://..., file:///dir.")
    if isinstance(exc, _HttpFailure):
        return UploadError(f"{what} was refused{tried}: {exc}.", _http_hint(exc.status))
    code, details = _grpc_status(exc)
    if code is not None:
        return UploadError(f"{what} failed{tried}: {code} {details}".rstrip() + ".", _grpc_hint(code))
    credentials = _missing_credentials(exc)
    if credentials is not None:
        return UploadError(f"{what} failed: {type(exc).__name__}: {exc}.", credentials)
    local = _file_system_error(exc, what) if isinstance(exc, OSError) and exc.errno is not None else None
    if local is not None:
        return local
    if isinstance(exc, PermissionError):  # the store refused these credentials (s3fs: AccessDenied)
        return UploadError(f"{what} was denied: {exc}.", "Check the credentials may write to that bucket and path.")
    if isinstance(exc, FileNotFoundError):
        return UploadError(f"{what} failed: {exc}.", "Check the bucket or directory exists.")
    if _cannot_connect(exc):
        return UploadError(
            f"{what} failed{tried}: {type(exc).__name__}: {_without_signatures(str(exc))}.",
            "Nothing answers at that address: check the storage endpoint (AWS_ENDPOINT_URL, the storage section "
            "of your Flyte config, or the backend's) and that the storage is up, then run again.",
        )
    return UploadError(
        f"{what} failed{tried}: {type(exc).__name__}: {_without_signatures(str(exc))}.",
        "Check the storage is reachable, then run again." if attempts > 1 else "Check the destination and run again.",
    )


def _http_hint(status: int) -> str:
    if status in (400, 403):
        return "The signed URL or the Content-MD5 was refused: check the backend's storage settings and the clock, then run again."
    if status >= 500 or status in (408, 429):
        return "The storage behind the backend is failing; run again later."
    return "Check the backend's storage settings, then run again."


def _grpc_status(exc: BaseException) -> tuple[str | None, str]:
    """The gRPC status behind an exception (flytekit wraps RpcError in its own exceptions)."""
    for current in causes(exc):
        code = getattr(current, "code", None)
        if callable(code) and hasattr(current, "details"):
            try:
                return code().name, current.details() or ""
            except Exception:  # noqa: BLE001 - not a real grpc.Call
                pass
    return None, ""


def _grpc_hint(code: str) -> str:
    return {
        "UNAVAILABLE": "The backend is unreachable: check --endpoint / --config, or start `fastreg sandbox`.",
        "UNAUTHENTICATED": "The backend refused the credentials: log in again or check the config's auth settings.",
        "PERMISSION_DENIED": "These credentials may not upload to that project/domain.",
        "NOT_FOUND": "Check the project and domain exist on the backend (-p/-d).",
        "INVALID_ARGUMENT": "The backend refused the request: check project, domain and the archive name.",
        "UNIMPLEMENTED": ("This backend has no DataProxy: pass --distribution-dir (`fastreg register-files`: "
                          "--additional-distribution-dir) to upload with fsspec instead."),
    }.get(code, "Check the backend is healthy, then run again.")
