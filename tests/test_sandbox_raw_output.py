"""Runs with a bucket as their raw output prefix (``--raw-output-prefix s3://bucket/raw``).

A task's files, arrays and dataframes go to the bucket, each attempt in its own place laid out as
flytepropeller lays it out (``<prefix>/<shard>/<run>-<node>-<attempt>``), and nothing is written to
a local folder named after the URI. Against a real S3 API (moto's server), through the real
embedded sandbox and a real InteractiveShell; the layout's ids are checked against values
flytepropeller's own tests give.
"""

from __future__ import annotations

import textwrap
import uuid

import pytest

from fastreg_magic.sandbox.raw_outputs import attempt_prefix, shard_of, unique_id

RUN_TIMEOUT_S = 240  # how long a run may take before the test gives up waiting (not a measurement)

FILE_AND_ARRAY_CELL = textwrap.dedent(
    """
    import numpy as np
    from flytekit import task, workflow
    from flytekit.types.file import FlyteFile

    @task
    def write_note() -> FlyteFile:
        with open("note.txt", "w") as note:
            note.write("hello from the bucket")
        return FlyteFile("note.txt")

    @task
    def make_array(n: int) -> np.ndarray:
        return np.arange(n)

    @task
    def total(values: np.ndarray) -> int:
        return int(values.sum())

    @workflow
    def note_and_total(n: int = 5) -> tuple[FlyteFile, int]:
        return write_note(), total(values=make_array(n=n))
    """
)


def test_a_run_writes_its_files_and_arrays_to_the_bucket_and_its_outputs_read_back(sandbox_shell, sandbox, s3,
                                                                                   tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prefix = f"s3://{s3.bucket}/raw"
    reg = sandbox_shell.run_cell_magic(
        "flyte_fast", f"-m raw_to_bucket_{uuid.uuid4().hex[:8]} --raw-output-prefix {prefix}", FILE_AND_ARRAY_CELL)

    run = reg.launch("note_and_total").wait(timeout=RUN_TIMEOUT_S)

    assert run.phase == "SUCCEEDED", run.error
    note, total = run.outputs["o0"], run.outputs["o1"]
    assert total == 10  # the array reached the next task through the bucket
    assert note.remote_source.startswith(f"{prefix}/"), note.remote_source
    with open(note) as handle:
        assert handle.read() == "hello from the bucket"
    keys = s3.find(f"{s3.bucket}/raw")
    note_keys = [key for key in keys if key.endswith("/note.txt")]
    assert len(note_keys) == 1 and len(keys) >= 2, keys  # the note and the array
    # flytepropeller's layout: <prefix>/<shard>/<run>-<node>-<attempt>/..., so two runs never meet
    place = attempt_prefix(prefix, run.name, node_of(run, ".write_note"), 0)
    assert f"s3://{note_keys[0]}".startswith(place + "/"), (note_keys[0], place)
    assert not list(sandbox.data_dir.rglob("s3:")), "a folder named after the bucket URI was written locally"


def node_of(run, task_suffix: str) -> str:
    return next(node.node for node in run.nodes() if node.task and node.task.endswith(task_suffix))


@pytest.mark.parametrize(("parts", "limit", "expected"), [
    (["name", "n1", "0"], 50, "name-n1-0"),  # short enough: the parts themselves
    (["name", "n1", "0"], 8, "fpqmhlei"),  # longer than the limit: a hash (flytepropeller's own tests)
    (["x" * 24], 20, "fuaa3aji"),
])
def test_an_attempts_unique_id_is_flytepropellers(parts, limit, expected):
    assert unique_id(parts, limit) == expected


def test_an_attempts_place_is_sharded_and_differs_by_run_node_and_attempt():
    places = {attempt_prefix("s3://bucket/raw/", run, node, attempt)
              for run in ("run1", "run2") for node in ("n0", "n1") for attempt in (0, 1)}
    assert len(places) == 8
    place = attempt_prefix("s3://bucket/raw/", "run1", "n0", 0)
    assert place == f"s3://bucket/raw/{shard_of('run1-n0-0')}/run1-n0-0"
    assert len(shard_of("run1-n0-0")) == 2 and shard_of("run1-n0-0") == shard_of("run1-n0-0")


def test_a_local_prefix_stays_a_path_and_a_file_uri_becomes_one(tmp_path):
    assert attempt_prefix(str(tmp_path), "r", "n0", 0).startswith(f"{tmp_path}/")
    assert attempt_prefix(f"file://{tmp_path}", "r", "n0", 0).startswith(f"{tmp_path}/")
