"""Uploads to the sandbox's blob server that break off: nothing stored, nothing left behind.

A kernel restarted in the middle of a big input's upload, a network that resets, a client that
stops sending: the half-received body must not stay in the sandbox's data dir, the sandbox's log
gets one line (no traceback), and the same signed URL takes a full upload afterwards. The bodies
are sent by hand over a real socket, so the test decides exactly where the upload stops.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest
import requests

from fastreg_magic.sandbox.blobserver import BlobServer

FULL_BYTES = 20 << 20
SENT_BYTES = 5 << 20  # what arrives before the upload breaks off
BODY = b"x" * FULL_BYTES
WAIT_S = 60  # how long the server may take to notice (not a measurement: a bound on waiting)
POLL_S = 0.05


def poll_until(condition, failure: str):
    end = time.monotonic() + WAIT_S
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(POLL_S)
    raise AssertionError(failure)


def start_upload(signed_url: str) -> socket.socket:
    """A PUT announcing FULL_BYTES that has sent only SENT_BYTES of them."""
    url = urllib.parse.urlsplit(signed_url)
    connection = socket.create_connection((url.hostname, url.port))
    connection.sendall(f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                       f"Content-Length: {FULL_BYTES}\r\n\r\n".encode())
    connection.sendall(BODY[:SENT_BYTES])
    return connection


def reset(connection: socket.socket) -> None:
    """Close with an RST, as a dropped network or a killed process with unread data does."""
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


def closed_by_the_server(connection: socket.socket) -> bool:
    """Wait for the server to end the connection (it has then finished with the request)."""
    connection.settimeout(WAIT_S)
    try:
        return connection.recv(1) == b""
    except ConnectionResetError:
        return True
    finally:
        connection.close()


def temporary_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(".upload-*")) if directory.exists() else []


def went_away(caplog, path: str) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if "went away" in record.getMessage() and path in record.getMessage()]


def assert_uploads_afresh(signed_url: str, stored: Path) -> None:
    response = requests.put(signed_url, data=BODY, timeout=120)
    assert response.status_code == 200, response.text
    assert stored.read_bytes() == BODY
    assert temporary_files(stored.parent) == []


@pytest.fixture
def blob_server(tmp_path):
    """A blob server of its own whose connections give up after one idle second."""
    server = BlobServer(tmp_path / "data", idle_seconds=1)
    server.start()
    yield server
    server.stop()


def signed_put(server: BlobServer, name: str) -> tuple[str, Path]:
    rel = f"uploads/flytesnacks/development/{uuid.uuid4().hex[:8]}/{name}"
    return server.signer.sign("PUT", rel, time.time() + 600), server.root / rel


def test_an_upload_reset_halfway_leaves_no_temporary_file_and_the_same_url_works_again(
        remote, caplog, capfd):
    caplog.set_level(logging.WARNING, logger="fastreg_magic.sandbox")
    loc = remote.client.get_upload_signed_url(project="flytesnacks", domain="development", filename="big.bin",
                                              filename_root=f"cut-{uuid.uuid4().hex[:8]}")
    stored = Path(loc.native_url)
    connection = start_upload(loc.signed_url)
    poll_until(lambda: temporary_files(stored.parent), "the sandbox never started receiving the upload")

    reset(connection)

    poll_until(lambda: not temporary_files(stored.parent),
               f"the broken upload's temporary file stayed: {temporary_files(stored.parent)}")
    poll_until(lambda: went_away(caplog, stored.name), "the sandbox's log never said the upload ended early")
    assert not stored.exists()
    assert len(went_away(caplog, stored.name)) == 1
    assert "Traceback" not in capfd.readouterr().err
    assert_uploads_afresh(loc.signed_url, stored)


def test_an_upload_that_stops_sending_is_given_up_and_its_temporary_file_removed(blob_server, caplog, capfd):
    caplog.set_level(logging.WARNING, logger="fastreg_magic.sandbox")
    url, stored = signed_put(blob_server, "stalled.bin")
    connection = start_upload(url)  # and then nothing more: the server's idle second runs out

    assert closed_by_the_server(connection)
    assert temporary_files(stored.parent) == [] and not stored.exists()
    assert len(went_away(caplog, stored.name)) == 1
    assert "nothing received for 1s" in went_away(caplog, stored.name)[0]
    assert "Traceback" not in capfd.readouterr().err
    assert_uploads_afresh(url, stored)


def test_a_client_that_closes_halfway_is_one_log_line_and_leaves_nothing(blob_server, caplog, capfd):
    caplog.set_level(logging.WARNING, logger="fastreg_magic.sandbox")
    url, stored = signed_put(blob_server, "closed.bin")

    start_upload(url).close()  # a killed kernel's socket: closed by the system with the body unfinished

    poll_until(lambda: went_away(caplog, stored.name), "the server never said the upload ended early")
    assert temporary_files(stored.parent) == [] and not stored.exists()
    assert "Traceback" not in capfd.readouterr().err
    assert_uploads_afresh(url, stored)
