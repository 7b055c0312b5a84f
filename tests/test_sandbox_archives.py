"""Code archives in S3 (``--distribution-dir s3://...``) used by tasks that start together.

The sandbox fetches a remote archive before a task runs, to check it and to hand the task that
checked copy. Tasks of one run that start at the same moment share one fetch: each gets the whole
archive, and the bucket is read once. Against a real S3 API (moto's server), through the real
embedded sandbox and a real InteractiveShell.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import textwrap
import threading
import urllib.parse
import uuid

import pytest
import requests

from fastreg_magic.sandbox.archive_guard import ArchiveGuard

TASKS_AT_ONCE = 8
RUN_TIMEOUT_S = 240  # how long a run may take before the test gives up waiting (not a measurement)

FOUR_AT_ONCE_CELL = textwrap.dedent(
    """
    from flytekit import task, workflow

    @task
    def square(x: int) -> int:
        return x * x

    @workflow
    def squares() -> list[int]:
        return [square(x=1), square(x=2), square(x=3), square(x=4)]
    """
)


class BucketReads:
    """The object downloads (GET) the S3 server answers from now on, by moto's own request recorder."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        requests.post(f"{endpoint}/moto-api/recorder/reset-recording", timeout=30).raise_for_status()
        requests.post(f"{endpoint}/moto-api/recorder/start-recording", timeout=30).raise_for_status()

    def of(self, uri: str) -> int:
        """How many GETs read the object at ``s3://bucket/key``."""
        recording = requests.get(f"{self.endpoint}/moto-api/recorder/download-recording", timeout=30).text
        key_path = "/" + uri[len("s3://"):]
        return sum(1 for line in recording.splitlines()
                   if (entry := json.loads(line))["method"] == "GET"
                   and urllib.parse.unquote(urllib.parse.urlsplit(entry["url"]).path) == key_path)

    def stop(self) -> None:
        requests.post(f"{self.endpoint}/moto-api/recorder/stop-recording", timeout=30).raise_for_status()


@pytest.fixture
def bucket_reads(s3_endpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # moto's recorder writes its log to the working directory
    reads = BucketReads(s3_endpoint)
    yield reads
    reads.stop()


def code_archive() -> bytes:
    """A tar.gz of a few MiB (incompressible), so that fetching it takes a while."""
    payload = os.urandom(4 << 20)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in (("workflows/__init__.py", b""), ("workflows/data.bin", payload)):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def prepare_together(guard: ArchiveGuard, uri: str, cache_dir) -> list[tuple[str, str | None]]:
    """``guard.prepare`` from TASKS_AT_ONCE threads released at the same moment, as a run's tasks are."""
    start = threading.Barrier(TASKS_AT_ONCE)
    results: list = [None] * TASKS_AT_ONCE

    def task(index: int) -> None:
        start.wait()
        results[index] = guard.prepare(uri, cache_dir)

    threads = [threading.Thread(target=task, args=(index,)) for index in range(TASKS_AT_ONCE)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_tasks_preparing_one_s3_archive_at_once_share_one_whole_fetch(s3, bucket_reads, tmp_path):
    data = code_archive()
    uri = f"s3://{s3.bucket}/archives/fastreg-{uuid.uuid4().hex}.tar.gz"
    s3.pipe(uri, data)

    results = prepare_together(ArchiveGuard(), uri, tmp_path / "code")

    assert [problem for _, problem in results] == [None] * TASKS_AT_ONCE
    copies = {checked for checked, _ in results}
    assert len(copies) == 1 and not copies.pop().startswith("s3://")
    copy = tmp_path / "code" / os.path.relpath(results[0][0], tmp_path / "code")
    assert copy.read_bytes() == data
    assert bucket_reads.of(uri) == 1
    assert [path.name for path in copy.parent.iterdir()] == [copy.name]  # no partial file left behind


def test_a_workflow_of_four_tasks_at_once_runs_from_an_s3_distribution_dir(
        sandbox_shell, s3, bucket_reads, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = f"four_at_once_{uuid.uuid4().hex[:8]}"
    reg = sandbox_shell.run_cell_magic(
        "flyte_fast", f"-m {module} --distribution-dir s3://{s3.bucket}/archives", FOUR_AT_ONCE_CELL)
    assert reg.archive_uri.startswith(f"s3://{s3.bucket}/archives/")

    run = reg.launch().wait(timeout=RUN_TIMEOUT_S)

    assert (run.phase, run.outputs) == ("SUCCEEDED", {"o0": [1, 4, 9, 16]}), run.error
    squares = [node for node in run.nodes() if node.task and node.task.endswith(".square")]
    assert [node.phase for node in squares] == ["SUCCEEDED"] * 4, [(n.node, n.phase, n.error) for n in squares]
    assert bucket_reads.of(reg.archive_uri) == 1
