"""Shared fixtures: one real `fastreg sandbox` per test session, and stock flytekit clients on it."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"

# Tasks run by the sandbox use this interpreter's environment (pyflyte-fast-execute etc.).
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory):
    """A sandbox on a random loopback port, with its own data dir, for the whole session."""
    from fastreg_magic import sandbox as sandbox_api

    handle = sandbox_api.start(data_dir=tmp_path_factory.mktemp("sandbox-data"), port=0)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def remote(sandbox):
    """Stock FlyteRemote pointed at the session sandbox through its config file."""
    from flytekit.configuration import Config
    from flytekit.remote import FlyteRemote

    return FlyteRemote(
        Config.auto(config_file=str(sandbox.config_file)),
        default_project="flytesnacks",
        default_domain="development",
        interactive_mode_enabled=False,
    )


@pytest.fixture(scope="module")
def sandbox_shell(sandbox):
    """A real InteractiveShell with the extension loaded, registering on the session sandbox."""
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "fastreg_magic")
    ip.run_line_magic("config", f"FlyteFast.config_file = {str(sandbox.config_file)!r}")
    yield ip
    ip.run_line_magic("config", "FlyteFast.config_file = ''")


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def s3_endpoint(monkeypatch):
    """A real S3 API (moto's server) on loopback, with the AWS settings s3fs and botocore read, so the
    kernel and a sandbox started afterwards reach it."""
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in (("AWS_ENDPOINT_URL", endpoint), ("AWS_ACCESS_KEY_ID", "testing"),
                        ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    # fsspec keeps one S3FileSystem per set of arguments for the process, with the endpoint botocore read
    # from the environment when it was made: an earlier test's server, stopped since.
    s3fs = pytest.importorskip("s3fs")
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint):
    """A fresh bucket (``s3.bucket``) on that S3 API, through s3fs."""
    import uuid

    s3fs = pytest.importorskip("s3fs")
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}, skip_instance_cache=True)
    fs.bucket = f"bucket-{uuid.uuid4().hex[:8]}"  # moto keeps buckets process-wide
    fs.mkdir(fs.bucket)
    return fs


def have_chromium() -> bool:
    return shutil.which("chromium") is not None


_LEFT_BEHIND: list[str] = []


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_session(tmp_path_factory):
    """Task processes and background sandboxes run in their own sessions, so nothing ends them
    when a test forgets to (or fails before it can). At the end of the session every process
    still naming this session's temporary directory is ended, and listed in the summary."""
    root = tmp_path_factory.getbasetemp().resolve()
    yield
    from fastreg_magic.sandbox.recovery import end_process_groups

    groups = end_process_groups(str(root) + os.sep, settle_seconds=0)
    _LEFT_BEHIND.extend(str(group) for group in groups)


def pytest_terminal_summary(terminalreporter):
    if _LEFT_BEHIND:
        terminalreporter.section("processes left behind")
        terminalreporter.write_line(f"ended process groups still running under the session's tmp dir: "
                                    f"{', '.join(_LEFT_BEHIND)} (a test did not stop what it started)")
