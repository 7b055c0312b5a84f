"""One connection per backend: one gRPC channel, and so one login, for everything the kernel sends.

flytekit opens a channel per client, and each channel has its own authenticator: every
``FlyteRemote`` (one per project/domain) and every raw client would ask the person at the notebook
to log in again (a device code, a browser tab), unless a desktop keyring happens to share the
tokens, which a JupyterHub server usually has not. So the kernel makes one flytekit client per
backend and everything uses it: registration, uploads, launches, the run views.

Imported only once a backend is used: it imports flytekit.
"""

from __future__ import annotations

import functools

from flytekit.clients.friendly import SynchronousFlyteClient
from flytekit.clients.raw import RawSynchronousFlyteClient
from flytekit.remote import FlyteRemote

# The shared channel reconnects by itself after an outage. gRPC's default backoff grows to two minutes
# between attempts, which a run view would show as "reconnecting…" long after the backend is back.
# Not `grpc.min_reconnect_backoff_ms`: gRPC also takes it as the least time a connection attempt gets
# (its MIN_CONNECT_TIMEOUT, 20 s by default), so 250 ms refused every backend whose TCP (and TLS)
# handshake and first HTTP/2 SETTINGS take longer, one ~300 ms away, which stock flytekit reaches.
# A refused connection fails at once whatever that timeout, so reconnecting stays quick without it.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 3000),
]


def open_client(platform) -> SynchronousFlyteClient:
    """flytekit's client for one backend, on a channel that comes back quickly after an outage.

    ``platform`` should have ``rpc_retries=0``: flytekit's retry interceptor would resend every failed
    call (an ALREADY_EXISTS Create four times, a CreateExecution that may have gone through); the
    callers map failures themselves.

    A proxy named in the environment is kept off the way to a loopback endpoint (``proxies.py``).
    """
    from fastreg_magic.config import endpoint_host_port
    from fastreg_magic.proxies import channel_options

    host, _ = endpoint_host_port(platform.endpoint, platform.insecure)
    return SynchronousFlyteClient(platform, options=CHANNEL_OPTIONS + channel_options(host))


class SharedClientRemote(FlyteRemote):
    """A ``FlyteRemote`` that uses the backend's shared client instead of opening its own."""

    reconnects_itself = True  # its channel comes back by itself; a fresh one would mean a new login

    def __init__(self, config, client: SynchronousFlyteClient, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self._shared_client = client

    @property
    def client(self) -> SynchronousFlyteClient:
        return self._shared_client


@functools.lru_cache(maxsize=16)
def raw_calls(client: SynchronousFlyteClient) -> "RawCalls":
    """One RawCalls per client, so what is remembered per client (projects checked) is kept."""
    return RawCalls(client)


class RawCalls:
    """flytekit's raw FlyteAdmin calls (protos in, protos out) over a shared client's connection.

    ``SynchronousFlyteClient`` replaces many raw methods with ones taking flytekit models; the raw
    class's own methods, called on it, send the protos registration already holds.
    """

    def __init__(self, client: SynchronousFlyteClient) -> None:
        self.client = client

    def __getattr__(self, name: str):
        method = getattr(RawSynchronousFlyteClient, name)
        return functools.partial(method, self.client)
