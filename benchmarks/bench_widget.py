"""How fast the execution widget shows what happens, and what watching costs the kernel.

Run:  .venv/bin/python benchmarks/bench_widget.py [--samples 5] [--watched 20]

Everything is measured from the frontend's side of a real Jupyter kernel (jupyter_client):
the click is the comm message JupyterLab sends, "the widget shows X" is the IOPub message
carrying the badge's new value. Against the embedded sandbox, in a temporary data dir.

1. Launch click -> badge shows RUNNING (and how much of that the sandbox itself took to start
   the task, from its own started_at timestamp).
2. Run's end in the sandbox (its updated_at) -> badge shows SUCCEEDED; side by side with
   flytekit's `FlyteRemote.wait()` (what a user would otherwise call; it polls every 30 s by
   default) and `wait(poll_interval=1)`.
3. A trivial cell's round trip while idle, and while N runs are followed by their views.
"""

from __future__ import annotations

import this_checkout  # noqa: F401  (first: the package is imported from this checkout)

import argparse
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from kernel_driver import KernelDriver  # noqa: E402
from run_flows import WORKFLOWS, register_flows  # noqa: E402

BADGE = '<span class="fastreg-phase" data-phase="'


def badge_seen(kernel: KernelDriver, phase: str, since: int, timeout: float = 300) -> float:
    """Wall-clock time at which the frontend received a run badge showing ``phase``."""
    deadline = time.monotonic() + timeout
    index = since
    while time.monotonic() < deadline:
        while index < len(kernel.iopub):
            msg = kernel.iopub[index]
            index += 1
            if msg["msg_type"] != "comm_msg":
                continue
            state = msg["content"]["data"].get("state", {})
            if str(state.get("value", "")).startswith(BADGE + phase + '"'):
                return msg["received"]
        kernel_read(kernel, 0.05)
    raise TimeoutError(f"no badge showed {phase}")


def kernel_read(kernel: KernelDriver, seconds: float) -> None:
    """Read IOPub for ``seconds``; each message is stamped with the wall-clock time it arrived."""
    kernel.drain(seconds)


def setup_kernel(box, flows) -> KernelDriver:
    root, module, version, _ = flows
    kernel = KernelDriver(cwd=root, extra_path=[str(root)])
    kernel.run(
        textwrap.dedent(
            f"""
            import asyncio
            from IPython.display import display
            from flytekit.configuration import Config
            from flytekit.remote import FlyteRemote
            import {module} as flows
            from fastreg_magic.api import EntityRef, Registration
            from fastreg_magic.config import sandbox_backend
            from fastreg_magic.widget import RegistrationWidget
            from fastreg_magic.widget_run import RunView
            remote = FlyteRemote(Config.auto(config_file={str(box.config_file)!r}), default_project="flytesnacks",
                                 default_domain="development", interactive_mode_enabled=False)
            refs = tuple(EntityRef("workflow", f"{module}.{{n}}", {version!r}, "flytesnacks", "development", None,
                                   getattr(flows, n)) for n in {WORKFLOWS!r})
            reg = Registration(module={module!r}, version={version!r}, project="flytesnacks", domain="development",
                               backend=sandbox_backend({box.endpoint!r}, None), images=(), archive_uri="", archive_size=0,
                               files=(), left_out=(), lifted=(), warnings=(), entities=refs, uploaded=True,
                               registered=True, timings={{}}, remote=remote)
            w = RegistrationWidget(reg)
            display(w)
            """
        )
    )
    return kernel


def click_to_running_and_end(kernel: KernelDriver, remote, samples: int) -> tuple[list, list, list]:
    to_running, sandbox_start, end_to_widget = [], [], []
    button = kernel.eval("w.form('twice').launch_button.model_id")
    for _ in range(samples):
        count = kernel.eval("len(w.run_views)")
        kernel_read(kernel, 0.2)
        since = len(kernel.iopub)
        clicked = time.time()
        kernel.send_comm(button, {"method": "custom", "content": {"event": "click"}})
        running = badge_seen(kernel, "RUNNING", since)
        ended = badge_seen(kernel, "SUCCEEDED", since)
        name = kernel.eval(f"w.run_views[{count}].run.name")
        closure = remote.client.get_execution(_wid(name)).closure
        to_running.append(running - clicked)
        sandbox_start.append(closure.started_at.timestamp() - clicked)
        end_to_widget.append(ended - closure.updated_at.timestamp())
    return to_running, sandbox_start, end_to_widget


