"""Launching something the backend does not have, while the rest of the release is still there.

The backend lost nothing then (it is not a sandbox started afresh): the error names what is missing,
and the kernel keeps its memory of the release, so the cell's next run is still answered from it
instead of uploading and registering everything again.
"""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from fastreg_magic import api
from fastreg_magic.errors import RunError

SOURCE = """
from flytekit import task, workflow

@task
def double(x: int) -> int:
    return 2 * x

@workflow
def twice(x: int = 1) -> int:
    return double(x=x)
"""


def test_a_missing_entity_beside_a_registered_release_is_named_and_the_release_is_not_forgotten(sandbox, tmp_path):
    module = f"missing_{uuid.uuid4().hex[:8]}"
    reg = api.fast_register(SOURCE, module=module, source_root=tmp_path, config_file=str(sandbox.config_file))
    plan = next(ref for ref in reg.entities if ref.kind == "launch_plan")
    never_registered = dataclasses.replace(plan, name=f"{module}.never_registered", entity=None)
    with_missing = dataclasses.replace(reg, entities=(*reg.entities, never_registered))

    with pytest.raises(RunError) as caught:
        with_missing.launch(never_registered.name)

    message = caught.value.message
    assert f"launch plan {never_registered.name} version {reg.version} is not on {sandbox.endpoint}" in message
    assert "the rest of this cell's release is" in message
    assert "any more" not in message  # not "the backend lost it": it did not
    again = api.fast_register(SOURCE, module=module, source_root=tmp_path, config_file=str(sandbox.config_file))
    assert again.version == reg.version and not again.uploaded and not again.registered
    assert again.launch("twice", x=4).wait(timeout=300).outputs == {"o0": 8}
