"""Registration speed: `%%flyte_fast` against what a user would otherwise run, on the same code.

The code: 10 tasks and 3 workflows importing a 40-module local package. Side by side, in one run,
against one `fastreg sandbox` (started here as a subprocess on a free port):

* `pyflyte register --copy all` as a subprocess, after a one-line change each time;
* in-process `FlyteRemote.register_script` of the three workflows, after a one-line change
  (timed from re-importing the edited module, which the magic's figure also includes: it runs the cell);
* the magic re-run after a one-line change, and re-run unchanged (real InteractiveShell);
* the floor under the changed re-run: the edited module run, its 16 entities serialized by flytekit
  and created in the same dependency waves, without lifting, file collection, archive or upload;
* `%load_ext fastreg_magic` in a fresh interpreter.

    .venv/bin/python benchmarks/bench_magic.py [--repeat 5] [--rtt-ms 0]

``--rtt-ms N`` puts the sandbox's gRPC port one network round trip away (``latency_proxy.py``, a
forwarder in its own process adding N/2 ms each way), as a FlyteAdmin on another machine would be,
for every case alike. Uploads stay on loopback (the signed URLs name the sandbox's own HTTP port),
which favours the cases that upload more often.

Prints a table of medians (time.perf_counter). Public tools only; nothing here is asserted.
"""

from __future__ import annotations

import this_checkout  # noqa: F401  (first: the package is imported from this checkout)

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

N_LIB_MODULES = 40
STEPS: list[dict] = []  # the magic's own step timings of each changed re-run
N_TASKS = 10


