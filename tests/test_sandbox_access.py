"""Only the user who started the sandbox can use it: the access token, the private data dir, what
DataProxy signs. Another local user is played by uid 65534 (``setpriv``), the owner by stock flytekit
with the config file the sandbox wrote, and by the magic given only ``--endpoint``.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

import pytest
from IPython.core.error import UsageError

from fastreg_magic.sandbox import access
from sandbox_support import grpc_code, grpc_details

NOBODY = 65534
PYFLYTE = str(Path(sys.executable).parent / "pyflyte")
WORKFLOW = textwrap.dedent(
    """
    from flytekit import task, workflow

    @task
    def add_one(x: int) -> int:
        return x + 1

    @workflow
    def plus_one(x: int = 1) -> int:
        return add_one(x=x)
    """
)


@pytest.fixture
def shared_folder():
    """A folder every local user can enter, as /tmp or a lab's shared disk: only the sandbox's own
    permissions stand between its data and another user."""
    folder = Path(tempfile.mkdtemp(prefix="fastreg-access-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def own_sandbox(shared_folder):
    from fastreg_magic import sandbox as sandbox_api

    data_dir = shared_folder / "sandbox-data"
    (data_dir / "secrets").mkdir(parents=True)
    (data_dir / "secrets").chmod(0o755)  # made by hand before, as open as the umask left it
    (data_dir / "secrets" / "db_password").write_text("hunter2")
    handle = sandbox_api.start(data_dir=data_dir, port=0, config_out=shared_folder / "sandbox.yaml")
    try:
        yield handle
    finally:
        handle.stop()


def as_another_user(*command: str, cwd: Path) -> subprocess.CompletedProcess:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("playing another local user needs root and setpriv")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


ANOTHER_USER = textwrap.dedent(
    """
    import sys, grpc
    from flyteidl.admin import common_pb2, execution_pb2, project_pb2, task_pb2
    from flyteidl.core import identifier_pb2
    from flyteidl.service import admin_pb2_grpc, dataproxy_pb2, dataproxy_pb2_grpc

    endpoint, data_dir, token_path = sys.argv[1], sys.argv[2], sys.argv[3]
    channel = grpc.insecure_channel(endpoint)
    admin, proxy = admin_pb2_grpc.AdminServiceStub(channel), dataproxy_pb2_grpc.DataProxyServiceStub(channel)
    task = identifier_pb2.Identifier(resource_type=identifier_pb2.TASK, project="flytesnacks",
                                     domain="development", name="evil", version="1")
    calls = {
        "list": lambda: admin.ListProjects(project_pb2.ProjectListRequest()),
        "register": lambda: admin.CreateTask(task_pb2.TaskCreateRequest(id=task)),
        "launch": lambda: admin.CreateExecution(execution_pb2.ExecutionCreateRequest(
            project="flytesnacks", domain="development", name="evil")),
        "download": lambda: proxy.CreateDownloadLocation(dataproxy_pb2.CreateDownloadLocationRequest(
            native_url=data_dir + "/secrets/db_password")),
    }
    for name, call in calls.items():
        try:
            call()
            print(name, "OK")
        except grpc.RpcError as err:
            print(name, err.code().name, err.details())
    for path in (data_dir + "/sandbox.db", token_path, data_dir + "/secrets/db_password"):
        try:
            open(path).read()
            print("read", path, "OK")
        except OSError as err:
            print("read", path, type(err).__name__)
    """
)


def test_another_local_user_can_neither_call_the_sandbox_nor_read_its_data(own_sandbox, shared_folder):
    script = shared_folder / "another_user.py"
    script.write_text(ANOTHER_USER)
    script.chmod(0o644)
    token = access.token_file(own_sandbox.data_dir, own_sandbox.endpoint)
    done = as_another_user(sys.executable, str(script), own_sandbox.endpoint, str(own_sandbox.data_dir), str(token),
                           cwd=shared_folder)
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if not line.startswith("read "))
    assert set(lines) == {"list", "register", "launch", "download"}, done.stdout + done.stderr
    config_out = shared_folder / "sandbox.yaml"
    for name, answer in lines.items():
        assert answer == (f"UNAUTHENTICATED this sandbox at {own_sandbox.endpoint} needs its access token: use its "
                          f"config file {config_out} (--config {config_out}, pyflyte -c {config_out}, or "
                          f"FLYTECTL_CONFIG={config_out})"), name
    reads = [line for line in done.stdout.splitlines() if line.startswith("read ")]
    assert len(reads) == 3 and all(line.endswith("PermissionError") for line in reads), reads


def test_the_data_dir_and_what_names_the_token_are_the_owners_alone(own_sandbox, shared_folder):
    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    data_dir = own_sandbox.data_dir
    assert mode(data_dir) == 0o700
    assert mode(data_dir / "secrets") == 0o700  # tightened though it was there before
    assert mode(access.token_file(data_dir, own_sandbox.endpoint)) == 0o600
    assert mode(own_sandbox.config_file) == 0o600 and mode(shared_folder / "sandbox.yaml") == 0o600


def test_the_owners_stock_pyflyte_runs_with_the_config_file_and_nothing_else_does(own_sandbox, shared_folder):
    from flytekit.configuration import Config
    from flytekit.remote import FlyteRemote

    (shared_folder / "wf_access.py").write_text(WORKFLOW)
    ran = subprocess.run([PYFLYTE, "-c", str(own_sandbox.config_file), "run", "--remote", "wf_access.py",
                          "plus_one", "--x", "41"], cwd=shared_folder, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    name = re.search(r"executions/(\w+)", ran.stdout).group(1)
    remote = FlyteRemote(Config.auto(config_file=str(own_sandbox.config_file)), default_project="flytesnacks",
                         default_domain="development", interactive_mode_enabled=False)
    run = remote.wait(remote.fetch_execution(name=name))
    assert run.outputs["o0"] == 42

    endpoint_only = shared_folder / "endpoint-only.yaml"
    endpoint_only.write_text(f"admin:\n  endpoint: dns:///{own_sandbox.endpoint}\n  insecure: true\n")
    refused = subprocess.run([PYFLYTE, "-c", str(endpoint_only), "run", "--remote", "wf_access.py", "plus_one"],
                             cwd=shared_folder, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0
    assert len(remote.client.list_executions_paginated("flytesnacks", "development", limit=100)[0]) == 1


def test_dataproxy_signs_run_data_but_never_the_sandboxs_own_files(own_sandbox):
    import grpc
    from flytekit.configuration import Config
    from flytekit.remote import FlyteRemote

    remote = FlyteRemote(Config.auto(config_file=str(own_sandbox.config_file)), default_project="flytesnacks",
                         default_domain="development", interactive_mode_enabled=False)
    upload = own_sandbox.data_dir / "uploads" / "flytesnacks" / "development" / "root" / "data.txt"
    upload.parent.mkdir(parents=True)
    upload.write_text("mine to share")
    assert remote.client.get_download_signed_url(str(upload)).signed_url

    data_dir = own_sandbox.data_dir
    for private in ("secrets/db_password", "sandbox.db", f"access-token-{own_sandbox.port}", "config.yaml", "sandbox.json",
                    "uploads/../sandbox.db"):
        with pytest.raises(Exception) as refused:
            remote.client.get_download_signed_url(str(data_dir / private))
        assert grpc_code(refused.value) == grpc.StatusCode.PERMISSION_DENIED, private
        assert "is not data this sandbox serves" in grpc_details(refused.value)


CELL = WORKFLOW


def test_the_magic_given_only_the_endpoint_of_its_users_sandbox_presents_the_token(tmp_path, monkeypatch):
    """A sandbox started by `fastreg sandbox` elsewhere (another terminal): the kernel finds its token."""
    from IPython.core.interactiveshell import InteractiveShell

    from sandbox_support import SandboxProcess

    monkeypatch.chdir(tmp_path)
    sandbox = SandboxProcess(tmp_path / "terminal-sandbox")
    try:
        assert _answer_without_token(sandbox.endpoint) == "UNAUTHENTICATED"
        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "fastreg_magic")
        reg = shell.run_cell_magic("flyte_fast", f"-m acc_{uuid.uuid4().hex[:8]} --endpoint {sandbox.endpoint}", CELL)
        assert reg.registered and reg.backend.is_sandbox
        assert reg.launch(x=2).wait(timeout=300).phase == "SUCCEEDED"
    finally:
        sandbox.close()


def _answer_without_token(endpoint: str) -> str:
    import grpc
    from flyteidl.admin import version_pb2
    from flyteidl.service import admin_pb2_grpc

    with grpc.insecure_channel(endpoint) as channel:
        try:
            admin_pb2_grpc.AdminServiceStub(channel).GetVersion(version_pb2.GetVersionRequest(), timeout=30)
            return "OK"
        except grpc.RpcError as err:
            return err.code().name


def test_the_magic_without_the_token_says_where_it_is_in_one_message(tmp_path, monkeypatch):
    """Someone else's sandbox (its list of running sandboxes is not ours): one message, no traceback."""
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.chdir(tmp_path)
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "their-data"))
    data_dir = tmp_path / "their-sandbox"
    process = subprocess.Popen([sys.executable, "-m", "fastreg_magic.cli", "sandbox", "--port", "0", "--data-dir",
                                str(data_dir)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env=env, start_new_session=True)
    try:
        assert process.stdout.readline().startswith("fastreg sandbox ready on")
        endpoint = re.search(r"127\.0\.0\.1:\d+", (data_dir / "config.yaml").read_text()).group(0)
        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "fastreg_magic")
        with pytest.raises(UsageError) as refused:
            shell.run_cell_magic("flyte_fast", f"-m acc_{uuid.uuid4().hex[:8]} --endpoint {endpoint}", CELL)
    finally:
        process.terminate()
        process.wait(timeout=60)
    message = str(refused.value)
    assert (f"This sandbox at {endpoint} needs its access token: use its config file {data_dir / 'config.yaml'} "
            f"(--config {data_dir / 'config.yaml'}") in message
    assert "Traceback" not in message


