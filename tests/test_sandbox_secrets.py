"""Tasks that request secrets, on the sandbox: served from its data dir or its environment, or refused
up front naming the secret and where to put it. Registered with stock ``pyflyte register``, run with
``FlyteRemote``."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from flytekit.models.core.execution import WorkflowExecutionPhase

PYFLYTE = str(Path(sys.executable).parent / "pyflyte")
WAIT = timedelta(minutes=5)
POLL = timedelta(seconds=1)

SECRETS_MODULE = """
import os

from flytekit import Secret, current_context, task, workflow

FILE_GROUP, MISSING_GROUP, ENV_GROUP = {file_group!r}, {missing_group!r}, {env_group!r}


@task(secret_requests=[Secret(group=FILE_GROUP, key="token")])
def read_file_secret() -> str:
    return current_context().secrets.get(FILE_GROUP, "token")


@workflow
def from_file() -> str:
    return read_file_secret()


@task(secret_requests=[Secret(group=MISSING_GROUP, key="token")])
def read_missing_secret() -> str:
    return current_context().secrets.get(MISSING_GROUP, "token")


@workflow
def missing() -> str:
    return read_missing_secret()


@task(secret_requests=[Secret(group=ENV_GROUP, key="token", env_var="API_TOKEN",
                              mount_requirement=Secret.MountType.ENV_VAR)])
def read_env_secret() -> str:
    return current_context().secrets.get(ENV_GROUP, "token") + "|" + os.environ["API_TOKEN"]


@workflow
def from_env() -> str:
    return read_env_secret()
"""


@pytest.fixture(scope="module")
def groups():
    suffix = uuid.uuid4().hex[:8]
    return {"file_group": f"file{suffix}", "missing_group": f"missing{suffix}", "env_group": f"env{suffix}"}


@pytest.fixture(scope="module")
def registered(sandbox, groups, tmp_path_factory):
    """The module registered (fast) with stock pyflyte; returns (module name, version)."""
    project = tmp_path_factory.mktemp("secrets-project")
    module = f"secrets_{uuid.uuid4().hex[:8]}"
    (project / f"{module}.py").write_text(SECRETS_MODULE.format(**groups))
    version = f"sec-{uuid.uuid4().hex[:8]}"
    result = subprocess.run([PYFLYTE, "-c", str(sandbox.config_file), "register", "--version", version, f"{module}.py"],
                            cwd=project, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return module, version


def run(remote, registered, workflow: str):
    module, version = registered
    lp = remote.fetch_launch_plan(name=f"{module}.{workflow}", version=version)
    return remote.wait(remote.execute(lp, inputs={}), timeout=WAIT, poll_interval=POLL)


def test_secret_in_the_data_dir_reaches_the_task(sandbox, remote, registered, groups):
    secret = sandbox.data_dir / "secrets" / groups["file_group"] / "token"
    secret.parent.mkdir(parents=True)
    secret.write_text("s3cr3t\n")
    execution = run(remote, registered, "from_file")
    assert execution.closure.phase == WorkflowExecutionPhase.SUCCEEDED, execution.error
    assert execution.outputs["o0"] == "s3cr3t"


def test_secret_in_the_sandbox_environment_reaches_the_task_under_its_env_var(remote, registered, groups,
                                                                             monkeypatch):
    # the session sandbox runs in this process: its environment is ours
    monkeypatch.setenv(f"_FSEC_{groups['env_group'].upper()}_TOKEN", "from-env")
    execution = run(remote, registered, "from_env")
    assert execution.closure.phase == WorkflowExecutionPhase.SUCCEEDED, execution.error
    assert execution.outputs["o0"] == "from-env|from-env"


def test_missing_secret_fails_up_front_saying_where_to_put_it(sandbox, remote, registered, groups):
    execution = run(remote, registered, "missing")
    assert execution.closure.phase == WorkflowExecutionPhase.FAILED
    message = execution.error.message
    assert f"Secret(group={groups['missing_group']!r}, key='token')" in message
    assert str(sandbox.data_dir / "secrets" / groups["missing_group"] / "token") in message
    assert f"_FSEC_{groups['missing_group'].upper()}_TOKEN" in message
    assert "Please make sure to add secret_requests" not in message  # flytekit's, from inside the task
