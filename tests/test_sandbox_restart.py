"""What survives a sandbox restart: registrations and finished runs; runs cut off by a crash end FAILED."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from flytekit.configuration import Config
from flytekit.configuration.file import ConfigFile
from flytekit.models.core.execution import NodeExecutionPhase as NodePhase
from flytekit.models.core.execution import WorkflowExecutionPhase
from flytekit.remote import FlyteRemote

from fastreg_magic import sandbox as sandbox_api
from fastreg_magic.sandbox import ensure_running, stop_running
from fastreg_magic.sandbox.background import read_state
from fastreg_magic.sandbox.claim import process_is_alive
from fastreg_magic.sandbox.recovery import end_orphaned_tasks
from sandbox_support import SLEEPY_BODY

FLOWS = """
import time

from flytekit import task, workflow


@task
def inc(a: int) -> int:
    return a + 1


@workflow
def quick(a: int) -> int:
    return inc(a=a)
""" + SLEEPY_BODY
POLL = 0.3
DEADLINE_SECONDS = 300  # generous: a loaded CI machine starts task processes slowly


def remote_for(config_file: Path) -> FlyteRemote:
    # a ConfigFile object, not the path: flytekit caches a path's contents for the life of the
    # process, and a restarted sandbox may have rewritten the file with another port
    return FlyteRemote(Config.auto(config_file=ConfigFile(str(config_file))), default_project="flytesnacks",
                       default_domain="development", interactive_mode_enabled=False)


def register(config_file: Path, tmp_path: Path) -> tuple[str, str]:
    module = f"restartflows_{uuid.uuid4().hex[:6]}"
    (tmp_path / f"{module}.py").write_text(FLOWS)
    version = f"v-{uuid.uuid4().hex[:8]}"
    done = subprocess.run([str(Path(sys.executable).parent / "pyflyte"), "-c", str(config_file), "register",
                           "--version", version, f"{module}.py"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return module, version


def task_processes(data_dir: Path) -> list[int]:
    """Live processes whose command line names this data dir's executions (task processes)."""
    marker = str(data_dir.resolve() / "executions")
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().decode(errors="replace")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if marker in command and state != "Z":
                found.append(int(entry.name))
    return found


def launch_sleepy(remote: FlyteRemote, module: str, version: str, data_dir: Path):
    """Launch a 600 s task and return once its process runs (and the sandbox has recorded it RUNNING)."""
    run = remote.execute(remote.fetch_launch_plan(name=f"{module}.sleepy", version=version), inputs={}, wait=False)
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        phase = remote.fetch_execution(name=run.id.name).closure.phase
        if phase == WorkflowExecutionPhase.RUNNING and task_processes(data_dir):
            return run
        assert phase in (WorkflowExecutionPhase.QUEUED, WorkflowExecutionPhase.RUNNING), \
            f"{run.id.name} ended {WorkflowExecutionPhase.enum_to_string(phase)} before its task ran"
        assert time.monotonic() < deadline, f"the task of {run.id.name} did not start within {DEADLINE_SECONDS}s"
        time.sleep(POLL)


def assert_ended_by_the_restart(remote: FlyteRemote, name: str) -> None:
    after = remote.fetch_execution(name=name)
    assert after.closure.phase == WorkflowExecutionPhase.FAILED
    assert "the sandbox restarted" in after.closure.error.message
    assert after.closure.duration.total_seconds() > 0
    nodes, _ = remote.client.list_node_executions(after.id, limit=100)
    nap = [n for n in nodes if n.id.node_id == "n0"]
    assert nap and nap[0].closure.phase == NodePhase.FAILED  # no node is left "running" forever


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while process_is_alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} still runs {DEADLINE_SECONDS}s after SIGKILL"
        time.sleep(0.05)


@pytest.fixture
def no_task_left_behind():
    """Whatever a test does or fails to do, no task process of its data dirs outlives it."""
    data_dirs: list[Path] = []
    yield data_dirs
    for data_dir in data_dirs:
        end_orphaned_tasks(data_dir)


