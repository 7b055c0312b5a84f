"""The kernel's one connection per backend: a backend far away answers through it as it does to stock flytekit.

The session sandbox is put 300 ms away each way by ``benchmarks/latency_proxy.py`` (a real TCP
forwarder in its own process), as a cluster on another continent would be.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

LATENCY_PROXY = Path(__file__).resolve().parent.parent / "benchmarks" / "latency_proxy.py"
ONE_WAY_MS = 300


@pytest.fixture
def far_config(sandbox, tmp_path):
    """A flytekit config file whose endpoint is the session sandbox, 300 ms away each way."""
    from fastreg_magic.sandbox import access

    port = sandbox.endpoint.rsplit(":", 1)[1]
    proxy = subprocess.Popen([sys.executable, str(LATENCY_PROXY), port, str(ONE_WAY_MS)],
                             stdout=subprocess.PIPE, text=True)
    try:
        listening = proxy.stdout.readline().strip()
        config = tmp_path / "far.yaml"
        config.write_text(f"admin:\n  endpoint: dns:///127.0.0.1:{listening}\n  insecure: true\n"
                          + access.config_lines(sandbox.data_dir, sandbox.endpoint))  # the sandbox's access token
        yield config
    finally:
        proxy.kill()
        proxy.wait()


def test_a_backend_300_ms_away_answers_as_it_does_to_stock_flytekit(far_config):
    from flytekit.configuration import Config
    from flytekit.remote import FlyteRemote

    from fastreg_magic import config

    stock = FlyteRemote(Config.auto(config_file=str(far_config)), default_project="flytesnacks",
                        default_domain="development")
    assert stock.client.get_control_plane_version()  # stock flytekit reaches it

    backend = config.ensure_reachable(config.resolve_backend(config_file=str(far_config)))
    assert backend.is_sandbox  # it answered GetVersion as the sandbox, through the kernel's shared client
    projects, _ = config.shared_client(backend).list_projects_paginated(limit=10)
    assert "flytesnacks" in {project.id for project in projects}
