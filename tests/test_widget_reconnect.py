"""A run view whose backend stops answering says "reconnecting…", then recovers by itself.

The backend is the session sandbox reached through a TCP forwarder that the test cuts and
restores: the run keeps going on the sandbox while the notebook cannot reach it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from run_flows import register_flows  # noqa: E402
from tcp_proxy import TcpProxy  # noqa: E402

from fastreg_magic import runs, runs_watch  # noqa: E402
from fastreg_magic.api import EntityRef  # noqa: E402
from fastreg_magic.errors import BackendError  # noqa: E402

pytestmark = pytest.mark.slow


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def proxied(sandbox, remote, tmp_path):
    """(remote through a cuttable proxy, the proxy, a workflow ref) on the session sandbox."""
    from flytekit.configuration import Config
    from flytekit.remote import FlyteRemote

    from fastreg_magic.sandbox import access

    _, module, version, mod = register_flows(remote, tmp_path)
    proxy = TcpProxy(int(sandbox.endpoint.rsplit(":", 1)[1]))
    config = tmp_path / "proxied.yaml"
    config.write_text(f"admin:\n  endpoint: dns:///{proxy.endpoint}\n  insecure: true\n"
                      + access.config_lines(sandbox.data_dir, sandbox.endpoint))  # the sandbox's access token
    through = FlyteRemote(
        Config.auto(config_file=str(config)),
        default_project="flytesnacks", default_domain="development", interactive_mode_enabled=False,
    )
    ref = EntityRef("workflow", f"{module}.slow", version, "flytesnacks", "development", None, mod.slow)
    try:
        yield through, proxy, ref
    finally:
        proxy.cut()


def test_run_view_shows_reconnecting_while_the_backend_is_unreachable(proxied):
    from fastreg_magic.widget_run import RunView

    remote, proxy, ref = proxied
    view = RunView(runs.launch(remote, ref, {"s": 12.0}))
    try:
        assert wait_until(lambda: view.phase == "RUNNING", 240)
        assert view.connection.value == ""

        proxy.cut()
        assert wait_until(lambda: "reconnecting…" in view.connection.value, 60)
        assert "not answering" in view.connection.value
        assert view.phase == "RUNNING"  # what was last seen stays on screen
        with pytest.raises(BackendError, match="not answering"):
            view.run.refresh()

        proxy.start()
        assert wait_until(lambda: view.phase == "SUCCEEDED", 240)
        assert view.connection.value == ""
        assert "12.0" in view.outputs.value
    finally:
        view.close()


def test_watch_reports_the_outage_and_carries_on(proxied):
    remote, proxy, ref = proxied
    run = runs.launch(remote, ref, {"s": 8.0})
    updates = []
    handle = runs_watch.watch(run, updates.append)
    assert wait_until(lambda: run.phase == "RUNNING", 240)
    proxy.cut()
    assert wait_until(lambda: any(u.connection for u in updates), 60)
    proxy.start()
    assert wait_until(lambda: not handle.active, 240)
    problems = [u.connection for u in updates if u.connection]
    assert problems[0].startswith("reconnecting…")
    assert updates[-1].final and updates[-1].connection is None and updates[-1].run.outputs == {"o0": 8.0}
