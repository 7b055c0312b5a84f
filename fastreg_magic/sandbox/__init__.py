"""The embedded sandbox: a FlyteAdmin-compatible control plane on loopback that stock flytekit talks to.

    from fastreg_magic import sandbox
    with sandbox.start(data_dir, port=0) as box:        # in this process (threads)
        print(box.endpoint, box.config_file)

    info = sandbox.ensure_running()                    # a per-user background sandbox
    info.endpoint, info.config_file, info.started
    sandbox.stop_running()                             # stop the background one (state is kept)

``fastreg sandbox`` runs the same server in the foreground.
"""

from __future__ import annotations

__all__ = ["start", "ensure_running", "stop_running", "Sandbox", "SandboxInfo", "default_data_dir"]


def __getattr__(name: str):
    if name in ("start", "Sandbox", "default_data_dir"):
        from fastreg_magic.sandbox import server

        return getattr(server, name)
    if name in ("ensure_running", "stop_running", "SandboxInfo"):
        from fastreg_magic.sandbox import background

        return getattr(background, name)
    raise AttributeError(f"module 'fastreg_magic.sandbox' has no attribute {name!r}")