def flytekit_wait_latency(remote, flows, poll_interval) -> float:
    """End-of-run detection by FlyteRemote.wait: when it returned vs when the run ended."""
    _, module, version, _ = flows
    lp = remote.fetch_launch_plan("flytesnacks", "development", f"{module}.twice", version)
    execution = remote.execute(lp, inputs={"n": 2})
    kwargs = {} if poll_interval is None else {"poll_interval": poll_interval}
    remote.wait(execution, **kwargs)
    returned = time.time()
    closure = remote.client.get_execution(execution.id).closure
    return returned - closure.updated_at.timestamp()


def cell_round_trips(kernel: KernelDriver, count: int, spacing: float = 0.2) -> list[float]:
    """Round trips of a trivial cell, spaced out so they span many polls of the watched runs."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        kernel.run("pass")
        times.append(time.perf_counter() - start)
        kernel.drain(spacing)
    return times


def _wid(name: str):
    from flytekit.models.core.identifier import WorkflowExecutionIdentifier

    return WorkflowExecutionIdentifier("flytesnacks", "development", name)


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return f"median {statistics.median(values) * 1000:7.0f} ms   p90 {p90 * 1000:7.0f} ms   (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--watched", type=int, default=20)
    parser.add_argument("--round-trips", type=int, default=40)
    parser.add_argument("--skip-default-wait", action="store_true", help="skip FlyteRemote.wait() at its 30 s default")
    args = parser.parse_args()

    from flytekit.configuration import Config
    from flytekit.remote import FlyteRemote

    from fastreg_magic import sandbox

    with tempfile.TemporaryDirectory(prefix="bench-widget-") as tmp:
        box = sandbox.start(Path(tmp) / "data", port=0)
        kernel = None
        try:
            remote = FlyteRemote(Config.auto(config_file=str(box.config_file)), default_project="flytesnacks",
                                 default_domain="development", interactive_mode_enabled=False)
            flows = register_flows(remote, Path(tmp))
            kernel = setup_kernel(box, flows)

            to_running, sandbox_start, end_to_widget = click_to_running_and_end(kernel, remote, args.samples)
            print("Launch click -> widget shows RUNNING     ", fmt(to_running))
            print("  of which the sandbox starting the task  ", fmt(sandbox_start))
            print("  widget's own share (RUNNING seen - started_at)", fmt([a - b for a, b in zip(to_running, sandbox_start)]))
            print("Run ends in sandbox -> widget shows it    ", fmt(end_to_widget))
            print("  FlyteRemote.wait(poll_interval=1)       ", fmt([flytekit_wait_latency(remote, flows, 1) for _ in range(2)]))
            if not args.skip_default_wait:
                print("  FlyteRemote.wait() (default 30 s poll)  ", fmt([flytekit_wait_latency(remote, flows, None)]))

            idle = cell_round_trips(kernel, args.round_trips)
            kernel.run(
                f"watched = [RunView(reg.launch('slow', s=600.0)) for _ in range({args.watched})]\n"
                "for v in watched: display(v)"
            )
            kernel_read(kernel, 5.0)  # let every view start following its run
            polls_before = kernel.eval("sum(v._watch.polls for v in watched)")
            busy = cell_round_trips(kernel, args.round_trips)
            polls_after = kernel.eval("sum(v._watch.polls for v in watched)")
            active = kernel.eval("sum(1 for v in watched if v._watch.active)")
            kernel.run("for v in watched: v.run.terminate()")
            idle_after = cell_round_trips(kernel, args.round_trips)
            print("Trivial cell round trip, idle            ", fmt(idle + idle_after))
            print(f"  while {active} runs are watched           ", fmt(busy))
            print(f"  ({polls_after - polls_before} polls made during those {len(busy)} cells)")
            ratio = statistics.median(busy) / statistics.median(idle + idle_after)
            print(f"  ratio watched / idle (medians)          {ratio:.2f}x")
        finally:
            if kernel is not None:
                kernel.close()
            box.stop()


if __name__ == "__main__":
    main()
