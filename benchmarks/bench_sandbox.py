"""The embedded sandbox, end to end with stock clients: start, register, run; per-task cost next to its floor.

Measures in one run, on this machine:

    floor: python -c pass            an interpreter start
    floor: python -c "import flytekit"  what every task process pays at least once
    sandbox start-to-ready           `fastreg sandbox --port 0` until it prints its ready line
    register 10-task workflow        `pyflyte -c cfg register` of a fresh module (11 tasks, 2 workflows)
    launch -> SUCCEEDED, 1 task      FlyteRemote.execute, then GetExecution every 20 ms until SUCCEEDED
    launch -> SUCCEEDED, 10 tasks    the same for a 10-task linear workflow
    per-task overhead                (10-task - 1-task) / 9: one more task in a chain
    one attempt, replayed            a finished attempt's recorded command (command.json) run again:
                                     the whole fast chain, then its inner `pyflyte-execute` alone

    .venv/bin/python benchmarks/bench_sandbox.py [--runs 3]
"""

from __future__ import annotations

import this_checkout  # noqa: F401  (first: the package is imported from this checkout)

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

BIN = Path(sys.executable).parent
READY_PREFIX = "fastreg sandbox ready on "

MODULE = '''
"""Ten distinct tasks chained in a line, and a one-task workflow."""
from flytekit import task, workflow
{tasks}

@workflow
def one_task(x: int = 0) -> int:
    return step0(x=x)


@workflow
def ten_tasks(x: int = 0) -> int:
    {chain}
    return v9
'''


def timed(argv: list[str], **kwargs) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, **kwargs)
    return time.perf_counter() - start


def floor(runs: int) -> dict[str, float]:
    python = sys.executable
    return {
        "floor: python -c pass": statistics.median(timed([python, "-c", "pass"]) for _ in range(runs)),
        "floor: python -c 'import flytekit'": statistics.median(
            timed([python, "-c", "import flytekit"]) for _ in range(runs)
        ),
    }


def start_sandbox(data_dir: Path, config: Path) -> tuple[subprocess.Popen, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(BIN / "fastreg"), "sandbox", "--port", "0", "--data-dir", str(data_dir), "--config-out", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - start
    if not line.startswith(READY_PREFIX):
        proc.kill()
        raise SystemExit(f"the sandbox did not start: {line}{proc.stderr.read()}")
    return proc, elapsed


def write_project(root: Path) -> Path:
    tasks = "\n".join(
        textwrap.dedent(f"""
        @task
        def step{i}(x: int) -> int:
            return x + {i + 1}
        """)
        for i in range(10)
    )
    chain = "\n    ".join(["v0 = step0(x=x)"] + [f"v{i} = step{i}(x=v{i - 1})" for i in range(1, 10)])
    package = root / "benchflows"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "chain.py").write_text(MODULE.format(tasks=tasks, chain=chain))
    return package


def register(config: Path, project: Path, version: str) -> float:
    return timed([str(BIN / "pyflyte"), "-c", str(config), "register", "--version", version, project.name],
                 cwd=project.parent)


def launch_to_success(remote, lp, expected: int) -> float:
    from flytekit.models.core.execution import WorkflowExecutionPhase as Phase

    start = time.perf_counter()
    execution = remote.execute(lp, inputs={"x": 0})
    while True:
        closure = remote.client.get_execution(execution.id).closure
        if closure.phase in (Phase.SUCCEEDED, Phase.FAILED, Phase.ABORTED, Phase.TIMED_OUT):
            break
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    if closure.phase != Phase.SUCCEEDED:
        raise SystemExit(f"{lp.id.name} ended in phase {closure.phase}: {closure.error.message}")
    outputs = remote.wait(execution).outputs
    assert outputs["o0"] == expected, outputs
    return elapsed


