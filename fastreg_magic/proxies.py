"""Which HTTP proxy a connection to a Flyte backend goes through, as gRPC decides it from the environment.

gRPC honours ``grpc_proxy``, ``https_proxy`` and ``http_proxy`` (lowercase, the first one set wins)
unless the host is in ``no_grpc_proxy`` or else ``no_proxy``. A proxy can never be the way to a
server on this machine's loopback (the embedded sandbox, a port-forward): channels to a loopback
endpoint are opened with the proxy off. Elsewhere the proxy is kept (a corporate network may need
it), and a backend that cannot be reached through it is reported naming the variable.

    grpc_proxy_for("flyte.acme.io")     # ("https_proxy", "http://proxy:3128"), or None if direct
    channel_options("127.0.0.1")        # [("grpc.enable_http_proxy", 0)]

Imports nothing heavy: the readiness check of the background sandbox uses it too.
"""

from __future__ import annotations

import ipaddress
import os

# gRPC's own lookup order (grpc/doc/environment_variables.md): the first one with a value is used.
GRPC_PROXY_VARIABLES = ("grpc_proxy", "https_proxy", "http_proxy")
GRPC_NO_PROXY_VARIABLES = ("no_grpc_proxy", "no_proxy")
# The channel argument that turns gRPC's proxy support off for one channel.
NO_PROXY_OPTION = ("grpc.enable_http_proxy", 0)
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def is_loopback(host: str) -> bool:
    """True for a name or address of this machine's loopback (127.0.0.0/8, ::1, localhost)."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def channel_options(host: str) -> list[tuple[str, int]]:
    """The gRPC channel options that keep a proxy off the way to ``host`` when it is on loopback."""
    return [NO_PROXY_OPTION] if is_loopback(host) else []


def grpc_proxy_for(host: str) -> tuple[str, str] | None:
    """``(variable, value)`` of the proxy a gRPC channel to ``host`` goes through; None if it goes direct."""
    if is_loopback(host):
        return None  # our channels to loopback never use one (channel_options)
    named = _first_set(GRPC_PROXY_VARIABLES)
    if named is None:
        return None
    exceptions = _first_set(GRPC_NO_PROXY_VARIABLES)
    if exceptions is not None and _listed(host, exceptions[1]):
        return None
    return named


def _first_set(variables: tuple[str, ...]) -> tuple[str, str] | None:
    for variable in variables:
        value = os.environ.get(variable)
        if value:
            return variable, value
    return None


def _listed(host: str, no_proxy: str) -> bool:
    """Whether ``no_proxy`` (comma-separated names, domain suffixes, addresses, CIDR blocks, ``*``) names ``host``."""
    host = host.strip("[]").lower()
    for entry in (part.strip().lower() for part in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*" or host == entry or host.endswith("." + entry.lstrip(".")):
            return True
        if _in_block(host, entry):
            return True
    return False


def _in_block(host: str, entry: str) -> bool:
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False


def proxy_address(value: str) -> tuple[str, int]:
    """``(host, port)`` of a proxy variable's value (``http://proxy:3128``, ``proxy:3128``)."""
    import urllib.parse

    parts = urllib.parse.urlsplit(value if "://" in value else f"http://{value}")
    return parts.hostname or "", parts.port or 80


def proxy_hint(host: str, proxy: tuple[str, str]) -> str:
    """What to do when the way to ``host`` through ``proxy`` (variable, value) fails."""
    variable, value = proxy
    exceptions = (_first_set(GRPC_NO_PROXY_VARIABLES) or ("no_proxy", ""))[0]
    return (f"It goes through the proxy {variable}={value} (from the environment): fix {variable}, or, if "
            f"{host} is reachable without a proxy, add it to {exceptions} (NO_PROXY; gRPC reads only the "
            "lowercase name).")
