"""DataProxy signed uploads: what the sandbox accepts and refuses, seen through HTTP as flytekit sends it."""

from __future__ import annotations

import base64
import hashlib
import re
import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import requests
from flyteidl.service import dataproxy_pb2
from flytekit.configuration import Config
from flytekit.exceptions.user import FlyteInvalidInputException
from flytekit.remote import FlyteRemote
from grpc import StatusCode
from google.protobuf.duration_pb2 import Duration

from sandbox_support import grpc_code, grpc_details, write_module

BODY = b"archive bytes \x00\x01" * 100


def md5(data: bytes) -> bytes:
    return hashlib.md5(data).digest()


def location(remote, data: bytes, name: str, expires_seconds: int | None = None):
    request = dataproxy_pb2.CreateUploadLocationRequest(project="flytesnacks", domain="development",
                                                        filename=name, content_md5=md5(data))
    if expires_seconds is not None:
        request.expires_in.CopyFrom(Duration(seconds=expires_seconds))
    return remote.client.raw.create_upload_location(request)


def put(url: str, data: bytes, content_md5: bytes | None) -> requests.Response:
    headers = {"Content-Length": str(len(data))}
    if content_md5 is not None:
        headers["Content-MD5"] = base64.b64encode(content_md5).decode()
    return requests.put(url, data=data, headers=headers, timeout=120)


def unique(name: str) -> str:
    return f"{name}-{time.time_ns()}.tar.gz"


def test_upload_file_stores_the_bytes_at_the_native_url(remote, tmp_path):
    source = tmp_path / "pkg.tar.gz"
    source.write_bytes(BODY)
    digest, native_url = remote.upload_file(source)  # stock flytekit: CreateUploadLocation + PUT
    assert digest == md5(BODY)
    stored = Path(native_url)
    assert stored.is_absolute() and stored.read_bytes() == BODY
    assert stored.parent.name == base64.b32encode(digest).decode()  # FlyteAdmin's root: base32 of the MD5


def test_bytes_that_do_not_match_the_signed_md5_are_refused_and_not_stored(remote):
    loc = location(remote, BODY, unique("mismatch"))
    tampered = BODY[:-1] + b"X"
    response = put(loc.signed_url, tampered, md5(BODY))  # header claims the signed digest, bytes differ
    assert response.status_code == 400 and "nothing was stored" in response.text
    assert not Path(loc.native_url).exists()
    parent = Path(loc.native_url).parent
    assert list(parent.glob(".upload-*")) == []  # the rejected body's temporary file is gone too


def test_a_content_md5_header_other_than_the_signed_one_is_refused(remote):
    loc = location(remote, BODY, unique("header"))
    response = put(loc.signed_url, b"other", md5(b"other"))
    assert response.status_code == 400 and "does not match the signed digest" in response.text
    assert put(loc.signed_url, BODY, None).status_code == 400  # no header at all
    assert not Path(loc.native_url).exists()


def test_urls_not_signed_by_the_sandbox_are_refused(remote):
    loc = location(remote, BODY, unique("forged"))
    parts = urlsplit(loc.signed_url)
    query = dict(parse_qsl(parts.query))
    query["signature"] = "0" * 64
    forged = urlunsplit(parts._replace(query=urlencode(query)))
    response = put(forged, BODY, md5(BODY))
    assert response.status_code == 403 and "not signed by the sandbox" in response.text
    other_path = urlunsplit(parts._replace(path=parts.path.replace("forged", "elsewhere")))
    assert put(other_path, BODY, md5(BODY)).status_code == 403
    assert not Path(loc.native_url).exists()


def test_expired_urls_are_refused(remote):
    loc = location(remote, BODY, unique("expiring"), expires_seconds=1)
    while time.time() <= loc.expires_at.seconds + 1:  # until the URL has expired (a condition, not a timing)
        time.sleep(0.2)
    response = put(loc.signed_url, BODY, md5(BODY))
    assert response.status_code == 403 and "expired" in response.text
    assert not Path(loc.native_url).exists()


