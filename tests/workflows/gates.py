"""Nodes the sandbox cannot run (a gate), to check that they fail clearly instead of hanging."""

from __future__ import annotations

from datetime import timedelta

from flytekit import sleep, task, workflow


@task
def after(x: int) -> int:
    return x


@workflow
def with_sleep(x: int = 1) -> int:
    pause = sleep(timedelta(seconds=1))
    result = after(x=x)
    pause >> result
    return result