def test_registrations_and_finished_runs_survive_a_restart(tmp_path):
    data_dir = tmp_path / "data"
    with sandbox_api.start(data_dir, port=0) as first:
        remote = remote_for(first.config_file)
        module, version = register(first.config_file, tmp_path)
        remote.activate_launchplan(remote.fetch_launch_plan(name=f"{module}.quick", version=version).id)
        run = remote.wait(remote.execute(remote.fetch_launch_plan(name=f"{module}.quick", version=version),
                                         inputs={"a": 41}, wait=False), timeout=DEADLINE_SECONDS, poll_interval=POLL)
        assert run.outputs["o0"] == 42

    with sandbox_api.start(data_dir, port=0) as second:
        remote = remote_for(second.config_file)
        assert remote.fetch_workflow(name=f"{module}.quick", version=version).id.version == version
        from flytekit.models.common import NamedEntityIdentifier

        active = remote.client.get_active_launch_plan(NamedEntityIdentifier("flytesnacks", "development",
                                                                            f"{module}.quick"))
        assert active.id.version == version
        again = remote.fetch_execution(name=run.id.name)
        again = remote.sync_execution(again, sync_nodes=True)
        assert again.closure.phase == WorkflowExecutionPhase.SUCCEEDED and again.outputs["o0"] == 42
        assert again.node_executions["n0"].outputs["o0"] == 42
        # and the restarted sandbox still runs things
        rerun = remote.wait(remote.execute(remote.fetch_launch_plan(name=f"{module}.quick", version=version),
                                           inputs={"a": 1}, wait=False), timeout=DEADLINE_SECONDS, poll_interval=POLL)
        assert rerun.outputs["o0"] == 2