class _Impostor:
    """A gRPC server on a port an earlier start of the sandbox had (another local user's, say): it answers
    flytekit's auth metadata as the sandbox does, refuses the rest, and keeps the tokens it is sent."""

    def __init__(self, port: int):
        import grpc
        from concurrent.futures import ThreadPoolExecutor
        from flyteidl.service import auth_pb2

        self.seen: list[str] = []
        impostor = self

        class Handler(grpc.GenericRpcHandler):
            def service(self, details):
                def answer(request, context):
                    impostor.seen += [value for key, value in context.invocation_metadata() if key == "authorization"]
                    if details.method.endswith("/GetPublicClientConfig"):
                        return auth_pb2.PublicClientAuthConfigResponse(authorization_metadata_key="authorization")
                    if details.method.endswith("/GetOAuth2Metadata"):
                        return auth_pb2.OAuth2MetadataResponse()
                    context.abort(grpc.StatusCode.UNAUTHENTICATED, "who are you")

                return grpc.unary_unary_rpc_method_handler(
                    answer, request_deserializer=lambda raw: raw,
                    response_serializer=lambda message: message.SerializeToString())

        self.server = grpc.server(ThreadPoolExecutor(max_workers=2), handlers=[Handler()])
        if self.server.add_insecure_port(f"127.0.0.1:{port}") != port:
            pytest.skip(f"port {port} was taken by something else meanwhile")
        self.server.start()

    def stop(self):
        self.server.stop(None)