def write_project(root: Path) -> str:
    """The benchmark's code on disk; returns the flows source (also the magic's cell)."""
    lib = root / "benchlib"
    lib.mkdir()
    (lib / "__init__.py").write_text("")
    for i in range(N_LIB_MODULES):
        (lib / f"mod{i:02d}.py").write_text(f"def f{i}(x: int) -> int:\n    return x + {i}\n")
    lines = ["from flytekit import task, workflow"]
    lines += [f"from benchlib.mod{i:02d} import f{i}" for i in range(N_TASKS)]
    lines.append("CHANGE = 0")
    for i in range(N_TASKS):
        lines.append(f"\n@task\ndef t{i}(x: int) -> int:\n    return f{i}(x) + CHANGE\n")
    for w in range(3):
        chain = "\n".join(f"    x = t{i}(x=x)" for i in range(w * 3, w * 3 + 4))
        lines.append(f"\n@workflow\ndef wf{w}(x: int = 1) -> int:\n{chain}\n    return x\n")
    source = "\n".join(lines) + "\n"
    (root / "flows.py").write_text(source)
    return source


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sandbox(work: Path):
    port = free_port()
    config_file = work / "sandbox-config.yaml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastreg_magic.cli", "sandbox", "--port", str(port), "--data-dir", str(work / "data"),
         "--config-out", str(config_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if config_file.exists():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return proc, config_file
            except OSError:
                pass
        time.sleep(0.1)
    proc.terminate()
    raise SystemExit("fastreg sandbox did not start")


def start_latency_proxy(work: Path, sandbox_config: Path, rtt_ms: float):
    """A config file whose endpoint reaches the sandbox through the delaying forwarder; and the forwarder."""
    port = int(re.search(r"127\.0\.0\.1:(\d+)", sandbox_config.read_text()).group(1))
    proxy = subprocess.Popen([sys.executable, str(Path(__file__).with_name("latency_proxy.py")), str(port),
                              str(rtt_ms / 2)], stdout=subprocess.PIPE, text=True)
    config_file = work / "remote-config.yaml"
    config_file.write_text(f"admin:\n  endpoint: dns:///127.0.0.1:{proxy.stdout.readline().strip()}\n  insecure: true\n")
    return proxy, config_file


def measured_rtt(config_file: Path) -> float:
    """Median time of one small gRPC call (ListProjects) to the endpoint of ``config_file``."""
    from flytekit.clients.raw import RawSynchronousFlyteClient
    from flytekit.configuration import Config

    client = RawSynchronousFlyteClient(Config.auto(str(config_file)).platform)
    times = []
    for _ in range(30):
        start = time.perf_counter()
        client.list_projects()
        times.append(time.perf_counter() - start)
    return statistics.median(times[5:])


def change(source: str, n: int) -> str:
    return source.replace("CHANGE = 0", f"CHANGE = {n}")


def pyflyte_once(root: Path, config_file: Path, source: str, n: int) -> float:
    pyflyte = Path(sys.executable).with_name("pyflyte")
    (root / "flows.py").write_text(change(source, 1000 + n))
    try:
        start = time.perf_counter()
        subprocess.run(
            [str(pyflyte), "--config", str(config_file), "register", "--copy", "all", "-p", "flytesnacks",
             "-d", "development", "flows.py"],
            cwd=root, check=True, capture_output=True,
        )
        return time.perf_counter() - start
    finally:
        (root / "flows.py").write_text(source)


_SCRIPT = """
import importlib, json, sys, time
from pathlib import Path
root, config_file, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, root)
from flytekit.configuration import Config
from flytekit.remote import FlyteRemote
remote = FlyteRemote(Config.auto(config_file), default_project="flytesnacks", default_domain="development",
                     interactive_mode_enabled=False)
flows_py = Path(root) / "flows.py"
source = flows_py.read_text()
def once(value):
    flows_py.write_text(source.replace("CHANGE = 0", f"CHANGE = {value}"))
    sys.modules.pop("flows", None)
    start = time.perf_counter()  # the edit counts once the module is imported again (the magic runs the cell)
    flows = importlib.import_module("flows")
    for wf in (flows.wf0, flows.wf1, flows.wf2):
        remote.register_script(wf, source_path=root, module_name="flows", copy_all=True)
    return time.perf_counter() - start
try:
    once(2000 + 2 * n)  # warm: connection made, first-call costs paid, as in a long-lived kernel
    print(json.dumps(once(2001 + 2 * n)))
finally:
    flows_py.write_text(source)
"""


def register_script_once(root: Path, config_file: Path, n: int) -> float:
    """In a child interpreter, so its flytekit state does not mix with the magic's; warmed up first."""
    out = subprocess.run([sys.executable, "-c", _SCRIPT, str(root), str(config_file), str(n)], cwd=root, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


class MagicSession:
    """A real InteractiveShell with the extension loaded, warmed up by one registration."""

    def __init__(self, root: Path, config_file: Path, source: str):
        from IPython.core.interactiveshell import InteractiveShell

        os.chdir(root)
        self.shell = InteractiveShell.instance()
        self.shell.run_line_magic("load_ext", "fastreg_magic")
        self.line = f"-m bench_cell --config {config_file}"
        self.source = source
        self.shell.run_cell_magic("flyte_fast", self.line, change(source, 1))

    def floor(self, n: int, config_file: Path) -> float:
        """What any client must do after the edit: run the module, serialize, send the 16 Creates."""
        from flytekit.clients.raw import RawSynchronousFlyteClient
        from flytekit.configuration import Config

        from fastreg_magic import api, register, specs

        if not hasattr(self, "_client"):
            self._client = RawSynchronousFlyteClient(Config.auto(str(config_file)).platform)
            self._images = register.image_config(())
        version = f"floor-{n}-{time.time_ns()}"
        start = time.perf_counter()
        module = api.load_module("bench_floor", change(self.source, 6000 + n), Path.cwd())
        settings = register.serialization_settings(self._images, version, ".", project="flytesnacks", domain="development")
        serialized = register.serialize(tuple(register.module_entities(module)), settings)
        hydrated = [specs.hydrate(s, project="flytesnacks", domain="development", archive_uri="file:///floor.tar.gz")
                    for s in serialized]
        register.register_specs(self._client, hydrated)
        return time.perf_counter() - start

    def changed_then_unchanged(self, n: int) -> tuple[float, float]:
        cell = change(self.source, 3000 + n)
        start = time.perf_counter()
        reg = self.shell.run_cell_magic("flyte_fast", self.line, cell)
        changed = time.perf_counter() - start
        assert reg.registered and reg.uploaded, reg
        STEPS.append(dict(reg.timings))
        start = time.perf_counter()
        reg = self.shell.run_cell_magic("flyte_fast", self.line, cell)
        unchanged = time.perf_counter() - start
        assert not reg.registered and not reg.uploaded, reg
        return changed, unchanged


def bench_load_ext(repeat: int) -> list[float]:
    code = textwrap.dedent(
        """
        import time
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        start = time.perf_counter()
        ip.run_line_magic("load_ext", "fastreg_magic")
        print(time.perf_counter() - start)
        """
    )
    return [
        float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()[-1])
        for _ in range(repeat)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rtt-ms", type=float, default=0.0, help="put the backend this many ms away (round trip)")
    args = parser.parse_args()
    proxy = None
    with tempfile.TemporaryDirectory(prefix="bench-magic-") as tmp:
        work = Path(tmp)
        root = work / "project"
        root.mkdir()
        source = write_project(root)
        proc, config_file = start_sandbox(work)
        try:
            if args.rtt_ms > 0:
                direct = measured_rtt(config_file)
                proxy, config_file = start_latency_proxy(work, config_file, args.rtt_ms)
                print(f"gRPC round trip: {direct * 1000:.2f} ms direct, {measured_rtt(config_file) * 1000:.2f} ms "
                      f"through the forwarder (asked for +{args.rtt_ms:g} ms)")
            names = ("pyflyte register --copy all (subprocess, changed)",
                     "FlyteRemote.register_script x3 (in-process, changed)",
                     "%%flyte_fast re-run, one-line change",
                     "%%flyte_fast re-run, unchanged",
                     "floor: run module + serialize + 16 Creates")
            results = {name: [] for name in names}
            magic = MagicSession(root, config_file, source)
            # Interleaved, one of each per round, so the machine's load weighs on all of them alike.
            for n in range(args.repeat):
                results[names[0]].append(pyflyte_once(root, config_file, source, n))
                results[names[1]].append(register_script_once(root, config_file, n))
                changed, unchanged = magic.changed_then_unchanged(n)
                results[names[2]].append(changed)
                results[names[3]].append(unchanged)
                results[names[4]].append(magic.floor(n, config_file))
            results["%load_ext fastreg_magic (fresh interpreter)"] = bench_load_ext(args.repeat)
        finally:
            os.chdir(Path(__file__).resolve().parent)  # leave the temp dir before it is removed
            for process in (proc, proxy):
                if process is not None:
                    process.terminate()
                    process.wait(timeout=30)
    medians = {k: statistics.median(v) for k, v in results.items()}
    pyflyte = medians["pyflyte register --copy all (subprocess, changed)"]
    script = medians["FlyteRemote.register_script x3 (in-process, changed)"]
    print(f"{'case':55s} {'median':>10s}  {'vs pyflyte':>10s}  {'vs register_script':>18s}")
    for name, value in medians.items():
        print(f"{name:55s} {value * 1000:8.1f}ms  {pyflyte / value:9.1f}x  {script / value:17.1f}x")
    steps = {k: statistics.median(t.get(k, 0.0) for t in STEPS) * 1000 for k in STEPS[0]}
    print("changed re-run steps (median ms; the upload overlaps running the module and serializing):",
          ", ".join(f"{k} {v:.1f}" for k, v in steps.items()))


if __name__ == "__main__":
    main()
