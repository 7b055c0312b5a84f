"""A backend with authentication, as a real cluster has it: the magic logs in once per kernel.

The backend is the session sandbox behind bearer-token auth (``auth_backend.py``), driven by stock
flytekit's own authenticators from the config file. The kernel has no keyring to share tokens in,
like most JupyterHub servers: each device-code login the provider counts is one the person at the
notebook would have had to complete in a browser.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

sys.path.insert(0, str(Path(__file__).parent))
from auth_backend import AuthenticatedAdmin  # noqa: E402
from sandbox_support import PLUS_ONE_CELL as CELL  # noqa: E402



@pytest.fixture
def auth_admin(sandbox):
    admin = AuthenticatedAdmin(sandbox)
    try:
        yield admin
    finally:
        admin.stop()


@pytest.fixture
def no_keyring():
    import keyring
    from keyring.backends import fail

    before = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        yield
    finally:
        keyring.set_keyring(before)


@pytest.fixture
def shell(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "fastreg_magic")
    return ip


def test_device_flow_asks_to_log_in_once_per_kernel(auth_admin, no_keyring, shell, tmp_path, capsys):
    config = auth_admin.config_file(tmp_path, "DeviceFlow")
    reg = shell.run_cell_magic("flyte_fast", f"-m auth_device_cell --config {config}", CELL)
    assert reg.registered and reg.uploaded
    assert capsys.readouterr().out.count("To Authenticate, navigate in a browser") == 1

    run = reg.launch(x=41).wait(timeout=120)
    assert (run.phase, run.outputs) == ("SUCCEEDED", {"o0": 42})
    # Another domain, then a run after every token expired: flytekit refreshes, nobody logs in again.
    staging = shell.run_cell_magic("flyte_fast", f"-m auth_device_cell -d staging --config {config}", CELL)
    assert staging.registered
    auth_admin.provider.revoke_all()
    run = staging.launch(x=1).wait(timeout=120)
    assert (run.phase, run.outputs) == ("SUCCEEDED", {"o0": 2})

    assert auth_admin.provider.device_logins == 1
    assert "To Authenticate" not in capsys.readouterr().out


def test_client_secret_registers_and_runs(auth_admin, shell, tmp_path):
    config = auth_admin.config_file(tmp_path, "ClientSecret")
    reg = shell.run_cell_magic("flyte_fast", f"-m auth_secret_cell --config {config}", CELL)
    run = reg.launch(x=6).wait(timeout=120)
    assert (run.phase, run.outputs) == ("SUCCEEDED", {"o0": 7})
    assert auth_admin.provider.client_credential_grants == 1


def test_a_wrong_client_secret_is_one_clear_message(auth_admin, shell, tmp_path):
    from IPython.core.error import UsageError

    config = auth_admin.config_file(tmp_path, "ClientSecret")
    (tmp_path / "client-secret").write_text("not the secret")
    with pytest.raises(UsageError) as caught:
        shell.run_cell_magic("flyte_fast", f"-m auth_wrong_cell --config {config}", CELL)
    message = str(caught.value)
    assert message.startswith(f"Logging in to Flyte backend {auth_admin.endpoint} failed: ")
    assert "wrong client id or secret" in message
    assert "Check the auth settings of your Flyte config" in message
