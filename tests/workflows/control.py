"""Control flow: sub-workflows, launch-plan nodes, branches, map tasks and dynamic tasks."""

from __future__ import annotations

import typing

from flytekit import LaunchPlan, conditional, dynamic, map_task, task, workflow


@task
def square(x: int) -> int:
    return x * x


@task
def total(xs: typing.List[int]) -> int:
    return sum(xs)


@task
def total_present(xs: typing.List[typing.Optional[int]]) -> int:
    return sum(x for x in xs if x is not None)


@workflow
def inner(x: int) -> int:
    return square(x=square(x=x))


@workflow
def nested(x: int = 2) -> int:
    return square(x=inner(x=x))


inner_lp = LaunchPlan.get_or_create(inner, name="tests.workflows.control.inner_lp")


@workflow
def via_launch_plan(x: int = 3) -> int:
    return square(x=inner_lp(x=x))


@task
def label(name: str) -> str:
    return name


@workflow
def branching(x: int = 5) -> str:
    return (
        conditional("size")
        .if_((x > 100) & (x < 1000)).then(label(name="big"))
        .elif_((x == 5) | (x == 6)).then(label(name="five-or-six"))
        .else_().then(label(name="other"))
    )


@workflow
def branch_or_fail(x: int = 5) -> int:
    return conditional("guard").if_(x >= 0).then(square(x=x)).else_().fail("x must not be negative")


@workflow
def branch_on_output(x: int = 3) -> int:
    sq = square(x=x)
    return conditional("on_output").if_(sq > 5).then(square(x=sq)).else_().then(square(x=x))


@workflow
def mapped(xs: typing.List[int] = [1, 2, 3, 4]) -> int:
    return total(xs=map_task(square)(x=xs))


@task
def picky(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd input {x}")
    return x


@workflow
def mapped_tolerant(xs: typing.List[int] = [1, 2, 4, 6]) -> int:
    return total_present(xs=map_task(picky, min_success_ratio=0.5, concurrency=2)(x=xs))


@workflow
def mapped_strict(xs: typing.List[int] = [1, 2, 4, 6]) -> typing.List[int]:
    return map_task(picky)(x=xs)


@dynamic
def squares_up_to(n: int) -> int:
    values = [square(x=i) for i in range(1, n + 1)]
    return total(xs=values)


@workflow
def dynamic_sum(n: int = 3) -> int:
    return squares_up_to(n=n)


@task
def nap(seconds: int) -> int:
    import time

    time.sleep(seconds)
    return seconds


@workflow
def napping(seconds: int) -> int:
    return nap(seconds=seconds)


napping_lp = LaunchPlan.get_or_create(napping, name="tests.workflows.control.napping_lp")


@workflow
def waits_on_child(seconds: int = 300) -> int:
    return square(x=napping_lp(seconds=seconds))


@task
def add_to(x: int, plus: int) -> int:
    return x + plus


@workflow
def square_plus(x: int, plus: int) -> int:
    return add_to(x=square(x=x), plus=plus)


square_plus_lp = LaunchPlan.get_or_create(square_plus, name="tests.workflows.control.square_plus_lp")


@workflow
def mapped_launch_plan(xs: typing.List[int] = [1, 2, 3], plus: typing.List[int] = [10, 20, 30]) -> int:
    return total(xs=map_task(square_plus_lp)(x=xs, plus=plus))


def _first_attempt_fails(x: int) -> int:
    import os

    from flytekit.exceptions.user import FlyteRecoverableException

    attempt = int(os.environ.get("FLYTE_ATTEMPT_NUMBER", "0"))
    if attempt < 1:
        raise FlyteRecoverableException(f"transient failure of element {x} on attempt {attempt}")
    return 10 * x + attempt


@task(retries=2)
def flaky_element(x: int) -> int:
    return _first_attempt_fails(x)


@task
def flaky_element_no_retries(x: int) -> int:
    return _first_attempt_fails(x)


@workflow
def mapped_retried(xs: typing.List[int] = [1, 2]) -> typing.List[int]:
    return map_task(flaky_element)(x=xs)


@workflow
def mapped_retries_overridden(xs: typing.List[int] = [1, 2]) -> typing.List[int]:
    return map_task(flaky_element_no_retries)(x=xs).with_overrides(retries=2)
