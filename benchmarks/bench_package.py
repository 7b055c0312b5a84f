"""Packaging a large source tree: fastreg's archive vs GNU `tar czf` vs flytekit's `fast_package`.

Generates a tree of 2,000 files / 40 MB (Python sources plus some data files, seeded so every
run builds the same tree), then times, median of --runs each:

    fastreg cold         files_to_ship(copy="all") + build_archive into an empty cache, nothing remembered
    fastreg re-package   the same after appending one line to one file (warm process: what the magic sees)
    fastreg new process  the same edit, packaged by a fresh `python` process (what the CLI sees)
    fastreg unchanged    nothing changed since the last build
    tar czf              `tar czf out.tar.gz -C tree .`
    fast_package         flytekit.tools.fast_registration.fast_package(copy_style=ALL)

    .venv/bin/python benchmarks/bench_package.py [--runs 3] [--files 2000] [--mbytes 40] [--skip-flytekit]
"""

from __future__ import annotations

import this_checkout  # noqa: F401  (first: the package is imported from this checkout)

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fastreg_magic import package
from fastreg_magic.collect import ModuleSource, files_to_ship

WORDS = (
    "data frame value result model train feature score index batch epoch loss weight config path "
    "name count total items record schema table column row key token vector layer input output"
).split()


def make_tree(root: Path, files: int, mbytes: int, seed: int = 7) -> None:
    """Python packages (95% of files) and a few data files, about ``mbytes`` in all."""
    rng = random.Random(seed)
    per_file = mbytes * 1024 * 1024 // files
    for i in range(files):
        package_dir = root / f"pkg{i % 40:02d}"
        package_dir.mkdir(parents=True, exist_ok=True)
        if i < 40:
            (package_dir / "__init__.py").write_text(f'"""Package {i}."""\n')
        csv = i % 20 == 19
        target = package_dir / (f"table_{i}.csv" if csv else f"module_{i}.py")
        lines, size = [], 0
        while size < per_file:
            line = ",".join(str(rng.randint(0, 10**6)) for _ in range(8)) if csv else _code_line(rng)
            lines.append(line)
            size += len(line) + 1
        target.write_text("\n".join(lines) + "\n")


def _code_line(rng: random.Random) -> str:
    """A few lines of valid Python (the cell imports a module of the tree, whose imports are read)."""
    a, b, c = rng.choice(WORDS), rng.choice(WORDS), rng.choice(WORDS)
    return rng.choice(
        [
            f"def {a}_{b}_{rng.randint(0, 999)}({c}):\n"
            f"    {a}_{b} = {c}.{rng.choice(WORDS)}({rng.randint(0, 99)})\n"
            f"    return {a}_{b} + {c} * {rng.random():.4f}",
            f"# {a} {b} {c} {rng.choice(WORDS)}",
        ]
    )


class Stopwatch:
    """Wall and CPU seconds (this process and its children) of one call."""

    def __init__(self):
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}

    def measure(self, name: str, fn, before=None):
        if before:
            before()
        cpu0, wall0 = _cpu(), time.perf_counter()
        result = fn()
        self.wall.setdefault(name, []).append(time.perf_counter() - wall0)
        self.cpu.setdefault(name, []).append(_cpu() - cpu0)
        return result


def _cpu() -> float:
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


CHILD = (
    "import sys; from pathlib import Path; from fastreg_magic import package; "
    "from fastreg_magic.collect import ModuleSource, files_to_ship; "
    "m = ModuleSource('bench_flow', 'from pkg00 import module_0\\n', ()); "
    "package.build_archive(files_to_ship(m, Path(sys.argv[1]), copy='all'), cache_dir=Path(sys.argv[2]))"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--mbytes", type=int, default=40)
    parser.add_argument("--skip-flytekit", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-package-") as tmp:
        work = Path(tmp)
        tree = work / "tree"
        make_tree(tree, args.files, args.mbytes)
        raw = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
        module = ModuleSource(name="bench_flow", source="from pkg00 import module_0\n", lifted=())
        cache = work / "cache"
        edited = tree / "pkg01" / "module_1.py"
        tar_out = work / "out.tar.gz"
        counter = iter(range(10**6))
        watch = Stopwatch()

        def fastreg() -> package.Archive:
            return package.build_archive(files_to_ship(module, tree, copy="all"), cache_dir=cache)

        def cold_start() -> None:
            shutil.rmtree(cache, ignore_errors=True)
            package.forget()

        def edit() -> None:
            with edited.open("a") as handle:
                handle.write(f"# edit {next(counter)}\n")

        fast_package = None if args.skip_flytekit else _flytekit_packager(work)
        # Contenders take turns within each round, so a busy moment on a shared machine
        # slows all of them rather than one.
        for _ in range(args.runs):
            watch.measure("fastreg cold", fastreg, before=cold_start)
            watch.measure("fastreg re-package (1 file changed)", fastreg, before=edit)
            watch.measure(
                "fastreg re-package, new process (incl. start-up)",
                lambda: subprocess.run([sys.executable, "-c", CHILD, str(tree), str(cache)], check=True),
                before=edit,
            )
            watch.measure(
                "python start-up + imports alone",
                lambda: subprocess.run([sys.executable, "-c", "from fastreg_magic import package, collect"], check=True),
            )
            archive = watch.measure("fastreg unchanged", fastreg)
            watch.measure(
                "GNU tar czf", lambda: subprocess.run(["tar", "czf", str(tar_out), "-C", str(tree), "."], check=True)
            )
            if fast_package is not None:
                flytekit_archive = watch.measure("flytekit fast_package", lambda: fast_package(tree))
        sizes = {"fastreg": archive.size, "tar czf": tar_out.stat().st_size}
        if fast_package is not None:
            sizes["fast_package"] = Path(flytekit_archive).stat().st_size

    _report(args, raw, watch, sizes)
    return 0


def _flytekit_packager(work: Path):
    os.environ.setdefault("FLYTE_SDK_LOGGING_LEVEL", "40")
    from flytekit.constants import CopyFileDetection
    from flytekit.tools.fast_registration import FastPackageOptions, fast_package

    out = work / "flytekit"
    options = FastPackageOptions(ignores=[], copy_style=CopyFileDetection.ALL)

    def run(tree: Path):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        return fast_package(tree, out, options=options)

    return run


def _report(args, raw: int, watch: Stopwatch, sizes: dict[str, int]) -> None:
    wall = {name: statistics.median(v) for name, v in watch.wall.items()}
    cpu = {name: statistics.median(v) for name, v in watch.cpu.items()}
    tar, tar_cpu = wall["GNU tar czf"], cpu["GNU tar czf"]
    print(f"\n{args.files} files, {raw / 2**20:.1f} MiB, median of {args.runs} interleaved runs, {os.cpu_count()} CPUs\n")
    print(f"| {'step':<50} | {'wall s':>7} | {'× tar (wall)':>12} | {'CPU s':>6} | {'× tar (CPU)':>11} |")
    print(f"| {'-' * 50} | {'-' * 6}:| {'-' * 11}:| {'-' * 5}:| {'-' * 10}:|")
    for name, seconds in wall.items():
        print(f"| {name:<50} | {seconds:7.3f} | {seconds / tar:12.3f} | {cpu[name]:6.2f} | {cpu[name] / tar_cpu:11.3f} |")
    print("\narchive sizes: " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in sizes.items()))


if __name__ == "__main__":
    sys.exit(main())