@pytest.mark.parametrize("field, value, expected", [
    ("filename", "../escape.tar.gz", "must not contain '..'"),
    ("filename_root", "../../etc", "must not contain '..'"),
])
def test_upload_locations_cannot_escape_the_data_dir(remote, field, value, expected):
    request = dataproxy_pb2.CreateUploadLocationRequest(project="flytesnacks", domain="development",
                                                        filename="x.tar.gz", content_md5=md5(BODY))
    setattr(request, field, value)
    with pytest.raises(FlyteInvalidInputException) as info:
        remote.client.raw.create_upload_location(request)
    assert expected in grpc_details(info.value)


def test_upload_location_needs_an_md5_or_a_filename_root_and_a_sane_expiry(remote):
    with pytest.raises(FlyteInvalidInputException) as info:
        remote.client.raw.create_upload_location(dataproxy_pb2.CreateUploadLocationRequest(
            project="flytesnacks", domain="development", filename="x.tar.gz"))
    assert "content_md5 or filename_root is a required parameter" in grpc_details(info.value)  # FlyteAdmin's words
    with pytest.raises(FlyteInvalidInputException) as info:
        location(remote, BODY, unique("long"), expires_seconds=7200)
    assert "expiresIn [2h0m0s] cannot exceed max allowed expiration [1h0m0s]" in grpc_details(info.value)


# --- filename_root without content_md5: how flytekit's HttpFileWriter uploads local DataFrames ---

ADMIN_FILENAME = re.compile(r"^[bcdfghjklmnpqrstvwxz2456789]{20}$")  # FlyteAdmin's rand.String(20)


def root_only_location(remote, root: str, **fields):
    return remote.client.raw.create_upload_location(dataproxy_pb2.CreateUploadLocationRequest(
        project="flytesnacks", domain="development", filename_root=root, **fields))


def test_filename_root_alone_gets_a_url_that_takes_a_put_without_content_md5(sandbox, remote):
    root = f"root-{uuid.uuid4().hex[:8]}"
    first, second = root_only_location(remote, root), root_only_location(remote, root)
    for loc in (first, second):  # as FlyteAdmin: <root>/<20 random characters>, no required header
        stored = Path(loc.native_url)
        assert stored.parent == sandbox.data_dir / "uploads" / "flytesnacks" / "development" / root
        assert ADMIN_FILENAME.match(stored.name), stored.name
        assert dict(loc.headers) == {}
        assert "md5=" not in loc.signed_url
    assert first.native_url != second.native_url  # no name given: two uploads never collide
    # exactly what HttpFileWriter._upload_chunk sends: requests.put(signed_url, data=bytes), no Content-MD5
    response = requests.put(first.signed_url, data=BODY, timeout=120)
    assert response.status_code == 200, response.text
    assert Path(first.native_url).read_bytes() == BODY
    download = remote.client.get_download_signed_url(first.native_url)
    assert requests.get(download.signed_url, timeout=120).content == BODY
    # the same URL may be written again (FlyteAdmin's signed URL is good until it expires)
    assert requests.put(first.signed_url, data=b"again", timeout=120).status_code == 200
    assert Path(first.native_url).read_bytes() == b"again"


def test_flytekit_flyte_fs_writes_through_a_filename_root_upload(remote):
    """Stock flytekit, no pandas: a ``wb`` open on its ``flyte://`` file system is an HttpFileWriter,
    which asks DataProxy for a location with filename_root only (what DataFrame inputs go through)."""
    from flytekit.remote.remote_fs import FlytePathResolver, get_flyte_fs

    fs = get_flyte_fs(remote)()
    remote_dir = f"flyte://data/{uuid.uuid4().hex}"
    with fs.open(f"{remote_dir}/00000", "wb") as out:
        out.write(BODY)
    native_url = FlytePathResolver.resolve_remote_path(remote_dir)
    assert native_url is not None, "HttpFileWriter did not record where the upload went"
    assert Path(native_url).read_bytes() == BODY
    assert Path(native_url).parent.name == "00000"  # flytekit passes the basename as filename_root


def test_a_url_signed_without_an_md5_still_checks_a_content_md5_that_is_sent(remote):
    loc = root_only_location(remote, f"root-{uuid.uuid4().hex[:8]}")
    response = put(loc.signed_url, BODY[:-1] + b"X", md5(BODY))  # the header names other bytes
    assert response.status_code == 400 and "nothing was stored" in response.text
    bogus = requests.put(loc.signed_url, data=BODY, headers={"Content-MD5": "not-a-digest"}, timeout=120)
    assert bogus.status_code == 400 and "16-byte MD5" in bogus.text
    assert not Path(loc.native_url).exists()
    assert put(loc.signed_url, BODY, md5(BODY)).status_code == 200  # a matching header is fine
    assert Path(loc.native_url).read_bytes() == BODY


