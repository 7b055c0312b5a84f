"""The sandbox's loopback HTTP server for signed uploads and downloads, and its console pages.

DataProxy hands out URLs signed by :class:`UrlSigner`; this server accepts exactly those:

* ``PUT /blobs/<path>?expires=T&md5=M&signature=S`` stores the body at ``<path>`` under the
  data dir, if the signature matches, ``T`` has not passed, the request carries the signed
  ``Content-MD5`` and the bytes hash to it. Anything else is refused (403 for a bad or
  expired signature, 400 for a digest mismatch) and nothing is stored: the body goes to a
  temporary file that is renamed into place only once its digest checked out.
* ``PUT /blobs/<path>?expires=T&signature=S`` (signed without an MD5: DataProxy was given only a
  ``filename_root``, as flytekit's ``HttpFileWriter`` does for local DataFrames) needs no
  ``Content-MD5``; if the request carries one anyway, the bytes must hash to it, as S3 and GCS
  check an unsigned ``Content-MD5`` too.
* ``GET /blobs/<path>?expires=T&signature=S`` returns a file (download links).
* any other ``GET``, when a page maker is given (``console_pages.ConsolePages.page``): the read-only
  pages at the console links flytekit prints for the sandbox (``/KEY/console/...``: it checks the key);
  they involve no signature and reach no blob.

An upload that breaks off (the client resets the connection, is killed, or stops sending for
``IDLE_CONNECTION_SECONDS``) stores nothing and leaves nothing: its temporary file is removed, and
the sandbox's log gets one line saying which upload ended early. A later upload of the same path
starts afresh.

stdlib ``http.server`` is enough here: one loopback client at a time, files of notebook
size, and no dependency to install.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Callable, Protocol

CHUNK_BYTES = 1 << 20
CONSOLE_CSP = ("default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
               "frame-ancestors 'none'")
IDLE_CONNECTION_SECONDS = 120

log = logging.getLogger("fastreg_magic.sandbox")


class UrlSigner:
    """HMAC signatures over (method, path, expiry, md5) with a key that lives as long as the process."""

    def __init__(self, base_url: str, key: bytes | None = None):
        self.base_url = base_url.rstrip("/")
        self._key = key or secrets.token_bytes(32)

    def _signature(self, method: str, rel_path: str, expires: int, md5_b64: str) -> str:
        message = f"{method}\n{rel_path}\n{expires}\n{md5_b64}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def sign(self, method: str, rel_path: str, expires_at: float, md5: bytes = b"") -> str:
        expires = int(expires_at)
        md5_b64 = base64.b64encode(md5).decode() if md5 else ""
        query = {"expires": expires, "signature": self._signature(method, rel_path, expires, md5_b64)}
        if md5_b64:
            query["md5"] = md5_b64
        return f"{self.base_url}/blobs/{urllib.parse.quote(rel_path)}?{urllib.parse.urlencode(query)}"

    def verify(self, method: str, rel_path: str, query: dict[str, str]) -> str | None:
        """None when the URL is valid for ``method``; otherwise why it is refused."""
        try:
            expires = int(query.get("expires", ""))
        except ValueError:
            return "this URL was not signed by the sandbox (no expiry)"
        expected = self._signature(method, rel_path, expires, query.get("md5", ""))
        if not hmac.compare_digest(expected, query.get("signature", "")):
            return "this URL was not signed by the sandbox (bad signature); ask DataProxy for a new one"
        if time.time() > expires:
            return "the signed URL has expired; ask DataProxy for a new one"
        return None


def _is_md5_b64(value: str) -> bool:
    try:
        return len(base64.b64decode(value, validate=True)) == 16
    except ValueError:
        return False


def safe_relative(rel_path: str) -> str | None:
    """The normalised relative path, or None if it is absolute or climbs out with ``..``."""
    path = PurePosixPath(rel_path)
    if path.is_absolute() or not path.parts or any(part in ("..", "") for part in path.parts):
        return None
    return str(path)


class _Page(Protocol):
    status: int
    html: str


class BlobServer:
    """A ThreadingHTTPServer on 127.0.0.1 serving signed PUT/GET under ``root``, and ``pages(path, host)``
    (a status and an HTML document) for any other GET when given."""

    def __init__(self, root: Path, port: int = 0, idle_seconds: float = IDLE_CONNECTION_SECONDS,
                 pages: Callable[[str, str | None], _Page] | None = None):
        self.root = Path(root)
        self.pages = pages
        handler = type("Handler", (_Handler,), {"blob_server": self, "timeout": idle_seconds})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.signer = UrlSigner(f"http://127.0.0.1:{self.port}")
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="sandbox-blobs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting and close the listening socket (idempotent).

        Requests in flight may finish on their own threads: an upload only ever lands whole,
        by an atomic rename once its digest checked out, so there is nothing to wait for.
        """
        if self._thread.is_alive():  # shutdown() waits for serve_forever, so only once it runs
            self._httpd.shutdown()
        self._httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    blob_server: BlobServer
    protocol_version = "HTTP/1.1"
    # an idle keep-alive connection ends after this long instead of holding its thread for good
    timeout = IDLE_CONNECTION_SECONDS
    # Replies go out as several small writes (headers, then body); with Nagle on, the body waits for
    # the client's delayed ACK (~40 ms) on every request of a kept-alive connection.
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass  # requests are not logged: the sandbox prints only its ready line

    def handle_one_request(self) -> None:
        """Serve one request; a client that goes away in the middle of it (reset, killed) is one line
        in the log, not the traceback ``socketserver`` would print for it."""
        self.command = self.path = None  # a kept-alive connection closed between requests blames none
        try:
            super().handle_one_request()
        except ConnectionError as exc:
            self.close_connection = True
            if self.command:
                self._went_away(exc.strerror or type(exc).__name__)

    def _went_away(self, why: str) -> None:
        # the path without its query: the signature in it is a credential, not for logs; so is a page's key
        shown = urllib.parse.urlsplit(self.path or "").path
        if not shown.startswith("/blobs/"):
            shown = "(a console page)"
        log.warning("blob server: the client of %s %s went away (%s)", self.command, shown, why)

    def _target(self, method: str) -> tuple[Path | None, dict[str, str]]:
        parsed = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        if not parsed.path.startswith("/blobs/"):
            self._reply(404, "unknown path; the sandbox serves only /blobs/")
            return None, query
        rel = safe_relative(urllib.parse.unquote(parsed.path[len("/blobs/") :]))
        if rel is None:
            self._reply(400, "the path must be relative and must not contain '..'")
            return None, query
        refusal = self.blob_server.signer.verify(method, rel, query)
        if refusal:
            self._reply(403, refusal)
            return None, query
        return self.blob_server.root / rel, query

    def do_PUT(self):  # noqa: N802 - stdlib naming
        target, query = self._target("PUT")
        if target is None:
            self._drain()
            return
        signed_md5 = query.get("md5", "")
        header_md5 = self.headers.get("Content-MD5")
        if signed_md5 and header_md5 != signed_md5:
            self._drain()
            self._reply(400, f"Content-MD5 header {header_md5 or '(none)'!r} does not match the signed digest {signed_md5!r}")
            return
        if not signed_md5 and header_md5 is not None and not _is_md5_b64(header_md5):
            self._drain()
            self._reply(400, f"Content-MD5 header {header_md5!r} is not the base64 of a 16-byte MD5 digest")
            return
        expected_md5 = signed_md5 or header_md5  # None: signed without an MD5 and none sent
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            digest, temp_path = self._receive(target.parent)
        except TimeoutError:  # the stdlib would end the connection silently; say which upload stalled
            self.close_connection = True
            self._went_away(f"nothing received for {self.timeout:g}s; nothing was stored")
            return
        if temp_path is None:  # the body stopped short: the client closed, was killed, or gave up
            self.close_connection = True
            self._went_away("the body ended before its Content-Length; nothing was stored")
            with contextlib.suppress(ConnectionError):  # a client still reading gets why; a gone one, nothing
                self._reply(400, "the request body is incomplete (Content-Length not reached)")
            return
        actual = base64.b64encode(digest).decode()
        if expected_md5 and actual != expected_md5:
            os.unlink(temp_path)
            which = "signed" if signed_md5 else "Content-MD5 header's"
            self._reply(400, f"the uploaded bytes hash to MD5 {actual}, not the {which} {expected_md5}; nothing was stored")
            return
        os.replace(temp_path, target)
        self._reply(200, "stored")

    def _receive(self, directory: Path) -> tuple[bytes, str | None]:
        """The body's MD5 and the temporary file holding it; (b"", None) if the body ended early.

        The temporary file is removed whenever the body does not arrive whole, also when reading
        it raises (connection reset, idle timeout): nothing else would ever remove it.
        """
        length = int(self.headers.get("Content-Length") or 0)
        md5 = hashlib.md5()
        fd, temp_path = tempfile.mkstemp(dir=directory, prefix=".upload-")
        received = 0
        try:
            with os.fdopen(fd, "wb") as out:
                while received < length:
                    chunk = self.rfile.read(min(CHUNK_BYTES, length - received))
                    if not chunk:
                        break
                    md5.update(chunk)
                    out.write(chunk)
                    received += len(chunk)
        except BaseException:
            os.unlink(temp_path)
            raise
        if received < length:
            os.unlink(temp_path)
            return b"", None
        return md5.digest(), temp_path

    def _drain(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        while length > 0:
            chunk = self.rfile.read(min(CHUNK_BYTES, length))
            if not chunk:
                break
            length -= len(chunk)

    def do_GET(self):  # noqa: N802 - stdlib naming
        path = urllib.parse.urlsplit(self.path).path
        if self.blob_server.pages is not None and not path.startswith("/blobs/"):
            self._page(self.blob_server.pages(path, self.headers.get("Host")))
            return
        target, _ = self._target("GET")
        if target is None:
            return
        if not target.is_file():
            self._reply(404, "no such file")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(target.stat().st_size))
        self.end_headers()
        with open(target, "rb") as source:
            while chunk := source.read(CHUNK_BYTES):
                self.wfile.write(chunk)

    def _page(self, page: _Page) -> None:
        body = page.html.encode()
        self.send_response(page.status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        # the pages run no scripts: should an escape ever be missed, a browser still runs none
        self.send_header("Content-Security-Policy", CONSOLE_CSP)
        self.end_headers()
        self.wfile.write(body)

    def _reply(self, status: int, text: str) -> None:
        body = (text + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
