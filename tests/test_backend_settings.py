"""Settings around the backend that must not lead the user astray: proxy variables, auth settings a
backend cannot honour, a sandbox's config file once that sandbox is gone, and config files flytekit
would silently ignore. Each is a real cell in a real InteractiveShell against the real sandbox (or a
real gRPC server that is not FlyteAdmin), with stock flytekit clients."""

from __future__ import annotations

import os
import re
import select
import socket
import textwrap
import threading
from concurrent import futures

import grpc
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from sandbox_support import PLUS_ONE_CELL as CELL

PROXY_VARIABLES = ("https_proxy", "http_proxy", "grpc_proxy", "HTTPS_PROXY", "HTTP_PROXY")


@pytest.fixture
def shell(tmp_path, monkeypatch):
    """A real InteractiveShell with the extension loaded; no Flyte settings from the environment."""
    for name in list(os.environ):
        if name.startswith("FLYTE") or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(tmp_path)
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "fastreg_magic")
    return ip


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dead_proxy(monkeypatch):
    """Every proxy variable names a proxy that is not there (nothing listens on its port)."""
    proxy = f"http://127.0.0.1:{_closed_port()}"
    for name in PROXY_VARIABLES:
        monkeypatch.setenv(name, proxy)
    return proxy


def _copy_of_sandbox_config(sandbox, tmp_path):
    """The session sandbox's config under a new name: a connection of its own, opened in this test."""
    copy = tmp_path / "sandbox-copy.yaml"
    copy.write_text(sandbox.config_file.read_text())
    return copy


def _fails(shell, options: str, cell: str = CELL) -> str:
    with pytest.raises(UsageError) as caught:
        shell.run_cell_magic("flyte_fast", options, cell)
    return str(caught.value)


# --- 1. proxy variables ---------------------------------------------------------------------------

def test_a_proxy_in_the_environment_does_not_stand_between_the_kernel_and_the_sandbox(
        shell, sandbox, tmp_path, dead_proxy):
    """gRPC and requests honour proxy variables; a proxy is never the way to this machine's loopback,
    for registering, uploading the archive, or the tasks the sandbox runs."""
    config = _copy_of_sandbox_config(sandbox, tmp_path)
    reg = shell.run_cell_magic("flyte_fast", f"-m proxied_cell --config {config}", CELL)
    assert reg.registered and reg.uploaded
    run = reg.launch(x=4).wait(timeout=300)
    assert (run.phase, run.outputs) == ("SUCCEEDED", {"o0": 5}), run.error


def test_an_eager_workflow_reaches_the_sandbox_past_a_proxy_in_the_environment(shell, sandbox, tmp_path, dead_proxy):
    """An eager workflow's task calls the sandbox over gRPC from its own process, which inherits the proxy."""
    cell = textwrap.dedent(
        """
        from flytekit import eager, task

        @task
        def add_one(x: int) -> int:
            return x + 1

        @eager
        async def twice_plus_one(x: int = 1) -> int:
            return add_one(x=add_one(x=x))
        """
    )
    reg = shell.run_cell_magic("flyte_fast", f"-m proxied_eager --config {sandbox.config_file}", cell)
    run = reg.launch("twice_plus_one", x=3).wait(timeout=300)
    assert run.phase == "SUCCEEDED", run.error
    assert list(run.outputs.values()) == [5]


def test_the_background_sandbox_answers_its_readiness_check_past_a_proxy(sandbox, dead_proxy):
    from fastreg_magic.sandbox import background

    assert background.answers(sandbox.endpoint)
    assert background.wait_answering(sandbox.data_dir)["endpoint"] == sandbox.endpoint


def test_creating_a_project_on_the_sandbox_goes_past_a_proxy(sandbox, dead_proxy, capsys):
    from fastreg_magic.cli import main

    assert main(["sandbox", "--data-dir", str(sandbox.data_dir), "--create-project", "proxied"]) == 0
    assert "created project proxied" in capsys.readouterr().out


class ConnectProxy:
    """A real HTTP CONNECT proxy on loopback, as a corporate network has one: it tunnels every CONNECT
    to ``127.0.0.1`` on the port asked for, whatever the host name (which need not resolve here),
    or refuses every tunnel with 403 when ``refuse`` is set."""

    def __init__(self, refuse: bool = False):
        self.refuse = refuse
        self.tunnels: list[str] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        with client:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = client.recv(4096)
                if not chunk:
                    return
                request += chunk
            target = request.split()[1].decode()
            self.tunnels.append(target)
            if self.refuse:
                client.sendall(b"HTTP/1.1 403 Forbidden\r\n\r\n")
                return
            with socket.create_connection(("127.0.0.1", int(target.rsplit(":", 1)[1]))) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                _pipe(client, upstream)

    def stop(self):
        self._server.close()


