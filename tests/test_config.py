"""Where the Flyte connection comes from: explicit options, flytekit's own sources, else the sandbox."""

from __future__ import annotations

import socket

import pytest

from fastreg_magic import config
from fastreg_magic.errors import BackendError


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No Flyte configuration anywhere: empty HOME, no FLYTE* variables, a bare cwd."""
    for name in list(__import__("os").environ):
        if name.startswith(("FLYTE", "FLYTECTL")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _config_file(path, endpoint="flyte.acme.io:443", insecure=False, console=None):
    text = f"admin:\n  endpoint: dns:///{endpoint}\n  insecure: {'true' if insecure else 'false'}\n"
    if console:
        text += f"console:\n  endpoint: {console}\n"
    path.write_text(text)
    return str(path)


def test_explicit_endpoint_wins(clean_env, monkeypatch):
    monkeypatch.setenv("FLYTECTL_CONFIG", _config_file(clean_env / "c.yaml"))
    backend = config.resolve_backend(endpoint="flyte.other.io:443")
    assert backend.endpoint == "flyte.other.io:443" and not backend.insecure and not backend.is_sandbox
    assert backend.console_url == "https://flyte.other.io/console"


def test_loopback_endpoint_is_plaintext(clean_env):
    backend = config.resolve_backend(endpoint="127.0.0.1:30080")
    assert backend.insecure and backend.console_url == "http://127.0.0.1:30080/console"


def test_explicit_config_file(clean_env):
    path = _config_file(clean_env / "c.yaml", console="https://console.acme.io")
    backend = config.resolve_backend(config_file=path)
    assert backend.endpoint == "flyte.acme.io:443"
    assert backend.config_file == path
    assert backend.console_url == "https://console.acme.io/console"


def test_a_config_file_edited_or_overridden_between_cells_counts(clean_env, monkeypatch):
    import os

    path = _config_file(clean_env / "c.yaml", endpoint="one.acme.io:443")
    os.utime(path, ns=(1, 1))  # an old file: what was read from it is remembered
    assert config.resolve_backend(config_file=path).endpoint == "one.acme.io:443"
    _config_file(clean_env / "c.yaml", endpoint="two.acme.io:443")  # edited in another window
    assert config.resolve_backend(config_file=path).endpoint == "two.acme.io:443"
    os.utime(path, ns=(2, 2))
    assert config.resolve_backend(config_file=path).endpoint == "two.acme.io:443"
    monkeypatch.setenv("FLYTE_PLATFORM_URL", "three.acme.io:443")  # flytekit lets the variable win
    assert config.resolve_backend(config_file=path).endpoint == "three.acme.io:443"


def test_flytectl_config_env(clean_env, monkeypatch):
    monkeypatch.setenv("FLYTECTL_CONFIG", _config_file(clean_env / "c.yaml", endpoint="env.acme.io:8089"))
    assert config.resolve_backend().endpoint == "env.acme.io:8089"


def test_home_config(clean_env):
    (clean_env / "home" / ".flyte").mkdir()
    _config_file(clean_env / "home" / ".flyte" / "config.yaml", endpoint="home.acme.io:443")
    assert config.resolve_backend().endpoint == "home.acme.io:443"


def test_platform_url_env(clean_env, monkeypatch):
    monkeypatch.setenv("FLYTE_PLATFORM_URL", "url.acme.io:443")
    assert config.resolve_backend().endpoint == "url.acme.io:443"


def test_missing_config_file_is_named(clean_env):
    with pytest.raises(BackendError, match="nope.yaml does not exist"):
        config.resolve_backend(config_file="nope.yaml")


def test_malformed_endpoint(clean_env):
    with pytest.raises(BackendError, match="not HOST:PORT"):
        config.resolve_backend(endpoint="flyte example")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_backend_fails_fast_naming_it(clean_env):
    port = _closed_port()
    backend = config.resolve_backend(endpoint=f"127.0.0.1:{port}")
    with pytest.raises(BackendError, match=rf"127\.0\.0\.1:{port} is unreachable.*--endpoint HOST:PORT or --config FILE"):
        config.connect(backend, "flytesnacks", "development")


def test_a_port_that_is_not_flyteadmin(clean_env):
    """Something answers TCP but not gRPC: said plainly, not as a hang or an auth failure."""
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        backend = config.resolve_backend(endpoint=f"127.0.0.1:{port}")
        with pytest.raises(BackendError, match=rf"127\.0\.0\.1:{port} does not answer as FlyteAdmin"):
            config.connect(backend, "flytesnacks", "development")
    finally:
        server.close()


def test_connect_to_sandbox_is_cached(sandbox):
    backend = config.resolve_backend(config_file=str(sandbox.config_file))
    first = config.connect(backend, "flytesnacks", "development")
    assert config.connect(backend, "flytesnacks", "development") is first
    assert first._interactive_mode_enabled is False  # never pickle
    assert config.connect(backend, "flytesnacks", "staging") is not first


def test_nothing_configured_starts_the_embedded_sandbox(tmp_path):
    """A newcomer's first cell: no config anywhere, the magic starts the sandbox and says so once."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import textwrap

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYTE", "FLYTECTL", "XDG_"))}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"), XDG_CACHE_HOME=str(home / "cache"))
    code = textwrap.dedent(
        """
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "fastreg_magic")
        cell = "from flytekit import task\\n\\n@task\\ndef hi() -> str:\\n    return 'hi'\\n"
        reg = ip.run_cell_magic("flyte_fast", "-m first_cell", cell)
        again = ip.run_cell_magic("flyte_fast", "-m first_cell", cell)
        print("RESULT", reg.backend.is_sandbox, reg.backend.label, reg.registered, again.registered)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    state_files = list((home / "data").rglob("sandbox.json"))
    try:
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        notices = [line for line in lines if line.startswith("No Flyte backend configured: using the embedded sandbox")]
        assert len(notices) == 1 and "started it in the background" in notices[0]
        assert any(line.startswith("RESULT True embedded sandbox (") and line.endswith("True False") for line in lines)
    finally:
        for state in state_files:  # stop the background sandbox this test started, and see it gone
            pid = json.loads(state.read_text())["pid"]
            os.kill(pid, signal.SIGTERM)
            _wait_until_gone(pid)


def _wait_until_gone(pid: int, seconds: float = 15.0) -> None:
    import os
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def test_authentication_failure_is_a_backend_error(clean_env):
    """A server that refuses every call as UNAUTHENTICATED, as FlyteAdmin does with a bad token."""
    from concurrent import futures

    import grpc

    class Deny(grpc.GenericRpcHandler):
        def service(self, details):
            def handler(request, context):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "token expired or missing")

            return grpc.unary_unary_rpc_method_handler(handler)

    server = grpc.server(futures.ThreadPoolExecutor(2), handlers=[Deny()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        backend = config.resolve_backend(endpoint=f"127.0.0.1:{port}")
        with pytest.raises(BackendError, match="refused our credentials: token expired or missing"):
            config.connect(backend, "flytesnacks", "development")
    finally:
        server.stop(0)


def test_a_real_flyteadmin_is_not_taken_for_the_sandbox(clean_env):
    """Only GetVersion's Build names the sandbox: any other FlyteAdmin keeps its console URL."""
    from concurrent import futures

    import grpc
    from flyteidl.admin import project_pb2, version_pb2
    from flyteidl.service import admin_pb2_grpc

    class Admin(admin_pb2_grpc.AdminServiceServicer):
        def GetVersion(self, request, context):
            return version_pb2.GetVersionResponse(control_plane_version=version_pb2.Version(Build="flyteadmin"))

        def ListProjects(self, request, context):
            return project_pb2.Projects()

    server = grpc.server(futures.ThreadPoolExecutor(2))
    admin_pb2_grpc.add_AdminServiceServicer_to_server(Admin(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        backend = config.ensure_reachable(config.resolve_backend(endpoint=f"127.0.0.1:{port}"))
        assert not backend.is_sandbox
        assert backend.console_url == f"http://127.0.0.1:{port}/console"
    finally:
        server.stop(0)
