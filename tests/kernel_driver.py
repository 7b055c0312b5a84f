"""Drive a real Jupyter kernel the way a frontend does: execute cells, send widget comm messages.

Used by the widget tests and the widget benchmark. Messages a frontend would receive (IOPub)
are all kept in ``iopub`` so tests can check what the browser would have been told.
"""

from __future__ import annotations

import ast
import json
import os
import queue
import sys
import time
from pathlib import Path

from jupyter_client.manager import KernelManager


class CellError(AssertionError):
    pass


class KernelDriver:
    def __init__(self, cwd: str | os.PathLike | None = None, extra_path: list[str] | None = None):
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        if extra_path:
            env["PYTHONPATH"] = os.pathsep.join([*extra_path, env.get("PYTHONPATH", "")])
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(cwd or os.getcwd()), env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)
        self.iopub: list[dict] = []

    def close(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            self.km.shutdown_kernel(now=True)

    # -- cells ------------------------------------------------------------------------------
    def run(self, code: str, timeout: float = 300, user_expressions: dict | None = None) -> dict:
        """Execute ``code``; return {"stdout", "outputs", "user_expressions"}; CellError on an exception."""
        msg_id = self.kc.execute(code, user_expressions=user_expressions or {})
        stdout, outputs, error = [], [], None
        deadline = time.monotonic() + timeout
        while True:
            msg = self._next_iopub(deadline)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                stdout.append(content["text"])
            elif kind in ("display_data", "execute_result"):
                outputs.append(content["data"])
            elif kind == "error":
                error = "\n".join(content["traceback"])
            elif kind == "status" and content["execution_state"] == "idle":
                break
        reply = self.kc.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
        if error:
            raise CellError(error)
        return {"stdout": "".join(stdout), "outputs": outputs, "user_expressions": reply["content"].get("user_expressions", {})}

    def eval(self, expr: str):
        """The JSON-able value of ``expr`` in the kernel."""
        result = self.run("", user_expressions={"v": f"__import__('json').dumps({expr})"})["user_expressions"]["v"]
        if result["status"] != "ok":
            raise CellError(f"{expr}: {result.get('ename')}: {result.get('evalue')}")
        return json.loads(ast.literal_eval(result["data"]["text/plain"]))

    def _next_iopub(self, deadline: float) -> dict:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the kernel did not finish the cell in time")
        try:
            msg = self.kc.get_iopub_msg(timeout=remaining)
        except queue.Empty:
            raise TimeoutError("the kernel did not finish the cell in time") from None
        msg["received"] = time.time()
        self.iopub.append(msg)
        return msg

    # -- widgets, as a frontend talks to them -------------------------------------------------
    def send_comm(self, comm_id: str, data: dict) -> None:
        msg = self.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
        self.kc.shell_channel.send(msg)

    def click(self, button_expr: str) -> None:
        """Click a button as JupyterLab does: a comm message with the ``click`` event."""
        self.send_comm(self.eval(f"{button_expr}.model_id"), {"method": "custom", "content": {"event": "click"}})

    def type_into(self, widget_expr: str, value) -> None:
        """Change a widget's value as a frontend does: a comm ``update`` message."""
        self.send_comm(self.eval(f"{widget_expr}.model_id"), {"method": "update", "state": {"value": value}, "buffer_paths": []})

    def drain(self, seconds: float = 0.0) -> None:
        """Read IOPub messages that arrived between cells (background widget updates)."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=max(0.0, deadline - time.monotonic()) or 0.01)
            except queue.Empty:
                return
            msg["received"] = time.time()
            self.iopub.append(msg)
            if time.monotonic() >= deadline:
                return

    def widget_updates(self, model_id: str) -> list[dict]:
        """State updates the frontend was sent for one widget model, in order."""
        return [
            m["content"]["data"]["state"]
            for m in self.iopub
            if m["msg_type"] == "comm_msg"
            and m["content"].get("comm_id") == model_id
            and m["content"]["data"].get("method") == "update"
        ]
