"""`fastreg sandbox` as a user runs it, and `ensure_running` as the magic uses it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from fastreg_magic.sandbox.background import answers, read_state
from fastreg_magic.sandbox.claim import process_is_alive

FASTREG = [sys.executable, "-m", "fastreg_magic.cli"]
READY = "fastreg sandbox ready on 127.0.0.1:"
DEADLINE_SECONDS = 300  # generous: a loaded machine starts Python and imports grpc slowly


def launch(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*FASTREG, "sandbox", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def ready_line(process: subprocess.Popen) -> str:
    line = process.stdout.readline()
    assert line.startswith(READY), line + process.stderr.read()
    return line


def test_ready_line_config_file_and_clean_sigterm(tmp_path):
    data_dir, config = tmp_path / "data", tmp_path / "flyte.yaml"
    process = launch("--port", "0", "--data-dir", str(data_dir), "--config-out", str(config))
    try:
        line = ready_line(process)
        endpoint = line[len("fastreg sandbox ready on "):].split()[0]
        text = config.read_text()
        assert f"endpoint: dns:///{endpoint}" in text and "insecure: true" in text
        assert answers(endpoint)
        from flytekit.configuration import Config
        from flytekit.remote import FlyteRemote

        remote = FlyteRemote(Config.auto(config_file=str(config)), default_project="flytesnacks",
                             default_domain="development", interactive_mode_enabled=False)
        assert "flytesnacks" in {p.id for p in remote.list_projects()}
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=DEADLINE_SECONDS)
    assert process.returncode == 0, err
    assert out == ""  # exactly one line was printed
    assert (data_dir / "sandbox.db").is_file()  # state kept
    assert read_state(data_dir) is None  # no stale announcement left behind


def test_busy_port_is_one_clear_line_and_status_1(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run([*FASTREG, "sandbox", "--port", str(port), "--data-dir", str(tmp_path / "d")],
                              capture_output=True, text=True, timeout=DEADLINE_SECONDS)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"fastreg sandbox: port {port} on 127.0.0.1 is busy. Pick another with --port, or --port 0 for any free port."
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_data_dir_is_one_clear_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    done = subprocess.run([*FASTREG, "sandbox", "--data-dir", str(locked / "sandbox")],
                          capture_output=True, text=True, timeout=DEADLINE_SECONDS)
    assert done.returncode == 1
    assert "is not writable" in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("where, says", [
    ("{file}", "the data dir {file} is a file, not a directory."),
    ("{file}/sandbox", "cannot create the data dir {file}/sandbox: {file} is a file, not a directory."),
])
def test_data_dir_that_is_a_file_is_one_clear_line(tmp_path, where, says):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    done = subprocess.run([*FASTREG, "sandbox", "--data-dir", where.format(file=blocker)],
                          capture_output=True, text=True, timeout=DEADLINE_SECONDS)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"fastreg sandbox: {says.format(file=blocker)} Pass --data-dir with a directory, or a path that does not "
        "exist yet."
    ]


def test_the_magic_names_a_data_dir_that_is_a_file(tmp_path):
    from fastreg_magic.errors import SandboxError
    from fastreg_magic.sandbox import ensure_running

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(SandboxError, match="is a file, not a directory"):
        ensure_running(blocker)


def test_port_0_is_any_free_port_and_no_port_the_previous_one(tmp_path):
    from fastreg_magic.sandbox.server import start

    data_dir = tmp_path / "d"
    with start(data_dir) as first:
        previous = first.port
    process = launch("--port", "0", "--data-dir", str(data_dir))
    try:
        line = ready_line(process)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=DEADLINE_SECONDS)
    any_free = int(line[len(READY):].split()[0])
    assert any_free != previous  # as --help says: 0 is any free port, not the data dir's last one
    with start(data_dir) as again:  # without a port: the last one, so config files stay valid
        assert again.port == any_free


def test_ensure_running_starts_once_then_reuses(tmp_path):
    from fastreg_magic.sandbox import ensure_running

    data_dir = tmp_path / "bg"
    first = ensure_running(data_dir)
    try:
        assert first.started and answers(first.endpoint)
        assert f"dns:///{first.endpoint}" in first.config_file.read_text()
        second = ensure_running(data_dir)
        assert not second.started and second.endpoint == first.endpoint
        # a second sandbox on the same data dir is refused while the first lives
        done = subprocess.run([*FASTREG, "sandbox", "--data-dir", str(data_dir)], capture_output=True,
                              text=True, timeout=DEADLINE_SECONDS)
        assert done.returncode == 1 and "in use by the sandbox on" in done.stderr
    finally:
        pid = read_state(data_dir)["pid"]
        os.kill(pid, signal.SIGTERM)
        _wait_gone(pid)
    # once it has stopped, the next call starts a fresh one; stop_running stops it
    from fastreg_magic.sandbox import stop_running

    third = ensure_running(data_dir)
    try:
        assert third.started
    finally:
        assert stop_running(data_dir)
    assert not answers(third.endpoint)
    assert stop_running(data_dir) is False  # nothing left to stop


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while process_is_alive(pid):
        assert time.monotonic() < deadline, f"sandbox pid {pid} did not stop within {DEADLINE_SECONDS}s"
        time.sleep(0.1)


def test_a_database_that_cannot_open_is_one_clear_line(tmp_path):
    data_dir = tmp_path / "broken"
    (data_dir / "sandbox.db").mkdir(parents=True)  # a directory where the database file should be
    done = subprocess.run([*FASTREG, "sandbox", "--data-dir", str(data_dir)], capture_output=True, text=True,
                          timeout=DEADLINE_SECONDS)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot open the sandbox database" in lines[0]


def test_ensure_running_reports_a_failed_start_with_the_log_tail(tmp_path):
    from fastreg_magic.errors import SandboxError
    from fastreg_magic.sandbox import ensure_running

    data_dir = tmp_path / "broken-bg"
    (data_dir / "sandbox.db").mkdir(parents=True)
    with pytest.raises(SandboxError) as info:
        ensure_running(data_dir)
    message = str(info.value)
    assert "exited with status 1 before it was ready" in message
    assert "cannot open the sandbox database" in message  # the log's last lines are shown
    assert str(data_dir / "sandbox.log") in message


def test_two_kernels_asking_at_once_share_one_sandbox(tmp_path):
    import json

    data_dir = tmp_path / "shared"
    script = (
        "import json, sys\n"
        "from fastreg_magic.sandbox import ensure_running\n"
        "info = ensure_running(sys.argv[1])\n"
        "print(json.dumps({'endpoint': info.endpoint, 'started': info.started}))\n"
    )
    callers = [subprocess.Popen([sys.executable, "-c", script, str(data_dir)], stdout=subprocess.PIPE, text=True)
               for _ in range(2)]
    try:
        answers_ = [json.loads(c.communicate(timeout=DEADLINE_SECONDS)[0]) for c in callers]
        assert answers_[0]["endpoint"] == answers_[1]["endpoint"]
        assert sorted(a["started"] for a in answers_) == [False, True]
    finally:
        state = read_state(data_dir)
        if state:
            os.kill(state["pid"], signal.SIGTERM)
            _wait_gone(state["pid"])


def test_status_and_stop_find_the_background_sandbox(tmp_path):
    from fastreg_magic.sandbox import ensure_running

    data_dir = tmp_path / "bg"

    def cli(*flags: str) -> subprocess.CompletedProcess:
        return subprocess.run([*FASTREG, "sandbox", *flags, "--data-dir", str(data_dir)], capture_output=True,
                              text=True, timeout=DEADLINE_SECONDS)

    info = ensure_running(data_dir)
    pid = read_state(data_dir)["pid"]
    try:
        status = cli("--status")
        assert status.returncode == 0 and f"sandbox running on {info.endpoint} (pid {pid}" in status.stdout
        stopped = cli("--stop")
        assert stopped.returncode == 0 and "stopped the sandbox" in stopped.stdout
        assert not process_is_alive(pid) and not answers(info.endpoint)
    finally:
        if process_is_alive(pid):
            os.kill(pid, signal.SIGTERM)
            _wait_gone(pid)
    status = cli("--status")
    assert status.returncode == 1 and "no sandbox is running" in status.stdout
    assert "no sandbox is running" in cli("--stop").stdout


@pytest.mark.parametrize("flag, value, says", [
    ("--port", "99999", "argument --port: 99999 is out of range; pass 1-65535, or 0 for any free port"),
    ("--port", "-5", "argument --port: -5 is out of range; pass 1-65535, or 0 for any free port"),
    ("--port", "http", "argument --port: 'http' is not a port number"),
    ("--workers", "-1", "argument --workers: -1 is too few; pass 1 or more"),
    ("--workers", "0", "argument --workers: 0 is too few; pass 1 or more"),
])
def test_a_port_or_worker_count_out_of_range_is_refused_before_starting(tmp_path, flag, value, says):
    data_dir = tmp_path / "d"
    done = subprocess.run([*FASTREG, "sandbox", flag, value, "--data-dir", str(data_dir)], capture_output=True,
                          text=True, timeout=DEADLINE_SECONDS)
    assert done.returncode == 2 and done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"fastreg sandbox: error: {says}"), done.stderr
    assert not data_dir.exists()  # refused before anything started


def test_start_refuses_a_port_out_of_range(tmp_path):
    from fastreg_magic.errors import SandboxError
    from fastreg_magic.sandbox.server import _port_free, start

    assert _port_free(70000) is False  # not a port: no OverflowError
    with pytest.raises(SandboxError, match="port 70000 is out of range"):
        start(tmp_path / "d", port=70000)


def test_create_project_makes_a_project_the_magic_can_use(tmp_path):
    """On the embedded sandbox there is no flytectl: `fastreg sandbox --create-project` creates one (starting
    the background sandbox if needed), with the three domains, as stock flytekit then sees it."""
    from flytekit.configuration import Config
    from flytekit.remote import FlyteRemote

    data_dir = tmp_path / "bg"

    def create(project: str) -> subprocess.CompletedProcess:
        return subprocess.run([*FASTREG, "sandbox", "--create-project", project, "--data-dir", str(data_dir)],
                              capture_output=True, text=True, timeout=DEADLINE_SECONDS)

    try:
        created, again = create("ml-team"), create("ml-team")
        state = read_state(data_dir)
        remote = FlyteRemote(Config.auto(config_file=state["config_file"]), interactive_mode_enabled=False)
        projects = {p.id: p for p in remote.client.list_projects().projects}  # FlyteAdmin's own answer
    finally:
        from fastreg_magic.sandbox import stop_running

        stop_running(data_dir)
    assert created.returncode == 0, created.stderr
    assert "started in the background" in created.stdout and "created project ml-team" in created.stdout
    assert again.returncode == 0 and "project ml-team already exists" in again.stdout
    assert {d.id for d in projects["ml-team"].domains} == {"development", "staging", "production"}


def test_create_project_refuses_an_id_flyteadmin_would_refuse_before_starting(tmp_path):
    data_dir = tmp_path / "d"
    done = subprocess.run([*FASTREG, "sandbox", "--create-project", "ML team", "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=DEADLINE_SECONDS)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "argument --create-project: 'ML team' is not a project id" in done.stderr
    assert not data_dir.exists()
