"""FlyteFile and FlyteDirectory passed between tasks."""

from __future__ import annotations

import os
import typing

from flytekit import task, workflow
from flytekit.types.directory import FlyteDirectory
from flytekit.types.file import FlyteFile


@task
def write_file(text: str) -> FlyteFile:
    path = os.path.join(os.getcwd(), "greeting.txt")
    with open(path, "w") as handle:
        handle.write(text)
    return FlyteFile(path)


@task
def read_file(f: FlyteFile) -> str:
    with open(f) as handle:
        return handle.read()


@task
def write_dir(n: int) -> FlyteDirectory:
    root = os.path.join(os.getcwd(), "parts")
    os.makedirs(root, exist_ok=True)
    for i in range(n):
        with open(os.path.join(root, f"part-{i}.txt"), "w") as handle:
            handle.write(str(i))
    return FlyteDirectory(root)


@task
def count_dir(d: FlyteDirectory) -> int:
    return len(os.listdir(d.download()))


@workflow
def file_round_trip(text: str = "hello") -> typing.Tuple[str, FlyteFile]:
    f = write_file(text=text)
    return read_file(f=f), f


@workflow
def dir_round_trip(n: int = 3) -> int:
    return count_dir(d=write_dir(n=n))


@workflow
def read_given(f: FlyteFile) -> str:
    return read_file(f=f)
