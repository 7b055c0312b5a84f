"""Which of FlyteAdmin's services a gRPC server offers, asked without credentials.

A server answering UNIMPLEMENTED to the first call is either not a FlyteAdmin at all (some other gRPC
server on that port), or a FlyteAdmin without the auth service the config's ``authType`` needs:
flytekit asks ``AuthMetadataService.GetPublicClientConfig`` before the first call of a ClientSecret,
DeviceFlow or ExternalCommand login, and reports that call's UNIMPLEMENTED as the first call's own.
Asked only once that happened, on a plain channel (same TLS settings, no login), so the user is told
which of the two it is.

The embedded sandbox refuses a call without its access token with a message saying where the token is
(``sandbox/access.py``); flytekit's default browser login, run on that refusal, then fails on its own
terms (the sandbox has no login page). ``sandbox_refusal`` asks the same way, without a login, to get
the sandbox's own words.

    offered = offered_services(platform)     # {"admin": True, "auth": False, "dataproxy": True}
    refusal = sandbox_refusal(platform)      # "this sandbox at 127.0.0.1:PORT needs its access token: ..."
"""

from __future__ import annotations

import grpc

from fastreg_magic.connection import CHANNEL_OPTIONS

DEADLINE_S = 5.0


def offered_services(platform, options: list) -> dict[str, bool]:
    """For AdminService, AuthMetadataService and DataProxyService: whether the server implements it
    (any answer but UNIMPLEMENTED: a refusal of an empty request still proves the method exists)."""
    from flyteidl.admin import version_pb2
    from flyteidl.service import admin_pb2_grpc, auth_pb2, auth_pb2_grpc, dataproxy_pb2, dataproxy_pb2_grpc
    from flytekit.clients.auth_helper import get_channel

    channel = get_channel(platform, options=CHANNEL_OPTIONS + options)
    try:
        calls = {
            "admin": lambda: admin_pb2_grpc.AdminServiceStub(channel).GetVersion(
                version_pb2.GetVersionRequest(), timeout=DEADLINE_S),
            "auth": lambda: auth_pb2_grpc.AuthMetadataServiceStub(channel).GetPublicClientConfig(
                auth_pb2.PublicClientAuthConfigRequest(), timeout=DEADLINE_S),
            "dataproxy": lambda: dataproxy_pb2_grpc.DataProxyServiceStub(channel).CreateUploadLocation(
                dataproxy_pb2.CreateUploadLocationRequest(), timeout=DEADLINE_S),
        }
        return {name: _implemented(call) for name, call in calls.items()}
    finally:
        channel.close()


def _implemented(call) -> bool:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code() != grpc.StatusCode.UNIMPLEMENTED
    return True


def sandbox_refusal(platform, options: list) -> str | None:
    """What the embedded sandbox says to a call without its token; None if the server is no such sandbox
    or accepts the call."""
    from flyteidl.admin import version_pb2
    from flyteidl.service import admin_pb2_grpc
    from flytekit.clients.auth_helper import get_channel

    from fastreg_magic.sandbox.access import REFUSAL_START

    channel = get_channel(platform, options=CHANNEL_OPTIONS + options)
    try:
        admin_pb2_grpc.AdminServiceStub(channel).GetVersion(version_pb2.GetVersionRequest(), timeout=DEADLINE_S)
    except grpc.RpcError as exc:
        details = exc.details() or ""
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED and details.startswith(REFUSAL_START):
            return details
    finally:
        channel.close()
    return None