def _pipe(one, other):
    while True:
        ready, _, _ = select.select([one, other], [], [])
        for side in ready:
            data = side.recv(65536)
            if not data:
                return
            (other if side is one else one).sendall(data)


@pytest.fixture
def corporate_proxy(monkeypatch):
    proxy = ConnectProxy()
    monkeypatch.setenv("https_proxy", proxy.url)
    yield proxy
    proxy.stop()


def test_a_cluster_behind_a_corporate_proxy_is_still_reached_through_it(shell, sandbox, corporate_proxy):
    """A name that only the proxy knows: registering works because the proxy variable is honoured."""
    port = sandbox.endpoint.rsplit(":", 1)[1]
    reg = shell.run_cell_magic(
        "flyte_fast", f"-m behind_proxy --endpoint http://flyte.corp.invalid:{port} --config {sandbox.config_file}", CELL)
    assert reg.registered
    assert f"flyte.corp.invalid:{port}" in corporate_proxy.tunnels


def test_a_dead_proxy_on_the_way_to_a_cluster_is_named_with_its_variable(shell, monkeypatch):
    proxy = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("https_proxy", proxy)
    message = _fails(shell, "-m dead_proxy --endpoint flyte.corp.invalid:443")
    assert "flyte.corp.invalid:443 is unreachable: the proxy does not answer" in message
    assert f"https_proxy={proxy}" in message
    assert "add it to no_proxy" in message


def test_a_proxy_refusing_the_tunnel_to_a_cluster_is_named_with_its_variable(shell, monkeypatch):
    proxy = ConnectProxy(refuse=True)
    monkeypatch.setenv("http_proxy", proxy.url)
    try:
        message = _fails(shell, "-m refused_proxy --endpoint http://flyte.corp.invalid:8089")
    finally:
        proxy.stop()
    assert "flyte.corp.invalid:8089 does not answer as FlyteAdmin" in message
    assert f"http_proxy={proxy.url}" in message and "add it to no_proxy" in message


# --- 2. auth settings the backend has no service for ---------------------------------------------

def _auth_config(tmp_path, endpoint: str, auth_type: str):
    (tmp_path / "client-secret").write_text("s3cret")
    config = tmp_path / f"{auth_type}.yaml"
    config.write_text(textwrap.dedent(f"""\
        admin:
          endpoint: dns:///{endpoint}
          insecure: true
          authType: {auth_type}
          clientId: notebook
          clientSecretLocation: {tmp_path / 'client-secret'}
          command: ["echo", "token"]
        """))
    return config


@pytest.mark.parametrize("auth_type", ["ClientSecret", "DeviceFlow", "ExternalCommand"])
def test_auth_settings_against_a_backend_without_auth_are_named(shell, admin_without_auth, tmp_path, auth_type):
    config = _auth_config(tmp_path, admin_without_auth, auth_type)
    message = _fails(shell, f"-m auth_less --config {config}")
    assert message.startswith(f"The Flyte config {config} asks for authentication (authType: {auth_type}), "
                              f"but the backend at {admin_without_auth} has no auth service.")
    assert "Remove authType" in message and "distribution-dir" not in message


def test_register_files_with_auth_settings_against_a_backend_without_auth(admin_without_auth, tmp_path, capsys):
    from fastreg_magic.cli import main

    module = tmp_path / "auth_less_files.py"
    module.write_text(CELL)
    assert main(["serialize", str(module), "-o", str(tmp_path / "out")]) == 0
    config = _auth_config(tmp_path, admin_without_auth, "ClientSecret")
    assert main(["register-files", str(tmp_path / "out"), "--config", str(config)]) != 0
    err = capsys.readouterr().err
    assert "asks for authentication (authType: ClientSecret)" in err and "distribution-dir" not in err


