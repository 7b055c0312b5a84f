"""A finished run's outputs as the user gets them: flytekit's own values, files that open, and an
output that cannot be read told about in one line, never handed back as its raw literal."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from flyteidl.core import literals_pb2
from flytekit.models.core.types import BlobType
from flytekit.models.literals import (
    Blob,
    BlobMetadata,
    Literal,
    Primitive,
    Scalar,
    StructuredDataset as DatasetLiteral,
    StructuredDatasetMetadata,
)
from flytekit.models.types import StructuredDatasetType
from flytekit.types.directory import FlyteDirectory
from flytekit.types.file import FlyteFile
from flytekit.types.structured import StructuredDataset

sys.path.insert(0, str(Path(__file__).parent))
from run_flows import register_flows  # noqa: E402

from fastreg_magic import runs  # noqa: E402
from fastreg_magic.api import EntityRef  # noqa: E402
from fastreg_magic.errors import UnreadableOutput  # noqa: E402
from fastreg_magic.runs_outputs import to_python_values  # noqa: E402
from fastreg_magic.widget_text import outputs_html, run_text  # noqa: E402


def file_literal(uri: str) -> Literal:
    return Literal(scalar=Scalar(blob=Blob(BlobMetadata(BlobType("", BlobType.BlobDimensionality.SINGLE)), uri)))


def dataset_literal(uri: str) -> Literal:
    metadata = StructuredDatasetMetadata(StructuredDatasetType(format="parquet"))
    return Literal(scalar=Scalar(structured_dataset=DatasetLiteral(uri=uri, metadata=metadata)))


def literal_map(**literals: Literal) -> literals_pb2.LiteralMap:
    result = literals_pb2.LiteralMap()
    for name, literal in literals.items():
        result.literals[name].CopyFrom(literal.to_flyte_idl())
    return result


@pytest.fixture
def s3_outputs(s3):
    """Outputs a run left in S3: a file that is there, and a DataFrame's dataset that was deleted."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # an S3 client made for an earlier test's endpoint is not this one's
    s3.pipe(f"{s3.bucket}/raw/a1/report.txt", b"from s3")
    return {"report": f"s3://{s3.bucket}/raw/a1/report.txt", "gone": f"s3://{s3.bucket}/raw/b2/gone_df"}


def test_an_output_whose_data_is_gone_is_one_clear_error_and_the_others_still_read(remote, s3_outputs):
    import pandas as pd

    outputs = to_python_values(
        remote,
        literal_map(o0=file_literal(s3_outputs["report"]), o1=dataset_literal(s3_outputs["gone"]),
                    o2=Literal(scalar=Scalar(primitive=Primitive(integer=3)))),
        {"o0": FlyteFile, "o1": pd.DataFrame, "o2": int},
        run_name="r1",
    )
    with pytest.raises(UnreadableOutput) as info:
        outputs["o1"]
    assert str(info.value).startswith(f"Output o1 of run r1 could not be read: nothing is at {s3_outputs['gone']} (")
    assert "run it again to produce it" in info.value.hint
    with pytest.raises(UnreadableOutput, match="Output o1 of run r1"):
        list(outputs.values())[1].head()  # what a DataFrame would answer: why it is not one
    assert outputs["o2"] == 3
    assert open(outputs["o0"]).read() == "from s3"  # the others are read all the same
    from IPython.lib.pretty import pretty

    assert "o1 could not be read: nothing is at" in pretty(outputs)  # `run.outputs` in a cell still shows them all

    html = outputs_html(outputs)
    assert html.count("could not be read") == 1 and "scalar {" not in html and "blob" not in html
    assert f"nothing is at {s3_outputs['gone']}" in html
    assert f"<code>{s3_outputs['report']}</code>" in html and "<code>3</code>" in html


def test_a_file_output_in_s3_is_flytekits_file_which_opens_and_downloads(remote, s3_outputs):
    outputs = to_python_values(remote, literal_map(o0=file_literal(s3_outputs["report"])), {"o0": FlyteFile})
    report = outputs["o0"]
    assert isinstance(report, FlyteFile) and report.remote_source == s3_outputs["report"]
    assert open(report).read() == "from s3"
    assert Path(report.download()).read_text() == "from s3"


