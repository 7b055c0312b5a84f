"""A stored archive deleted behind the kernel's back: the run says to re-run the cell, and the
re-run stores it again, without a new registration.

Against the real embedded sandbox (which runs the tasks), through a real InteractiveShell, with
the archive in a file:// distribution dir, in the sandbox's own uploads, and in S3 (moto's server).
"""

from __future__ import annotations

import os
import textwrap
import uuid

import grpc
import pytest

from fastreg_magic import config
from fastreg_magic.sandbox.archive_guard import ArchiveGuard

CELL = textwrap.dedent(
    """
    from flytekit import task, workflow

    @task
    def double(n: int) -> int:
        return n * 2

    @workflow
    def pipeline(n: int = 3) -> int:
        return double(n=n)
    """
)
RUN_TIMEOUT_S = 120  # how long a run may take before the test gives up waiting (not a measurement)


class CreateCounter(grpc.UnaryUnaryClientInterceptor):
    """Counts the registration calls (Create*, but not CreateUploadLocation) a client sends."""

    def __init__(self):
        self.creates: list[str] = []

    def intercept_unary_unary(self, continuation, details, request):
        method = details.method.rsplit("/", 1)[-1]
        if method.startswith("Create") and method not in ("CreateUploadLocation", "CreateExecution"):
            self.creates.append(method)
        return continuation(details, request)


@pytest.fixture
def creates(sandbox):
    """The Create RPCs the kernel sends to the sandbox from now on."""
    from flyteidl.service.admin_pb2_grpc import AdminServiceStub

    client = config.shared_client(config.resolve_backend(config_file=str(sandbox.config_file)))
    counter = CreateCounter()
    original = client._stub
    client._stub = AdminServiceStub(grpc.intercept_channel(client._channel, counter))
    yield counter.creates
    client._stub = original


@pytest.fixture
def shell(sandbox_shell, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return sandbox_shell


def cell(shell, options: str):
    return shell.run_cell_magic("flyte_fast", f"-m kept_{uuid.uuid4().hex[:8]} {options}".strip(), CELL)


def rerun(shell, reg, options: str = ""):
    return shell.run_cell_magic("flyte_fast", f"-m {reg.module} {options}".strip(), CELL)


def launched(reg):
    return reg.launch(n=4).wait(timeout=RUN_TIMEOUT_S)


def assert_told_to_rerun(run, archive_uri: str):
    assert run.phase == "FAILED"
    assert run.error.splitlines() == [run.error.strip()], run.error  # one line, no traceback
    assert f"The code archive {archive_uri} does not exist (any more)" in run.error
    assert "re-run the %%flyte_fast cell" in run.error and "Restart the kernel" not in run.error


def assert_stored_again(again, first, creates):
    assert (again.uploaded, again.registered) == (True, False)
    assert again.version == first.version and again.archive_uri == first.archive_uri
    assert creates == []  # this version already points at the archive: nothing registered
    assert "the archive was gone from" in str(again)  # the summary says why it uploaded
    run = launched(again)
    assert (run.phase, run.outputs) == ("SUCCEEDED", {"o0": 8}), run.error


def test_an_archive_deleted_from_a_file_distribution_dir_is_uploaded_again_by_the_unchanged_rerun(
        shell, tmp_path, creates):
    dist = f"--distribution-dir {(tmp_path / 'dist').as_uri()}"
    first = cell(shell, dist)
    assert launched(first).phase == "SUCCEEDED"
    os.remove(first.archive_uri[len("file://"):])

    assert_told_to_rerun(launched(first), first.archive_uri)
    creates.clear()
    assert_stored_again(rerun(shell, first, dist), first, creates)
    assert os.path.exists(first.archive_uri[len("file://"):])


def test_an_archive_deleted_from_the_sandboxs_uploads_is_uploaded_again_by_the_unchanged_rerun(shell, creates):
    first = cell(shell, "")
    assert os.path.isabs(first.archive_uri)  # the sandbox's own store, on this machine
    assert launched(first).phase == "SUCCEEDED"
    os.remove(first.archive_uri)

    assert_told_to_rerun(launched(first), first.archive_uri)
    creates.clear()
    assert_stored_again(rerun(shell, first), first, creates)


def test_an_unchanged_rerun_with_its_archive_in_place_uploads_nothing(shell, tmp_path, creates):
    dist = f"--distribution-dir {(tmp_path / 'dist').as_uri()}"
    first = cell(shell, dist)
    creates.clear()
    again = rerun(shell, first, dist)
    assert (again.uploaded, again.registered, creates) == (False, False, [])
    assert "the archive was gone" not in str(again)


def test_the_sandbox_refuses_a_missing_local_archive_in_one_line(tmp_path):
    missing = tmp_path / "fastreg-0123.tar.gz"
    for given in (str(missing), missing.as_uri()):
        checked, problem = ArchiveGuard().prepare(given, tmp_path / "code")
        assert checked == given
        assert problem.startswith(f"The code archive {given} does not exist (any more)")
        assert "re-run the %%flyte_fast cell" in problem and "\n" not in problem


def test_an_archive_deleted_from_s3_is_uploaded_again_once_a_run_failed_for_it(shell, s3, creates):
    dist = f"--distribution-dir s3://{s3.bucket}/fast"
    first = cell(shell, dist)
    s3.rm(first.archive_uri)

    # Before any run failed, an unchanged re-run asks nothing of the bucket, so it does not notice.
    assert rerun(shell, first, dist).uploaded is False
    assert not s3.exists(first.archive_uri)

    assert_told_to_rerun(launched(first), first.archive_uri)
    creates.clear()
    assert_stored_again(rerun(shell, first, dist), first, creates)
    s3.invalidate_cache()
    assert s3.exists(first.archive_uri)
    # That failure was answered: later unchanged re-runs are back to sending nothing.
    assert rerun(shell, first, dist).uploaded is False
