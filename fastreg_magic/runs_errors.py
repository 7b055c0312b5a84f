"""The RPCs a run makes, and the errors they raise, worded for the person in the notebook.

flytekit reports a failed call as one of its own exceptions (``FlyteEntityNotExistException``,
``FlyteSystemUnavailableException``, ...) chained to the ``grpc.RpcError`` that says what the
server actually answered. `translate` maps both onto `fastreg_magic.errors`, in one place.

A failed run's own error, as the backend keeps it, names a node id and is mostly flytekit's frames;
`readable_error` turns it into what the task's author reads: the task and its exception first.
"""

from __future__ import annotations

import re
import textwrap

import grpc

from fastreg_magic.errors import BackendError, FastRegError, NotYetSupported, RunError, causes

# A poll that hangs longer than this is treated as the backend not answering.
RPC_DEADLINE_S = 10.0


def backend_endpoint(remote) -> str:
    try:
        return remote.config.platform.endpoint
    except AttributeError:
        return "the Flyte backend"


# What to do when the backend has no such thing; callers that know what was looked for say better.
NOT_FOUND_HINT = "Check the name, project and domain."
NOT_REGISTERED_HINT = "Check the name, project and domain; re-run the %%flyte_fast cell if it was never registered here."


def rpc(client, method: str, request, *, what: str, remote, not_found: str = NOT_FOUND_HINT):
    """One raw FlyteAdmin call (protos in, protos out) with a deadline and translated errors.

    Raw calls skip flytekit's model conversions: a poll only needs a few fields of the proto.
    ``not_found`` is the hint when the backend answers that what was asked for does not exist.
    """
    from flytekit.clients.grpc_utils.deadline_interceptor import scoped_grpc_deadline
    from flytekit.clients.raw import RawSynchronousFlyteClient

    call = getattr(RawSynchronousFlyteClient, method)
    try:
        with scoped_grpc_deadline(RPC_DEADLINE_S):
            return call(client, request)
    except Exception as exc:
        reraise(exc, what, remote, not_found=not_found)


def reraise(exc: BaseException, what: str, remote, *, not_found: str = NOT_REGISTERED_HINT) -> None:
    """Raise the `FastRegError` for ``exc``, or ``exc`` itself when it is not a backend error (a bug)."""
    err = translate(exc, what, remote, not_found=not_found)
    if err is None:
        raise exc
    raise err from exc


def _not_answering_hint(endpoint: str) -> str:
    """The per-user sandbox the magic starts comes back with the next %%flyte_fast cell; anything else
    must be started (or reached) by the user."""
    from fastreg_magic.sandbox.server import CONFIG_NAME, default_data_dir

    try:  # the config file it writes in its data dir names its address, and stays when it stops
        per_user = (default_data_dir() / CONFIG_NAME).read_text(encoding="utf-8")
    except OSError:
        per_user = ""
    if f"dns:///{endpoint}\n" in per_user:
        return "The embedded sandbox stopped: re-run the %%flyte_fast cell to start it again, then launch again."
    return "Check that it is running (`fastreg sandbox`, or your cluster) and reachable from here."


def is_not_found(exc: BaseException | None) -> bool:
    """True when the backend answered that what was asked for does not exist."""
    if exc is None:
        return False
    from flytekit.exceptions import user as user_errors

    return isinstance(exc, user_errors.FlyteEntityNotExistException) or grpc_status(exc)[0] == grpc.StatusCode.NOT_FOUND


def translate(exc: BaseException, what: str, remote, *, not_found: str = NOT_REGISTERED_HINT) -> FastRegError | None:
    if isinstance(exc, FastRegError):
        return exc
    from flytekit.core.type_engine import TypeTransformerFailedError
    from flytekit.exceptions import system as system_errors
    from flytekit.exceptions import user as user_errors

    endpoint = backend_endpoint(remote)
    code, details = grpc_status(exc)
    detail = _sentence_end(f": {details.strip()}") if details.strip() else "."
    if is_not_found(exc):
        return RunError(f"{what}: not found on {endpoint}{detail}", not_found)
    if isinstance(exc, user_errors.FlyteAuthenticationException) or code == grpc.StatusCode.UNAUTHENTICATED:
        return BackendError(
            f"{what}: {endpoint} refused our credentials{detail}",
            "Log in again or fix the auth settings in your Flyte config file.",
        )
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return NotYetSupported(f"{what}: {endpoint} does not support this call{detail}", None)
    if (
        isinstance(exc, (system_errors.FlyteSystemUnavailableException, user_errors.FlyteTimeout))
        or code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    ):
        return BackendError(f"{what}: the Flyte backend at {endpoint} is not answering{detail}", _not_answering_hint(endpoint))
    if isinstance(exc, (user_errors.FlyteInvalidInputException, user_errors.FlyteEntityAlreadyExistsException)) or code in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
    ):
        return RunError(f"{what}: {endpoint} refused it{detail}", None)
    if isinstance(exc, (TypeTransformerFailedError, user_errors.FlyteAssertion)) or (
        isinstance(exc, (TypeError, ValueError, AssertionError)) and "flytekit" in _origin_module(exc)
    ):
        return RunError(
            f"{what}: an input could not be converted: {conversion_problem(exc)}", "Check the value against the input's type."
        )
    if isinstance(exc, (system_errors.FlyteSystemException, grpc.RpcError)) or code is not None:
        return RunError(f"{what}: {endpoint} failed{detail}", "Try again; if it persists, check the backend's logs.")
    return None


