"""Launch options per run (``reg.with_options(...).launch(...)`` and the launch form's Options section):
recomputing a cached task, env vars reaching the task, labels and the rest read back by stock flytekit,
bad values refused before anything is sent. Against the session's sandbox."""

from __future__ import annotations

import contextlib
import textwrap
import time
import uuid

import pytest
from flyteidl.core.catalog_pb2 import CatalogCacheStatus

from fastreg_magic import LaunchOptions, api
from fastreg_magic.errors import RunError
from fastreg_magic.launch_options import LaunchOptionRefused
from fastreg_magic.widget_text import run_text

LIMIT_S = 300.0  # how long a step may take on a busy machine before the test gives up

CACHED = """
from flytekit import task, workflow

@task(cache=True, cache_version="1")
def stamp(x: int) -> int:
    with open({counter!r}, "a") as ran:
        ran.write("ran\\n")
    with open({counter!r}) as ran:
        return len(ran.read().split())

@workflow
def flow(x: int = 1) -> int:
    return stamp(x=x)
"""

# A workflow input called `envs`: launch's keywords are all inputs, the options go elsewhere.
GREETING = """
import os

from flytekit import task, workflow

@task
def greet(envs: str) -> str:
    return os.environ.get("GREETING", "unset") + "|" + envs

@workflow
def hello(envs: str = "input") -> str:
    return greet(envs=envs)
"""


def register(source: str, tmp_path, sandbox):
    module = f"opts_{uuid.uuid4().hex[:8]}"
    return api.fast_register(textwrap.dedent(source), module=module, source_root=tmp_path,
                             config_file=str(sandbox.config_file))


def until(condition, what: str):
    """Wait for ``condition()`` to hold (the widget launches and follows runs in the background)."""
    deadline = time.monotonic() + LIMIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def cache_status(remote, run):
    execution = remote.sync_execution(remote.fetch_execution(name=run.name), sync_nodes=True)
    return execution.node_executions["n0"].closure.task_node_metadata.cache_status


@contextlib.contextmanager
def relaunch_requests(reg):
    """The RelaunchExecution requests the kernel's client to ``reg``'s backend sends in the block."""
    import grpc
    from flyteidl.service.admin_pb2_grpc import AdminServiceStub

    from fastreg_magic import config

    sent = []

    class Capture(grpc.UnaryUnaryClientInterceptor):
        def intercept_unary_unary(self, continuation, details, request):
            if details.method.endswith("/RelaunchExecution"):
                sent.append(request)
            return continuation(details, request)

    client = config.shared_client(reg.backend)
    original = client._stub
    client._stub = AdminServiceStub(grpc.intercept_channel(client._channel, Capture()))
    try:
        yield sent
    finally:
        client._stub = original


def test_overwrite_cache_recomputes_a_cached_task_and_its_relaunch_does_too(sandbox, remote, tmp_path):
    counter = tmp_path / "ran.txt"
    reg = register(CACHED.format(counter=str(counter)), tmp_path, sandbox)

    first = reg.launch("flow", x=1).wait(timeout=LIMIT_S)
    cached = reg.launch("flow", x=1).wait(timeout=LIMIT_S)
    assert (first.outputs["o0"], cached.outputs["o0"]) == (1, 1)
    assert cache_status(remote, cached) == CatalogCacheStatus.CACHE_HIT

    fresh = reg.with_options(overwrite_cache=True).launch("flow", x=1).wait(timeout=LIMIT_S)
    assert fresh.phase == "SUCCEEDED", fresh.error
    assert fresh.outputs["o0"] == 2  # the task ran again
    assert cache_status(remote, fresh) == CatalogCacheStatus.CACHE_POPULATED
    assert fresh in reg.runs
    assert "  options: overwrite_cache=True" in run_text(fresh).splitlines()
    assert "options:" not in run_text(cached)

    # FlyteAdmin's RelaunchExecution takes overwrite_cache from the request, not from the run it copies
    with relaunch_requests(reg) as sent:
        again = fresh.relaunch().wait(timeout=LIMIT_S)
    assert [request.overwrite_cache for request in sent] == [True]
    assert again.outputs["o0"] == 3 and again.options.overwrite_cache
    assert reg.launch("flow", x=1).wait(timeout=LIMIT_S).outputs["o0"] == 3  # the recomputed value is cached now


def test_an_env_var_reaches_the_task_and_an_input_called_envs_stays_an_input(sandbox, tmp_path):
    reg = register(GREETING, tmp_path, sandbox)
    run = reg.with_options(envs={"GREETING": "hi"}).launch("hello", envs="given").wait(timeout=LIMIT_S)
    assert run.phase == "SUCCEEDED", run.error
    assert run.outputs["o0"] == "hi|given"
    assert run.inputs == {"envs": "given"} and run.options.envs == {"GREETING": "hi"}
    plain = reg.launch("hello").wait(timeout=LIMIT_S)
    assert plain.outputs["o0"] == "unset|input"


