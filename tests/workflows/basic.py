"""Task nodes: primitives, collections, Optional, dataclasses with attribute access, parallel nodes,
user failures, retries and timeouts."""

from __future__ import annotations

import datetime
import os
import time
import typing
from dataclasses import dataclass

from flytekit import Deck, WorkflowFailurePolicy, task, workflow
from flytekit.exceptions.user import FlyteRecoverableException
from flytekit.types.error import FlyteError


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def double(x: int) -> int:
    return 2 * x


@workflow
def one_step(x: int = 1) -> int:
    return double(x=x)


@workflow
def linear(x: int = 1) -> int:
    return double(x=add(a=x, b=1))


@workflow
def fan_out_in(x: int = 3) -> int:
    left = double(x=x)
    right = add(a=x, b=10)
    return add(a=left, b=right)


@task
def describe(
    i: int, f: float, s: str, b: bool, when: datetime.datetime, span: datetime.timedelta
) -> typing.Tuple[str, float, bool, datetime.datetime]:
    return f"{s}:{i}", f * 2, not b, when + span


@workflow
def primitives(
    i: int = 7, f: float = 1.25, s: str = "x", b: bool = True,
    when: datetime.datetime = datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone.utc),
    span: datetime.timedelta = datetime.timedelta(hours=1),
) -> typing.Tuple[str, float, bool, datetime.datetime]:
    return describe(i=i, f=f, s=s, b=b, when=when, span=span)


@task
def summarize(xs: typing.List[int], named: typing.Dict[str, float]) -> typing.Dict[str, typing.List[int]]:
    return {"sorted": sorted(xs), "keys": [len(k) for k in sorted(named)]}


@task
def pick(d: typing.Dict[str, typing.List[int]], key: str) -> typing.List[int]:
    return d[key]


@workflow
def collections(
    xs: typing.List[int] = [3, 1, 2], named: typing.Dict[str, float] = {"a": 1.0, "bbb": 2.0}
) -> typing.List[int]:
    return pick(d=summarize(xs=xs, named=named), key="sorted")


@task
def maybe(x: typing.Optional[int] = None) -> typing.Optional[str]:
    return None if x is None else f"got {x}"


@workflow
def optional(x: typing.Optional[int] = None) -> typing.Optional[str]:
    return maybe(x=x)


@dataclass
class Point:
    x: int
    y: int
    tags: typing.List[str]


@task
def make_point(x: int) -> Point:
    return Point(x=x, y=x * 10, tags=["a", "b"])


@task
def shift(p: Point, by: int) -> Point:
    return Point(x=p.x + by, y=p.y + by, tags=p.tags + ["shifted"])


@task
def as_text(s: str) -> str:
    return s.upper()


@workflow
def dataclasses(x: int = 2) -> typing.Tuple[Point, int, str]:
    p = make_point(x=x)
    moved = shift(p=p, by=1)
    return moved, add(a=p.y, b=1), as_text(s=p.tags[1])


@task
def explode(x: int) -> int:
    if x > 0:
        raise ValueError(f"x must not be positive, got {x}")
    return x


@workflow
def fails(x: int = 5) -> int:
    return double(x=explode(x=x))


@task(retries=2)
def flaky(x: int) -> int:
    attempt = int(os.environ.get("FLYTE_ATTEMPT_NUMBER", "0"))
    if attempt < 1:
        raise FlyteRecoverableException(f"transient failure on attempt {attempt}")
    return x + attempt


@workflow
def retried(x: int = 1) -> int:
    return flaky(x=x)


@task(retries=3)
def broken(x: int) -> int:
    if x >= 0:
        raise RuntimeError("not recoverable")
    return x


@workflow
def not_retried(x: int = 1) -> int:
    return broken(x=x)


@task(timeout=datetime.timedelta(seconds=2))
def slow(seconds: int) -> int:
    time.sleep(seconds)
    return seconds


@workflow
def times_out(seconds: int = 60) -> int:
    return slow(seconds=seconds)


@task
def sleepy(seconds: int) -> int:
    time.sleep(seconds)
    return seconds


@workflow
def long_running(seconds: int = 300) -> int:
    return sleepy(seconds=seconds)


@workflow
def ten_steps(x: int = 0) -> int:
    a1 = add(a=x, b=1)
    a2 = add(a=a1, b=1)
    a3 = add(a=a2, b=1)
    a4 = add(a=a3, b=1)
    a5 = add(a=a4, b=1)
    a6 = add(a=a5, b=1)
    a7 = add(a=a6, b=1)
    a8 = add(a=a7, b=1)
    a9 = add(a=a8, b=1)
    return add(a=a9, b=1)


@workflow
def fail_fast(x: int = 5) -> typing.Tuple[int, int]:
    return explode(x=x), sleepy(seconds=300)


@workflow(failure_policy=WorkflowFailurePolicy.FAIL_AFTER_EXECUTABLE_NODES_COMPLETE)
def finish_others_first(x: int = 5) -> typing.Tuple[int, int]:
    return explode(x=x), double(x=x)


# Under a file, not a folder: no one can write it, root included (a folder called /nonexistent can exist).
UNWRITABLE_MARKER = "/dev/null/marker"


@task
def clean_up(x: int, marker: str, err: typing.Optional[FlyteError] = None) -> None:
    with open(marker, "w") as handle:
        handle.write(f"{x}|{err.failed_node_id if err else ''}|{err.message if err else 'no error'}")


@workflow(on_failure=clean_up)
def with_cleanup(x: int = 5, marker: str = UNWRITABLE_MARKER) -> int:
    return double(x=explode(x=x))


@workflow
def timeout_overridden(seconds: int = 4) -> int:
    """``slow`` declares 2 s; the node's longer timeout is the one that counts."""
    return slow(seconds=seconds).with_overrides(timeout=datetime.timedelta(seconds=120))


@workflow(on_failure=clean_up)
def sub_with_cleanup(x: int, marker: str) -> int:
    return double(x=explode(x=x))


@workflow
def calls_sub_with_cleanup(x: int = 5, marker: str = UNWRITABLE_MARKER) -> int:
    return sub_with_cleanup(x=x, marker=marker)


@workflow
def clean_up_workflow(x: int, marker: str, err: typing.Optional[FlyteError] = None):
    clean_up(x=x, marker=marker, err=err)


@workflow(on_failure=clean_up_workflow)
def with_cleanup_workflow(x: int = 5, marker: str = UNWRITABLE_MARKER) -> int:
    return double(x=explode(x=x))


@task(enable_deck=True)
def with_deck(x: int) -> int:
    Deck("numbers", f"<h1>deck of {x}</h1>")
    return x


@workflow
def decked(x: int = 7) -> int:
    return with_deck(x=x)