def test_md5_uploads_under_a_filename_root_still_refuse_bytes_that_do_not_match(remote):
    root = f"root-{uuid.uuid4().hex[:8]}"
    loc = root_only_location(remote, root, content_md5=md5(BODY))  # filename_root + MD5, no filename
    assert dict(loc.headers) == {"Content-MD5": base64.b64encode(md5(BODY)).decode()}
    assert ADMIN_FILENAME.match(Path(loc.native_url).name)
    assert put(loc.signed_url, BODY, None).status_code == 400  # signed with an MD5: the header is required
    response = put(loc.signed_url, BODY[:-1] + b"X", md5(BODY))
    assert response.status_code == 400 and "nothing was stored" in response.text
    assert not Path(loc.native_url).exists()
    assert put(loc.signed_url, BODY, md5(BODY)).status_code == 200
    assert Path(loc.native_url).read_bytes() == BODY


def test_an_existing_named_object_is_rewritten_only_with_a_matching_md5(remote):
    root, name = f"root-{uuid.uuid4().hex[:8]}", unique("named")
    loc = root_only_location(remote, root, filename=name, content_md5=md5(BODY))
    assert put(loc.signed_url, BODY, md5(BODY)).status_code == 200
    again = root_only_location(remote, root, filename=name, content_md5=md5(BODY))  # same bytes: allowed
    assert again.native_url == loc.native_url
    for fields in ({"content_md5": md5(b"other bytes")}, {}):  # another MD5, or none at all: refused
        with pytest.raises(Exception) as info:
            root_only_location(remote, root, filename=name, **fields)
        assert grpc_code(info.value) == StatusCode.ALREADY_EXISTS, grpc_details(info.value)
        assert "specify a matching hash if you wish to rewrite" in grpc_details(info.value)
    fresh = root_only_location(remote, root, filename=unique("fresh"))  # named, root, no MD5, nothing there
    assert Path(fresh.native_url).name.startswith("fresh-") and dict(fresh.headers) == {}


DATAFRAME_TASK = """
import pandas as pd
from flytekit import task


@task
def total(df: pd.DataFrame) -> int:
    return int(df["a"].sum())
"""


@pytest.mark.slow
def test_a_dataframe_input_launched_from_a_local_value_succeeds(sandbox, tmp_path):
    """A local pandas DataFrame input: flytekit encodes it to parquet and uploads it through
    HttpFileWriter (filename_root, no content_md5) before CreateExecution."""
    import pandas as pd

    # A FlyteRemote built now: flytekit binds the process-wide flyte:// protocol to the FlyteRemote
    # built last, and other tests build theirs for sandboxes that are gone by now.
    remote = FlyteRemote(Config.auto(config_file=str(sandbox.config_file)), default_project="flytesnacks",
                         default_domain="development", interactive_mode_enabled=False)
    module = write_module(tmp_path, DATAFRAME_TASK)
    version = f"df-{uuid.uuid4().hex[:8]}"
    remote.register_script(module.total, version=version, source_path=str(tmp_path),
                           module_name=module.__name__, copy_all=True)
    execution = remote.execute(module.total, inputs={"df": pd.DataFrame({"a": [1, 2, 3]})}, version=version)
    execution = remote.wait(execution, timeout=timedelta(minutes=5), poll_interval=timedelta(seconds=1))
    assert execution.error is None, execution.error
    assert execution.outputs["o0"] == 6


def test_a_path_with_dotdot_in_the_url_is_refused(sandbox, remote):
    loc = location(remote, BODY, unique("dots"))
    parts = urlsplit(loc.signed_url)
    sneaky = urlunsplit(parts._replace(path="/blobs/uploads/%2E%2E/%2E%2E/escape.txt"))
    response = put(sneaky, BODY, md5(BODY))
    assert response.status_code == 400
    assert not (sandbox.data_dir.parent / "escape.txt").exists()
