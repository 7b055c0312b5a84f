"""What survives a sandbox restart: registrations and finished runs; runs cut off by a crash end FAILED."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from flytekit.configuration import Config
from flytekit.models.core.execution import NodeExecutionPhase as NodePhase
from flytekit.models.core.execution import WorkflowExecutionPhase
from flytekit.remote import FlyteRemote

from fastreg_magic import sandbox as sandbox_api

FLOWS = """
import time

from flytekit import task, workflow


@task
def inc(a: int) -> int:
    return a + 1


@workflow
def quick(a: int) -> int:
    return inc(a=a)


@task
def nap(seconds: int) -> int:
    time.sleep(seconds)
    return seconds


@workflow
def sleepy(seconds: int = 600) -> int:
    return nap(seconds=seconds)
"""
POLL = 0.3


def remote_for(config_file: Path) -> FlyteRemote:
    return FlyteRemote(Config.auto(config_file=str(config_file)), default_project="flytesnacks",
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


def test_registrations_and_finished_runs_survive_a_restart(tmp_path):
    data_dir = tmp_path / "data"
    with sandbox_api.start(data_dir, port=0) as first:
        remote = remote_for(first.config_file)
        module, version = register(first.config_file, tmp_path)
        remote.activate_launchplan(remote.fetch_launch_plan(name=f"{module}.quick", version=version).id)
        run = remote.wait(remote.execute(remote.fetch_launch_plan(name=f"{module}.quick", version=version),
                                         inputs={"a": 41}, wait=False), timeout=300, poll_interval=POLL)
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
                                           inputs={"a": 1}, wait=False), timeout=300, poll_interval=POLL)
        assert rerun.outputs["o0"] == 2


def test_a_run_cut_off_by_a_crash_ends_failed_after_restart(tmp_path):
    data_dir = tmp_path / "data"
    process = subprocess.Popen([sys.executable, "-m", "fastreg_magic.cli", "sandbox", "--data-dir", str(data_dir)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert process.stdout.readline().startswith("fastreg sandbox ready on")
        config_file = data_dir / "config.yaml"
        remote = remote_for(config_file)
        module, version = register(config_file, tmp_path)
        run = remote.execute(remote.fetch_launch_plan(name=f"{module}.sleepy", version=version), inputs={},
                             wait=False)
        while (remote.fetch_execution(name=run.id.name).closure.phase != WorkflowExecutionPhase.RUNNING
               or not task_processes(data_dir)):  # crash once the task process really runs
            time.sleep(POLL)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the sandbox and its task processes: a hard crash
        process.wait(timeout=60)

    orphans = task_processes(data_dir)
    assert orphans  # the crash left the task running (its own session)
    with sandbox_api.start(data_dir, port=0) as restarted:
        assert task_processes(data_dir) == []  # the restart ended it
        after = remote_for(restarted.config_file).fetch_execution(name=run.id.name)
        assert after.closure.phase == WorkflowExecutionPhase.FAILED
        assert "the sandbox restarted" in after.closure.error.message
        assert after.closure.duration.total_seconds() > 0
        nodes, _ = remote_for(restarted.config_file).client.list_node_executions(after.id, limit=100)
        nap = [n for n in nodes if n.id.node_id == "n0"]
        assert nap and nap[0].closure.phase == NodePhase.FAILED  # no node is left "running" forever
