"""Where the Flyte connection comes from: explicit options, flytekit's own sources, else the sandbox."""

from __future__ import annotations

import socket

import pytest

from fastreg_magic import config
from fastreg_magic.errors import BackendError
from sandbox_support import PLUS_ONE_CELL as CELL



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


def _kernel_with_nothing_configured(tmp_path, code: str):
    """Run ``code`` in a fresh interpreter whose user has no Flyte config and a home of its own; the
    background sandbox it starts is stopped afterwards. Returns the finished process."""
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
    try:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
    finally:
        for state in (home / "data").rglob("sandbox.json"):  # stop the background sandbox, and see it gone
            pid = json.loads(state.read_text())["pid"]
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            _wait_until_gone(pid)


def test_nothing_configured_starts_the_embedded_sandbox(tmp_path):
    """A newcomer's first cell: no config anywhere, the magic starts the sandbox and says so once."""
    result = _kernel_with_nothing_configured(tmp_path, """
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "fastreg_magic")
        cell = "from flytekit import task\\n\\n@task\\ndef hi() -> str:\\n    return 'hi'\\n"
        reg = ip.run_cell_magic("flyte_fast", "-m first_cell", cell)
        again = ip.run_cell_magic("flyte_fast", "-m first_cell", cell)
        print("RESULT", reg.backend.is_sandbox, reg.backend.label, reg.registered, again.registered)
        """)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    notices = [line for line in lines if line.startswith("No Flyte backend configured: using the embedded sandbox")]
    assert len(notices) == 1 and "started it in the background" in notices[0]
    assert "Warning: the embedded sandbox" not in result.stdout  # started from this kernel's own environment
    assert any(line.startswith("RESULT True embedded sandbox (") and line.endswith("True False") for line in lines)


