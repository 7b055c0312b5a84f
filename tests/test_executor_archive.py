"""Fast-registered tasks: the code archive is unpacked per attempt, and unsafe archives are refused first."""

from __future__ import annotations

import os

import io
import tarfile
from pathlib import Path

import pytest
from flytekit.configuration import FastSerializationSettings

from fastreg_magic.sandbox.archive_guard import ArchiveGuard
from tests.workflows import basic
from tests.workflows.harness import ROOT, SETTINGS, ExecutorHarness, TaskPhase, WorkflowPhase

CATALOGUE = ROOT / "tests" / "workflows"


def fast_settings(archive):
    builder = SETTINGS.new_builder()
    builder.fast_serialization_settings = FastSerializationSettings(
        enabled=True, destination_dir=".", distribution_location=str(archive)
    )
    return builder.build()


def code_archive(path: Path, extra=()) -> Path:
    """A tar.gz of the catalogue package (as fast registration ships it), plus ``extra`` members."""
    with tarfile.open(path, "w:gz") as archive:
        for source in sorted(CATALOGUE.glob("*.py")):
            archive.add(source, arcname=f"tests/workflows/{source.name}")
        for member, data in extra:
            archive.addfile(member, io.BytesIO(data) if data is not None else None)
    return path


def regular(name: str, data: bytes = b"pwned") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def link(name: str, target: str, kind=tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    with ExecutorHarness(tmp_path_factory.mktemp("fast"), max_workers=4) as h:
        yield h


def test_fast_registered_task_runs_code_from_its_archive(harness, tmp_path):
    archive = code_archive(tmp_path / "fast-good.tar.gz")
    # no PYTHONPATH: the task can only import the catalogue from the unpacked archive
    run = harness.run(basic.linear, x=4, settings=fast_settings(archive), envs={})
    assert run.phase == WorkflowPhase.SUCCEEDED, run.error
    assert run.outputs() == {"o0": 10}


def evil_members(outside: Path):
    return {
        "dotdot": [regular("../../../../escaped.txt")],
        "absolute": [regular(str(outside / "absolute.txt"))],
        "symlink_out": [link("tests/escape", str(outside)), regular("tests/escape/through-link.txt")],
        "relative_symlink_out": [link("tests/up", "../../.."), regular("tests/up/through-relative.txt")],
        "hardlink_out": [link("tests/passwd", "/etc/passwd", tarfile.LNKTYPE)],
    }


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink_out", "relative_symlink_out", "hardlink_out"])
def test_unsafe_archive_fails_the_task_and_writes_nothing_outside(harness, tmp_path, case):
    outside = tmp_path / "outside"
    outside.mkdir()
    members = evil_members(outside)[case]
    archive = code_archive(tmp_path / f"fast-{case}.tar.gz", members)
    run = harness.run(basic.linear, x=4, settings=fast_settings(archive), envs={})
    assert run.phase == WorkflowPhase.FAILED
    assert "was refused" in run.error and members[0][0].name in run.error
    assert list(outside.iterdir()) == []
    assert not (Path("/") / "escaped.txt").exists()
    # refused before any process started: one attempt, QUEUED then FAILED, never RUNNING
    assert [e.phase for e in run.task_events("n0")] == [TaskPhase.QUEUED, TaskPhase.FAILED]


def test_guard_accepts_links_that_stay_inside(tmp_path):
    inside = [link("tests/alias.py", "workflows/basic.py"), link("tests/hard", "tests/workflows/basic.py", tarfile.LNKTYPE)]
    archive = code_archive(tmp_path / "fast-inside.tar.gz", inside)
    assert ArchiveGuard().problem(str(archive)) is None


def test_guard_verdict_is_cached_per_archive_version(tmp_path):
    guard = ArchiveGuard()
    path = code_archive(tmp_path / "fast-cached.tar.gz")
    assert guard.problem(str(path)) is None
    assert guard.problem(str(path)) is None
    code_archive(path, [regular("../x")])  # rewritten in place: a new size/mtime, checked again
    assert "contains '..'" in guard.problem(str(path))


def test_guard_ignores_pickled_interactive_distributions(tmp_path):
    pickled = tmp_path / "pkl.gz"
    pickled.write_bytes(b"not a tar")
    assert ArchiveGuard().problem(str(pickled)) is None


def test_guard_reports_an_unreadable_archive(tmp_path):
    broken = tmp_path / "fast-broken.tar.gz"
    broken.write_bytes(b"definitely not gzip")
    assert "cannot be read as a tar archive" in ArchiveGuard().problem(str(broken))


def test_remote_archives_are_fetched_checked_and_run_from_the_checked_copy(harness, tmp_path, s3):
    good = code_archive(tmp_path / "fast-remote-good.tar.gz")
    s3.put(str(good), f"{s3.bucket}/fast-remote-good.tar.gz")
    run = harness.run(basic.linear, x=1, settings=fast_settings(f"s3://{s3.bucket}/fast-remote-good.tar.gz"), envs={})
    assert run.phase == WorkflowPhase.SUCCEEDED, run.error
    assert run.outputs() == {"o0": 4}

    evil = code_archive(tmp_path / "fast-remote-evil.tar.gz", [regular("../../remote-escape.txt")])
    s3.put(str(evil), f"{s3.bucket}/fast-remote-evil.tar.gz")
    run = harness.run(basic.linear, x=1, settings=fast_settings(f"s3://{s3.bucket}/fast-remote-evil.tar.gz"), envs={})
    assert run.phase == WorkflowPhase.FAILED
    assert "was refused" in run.error and "remote-escape.txt" in run.error


def test_missing_remote_archive_fails_clearly(harness, s3):
    missing = f"s3://{s3.bucket}/nothing-here.tar.gz"
    run = harness.run(basic.linear, x=1, settings=fast_settings(missing), envs={})
    assert run.phase == WorkflowPhase.FAILED
    assert f"The code archive {missing} does not exist (any more)" in run.error
    assert "re-run the %%flyte_fast cell" in run.error


def test_remote_archives_are_fetched_with_flytekits_storage_settings(harness, tmp_path, s3, monkeypatch):
    """FLYTE_AWS_* (what flytekit's own download in the task reads) are enough, without AWS_*."""
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("FLYTE_AWS_ENDPOINT", endpoint)
    monkeypatch.setenv("FLYTE_AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("FLYTE_AWS_SECRET_ACCESS_KEY", "testing")
    good = code_archive(tmp_path / "fast-flyte-env.tar.gz")
    s3.put(str(good), f"{s3.bucket}/fast-flyte-env.tar.gz")
    run = harness.run(basic.linear, x=1, settings=fast_settings(f"s3://{s3.bucket}/fast-flyte-env.tar.gz"), envs={})
    assert run.phase == WorkflowPhase.SUCCEEDED, run.error