def _sentence_end(text: str) -> str:
    """The backend's details end our sentence: with a full stop, unless they bring their own."""
    return text if text.endswith((".", "!", "?")) else f"{text}."


def is_backend_failure(exc: BaseException) -> bool:
    """True when ``exc`` came from talking to the backend (or is already ours), not from a value."""
    from flytekit.exceptions import system as system_errors

    if isinstance(exc, (FastRegError, system_errors.FlyteSystemException)):
        return True
    return grpc_status(exc)[0] is not None


def conversion_problem(exc: BaseException) -> str:
    """What flytekit said about a value it could not convert, without its prefixes and type dumps."""
    text = str(exc).split("Flyte Serialized object", 1)[0].strip()  # a dump of the literal type follows
    text = re.sub(r"^(?:USER|SYSTEM):\w+: error=", "", text)
    text = (text.splitlines()[0].rstrip(" -/:,") if text else "") or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def grpc_status(exc: BaseException) -> tuple[grpc.StatusCode | None, str]:
    """The gRPC status code and details behind ``exc``, searching its chain of causes."""
    for cause in causes(exc):
        if isinstance(cause, grpc.RpcError) and hasattr(cause, "code"):
            try:
                return cause.code(), cause.details() or ""
            except Exception:  # a future that was never completed has no code to read
                return None, ""
    return None, ""


def _origin_module(exc: BaseException) -> str:
    tb = exc.__traceback__
    module = ""
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        tb = tb.tb_next
    return module


# ---------------------------------------------------------------------------------------------
# a failed run's error, as the person who wrote the task reads it

# "Node [n1] failed: " as the backend puts it before a node's error; a sub-workflow's node repeats it.
_NODE_PREFIX = re.compile(r"Node \[(?P<node>[^\]]+)\] failed: ")
# flytekit's error document: "Trace:\n\n<indented traceback>\nMessage:\n\n<indented exception>".
_TRACE_AND_MESSAGE = re.compile(r"(?s)^\s*Trace:\s*\n(?P<trace>.*?)\n\s*Message:\s*\n(?P<message>.*)$")
_FRAME = re.compile(r'^  File "(?P<path>[^"]+)", line \d+')
# Frames of flytekit's own machinery (and the stdlib parts it runs tasks through): never the user's code.
_INTERNAL_PATH = re.compile(r"[/\\](?:flytekit|flyteidl)[/\\]|[/\\]python3\.\d+[/\\](?:concurrent|asyncio)[/\\]")


def readable_error(raw: str, node_tasks: dict[str, str | None] | None = None, note: str = "") -> str:
    """A failed run's error as the backend wrote it, made readable: one line naming the task (and node)
    and the exception first, then the traceback with the user's own frames and the full message.

        "Node [n1] failed: Trace: <traceback> Message: ValueError: bad"   (node n1 runs task m.s2)
        -> "s2 (node n1) failed: ValueError: bad", a blank line, then the traceback

    flytekit's internal frames and the message it repeats after the trace are left out; ``note`` (one line,
    `not_retried_note`) follows the first line. Text that does not start by naming a failed node (an abort,
    a backend's own error) is returned as it is.
    """
    nodes, rest = _failed_nodes(raw)
    if not nodes:
        return raw
    nodes, rest, counted = _failed_element(nodes, rest)  # a map task's error: its first failed element's
    path, task = _failed_task(nodes, node_tasks or {})
    who = f"{_short_task(task)} (node {path})" if task else f"Node {path}"
    parts = _TRACE_AND_MESSAGE.match(rest)
    if parts is None:  # the backend's own words (an exit code, a timeout): one sentence, kept whole
        return f"{who} failed: {rest.strip()}" + (f"\n{note}" if note else "") + counted
    message = textwrap.dedent(parts["message"]).strip()
    first, _, more = message.partition("\n")
    frames = _users_traceback(textwrap.dedent(parts["trace"]).strip("\n"))
    details = frames or more.strip()
    return f"{who} failed: {first}" + (f"\n{note}" if note else "") + (f"\n\n{details}" if details else "") + counted