def test_a_launch_right_after_the_cell_restarted_the_sandbox_goes_through(tmp_path):
    """The sandbox died; the next cell starts it again behind the same address. The kernel's connection,
    which failed meanwhile, must not make the very next launch fail while it waits to reconnect."""
    result = _kernel_with_nothing_configured(tmp_path, """
        import json, os, pathlib, signal, time
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "fastreg_magic")
        cell = "from flytekit import task\\n\\n@task\\ndef hi() -> str:\\n    return 'hi'\\n"
        reg = ip.run_cell_magic("flyte_fast", "-m restarted_cell", cell)
        assert reg.launch().wait(timeout=120).phase == "SUCCEEDED"
        state = next(pathlib.Path(os.environ["XDG_DATA_HOME"]).rglob("sandbox.json"))
        os.kill(json.loads(state.read_text())["pid"], signal.SIGKILL)
        time.sleep(2)
        try:
            reg.launch()
        except Exception as exc:
            print("WHILE DOWN", type(exc).__name__)
        reg = ip.run_cell_magic("flyte_fast", "-m restarted_cell", cell)  # starts it again, same data dir
        print("RESULT", reg.launch().wait(timeout=120).phase)
        """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "WHILE DOWN" in result.stdout and "RESULT SUCCEEDED" in result.stdout, result.stdout


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


# --- a cluster's settings, as a notebook user changes them ---------------------------------------


@pytest.fixture
def cluster(sandbox, tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from tls_backend import ClusterAdmin

    admin = ClusterAdmin(sandbox, tmp_path / "certs")
    try:
        yield admin
    finally:
        admin.stop()


def _backdated(path, seconds=10):
    """As a file edited a while ago (a stamp that differs from the previous version's)."""
    import os
    import time

    then = time.time() - seconds
    os.utime(path, (then, then))
    return str(path)


def test_a_tls_cluster_with_a_private_ca_registers_and_runs(clean_env, cluster):
    from fastreg_magic import api

    cfg = _backdated(cluster.config_file(clean_env / "cluster.yaml", ca=cluster.ca))
    reg = api.fast_register(CELL, module="tls_flow", config_file=cfg, source_root=clean_env)
    assert not reg.backend.is_sandbox and reg.backend.console_url == f"https://localhost:{cluster.port}/console"
    run = reg.launch("plus_one", x=1).wait(timeout=300)
    assert (run.phase, run.outputs) == ("SUCCEEDED", {"o0": 2}), run.error


def test_a_config_file_fixed_in_place_counts_at_the_next_cell(clean_env, cluster):
    """The CA file was the wrong one; the user fixes that line of the same file and re-runs."""
    from flyteidl.admin import project_pb2

    path = clean_env / "cluster.yaml"
    cfg = _backdated(cluster.config_file(path, ca=cluster.wrong_ca), seconds=20)
    with pytest.raises(BackendError) as caught:
        config.connect(config.resolve_backend(config_file=cfg), "flytesnacks", "development")
    assert "CERTIFICATE_VERIFY_FAILED" in caught.value.message and "caCertFilePath" in caught.value.hint
    cfg = _backdated(cluster.config_file(path, ca=cluster.ca))
    backend = config.ensure_reachable(config.resolve_backend(config_file=cfg))
    assert config.admin_client(backend).list_projects(project_pb2.ProjectListRequest()).projects


def test_an_unknown_project_on_a_cluster_names_flytectl_not_the_sandbox_command(clean_env, cluster):
    """The embedded sandbox's `fastreg sandbox --create-project` is no help on a cluster: flytectl is."""
    from fastreg_magic import api
    from fastreg_magic.errors import RegistrationError

    cfg = _backdated(cluster.config_file(clean_env / "cluster.yaml", ca=cluster.ca))
    with pytest.raises(RegistrationError) as refused:
        api.fast_register(CELL, module="no_project", project="nowhere", config_file=cfg, source_root=clean_env)
    assert "flytectl create project --id nowhere --name nowhere" in refused.value.hint
    assert "fastreg sandbox" not in refused.value.hint


@pytest.mark.parametrize("setting", ["missing CA file", "skip verification of a plaintext port", "no handshake"])
def test_tls_settings_that_cannot_work_are_one_message(clean_env, cluster, sandbox, setting):
    import threading

    if setting == "missing CA file":
        text = f"admin:\n  endpoint: dns:///localhost:{cluster.port}\n  caCertFilePath: {clean_env}/no-such-ca.pem\n"
        expected = "No such file or directory"
    elif setting == "skip verification of a plaintext port":
        text = f"admin:\n  endpoint: dns:///localhost:{sandbox.port}\n  insecureSkipVerify: true\n"
        expected = "WRONG_VERSION_NUMBER"
    else:  # accepts the connection, never answers the handshake (a stuck load balancer)
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        held = []
        threading.Thread(target=lambda: [held.append(silent.accept()) for _ in range(4)], daemon=True).start()
        text = f"admin:\n  endpoint: dns:///localhost:{silent.getsockname()[1]}\n  insecureSkipVerify: true\n"
        expected = "timed out"
    (clean_env / "c.yaml").write_text(text)
    with pytest.raises(BackendError) as caught:
        config.connect(config.resolve_backend(config_file=str(clean_env / "c.yaml")), "flytesnacks", "development")
    assert caught.value.message.startswith("Cannot open a TLS connection to Flyte backend localhost:")
    assert expected in caught.value.message and "TLS settings" in caught.value.hint


def test_endpoint_with_a_config_file_keeps_the_files_insecure_and_console(clean_env):
    secure = _config_file(clean_env / "secure.yaml", endpoint="flyte.acme.io:443", console="https://ui.acme.io")
    backend = config.resolve_backend(endpoint="localhost:8089", config_file=secure)
    assert (backend.endpoint, backend.insecure) == ("localhost:8089", False)  # the file says TLS, loopback or not
    assert backend.console_url == "https://ui.acme.io/console"
    plain = _config_file(clean_env / "plain.yaml", endpoint="flyte.acme.io:80", insecure=True)
    assert config.resolve_backend(endpoint="10.0.0.7:80", config_file=plain).insecure is True
    assert config.resolve_backend(endpoint="https://10.0.0.7:443", config_file=plain).insecure is False  # said so


def test_settings_of_a_config_file_no_longer_named_do_not_linger(clean_env, monkeypatch):
    """flytekit remembers the first config file it found; an environment-only backend reads none."""
    from flytekit.configuration import Config
    from flytekit.configuration.file import get_config_file

    named = _config_file(clean_env / "a.yaml", endpoint="a.acme.io:443", console="https://console-of-a.acme.io")
    monkeypatch.setenv("FLYTECTL_CONFIG", named)
    get_config_file.cache_clear()  # as in a kernel that imported flytekit while FLYTECTL_CONFIG was set:
    Config.auto()  # flytekit's own code looks for a config file, and remembers the one it found
    assert config.resolve_backend().console_url == "https://console-of-a.acme.io/console"
    monkeypatch.delenv("FLYTECTL_CONFIG")
    monkeypatch.setenv("FLYTE_PLATFORM_URL", "127.0.0.1:30080")
    monkeypatch.setenv("FLYTE_PLATFORM_INSECURE", "true")
    backend = config.resolve_backend()
    assert backend.config_file is None and backend.console_url == "http://127.0.0.1:30080/console"


def test_flytectl_config_naming_a_missing_file_is_an_error_not_the_sandbox(clean_env, monkeypatch):
    monkeypatch.setenv("FLYTECTL_CONFIG", str(clean_env / "company-cluster.yaml"))
    with pytest.raises(BackendError, match=r"FLYTECTL_CONFIG names .*company-cluster\.yaml, which does not exist"):
        config.resolve_backend()


def test_the_python_api_with_nothing_configured_says_so_and_prints_readably(tmp_path):
    """A script calling fast_register() with no Flyte config: warned once that the embedded sandbox took
    the release and runs on in the background; print(reg) is the text summary, not the dataclass."""
    result = _kernel_with_nothing_configured(tmp_path, """
        import fastreg_magic
        cell = "from flytekit import task\\n\\n@task\\ndef hi() -> str:\\n    return 'hi'\\n"
        reg = fastreg_magic.fast_register(cell, module="script_cell")
        print(reg)
        """)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("No Flyte backend configured: using the embedded sandbox") == 1
    assert "started it in the background" in result.stderr
    assert result.stdout.startswith("Registered script_cell version ")
    assert "Registration(" not in result.stdout and "timings=" not in result.stdout