def test_a_run_cut_off_by_a_crash_ends_failed_after_restart(tmp_path, no_task_left_behind):
    data_dir = tmp_path / "data"
    no_task_left_behind.append(data_dir)
    log_path = tmp_path / "sandbox.log"
    with open(log_path, "w") as log:  # a file, not a pipe nobody reads: a full pipe would stall the sandbox
        process = subprocess.Popen([sys.executable, "-m", "fastreg_magic.cli", "sandbox", "--data-dir",
                                    str(data_dir)], stdout=subprocess.PIPE, stderr=log, text=True,
                                   start_new_session=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("fastreg sandbox ready on"), line + log_path.read_text()
        config_file = data_dir / "config.yaml"
        remote = remote_for(config_file)
        module, version = register(config_file, tmp_path)
        run = launch_sleepy(remote, module, version, data_dir)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the sandbox and its task processes: a hard crash
        process.wait(timeout=60)

    assert task_processes(data_dir)  # the crash left the task running (its own session)
    with sandbox_api.start(data_dir, port=0) as restarted:
        assert task_processes(data_dir) == []  # the restart ended it before serving
        assert_ended_by_the_restart(remote_for(restarted.config_file), run.id.name)


def test_a_killed_background_sandbox_leaves_no_task_running_once_started_again(tmp_path, no_task_left_behind):
    data_dir = tmp_path / "bg"
    no_task_left_behind.append(data_dir)
    first = ensure_running(data_dir)
    try:
        remote = remote_for(first.config_file)
        module, version = register(first.config_file, tmp_path)
        run = launch_sleepy(remote, module, version, data_dir)
        pid = read_state(data_dir)["pid"]
        os.kill(pid, signal.SIGKILL)  # only the sandbox: its task runs on in its own session
        wait_gone(pid)
        assert task_processes(data_dir)

        second = ensure_running(data_dir)
        assert second.started  # the dead one's leftovers did not pass for a live sandbox
        assert task_processes(data_dir) == []
        assert_ended_by_the_restart(remote_for(second.config_file), run.id.name)
    finally:
        stop_running(data_dir)


def test_stop_ends_the_task_trees_it_runs_and_frees_the_data_dir(tmp_path, no_task_left_behind):
    import socket
    import threading

    from fastreg_magic.errors import SandboxError

    data_dir = tmp_path / "data"
    no_task_left_behind.append(data_dir)
    box = sandbox_api.start(data_dir, port=0)
    try:
        with pytest.raises(SandboxError, match=f"in use by the sandbox on {box.endpoint}"):
            sandbox_api.start(data_dir, port=0)  # one sandbox per data dir, in this process too
        remote = remote_for(box.config_file)
        module, version = register(box.config_file, tmp_path)
        run = launch_sleepy(remote, module, version, data_dir)
        blob_port = box._blobs.port
    finally:
        stoppers = [threading.Thread(target=box.stop) for _ in range(2)]  # twice, at once: one stop
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()

    assert task_processes(data_dir) == []  # stop returned only once the task tree was gone
    for port in (box.port, blob_port):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0  # neither server listens any more
    with sandbox_api.start(data_dir, port=0) as again:  # the data dir is free again, the run is over
        phase = remote_for(again.config_file).fetch_execution(name=run.id.name).closure.phase
        assert phase in (WorkflowExecutionPhase.ABORTED, WorkflowExecutionPhase.FAILED)


def test_a_release_the_backend_lost_is_registered_again_when_the_cell_re_runs(tmp_path):
    """A new sandbox behind the same address has none of the old one's data: launching what the
    memo still calls registered says so, and the cell's next run uploads and registers again."""
    from fastreg_magic import api
    from fastreg_magic.errors import RunError

    config_file = tmp_path / "config.yaml"
    module = f"lost_{uuid.uuid4().hex[:8]}"
    kwargs = dict(module=module, source_root=tmp_path, config_file=str(config_file))
    with sandbox_api.start(tmp_path / "first", port=0) as first:
        config_file.write_text(first.config_file.read_text())
        registered = api.fast_register(FLOWS, **kwargs)
        assert registered.registered and registered.uploaded

    with sandbox_api.start(tmp_path / "second", port=first.port):
        remembered = api.fast_register(FLOWS, **kwargs)
        assert (remembered.registered, remembered.uploaded) == (False, False)  # the memo cannot know
        with pytest.raises(RunError) as caught:
            remembered.launch("quick", a=1)
        assert f"version {registered.version} is not on {first.endpoint} any more" in caught.value.message
        assert "Re-run the %%flyte_fast cell" in caught.value.hint

        again = api.fast_register(FLOWS, **kwargs)
        assert again.registered and again.uploaded and again.version == registered.version
        run = again.launch("quick", a=41).wait(timeout=DEADLINE_SECONDS)
        assert (run.phase, run.outputs) == ("SUCCEEDED", {"o0": 42}), run.error


def test_an_archive_the_backend_lost_is_uploaded_again_for_a_new_registration(tmp_path):
    """Same code, other options (here the image): a registration the kernel has not made, of an archive
    it uploaded to the old sandbox. The new sandbox behind the same address must get the archive."""
    from fastreg_magic import api

    config_file = tmp_path / "config.yaml"
    kwargs = dict(module=f"relost_{uuid.uuid4().hex[:8]}", source_root=tmp_path, config_file=str(config_file))
    with sandbox_api.start(tmp_path / "first", port=0) as first:
        config_file.write_text(first.config_file.read_text())
        assert api.fast_register(FLOWS, **kwargs).uploaded

    with sandbox_api.start(tmp_path / "second", port=first.port):
        other_image = api.fast_register(FLOWS, images=("ghcr.io/acme/other:1",), **kwargs)
        assert other_image.registered and other_image.uploaded
        run = other_image.launch("quick", a=1).wait(timeout=DEADLINE_SECONDS)
        assert (run.phase, run.outputs) == ("SUCCEEDED", {"o0": 2}), run.error
        same_again = api.fast_register(FLOWS, images=("ghcr.io/acme/other:2",), **kwargs)
        assert same_again.registered and not same_again.uploaded  # still there: not sent twice