def not_retried_note(task: str, declared: int, raw: str) -> str:
    """One line saying why ``task``, which declares ``declared`` retries, failed without a retry: Flyte
    retries a task only when it raises a recoverable error. "" when its error is not an exception the
    task raised (a timeout, a crash: those are retried) or is a recoverable one."""
    parts = _TRACE_AND_MESSAGE.match(_failed_nodes(raw)[1])
    if parts is None or "FlyteRecoverableException" in parts["message"]:
        return ""
    return (f"{_short_task(task)} declares retries={declared} but was not retried: Flyte retries a task only when it "
            "raises FlyteRecoverableException (from flytekit.exceptions.user); raise that for a failure worth retrying.")


def _failed_nodes(raw: str) -> tuple[list[str], str]:
    """(["n1", "n0"], what follows) for "Node [n1] failed: Node [n0] failed: ..."."""
    nodes, rest = [], raw
    while (found := _NODE_PREFIX.match(rest)) is not None:
        nodes.append(found["node"])
        rest = rest[found.end():]
    return nodes, rest


# flytepropeller's error for a map task: each distinct error of its elements once, after the elements it
# failed ("[1]: <error>", "[0-2][5]: <error>"); the sandbox ends it with how many elements succeeded.
_ELEMENTS = re.compile(r"(?m)^\[(?P<index>\d+)(?:-\d+)?\](?:\[\d+(?:-\d+)?\])*: ")
_ELEMENTS_COUNTED = re.compile(r"\n(?P<count>\d+ of \d+ elements succeeded, \d+ needed\.)\s*$")


def _failed_element(nodes: list[str], rest: str) -> tuple[list[str], str, str]:
    """For a map task's error, (its node with the first failed element, "n0" -> "n0[1]" as the node table
    labels it; that element's error; a blank line and the line counting the elements, when there is one).
    Any other error: (nodes, rest, "") as they were."""
    found = _ELEMENTS.match(rest)
    if found is None:
        return nodes, rest, ""
    counted = _ELEMENTS_COUNTED.search(rest)
    errors = rest[: counted.start()] if counted else rest
    following = _ELEMENTS.search(errors, found.end())
    error = errors[found.end() : following.start() if following else None]
    return [*nodes[:-1], f"{nodes[-1]}[{found['index']}]"], error, f"\n\n{counted['count']}" if counted else ""


def _failed_task(nodes: list[str], node_tasks: dict[str, str | None]) -> tuple[str, str | None]:
    """(node path, task) of the task node the error's nodes lead to: the path they name when it ran a
    task; else the one task node whose path passes through them all. A ``conditional()`` is such a
    case: the backend names the branch node (``n0``) that failed, not the node it chose and ran
    (``n0/n0``), and in a sub-workflow chosen by a branch, names the nodes around the branch's level
    (``n0`` then ``n1`` for ``n0/n0/n1``). Unsure (none, or several), the path as named, without a task."""
    path = "/".join(nodes)
    if node_tasks.get(path):
        return path, node_tasks[path]
    below = [(label, task) for label, task in node_tasks.items() if task and _passes_through(label, nodes)]
    return below[0] if len(below) == 1 else (path, None)


def _passes_through(label: str, nodes: list[str]) -> bool:
    """Whether node path ``label`` starts at ``nodes[0]`` and goes through each of ``nodes`` in turn,
    deeper than the path they name by themselves."""
    parts = label.split("/")
    if len(parts) <= len(nodes) or parts[0] != nodes[0]:
        return False
    remaining = iter(parts)
    return all(node in remaining for node in nodes)


def _short_task(task: str) -> str:
    return task.rsplit(".", 1)[-1]


def _users_traceback(trace: str) -> str:
    """The traceback without flytekit's frames; "" when no frame of the user's is left (the exception
    was raised by flytekit itself, as for a value of the wrong type: its message says it all)."""
    kept, frame_internal, user_frames = [], False, 0
    for line in trace.splitlines():
        frame = _FRAME.match(line)
        if frame is not None:
            frame_internal = _INTERNAL_PATH.search(frame["path"]) is not None
            user_frames += not frame_internal
        elif not line.startswith("    "):  # past the frame: its source line and markers are indented deeper
            frame_internal = False
        if not frame_internal:
            kept.append(line)
    return "\n".join(kept) if user_frames else ""