@pytest.fixture
def not_flyteadmin():
    """A real gRPC server that serves nothing at all: some other service on the port the user named."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def test_a_grpc_server_that_is_not_flyteadmin_is_said_to_be_so(shell, not_flyteadmin):
    message = _fails(shell, f"-m not_admin --endpoint {not_flyteadmin}")
    assert message.startswith(f"Flyte backend {not_flyteadmin} answers gRPC but is not a FlyteAdmin")
    assert "DataProxy" not in message.split(":", 1)[0] and "distribution-dir" not in message


def test_a_grpc_server_that_is_not_flyteadmin_with_auth_settings_is_said_to_be_so(shell, not_flyteadmin, tmp_path):
    config = _auth_config(tmp_path, not_flyteadmin, "ClientSecret")
    assert "is not a FlyteAdmin" in _fails(shell, f"-m not_admin_auth --config {config}")


# --- 3. a sandbox that re-running the cell does not start ------------------------------------------

def test_the_config_of_a_stopped_sandbox_says_how_to_start_that_sandbox(shell, tmp_path):
    from fastreg_magic import sandbox as sandbox_api

    data_dir, config = tmp_path / "team-sandbox", tmp_path / "A.yaml"
    sandbox_api.start(data_dir=data_dir, port=0, config_out=config).stop()
    message = _fails(shell, f"-m stopped_sandbox --config {config}")
    assert "is unreachable" in message and "re-run the cell" not in message
    assert (f"The sandbox that wrote {config} is not running: start it again "
            f"(`fastreg sandbox --data-dir {data_dir} --config-out {config}`) or pass another --config.") in message


def test_an_endpoint_from_flyte_platform_url_is_labelled_so(shell, sandbox, monkeypatch):
    port = _closed_port()
    monkeypatch.setenv("FLYTE_PLATFORM_URL", f"127.0.0.1:{port}")
    message = _fails(shell, f"-m platform_url --config {sandbox.config_file}")
    assert message.startswith(f"Flyte backend 127.0.0.1:{port} (from FLYTE_PLATFORM_URL) is unreachable")
    assert "embedded sandbox" not in message and "re-run the cell" not in message
    assert f"FLYTE_PLATFORM_URL=127.0.0.1:{port} is used over the endpoint of {sandbox.config_file}" in message


# --- 4. config files flytekit would ignore ---------------------------------------------------------

def test_a_config_file_with_a_yaml_error_names_the_file_and_line(shell, tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("admin:\n  endpoint: dns:///flyte.acme.io:443\n   insecure: true\n")
    message = _fails(shell, f"-m broken_yaml --config {config}")
    assert re.match(rf"Flyte config {re.escape(str(config))} cannot be read: .*\(line 3, column \d+\)\.", message)
    assert "localhost:30080" not in message


def test_a_home_config_with_a_yaml_error_is_named_not_replaced_by_localhost(shell, tmp_path):
    home_config = tmp_path / "home" / ".flyte" / "config.yaml"
    home_config.parent.mkdir()
    home_config.write_text("admin: [endpoint: dns:///flyte.acme.io:443\n")
    message = _fails(shell, "-m broken_home")
    assert message.startswith(f"Flyte config {home_config} cannot be read: ")
    assert "localhost:30080" not in message


def test_a_config_file_without_an_endpoint_says_so(shell, tmp_path):
    config = tmp_path / "no-endpoint.yaml"
    config.write_text("admin:\n  insecure: true\n")
    message = _fails(shell, f"-m no_endpoint --config {config}")
    assert message.startswith(f"Flyte config {config} names no admin.endpoint")
    assert "--endpoint HOST:PORT" in message and "localhost:30080" not in message


class WithoutService(grpc.GenericRpcHandler):
    """A FlyteAdmin without one of its services (as older ones are, or one without auth): every other
    call is passed on to the session sandbox as it came, bytes in, bytes out, with the sandbox's token."""

    def __init__(self, sandbox, service: str = "DataProxyService"):
        from fastreg_magic.sandbox.access import bearer

        self._channel = grpc.insecure_channel(sandbox.endpoint)
        self._missing = f"/flyteidl.service.{service}/"
        self._token = bearer(sandbox.data_dir)

    def service(self, handler_call_details):
        method = handler_call_details.method
        if method.startswith(self._missing):
            return None  # UNIMPLEMENTED, as gRPC answers for a service the server does not have
        forward = self._channel.unary_unary(method)

        def call(request: bytes, context) -> bytes:
            try:
                return forward(request, metadata=self._token)
            except grpc.RpcError as exc:
                context.abort(exc.code(), exc.details())

        return grpc.unary_unary_rpc_method_handler(call)


@pytest.fixture
def admin_without_dataproxy(sandbox):
    yield from _admin_without(sandbox, "DataProxyService")


@pytest.fixture
def admin_without_auth(sandbox):
    yield from _admin_without(sandbox, "AuthMetadataService")


def _admin_without(sandbox, service: str):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[WithoutService(sandbox, service)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def test_register_files_on_a_backend_without_dataproxy_names_its_own_option(admin_without_dataproxy, tmp_path, capsys):
    from fastreg_magic.cli import main

    module = tmp_path / "no_dataproxy_files.py"
    module.write_text(CELL)
    assert main(["serialize", str(module), "-o", str(tmp_path / "out")]) == 0
    assert main(["register-files", str(tmp_path / "out"), "--endpoint", admin_without_dataproxy]) != 0
    err = capsys.readouterr().err
    assert "has no DataProxy" in err and "--additional-distribution-dir" in err