def test_a_config_file_of_an_earlier_start_sends_the_token_to_nobody_else(shared_folder):
    """The sandbox started again on another port; its old config file names the old port, which someone
    else now holds. Neither stock flytekit nor the magic following that file sends them the current token."""
    from flytekit.clients.friendly import SynchronousFlyteClient
    from flytekit.configuration import Config

    from fastreg_magic import config
    from fastreg_magic import sandbox as sandbox_api
    from fastreg_magic.errors import FastRegError

    data_dir, old_config = shared_folder / "sandbox-data", shared_folder / "sandbox.yaml"
    first = sandbox_api.start(data_dir=data_dir, port=0, config_out=old_config)
    old_port = first.port
    first.stop()
    impostor = _Impostor(old_port)
    again = sandbox_api.start(data_dir=data_dir, port=0)
    try:
        assert again.port != old_port
        current = access.token_file(data_dir, again.endpoint).read_text().strip()
        with pytest.raises(Exception):
            SynchronousFlyteClient(Config.auto(config_file=str(old_config)).platform).list_projects()
        with pytest.raises(FastRegError):
            config.ensure_reachable(config.resolve_backend(config_file=str(old_config)))
        assert impostor.seen == [] or all(current not in seen for seen in impostor.seen), impostor.seen
        assert SynchronousFlyteClient(Config.auto(config_file=str(again.config_file)).platform).list_projects()
    finally:
        again.stop()
        impostor.stop()
