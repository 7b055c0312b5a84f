"""Turns every servicer method's failures into proper gRPC statuses.

flytekit reads an UNKNOWN status (what grpcio sends for an uncaught exception) as an
authentication failure and starts an auth flow, so no exception may escape a servicer:
refusals (:class:`AdminError`) become their own status code and message; anything else is
a sandbox bug, logged with its traceback and reported as INTERNAL with its message.
"""

from __future__ import annotations

import functools
import logging

import grpc

from fastreg_magic.sandbox.validation import AdminError

log = logging.getLogger("fastreg_magic.sandbox")


def guarded(cls):
    """Class decorator: wrap each public RPC method (CamelCase names) of ``cls`` and its bases."""
    for name in dir(cls):
        if not name[:1].isupper():
            continue
        method = getattr(cls, name)
        if callable(method) and not isinstance(method, type):
            setattr(cls, name, _guard(method))
    return cls


def _guard(method):
    @functools.wraps(method)
    def wrapper(self, request, context):
        if context is None:  # an internal call (e.g. the .flytegen workflow): let AdminError through
            return method(self, request, context)
        try:
            return method(self, request, context)
        except AdminError as err:
            context.abort(err.code, err.message)
        except NotImplementedError as err:
            # the generated base servicer's default: an RPC the sandbox does not serve
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method.__name__} is not supported by the fastreg sandbox ({err})")
        except Exception as err:  # noqa: BLE001 - the whole point: nothing escapes as UNKNOWN
            if _is_abort(err, context):
                raise
            log.exception("sandbox bug in %s", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"the sandbox failed in {method.__name__}: {type(err).__name__}: {err}")

    return wrapper


def _is_abort(err: Exception, context) -> bool:
    """True for the exception ``context.abort`` raises once it has set the status (keep that status).

    grpcio raises a bare ``Exception()`` from ``abort`` after recording the code, so the
    recorded code, not the exception's type, tells an abort from a bug.
    """
    code = getattr(context, "code", None)
    return type(err) is Exception and not err.args and callable(code) and code() is not None
