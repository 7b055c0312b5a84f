"""Workflows the run and widget tests launch, registered on the sandbox with stock flytekit."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

FLOWS = '''
import time
from flytekit import task, workflow


@task
def square(n: int) -> int:
    return n * n


@task
def boom(n: int) -> str:
    if n >= 0:
        raise ValueError("<img src=x onerror=alert(1)> went wrong with " + str(n))
    return "<img src=x onerror=alert(2)>"


@task
def sleepy(s: float) -> float:
    time.sleep(s)
    return s


@workflow
def twice(n: int = 3) -> int:
    return square(n=square(n=n))


@workflow
def failing(n: int = 1) -> str:
    return boom(n=n)


@workflow
def slow(s: float = 120.0) -> float:
    return sleepy(s=s)
'''

WORKFLOWS = ("twice", "failing", "slow")


def register_flows(
    remote, root: Path, source: str = FLOWS, workflows: tuple[str, ...] = WORKFLOWS, prefix: str = "runflows"
) -> tuple[Path, str, str, object]:
    """Write ``source`` as a fresh module under ``root`` and fast-register its ``workflows``;
    (root, module, version, module object). ``{module}`` in the source becomes the module's name."""
    module = f"{prefix}_{uuid.uuid4().hex[:8]}"
    (root / f"{module}.py").write_text(source.replace("{module}", module))
    sys.path.insert(0, str(root))
    try:
        mod = __import__(module)
    finally:
        sys.path.remove(str(root))
    version = f"v-{uuid.uuid4().hex[:10]}"
    for name in workflows:
        remote.register_script(getattr(mod, name), version=version, source_path=str(root), module_name=module, copy_all=True)
    return root, module, version, mod