def replay_attempt(data_dir: Path, runs: int) -> dict[str, float]:
    """Re-run one finished attempt's command, whole and without its pyflyte-fast-execute wrapper."""
    recorded = sorted(data_dir.glob("**/nodes/n0/0/command.json"))[-1]
    argv = json.loads(recorded.read_text())["argv"]
    workdir = recorded.parent / "work"  # holds the code the first run unpacked
    inner = argv[argv.index("--") + 1 :]
    rows = {}
    for label, command in (("one attempt replayed: fast-execute -> execute", argv),
                           ("one attempt replayed: pyflyte-execute alone", inner)):
        times = []
        for _ in range(runs):
            with tempfile.TemporaryDirectory() as out:
                times.append(timed(_redirect_outputs(command, out), cwd=workdir,
                                   env={**os.environ, "PYTHONPATH": str(workdir), "PATH": f"{BIN}:{os.environ['PATH']}"}))
        rows[label] = statistics.median(times)
    return rows


def _redirect_outputs(argv: list[str], out: str) -> list[str]:
    """The same command writing its outputs to ``out``, so the recorded execution stays as it was."""
    redirected = list(argv)
    for flag in ("--output-prefix", "--raw-output-data-prefix", "--checkpoint-path"):
        if flag in redirected:
            redirected[redirected.index(flag) + 1] = os.path.join(out, flag.strip("-"))
    return redirected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    rows = dict(floor(args.runs))
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp:
        tmp = Path(tmp)
        config = tmp / "flyte.yaml"
        starts = []
        for i in range(args.runs):  # a fresh data dir each time: the first start a user sees
            proc, elapsed = start_sandbox(tmp / f"data{i}", config)
            starts.append(elapsed)
            if i < args.runs - 1:
                proc.terminate()
                proc.wait()
        rows["sandbox start-to-ready"] = statistics.median(starts)
        try:
            project = write_project(tmp / "project")
            versions = [f"b{uuid.uuid4().hex[:8]}" for _ in range(args.runs)]
            rows["register 10-task workflow (pyflyte register)"] = statistics.median(
                register(config, project, version) for version in versions
            )
            from flytekit.configuration import Config
            from flytekit.remote import FlyteRemote

            remote = FlyteRemote(Config.auto(config_file=str(config)), default_project="flytesnacks",
                                 default_domain="development", interactive_mode_enabled=False)
            one = remote.fetch_launch_plan(name="benchflows.chain.one_task", version=versions[-1])
            ten = remote.fetch_launch_plan(name="benchflows.chain.ten_tasks", version=versions[-1])
            rows["launch -> SUCCEEDED, 1 task"] = statistics.median(
                launch_to_success(remote, one, 1) for _ in range(args.runs)
            )
            rows["launch -> SUCCEEDED, 10 tasks (linear)"] = statistics.median(
                launch_to_success(remote, ten, 55) for _ in range(args.runs)
            )
            rows.update(replay_attempt(tmp / f"data{args.runs - 1}", args.runs))
        finally:
            proc.terminate()
            proc.wait()
    per_task = (rows["launch -> SUCCEEDED, 10 tasks (linear)"] - rows["launch -> SUCCEEDED, 1 task"]) / 9
    rows["per-task overhead ((10 - 1 task) / 9)"] = per_task
    rows["… of which the fast-execute wrapper (replays' difference)"] = (
        rows["one attempt replayed: fast-execute -> execute"] - rows["one attempt replayed: pyflyte-execute alone"]
    )
    import_floor = rows["floor: python -c 'import flytekit'"]
    print(f"{os.cpu_count()} CPUs, median of {args.runs} runs\n")
    print(f"| {'what':<58} | {'seconds':>8} |")
    print(f"|{'-' * 60}|{'-' * 10}|")
    for what, seconds in rows.items():
        print(f"| {what:<58} | {seconds:>8.2f} |")
    print(f"\nper task = {per_task / import_floor:.1f} x the 'import flytekit' floor "
          f"(two interpreter starts would be {2 * import_floor:.2f} s)")


if __name__ == "__main__":
    main()
