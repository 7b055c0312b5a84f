"""Archive -> storage: fsspec to memory://, file:// and a real S3 API (moto's server through s3fs);
the signed-URL path against a real gRPC DataProxy and a real HTTP PUT server started here, and
through the session sandbox with stock flytekit."""

from __future__ import annotations

import base64
import hashlib
import http.server
import os
import threading
from concurrent import futures
from pathlib import Path

import pytest

from fastreg_magic.collect import FileSet, ShippedFile
from fastreg_magic.errors import UploadError
from fastreg_magic.package import Archive, build_archive
from fastreg_magic.upload import FsspecUploader, SignedUrlUploader, Upload, forget

FAST = {"retries": 3, "backoff": 0.01}


def make_archive(tmp_path: Path, payload: bytes = b"x = 1\n", name: str = "a") -> Archive:
    files = (ShippedFile("flow.py", data=payload),)
    return build_archive(FileSet(root=tmp_path, files=files, left_out=(), warnings=()), cache_dir=tmp_path / f"cache-{name}")


@pytest.fixture
def archive(tmp_path) -> Archive:
    return make_archive(tmp_path)


@pytest.fixture
def big_archive(tmp_path) -> Archive:
    """Incompressible, so the archive is over the progress threshold."""
    return make_archive(tmp_path, os.urandom(6 * 1024 * 1024), name="big")


# --- fsspec --------------------------------------------------------------------------------


def test_memory_second_upload_is_skipped(archive):
    uploader = FsspecUploader("memory://fastreg-test/dist")
    first = uploader.upload(archive)
    assert first == Upload(uri=f"memory://fastreg-test/dist/fastreg-{archive.digest}.tar.gz", uploaded=True)
    import fsspec

    with fsspec.open(first.uri, "rb") as handle:
        assert handle.read() == archive.path.read_bytes()
    assert FsspecUploader("memory://fastreg-test/dist/").upload(archive) == Upload(uri=first.uri, uploaded=False)


def test_file_url_writes_the_archive_atomically_and_reports_progress(tmp_path, big_archive):
    dist = tmp_path / "dist"
    seen: list[tuple[int, int]] = []
    upload = FsspecUploader(dist.as_uri()).upload(big_archive, progress=lambda sent, total: seen.append((sent, total)))
    target = dist / f"fastreg-{big_archive.digest}.tar.gz"
    assert upload.uploaded and upload.uri == f"file://{target}"
    assert target.read_bytes() == big_archive.path.read_bytes()
    assert sorted(p.name for p in dist.iterdir()) == [target.name]  # no partial file left behind
    assert seen[0] == (0, big_archive.size) and seen[-1] == (big_archive.size, big_archive.size)
    assert [s for s, _ in seen] == sorted(s for s, _ in seen)
    assert FsspecUploader(str(dist)).upload(big_archive).uploaded is False


def test_a_truncated_object_is_uploaded_again(tmp_path, archive):
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / f"fastreg-{archive.digest}.tar.gz").write_bytes(b"partial")
    assert FsspecUploader(dist.as_uri()).upload(archive).uploaded is True
    assert (dist / f"fastreg-{archive.digest}.tar.gz").read_bytes() == archive.path.read_bytes()


def test_small_archives_report_no_progress(tmp_path, archive):
    seen = []
    FsspecUploader((tmp_path / "d").as_uri()).upload(archive, progress=lambda *a: seen.append(a))
    assert seen == []


def test_a_missing_fsspec_backend_names_the_package_to_install(archive):
    import fsspec
    from fsspec.registry import known_implementations

    for protocol in sorted(known_implementations):
        try:
            fsspec.get_filesystem_class(protocol)
        except ImportError as exc:
            if "install" in str(exc).lower():
                break
        except Exception:  # noqa: BLE001 - other protocols fail differently; look further
            continue
    else:
        pytest.skip("every fsspec backend is installed here")
    with pytest.raises(UploadError, match=rf"Opening {protocol}://bucket/dist failed.*pip install \S+"):
        FsspecUploader(f"{protocol}://bucket/dist").upload(archive)


