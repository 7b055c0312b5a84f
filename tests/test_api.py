"""fastreg_magic.fast_register without IPython: typed errors, the Registration value, the memo."""

from __future__ import annotations

import dataclasses
import textwrap
import uuid

import pytest

from fastreg_magic import api
from fastreg_magic.errors import CollectError, RunError

SOURCE = textwrap.dedent(
    """
    from flytekit import task, workflow

    @task
    def square(n: int) -> int:
        return n * n

    @workflow
    def squares(n: int = 4) -> int:
        return square(n=n)
    """
)


def unique(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def test_api_raises_typed_errors(tmp_path):
    with pytest.raises(CollectError) as info:
        api.fast_register("x = 1\n", module=unique("api_empty"), source_root=tmp_path, dry_run=True)
    assert info.value.hint and "@task" in info.value.hint


def test_without_namespace_free_names_are_errors(tmp_path):
    with pytest.raises(CollectError, match="helper"):
        api.fast_register(SOURCE + "\n@task\ndef h() -> int:\n    return helper()\n", module=unique("api_nolift"),
                          source_root=tmp_path, dry_run=True)


def test_namespace_receives_the_entities(tmp_path):
    ns: dict = {}
    reg = api.fast_register(SOURCE, module=unique("api_ns"), namespace=ns, source_root=tmp_path, dry_run=True)
    assert ns["squares"](n=3) == 9
    assert reg.archive_uri == "" and reg.remote is None


def test_registration_is_immutable_and_comparable(tmp_path):
    mod = unique("api_eq")
    a = api.fast_register(SOURCE, module=mod, source_root=tmp_path, dry_run=True)
    b = api.fast_register(SOURCE, module=mod, source_root=tmp_path, dry_run=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.version = "x"
    assert dataclasses.replace(a, timings={}) == dataclasses.replace(b, timings={})


def test_dry_run_cannot_launch(tmp_path):
    reg = api.fast_register(SOURCE, module=unique("api_dry"), source_root=tmp_path, dry_run=True)
    with pytest.raises(RunError, match="was not registered"):
        reg.launch(n=1)


def test_pick_entity_by_short_or_full_name(tmp_path):
    mod = unique("api_pick")
    reg = api.fast_register(SOURCE + "\n@workflow\ndef other() -> int:\n    return square(n=2)\n", module=mod,
                            source_root=tmp_path, dry_run=True)
    assert reg.entity("squares").kind == "launch_plan" and reg.entity("squares").name == f"{mod}.squares"
    assert reg.entity(f"{mod}.square").kind == "task"
    with pytest.raises(RunError, match="several workflows"):
        reg.entity()
    with pytest.raises(RunError, match="Nothing named 'nope'"):
        reg.entity("nope")


def test_only_workflow_is_the_default(tmp_path):
    mod = unique("api_one")
    reg = api.fast_register(SOURCE, module=mod, source_root=tmp_path, dry_run=True)
    assert (reg.entity().kind, reg.entity().name) == ("launch_plan", f"{mod}.squares")


def test_register_through_the_api(sandbox, remote, tmp_path):
    mod = unique("api_reg")
    reg = api.fast_register(SOURCE, module=mod, source_root=tmp_path, config_file=str(sandbox.config_file))
    assert reg.registered and reg.uploaded
    assert remote.fetch_workflow(name=f"{mod}.squares", version=reg.version).id.version == reg.version
    for step in ("collect", "package", "upload", "register"):
        assert reg.timings[step] >= 0.0
    again = api.fast_register(SOURCE, module=mod, source_root=tmp_path, config_file=str(sandbox.config_file))
    assert (again.registered, again.uploaded) == (False, False)
    assert again.version == reg.version
    # a new process-level memo (e.g. a kernel restart) re-sends Creates; they are idempotent
    api.forget_registrations()
    third = api.fast_register(SOURCE, module=mod, source_root=tmp_path, config_file=str(sandbox.config_file))
    assert third.registered and third.version == reg.version


def test_forgetting_registrations_uploads_again(sandbox, tmp_path):
    """After forget_registrations() (e.g. a backend reset), the archive is sent again, not skipped."""
    mod = unique("api_forget")
    first = api.fast_register(SOURCE, module=mod, source_root=tmp_path, config_file=str(sandbox.config_file))
    assert first.uploaded
    api.forget_registrations()
    again = api.fast_register(SOURCE, module=mod, source_root=tmp_path, config_file=str(sandbox.config_file))
    assert again.registered and again.uploaded and again.archive_uri == first.archive_uri


def test_forgetting_one_backend_keeps_what_was_registered_elsewhere(sandbox, tmp_path):
    mod = unique("api_forget_one")
    api.fast_register(SOURCE, module=mod, source_root=tmp_path, config_file=str(sandbox.config_file))
    api.forget_registrations("127.0.0.1:1")  # another backend: this one's memo stands
    kept = api.fast_register(SOURCE, module=mod, source_root=tmp_path, config_file=str(sandbox.config_file))
    assert (kept.registered, kept.uploaded) == (False, False)
    api.forget_registrations(sandbox.endpoint)
    again = api.fast_register(SOURCE, module=mod, source_root=tmp_path, config_file=str(sandbox.config_file))
    assert again.registered and again.uploaded


def test_generated_modules_carry_the_mark_collect_looks_for(tmp_path):
    from fastreg_magic import lift_imports

    mod = unique("api_mark")
    api.fast_register(SOURCE, module=mod, source_root=tmp_path, dry_run=True)
    import sys

    assert hasattr(sys.modules[mod], lift_imports.GENERATED_MARK)
