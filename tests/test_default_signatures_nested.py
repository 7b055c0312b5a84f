"""A data file a default names inside a dataclass (nested too), a Pydantic model, or typed
``Optional[FlyteFile]``: editing it, then re-running the unchanged cell, registers the new content, and
new runs read it, as for a plain ``FlyteFile`` default."""

from __future__ import annotations

import dataclasses
import textwrap
import typing
import uuid

import pytest
from flytekit.types.directory import FlyteDirectory
from flytekit.types.file import FlyteFile

pytestmark = pytest.mark.slow

DATACLASS_CELL = textwrap.dedent(
    """
    from dataclasses import dataclass
    from flytekit import task, workflow
    from flytekit.types.file import FlyteFile

    @dataclass
    class Cfg:
        data: FlyteFile
        n: int = 1

    @dataclass
    class Outer:
        cfg: Cfg
        label: str = "x"

    @task
    def read(o: Outer) -> str:
        return open(o.cfg.data.download()).read().strip()

    @workflow
    def wf(o: Outer = Outer(cfg=Cfg(data=FlyteFile({path!r})))) -> str:
        return read(o=o)
    """
)

OPTIONAL_CELL = textwrap.dedent(
    """
    import typing
    from flytekit import task, workflow
    from flytekit.types.file import FlyteFile

    @task
    def read(f: typing.Optional[FlyteFile]) -> str:
        return open(f.download()).read().strip() if f else "none"

    @workflow
    def wf(f: typing.Optional[FlyteFile] = {path!r}) -> str:
        return read(f=f)
    """
)

PYDANTIC_CELL = textwrap.dedent(
    """
    from pydantic import BaseModel
    from flytekit import task, workflow
    from flytekit.types.file import FlyteFile

    class Cfg(BaseModel):
        data: FlyteFile
        n: int = 1

    @task
    def read(c: Cfg) -> str:
        return open(c.data.download()).read().strip()

    @workflow
    def wf(c: Cfg = Cfg(data=FlyteFile({path!r}))) -> str:
        return read(c=c)
    """
)


@dataclasses.dataclass
class Inner:
    f: typing.Optional[FlyteFile] = None
    many: typing.List[FlyteFile] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Cfg:
    inner: Inner
    d: FlyteDirectory
    note: str = "/not/a/file"


def _launched(reg) -> str:
    run = reg.launch("wf").wait(timeout=300)
    assert run.phase == "SUCCEEDED", run.error
    return run.outputs["o0"]


@pytest.mark.parametrize("cell", [DATACLASS_CELL, OPTIONAL_CELL, PYDANTIC_CELL],
                         ids=["nested-dataclass", "optional", "pydantic"])
def test_editing_a_default_file_the_cell_holds_indirectly_registers_the_new_data(sandbox_shell, tmp_path, cell):
    default = tmp_path / "data.txt"
    default.write_text("OLD\n")
    line = f"-m nested_default_{uuid.uuid4().hex[:8]} --source-root {tmp_path}"
    first = sandbox_shell.run_cell_magic("flyte_fast", line, cell.format(path=str(default)))
    assert _launched(first) == "OLD"

    default.write_text("NEWER\n")  # another size: noticed whatever the clock's tick
    edited = sandbox_shell.run_cell_magic("flyte_fast", line, cell.format(path=str(default)))
    assert edited.registered and edited.version != first.version
    assert any(f"the default file {default} changed" in w for w in edited.warnings), edited.warnings
    assert _launched(edited) == "NEWER"

    untouched = sandbox_shell.run_cell_magic("flyte_fast", line, cell.format(path=str(default)))
    assert not untouched.registered and untouched.version == edited.version


def test_the_paths_a_default_names_through_its_declared_type():
    """Which local paths are watched: through Optional/Union/Annotated, containers and (nested) fields;
    not a str in ``Union[str, FlyteFile]`` (flytekit keeps it a str), nor a remote URI."""
    from fastreg_magic.default_signatures import named_paths

    cfg = Cfg(inner=Inner(f="/a.txt", many=["/b.txt", FlyteFile("s3://bucket/c.txt")]), d=FlyteDirectory("/data"))
    assert named_paths(cfg, Cfg) == ["/a.txt", "/b.txt", "/data"]
    assert named_paths("/o.txt", typing.Optional[FlyteFile]) == ["/o.txt"]
    assert named_paths("/o.txt", typing.Annotated[FlyteFile, "csv"]) == ["/o.txt"]
    assert named_paths(["/l.txt"], typing.Optional[typing.List[FlyteFile]]) == ["/l.txt"]
    assert named_paths({"k": "/d"}, typing.Optional[typing.Dict[str, FlyteDirectory]]) == ["/d"]
    assert named_paths("hello", typing.Union[str, FlyteFile]) == []
    assert named_paths("/o.txt", typing.Optional[int]) == []
