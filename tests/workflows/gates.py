"""A gate node (a sleep) before a task: the task runs once the sleep has passed."""

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