def test_labels_and_the_other_options_read_back_through_flytekit(sandbox, remote, tmp_path):
    from fastreg_magic import runs

    reg = register(GREETING, tmp_path, sandbox)
    name = f"nightly-{uuid.uuid4().hex[:8]}"
    nightly = LaunchOptions(
        labels={"team": "ml", "example.com/stage": "dev"}, annotations={"owner": "Jane Doe"}, tags=["nightly", "v2"],
        service_account="runner", raw_output_prefix=f"file://{tmp_path}/raw", max_parallelism=2,
        cluster_pool="gpu", interruptible=True, name=name,
    )
    run = reg.with_options(nightly).launch("hello").wait(timeout=LIMIT_S)
    assert run.name == name and run.phase == "SUCCEEDED", run.error

    spec = remote.fetch_execution(name=name).spec
    assert spec.labels.values == {"team": "ml", "example.com/stage": "dev"}
    assert spec.annotations.values == {"owner": "Jane Doe"}
    assert list(spec.tags) == ["nightly", "v2"]
    assert spec.security_context.run_as.k8s_service_account == "runner"
    assert spec.raw_output_data_config.output_location_prefix == f"file://{tmp_path}/raw"
    assert spec.max_parallelism == 2
    assert spec.cluster_assignment.cluster_pool == "gpu"
    assert spec.interruptible is True

    shown = run_text(run)
    assert "labels={'team': 'ml', 'example.com/stage': 'dev'}" in shown and "tags=['nightly', 'v2']" in shown
    watched = runs.attach(reg.remote, name)  # as %flyte_watch finds it: the options from its spec
    assert watched.options.labels == nightly.labels and watched.options.tags == ("nightly", "v2")
    assert "annotations={'owner': 'Jane Doe'}" in run_text(watched)

    with pytest.raises(RunError) as taken:
        reg.with_options(name=name).launch("hello")
    assert str(taken.value) == (f"A run named '{name}' exists already in flytesnacks/development. "
                                "Pick another name=, or leave it out for a fresh one.")


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(envs={"N": 3}), "Launch option envs: the value of 'N' is the int 3, not a str. "
                              "Every value is text: pass envs={'N': '3'}."),
        (dict(envs={"MY VAR": "x"}), "Launch option envs: 'MY VAR' is not a valid environment variable name."),
        (dict(labels={"Team Name": "ml"}), "Launch option labels: 'Team Name' is not a valid label key"),
        (dict(labels={"team": "ML team"}), "Launch option labels: the value 'ML team' of 'team' is not a valid label value."),
        (dict(labels={f"k{i}": "v" for i in range(17)}), "Launch option labels: 17 labels given; FlyteAdmin takes at most 16."),
        (dict(annotations={"a/b/c": "x"}), "Launch option annotations: 'a/b/c' is not a valid annotation key"),
        (dict(max_parallelism=-1), "Launch option max_parallelism: expected a whole number from 1 to 2147483647, "
                                   "got the int -1."),
        (dict(tags="nightly,v2"), "Launch option tags: expected a list of str, got the str 'nightly,v2'. "
                                  "Pass tags=['nightly', 'v2']."),
        (dict(name="My_Run"), "Launch option name: 'My_Run' is not a valid run name."),
        (dict(overwrite_cache="yes"), "Launch option overwrite_cache: expected True or False, got the str 'yes'."),
        (dict(env={"A": "1"}), "There is no launch option 'env'. Did you mean 'envs'?"),
    ],
)
def test_a_bad_option_is_refused_with_one_message_before_anything_is_sent(greeting, options, message):
    from sandbox_support import counting_admin_calls

    with counting_admin_calls(greeting.backend) as calls:
        with pytest.raises(RunError) as refused:
            greeting.with_options(**options).launch("hello")
    assert str(refused.value).startswith(message)
    assert calls.calls == [] and greeting.runs == []
    if isinstance(refused.value, LaunchOptionRefused):
        assert refused.value.option == next(iter(options))


@pytest.fixture(scope="module")
def greeting(sandbox, tmp_path_factory):
    return register(GREETING, tmp_path_factory.mktemp("greeting"), sandbox)


def test_the_launch_forms_options_launch_with_them(sandbox, remote, tmp_path):
    from fastreg_magic.widget_registration import RegistrationWidget

    reg = register(GREETING, tmp_path, sandbox)
    widget = RegistrationWidget(reg)
    try:
        form = widget.form("hello")
        editors = form.option_editors
        assert form.options_panel.selected_index is None  # collapsed until opened
        assert editors["overwrite_cache"].description == "recompute cached tasks"

        editors["envs"].value = "GREETING hi"
        assert form.launch_clicked() is None
        assert "line 1: expected KEY=VALUE, got &#x27;GREETING hi&#x27;" in form.option_problems["envs"].value
        assert "1 option to fix (env vars): nothing launched" in form.message.value
        assert form.options_panel.selected_index == 0  # opened, to show the problem
        assert widget.run_views == [] and reg.runs == []

        editors["envs"].value = "# for this run\nGREETING = hi"
        editors["labels"].value = "team=ml"
        editors["overwrite_cache"].value = True
        assert form.options_panel.get_title(0) == "Options: overwrite cache, env vars, labels"
        form.launch_button.click()
        assert form.message.value == "" and form.option_problems["envs"].value == ""
        until(lambda: widget.run_views and widget.run_views[-1].run is not None, "the run to start")
        view = widget.run_views[-1]
        run = view.run.wait(timeout=LIMIT_S)
        assert run.phase == "SUCCEEDED", run.error
        assert run.outputs["o0"] == "hi|input"
        assert "options <code>overwrite_cache=True, envs={&#x27;GREETING&#x27;: &#x27;hi&#x27;}" in view.inputs.value
        spec = remote.fetch_execution(name=run.name).spec
        assert spec.labels.values == {"team": "ml"} and spec.overwrite_cache is True
    finally:
        widget.close()