def test_an_unknown_protocol_is_refused(archive):
    with pytest.raises(UploadError, match="Protocol not known.*fsspec URL"):
        FsspecUploader("nosuchproto://bucket/dist").upload(archive)


def test_an_unwritable_directory_fails_at_once(tmp_path, archive):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UploadError, match="Uploading to .*failed"):
        FsspecUploader((blocker / "dist").as_uri(), **FAST).upload(archive)


@pytest.fixture(scope="module")
def s3():
    """A real S3 API: moto's server on a random loopback port, reached through s3fs."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": f"http://{host}:{port}", "region_name": "us-east-1"},
    }
    import boto3

    boto3.client(
        "s3", aws_access_key_id="testing", aws_secret_access_key="testing", **options["client_kwargs"]
    ).create_bucket(Bucket="fastreg-bucket")
    try:
        yield options
    finally:
        server.stop()


def test_s3_upload_then_skip(s3, big_archive):
    uploader = FsspecUploader("s3://fastreg-bucket/dist", storage_options=s3)
    seen = []
    first = uploader.upload(big_archive, progress=lambda sent, total: seen.append(sent))
    assert first == Upload(uri=f"s3://fastreg-bucket/dist/fastreg-{big_archive.digest}.tar.gz", uploaded=True)
    assert seen[-1] == big_archive.size
    import s3fs

    fs = s3fs.S3FileSystem(**s3, skip_instance_cache=True)
    assert fs.cat_file(first.uri) == big_archive.path.read_bytes()
    again = FsspecUploader("s3://fastreg-bucket/dist", storage_options=s3).upload(big_archive)
    assert again == Upload(uri=first.uri, uploaded=False)


def test_s3_missing_bucket_is_a_clear_error(s3, archive):
    with pytest.raises(UploadError, match="Check the bucket or directory exists"):
        FsspecUploader("s3://no-such-bucket/dist", storage_options=s3, **FAST).upload(archive)


# --- signed URL: a real gRPC DataProxy and a real HTTP PUT server --------------------------


class Storage:
    """An HTTP server that accepts PUTs the way S3 signed URLs do (Content-MD5 checked), with
    scripted failures."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}
        self.requests: list[dict] = []
        self.reads: list[str] = []
        self.script: list = []  # statuses to answer before accepting; "drop" hangs up mid-upload
        storage = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self):
                if storage.script and storage.script[0] == "drop":
                    storage.script.pop(0)  # an interrupted upload: read a little, then hang up
                    self.rfile.read(1024)
                    storage.requests.append({"path": self.path, "headers": dict(self.headers), "size": 0})
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                body = self.rfile.read(int(self.headers["Content-Length"]))
                storage.requests.append({"path": self.path, "headers": dict(self.headers), "size": len(body)})
                status = storage.script.pop(0) if storage.script else None
                md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
                if status is None and self.headers.get("Content-MD5") != md5:
                    status = 400
                if status is None:
                    storage.objects[self.path] = body
                    status = 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                storage.reads.append(self.path)
                body = storage.objects.get(self.path)
                self.send_response(404 if body is None else 200)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class DataProxy:
    """A DataProxy gRPC service answering CreateUploadLocation and CreateDownloadLocation like FlyteAdmin."""

    def __init__(self, storage_url: str):
        import grpc
        from flyteidl.service import dataproxy_pb2, dataproxy_pb2_grpc

        self.calls = []
        self.storage_url = storage_url
        proxy = self

        class Servicer(dataproxy_pb2_grpc.DataProxyServiceServicer):
            def CreateUploadLocation(self, request, context):
                proxy.calls.append(request)
                if request.project != "flytesnacks":
                    context.abort(grpc.StatusCode.NOT_FOUND, f"project {request.project} not found")
                key = f"{request.project}/{request.domain}/{request.filename_root}/{request.filename}"
                return dataproxy_pb2.CreateUploadLocationResponse(
                    signed_url=f"{proxy.storage_url}/{key}",
                    native_url=f"s3://bucket/{key}",
                    headers={"x-amz-meta-origin": "fastreg-test"},
                )

            def CreateDownloadLocation(self, request, context):
                key = request.native_url.removeprefix("s3://bucket/")
                return dataproxy_pb2.CreateDownloadLocationResponse(signed_url=f"{proxy.storage_url}/{key}")

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        dataproxy_pb2_grpc.add_DataProxyServiceServicer_to_server(Servicer(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def client(self):
        from flytekit.clients.friendly import SynchronousFlyteClient
        from flytekit.configuration import PlatformConfig

        return SynchronousFlyteClient(PlatformConfig(endpoint=f"127.0.0.1:{self.port}", insecure=True))


@pytest.fixture
def storage():
    storage = Storage()
    yield storage
    storage.server.shutdown()
    storage.server.server_close()


@pytest.fixture
def proxy(storage):
    proxy = DataProxy(storage.url)
    yield proxy
    proxy.server.stop(None)


def test_signed_url_upload_then_skip_without_any_call(proxy, storage, big_archive):
    client = proxy.client()
    seen = []
    first = SignedUrlUploader(client, "flytesnacks", "development").upload(big_archive, progress=lambda s, t: seen.append(s))
    key = f"flytesnacks/development/{big_archive.digest}/fastreg-{big_archive.digest}.tar.gz"
    assert first == Upload(uri=f"s3://bucket/{key}", uploaded=True)
    assert storage.objects[f"/{key}"] == big_archive.path.read_bytes()
    sent = storage.requests[0]["headers"]
    assert sent["Content-MD5"] == base64.b64encode(hashlib.md5(big_archive.path.read_bytes()).digest()).decode()
    assert sent["x-amz-meta-origin"] == "fastreg-test" and sent["Content-Length"] == str(big_archive.size)
    request = proxy.calls[0]
    assert (request.filename, request.filename_root) == (f"fastreg-{big_archive.digest}.tar.gz", big_archive.digest)
    assert seen[0] == 0 and seen[-1] == big_archive.size
    again = SignedUrlUploader(client, "flytesnacks", "development").upload(big_archive)
    assert again == Upload(uri=first.uri, uploaded=False)
    assert len(proxy.calls) == 1 and len(storage.requests) == 1  # only asked whether it is still there
    assert storage.reads == [f"/{key}"]
    storage.objects.clear()  # the backend's storage was wiped behind our back
    assert SignedUrlUploader(client, "flytesnacks", "development").upload(big_archive).uploaded is True
    assert len(proxy.calls) == 2 and len(storage.requests) == 2 and storage.objects
    forget()  # told so
    assert SignedUrlUploader(client, "flytesnacks", "development").upload(big_archive).uploaded is True
    assert len(proxy.calls) == 3 and len(storage.requests) == 3


def test_signed_url_upload_goes_through_the_http_proxy_the_environment_names(proxy, storage, tmp_path, monkeypatch):
    """A cluster's storage is reached through the proxy the environment names (set or unset in the notebook
    meanwhile); storage on this machine's loopback never is, as no proxy can be the way there."""
    from tcp_proxy import TcpProxy

    forwarder = TcpProxy(storage.server.server_address[1])
    for name in ("no_proxy", "NO_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    uploader = SignedUrlUploader(proxy.client(), "flytesnacks", "development")
    # (gRPC reads the proxy variables too, when it connects: connected here, before they are set.)
    assert uploader.upload(make_archive(tmp_path / "direct", b"proxied = 0\n")).uploaded
    assert forwarder.accepted == 0
    monkeypatch.setenv("http_proxy", f"http://{forwarder.endpoint}")  # set in the notebook meanwhile
    assert uploader.upload(make_archive(tmp_path / "loopback", b"proxied = 1\n")).uploaded
    assert forwarder.accepted == 0  # the storage is on loopback: direct
    # The cluster's storage, by a name only the proxy can resolve (it forwards to the same storage).
    proxy.storage_url = f"http://blobs.cluster.invalid:{storage.server.server_address[1]}"
    proxied = make_archive(tmp_path / "proxied", b"proxied = 2\n")
    assert uploader.upload(proxied).uploaded
    assert forwarder.accepted == 1 and any(path.endswith(f"fastreg-{proxied.digest}.tar.gz") for path in storage.objects)
    monkeypatch.delenv("http_proxy")  # and unset again: direct once more (and the name resolves nowhere)
    with pytest.raises(UploadError):
        SignedUrlUploader(proxy.client(), "flytesnacks", "development", **FAST).upload(
            make_archive(tmp_path / "again", b"proxied = 3\n"))
    assert forwarder.accepted == 1 and len(storage.objects) == 3
    forwarder.cut()


def test_signed_url_retries_server_errors_then_succeeds(proxy, storage, tmp_path):
    archive = make_archive(tmp_path, b"retry = True\n")
    storage.script = [503, 500]
    upload = SignedUrlUploader(proxy.client(), "flytesnacks", "development", **FAST).upload(archive)
    assert upload.uploaded and len(storage.requests) == 3


def test_signed_url_interrupted_upload_is_retried(proxy, storage, big_archive):
    storage.script = ["drop"]
    upload = SignedUrlUploader(proxy.client(), "flytesnacks", "development", **FAST).upload(big_archive)
    assert upload.uploaded and len(storage.requests) == 2
    assert storage.objects[upload.uri.removeprefix("s3://bucket")] == big_archive.path.read_bytes()


def test_signed_url_gives_up_after_retries(proxy, storage, tmp_path):
    archive = make_archive(tmp_path, b"always failing\n")
    storage.script = [503] * 10
    with pytest.raises(UploadError, match=r"was refused \(tried 3 times\): HTTP 503.*run again later"):
        SignedUrlUploader(proxy.client(), "flytesnacks", "development", **FAST).upload(archive)
    assert len(storage.requests) == 3


def test_signed_url_refusal_fails_at_once(proxy, storage, tmp_path):
    archive = make_archive(tmp_path, b"refused\n")
    storage.script = [403]
    with pytest.raises(UploadError, match=r"was refused: HTTP 403.*signed URL or the Content-MD5"):
        SignedUrlUploader(proxy.client(), "flytesnacks", "development", **FAST).upload(archive)
    assert len(storage.requests) == 1


def test_signed_url_unreachable_storage_is_retried_then_named(proxy, storage, tmp_path):
    archive = make_archive(tmp_path, b"nobody listens\n")
    storage.server.shutdown()
    storage.server.server_close()
    with pytest.raises(UploadError, match=r"failed \(tried 3 times\): ConnectionError"):
        SignedUrlUploader(proxy.client(), "flytesnacks", "development", **FAST).upload(archive)


def test_unknown_project_is_named(proxy, archive):
    with pytest.raises(UploadError, match=r"Asking 127.0.0.1:\d+ where to upload failed: NOT_FOUND.*project nope not found.*-p/-d"):
        SignedUrlUploader(proxy.client(), "nope", "development").upload(archive)


def test_unreachable_backend_is_named(archive):
    from flytekit.clients.friendly import SynchronousFlyteClient
    from flytekit.configuration import PlatformConfig

    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nobody listens there
    client = SynchronousFlyteClient(PlatformConfig(endpoint=f"127.0.0.1:{port}", insecure=True))
    with pytest.raises(UploadError, match=rf"127.0.0.1:{port}.*UNAVAILABLE.*--endpoint"):
        SignedUrlUploader(client, "flytesnacks", "development").upload(archive)


# --- through the sandbox, with stock flytekit ----------------------------------------------


def test_signed_url_upload_to_the_sandbox(remote, tmp_path):
    import fsspec

    archive = make_archive(tmp_path, b"def sandboxed():\n    return 1\n")
    uploader = SignedUrlUploader(remote.client, "flytesnacks", "development")
    first = uploader.upload(archive)
    assert first.uploaded and first.uri.endswith(f"/{archive.digest}/fastreg-{archive.digest}.tar.gz")
    with fsspec.open(first.uri, "rb") as handle:  # tasks read it with flytekit's file access the same way
        assert handle.read() == archive.path.read_bytes()
    assert SignedUrlUploader(remote.client, "flytesnacks", "development").upload(archive) == Upload(first.uri, False)


def recompressed(archive: Archive, path: Path) -> Archive:
    """The same members compressed at another level, as another machine's zlib may: other bytes, same digest."""
    import dataclasses
    import gzip

    from fastreg_magic.package import read_archive

    path.write_bytes(gzip.compress(gzip.decompress(archive.path.read_bytes()), compresslevel=1, mtime=0))
    assert path.read_bytes() != archive.path.read_bytes() and read_archive(path)[0] == archive.digest
    return dataclasses.replace(archive, path=path, size=path.stat().st_size)


def test_an_archive_another_zlib_compressed_is_found_stored_not_refused(remote, tmp_path):
    """Another machine (a CI runner, a laptop's kernel) stored the same members first, compressed otherwise:
    FlyteAdmin refuses an upload to a name holding other bytes. The stored object is used as it is."""
    import fsspec

    mine = make_archive(tmp_path, b"def compressed_elsewhere():\n    return 1\n")
    theirs = recompressed(mine, tmp_path / "theirs.tar.gz")
    stored = SignedUrlUploader(remote.client, "flytesnacks", "development").upload(theirs)
    forget()  # this process, as another machine, knows nothing of that upload
    uploader = SignedUrlUploader(remote.client, "flytesnacks", "development")
    assert uploader.upload(mine) == Upload(uri=stored.uri, uploaded=False)
    with fsspec.open(stored.uri, "rb") as handle:
        assert handle.read() == theirs.path.read_bytes()  # nothing was uploaded over it
    assert uploader.upload(mine) == Upload(uri=stored.uri, uploaded=False)


# --- permanent failures: one attempt, a hint that fits -------------------------------------


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory on a real read-only file system (a tmpfs mounted read-only)."""
    import subprocess

    mount = tmp_path / "ro"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a read-only file system here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("sub", ["", "sub"])
def test_a_read_only_file_system_is_said_so_at_once(read_only_dir, archive, sub):
    target = read_only_dir / sub if sub else read_only_dir
    with pytest.raises(UploadError) as caught:
        FsspecUploader(target.as_uri(), **FAST).upload(archive)
    message = str(caught.value)
    assert f"failed: {target} is on a read-only file system." in message, message
    assert "tried" not in message and "Pass a --distribution-dir you can write to." in message


def test_a_directory_you_may_not_write_to_is_not_blamed_on_credentials(archive):
    target = "/sys/fastreg-upload-test"
    try:
        os.mkdir(target)
    except PermissionError:
        pass
    else:  # pragma: no cover - a /sys that takes new directories
        os.rmdir(target)
        pytest.skip("/sys is writable here")
    with pytest.raises(UploadError) as caught:
        FsspecUploader(f"file://{target}/dist", **FAST).upload(archive)
    message = str(caught.value)
    assert "you may not write to /sys/fastreg-upload-test" in message and "tried" not in message
    assert "Check the directory's permissions" in message and "credentials" not in message


def test_s3_without_credentials_says_where_they_come_from(s3, archive, tmp_path, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    anonymous = {"client_kwargs": s3["client_kwargs"], "skip_instance_cache": True}
    with pytest.raises(UploadError) as caught:
        FsspecUploader("s3://fastreg-bucket/dist", storage_options=anonymous, **FAST).upload(archive)
    message = str(caught.value)
    assert "NoCredentialsError" in message and "tried" not in message
    assert "No AWS credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in message


def test_an_s3_endpoint_nobody_listens_on_is_not_retried_on_top_of_botocore(archive):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: nobody listens there
    options = {"key": "testing", "secret": "testing", "skip_instance_cache": True,
               "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1"}}
    with pytest.raises(UploadError) as caught:
        FsspecUploader("s3://fastreg-bucket/dist", storage_options=options, retries=4, backoff=0.01).upload(archive)
    message = str(caught.value)
    assert "EndpointConnectionError" in message and "tried" not in message  # botocore retried it already
    assert "Nothing answers at that address: check the storage endpoint (AWS_ENDPOINT_URL" in message


def test_a_trailing_slash_on_the_distribution_dir_gives_the_same_version(tmp_path, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    (tmp_path / "dist_flow_src").mkdir()
    monkeypatch.chdir(tmp_path / "dist_flow_src")
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "fastreg_magic")
    cell = "from flytekit import task\n\n@task\ndef t() -> int:\n    return 1\n"
    versions = {
        url: shell.run_cell_magic("flyte_fast", f"-m dist_flow --dry-run --distribution-dir {url}", cell).version
        for url in ("s3://bucket", "s3://bucket/", "s3://bucket//")
    }
    assert len(set(versions.values())) == 1, versions
    other = shell.run_cell_magic("flyte_fast", "-m dist_flow --dry-run --distribution-dir s3://bucket/sub", cell)
    assert other.version not in versions.values()


# --- the backend stops answering during an upload ------------------------------------------


def test_a_sandbox_killed_during_the_upload_is_named_without_the_signed_url(tmp_path, big_archive):
    import re
    import signal
    import subprocess
    import sys

    from flytekit.clients.friendly import SynchronousFlyteClient
    from flytekit.configuration import PlatformConfig

    data_dir = tmp_path / "sandbox-data"
    process = subprocess.Popen([sys.executable, "-m", "fastreg_magic.cli", "sandbox", "--port", "0",
                                "--data-dir", str(data_dir)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, start_new_session=True)
    try:
        assert process.stdout.readline().startswith("fastreg sandbox ready on")
        endpoint = re.search(r"127\.0\.0\.1:\d+", (data_dir / "config.yaml").read_text()).group(0)

        def kill_at_the_first_chunk(sent: int, total: int) -> None:
            if 0 < sent < total and process.poll() is None:
                process.send_signal(signal.SIGKILL)  # as `kill -9` at "Uploading 10%"
                process.wait()

        client = SynchronousFlyteClient(PlatformConfig.auto(str(data_dir / "config.yaml")))
        uploader = SignedUrlUploader(client, "flytesnacks", "development", **FAST)
        with pytest.raises(UploadError) as failed:
            uploader.upload(big_archive, progress=kill_at_the_first_chunk)
    finally:
        process.kill()
        process.wait()
    error = failed.value
    assert error.message == f"The backend at {endpoint} stopped answering during the upload of the archive."
    assert "re-run the cell" in error.hint and "embedded sandbox" in error.hint
    assert "signature" not in str(error) and "AWS_ENDPOINT_URL" not in str(error)


@pytest.mark.timeout(300)  # unbounded, this upload waited over twenty minutes
def test_an_s3_endpoint_that_never_answers_fails_instead_of_hanging(archive, monkeypatch):
    """It accepts the connection, reads the request, and says nothing: the upload gives up with one
    message naming the store, after bounded waits, rather than holding a CI job for good."""
    import socket
    import threading

    from fastreg_magic import upload

    monkeypatch.setitem(upload.S3_CLIENT_CONFIG, "read_timeout", 1)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []

    def accept_and_stay_silent():
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept_and_stay_silent, daemon=True).start()
    port = listener.getsockname()[1]
    options = {"key": "testing", "secret": "testing", "skip_instance_cache": True,
               "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1"}}
    try:
        with pytest.raises(UploadError) as caught:
            FsspecUploader("s3://fastreg-bucket/dist", storage_options=options, retries=2, backoff=0.01).upload(archive)
    finally:
        listener.close()
        for connection in accepted:
            connection.close()
    assert accepted, "the upload never reached the silent endpoint"
    assert "s3://fastreg-bucket/dist" in str(caught.value) and "Timeout" in str(caught.value)
