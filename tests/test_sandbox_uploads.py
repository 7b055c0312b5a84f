"""DataProxy signed uploads: what the sandbox accepts and refuses, seen through HTTP as flytekit sends it."""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import requests
from flyteidl.service import dataproxy_pb2
from flytekit.exceptions.user import FlyteInvalidInputException
from google.protobuf.duration_pb2 import Duration

from sandbox_support import grpc_details

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


def test_upload_location_needs_an_md5_and_a_sane_expiry(remote):
    with pytest.raises(FlyteInvalidInputException) as info:
        remote.client.raw.create_upload_location(dataproxy_pb2.CreateUploadLocationRequest(
            project="flytesnacks", domain="development", filename="x.tar.gz"))
    assert "content_md5 is required" in grpc_details(info.value)
    with pytest.raises(FlyteInvalidInputException) as info:
        location(remote, BODY, unique("long"), expires_seconds=7200)
    assert "exceeded max allowed expiration" in grpc_details(info.value)


def test_a_path_with_dotdot_in_the_url_is_refused(sandbox, remote):
    loc = location(remote, BODY, unique("dots"))
    parts = urlsplit(loc.signed_url)
    sneaky = urlunsplit(parts._replace(path="/blobs/uploads/%2E%2E/%2E%2E/escape.txt"))
    response = put(sneaky, BODY, md5(BODY))
    assert response.status_code == 400
    assert not (sandbox.data_dir.parent / "escape.txt").exists()