def test_a_file_whose_data_is_not_there_says_so_without_a_protobuf_dump(remote, tmp_path):
    outputs = to_python_values(remote, literal_map(o0=file_literal(str(tmp_path / "gone.txt"))), {"o0": FlyteFile},
                               run_name="r2")
    with pytest.raises(UnreadableOutput) as info:
        open(list(outputs.values())[0])  # the value itself, taken without indexing, says why too
    assert str(info.value).startswith(f"Output o0 of run r2 could not be read: nothing is at {tmp_path / 'gone.txt'}")
    assert "scalar" not in str(info.value) and "Cannot convert from" not in str(info.value)
    assert "scalar" not in repr(outputs) and "could not be read" in repr(outputs)


FILE_FLOWS = '''
import os

import pandas as pd
from flytekit import task, workflow
from flytekit.types.directory import FlyteDirectory
from flytekit.types.file import FlyteFile
from flytekit.types.structured import StructuredDataset


@task
def make(text: str) -> tuple[FlyteFile, FlyteDirectory, StructuredDataset, pd.DataFrame, int]:
    with open("report.txt", "w") as handle:
        handle.write(text)
    os.makedirs("parts", exist_ok=True)
    for i in range(2):
        with open(os.path.join("parts", f"part-{i}.txt"), "w") as handle:
            handle.write(str(i))
    frame = pd.DataFrame({"x": [1, 2, 3]})
    return FlyteFile(os.path.abspath("report.txt")), FlyteDirectory(os.path.abspath("parts")), StructuredDataset(dataframe=frame), frame, 7
'''


@pytest.fixture(scope="module")
def make(remote, tmp_path_factory) -> EntityRef:
    """The task ``make``, registered on the sandbox."""
    _, module, version, mod = register_flows(remote, tmp_path_factory.mktemp("fileflows"), FILE_FLOWS, ("make",),
                                             prefix="fileflows")
    return EntityRef("task", f"{module}.make", version, "flytesnacks", "development", None, mod.make)


@pytest.fixture(scope="module")
def made(remote, make):
    """One finished run of ``make``."""
    run = runs.launch(remote, make, {"text": "hello"}).wait(timeout=300)
    assert run.phase == "SUCCEEDED", run.error
    return run


@pytest.mark.slow
def test_file_and_directory_outputs_open_as_with_flytekit(made):
    report, parts = made.outputs["o0"], made.outputs["o1"]
    assert isinstance(report, FlyteFile) and isinstance(parts, FlyteDirectory)
    assert open(report).read() == "hello"
    assert Path(report.download()).read_text() == "hello"
    assert sorted(os.listdir(parts.download())) == ["part-0.txt", "part-1.txt"]
    html = outputs_html(made.outputs)
    assert f">{report.path}</" in html and f">{parts.path}</" in html  # shown as where they are


@pytest.mark.slow
def test_a_dataset_output_shows_where_it_is(made):
    dataset = made.outputs["o2"]
    assert isinstance(dataset, StructuredDataset) and dataset.uri
    assert dataset.open(__import__("pandas").DataFrame).all()["x"].tolist() == [1, 2, 3]
    assert f"uri={dataset.uri!r}" in repr(dataset)
    assert f"StructuredDataset at {dataset.uri} (parquet)" in outputs_html(made.outputs)


@pytest.mark.slow
def test_a_finished_run_whose_output_data_was_deleted_says_which_and_why(remote, make):
    run = runs.launch(remote, make, {"text": "soon gone"}).wait(timeout=300)
    report = run.outputs["o0"].path
    os.remove(report)  # as a cleanup job, or a sandbox data dir tidied by hand, would
    attached = runs.attach(remote, run.name)  # reads the outputs afresh, typed by the registered interface
    with pytest.raises(UnreadableOutput) as info:
        attached.outputs["o0"]
    assert str(info.value).startswith(f"Output o0 of run {run.name} could not be read: nothing is at {report} (")
    assert attached.outputs["o4"] == 7 and isinstance(attached.outputs["o1"], FlyteDirectory)
    text = run_text(attached)
    assert "o0 = could not be read: nothing is at" in text and "o4 = 7" in text and "scalar" not in text
