"""Where a task attempt writes its offloaded data (files, directories, arrays, dataframes).

A run's raw output prefix is a bucket URI (``--raw-output-prefix s3://bucket/raw``) or, by
default, a folder in the sandbox's data dir. Each attempt gets its own place under it, built as
flytepropeller builds it (``ComputeRawOutputPrefix``, ``NewShardedRawOutputPath``):
``<prefix>/<shard>/<unique id>``, the unique id being ``<run>-<node>-<attempt>`` (a hash when that
is longer than 50 characters) and the shard two characters picked by the id's hash. So two runs,
two nodes or two attempts never write to the same place.

    attempt_prefix("s3://bucket/raw", "a1b2c3", "n0", 0)   # 's3://bucket/raw/<shard>/a1b2c3-n0-0'

A URI is joined as a URI, never as a local path (``Path`` would turn ``s3://`` into ``s3:/``), and
is left to the task's flytekit to write to with the storage settings of the sandbox's environment,
which every task process inherits. Only a local prefix is created here. A ``file://`` prefix is
handed over as its plain path: flytekit's file transformer does not take ``file://`` blob URIs.
"""

from __future__ import annotations

import base64
import string
from pathlib import Path

# flytepropeller's IDMaxLength: the longest unique id of a task attempt before it is hashed.
MAX_UNIQUE_ID_LENGTH = 50
# flytepropeller's Base36PrefixShardSelector: 36 * 36 shards named by two of these characters.
_SHARD_CHARACTERS = string.ascii_lowercase + string.digits
# flytepropeller's encoder: base32 with its own alphabet, no padding, behind an "f".
_ID_ALPHABET = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"abcdefghijklmnopqrstuvwxyz123456")
_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193
_LOCAL_SCHEME = "file://"


def attempt_prefix(prefix: str, run: str, node_unique_id: str, attempt: int) -> str:
    """The raw output prefix of one attempt of a task node of run ``run``, under the run's ``prefix``."""
    attempt_id = unique_id([run, node_unique_id, str(attempt)])
    return join(prefix, shard_of(attempt_id), attempt_id)


def unique_id(parts: list[str], max_length: int = MAX_UNIQUE_ID_LENGTH) -> str:
    """flytepropeller's ``FixedLengthUniqueIDForParts``: the parts joined by ``-``, or their hash when too long."""
    joined = ""
    for index, part in enumerate(parts):
        if index > 0 and joined:
            joined += "-"
        joined += part
    if len(joined) <= max_length:
        return joined
    digest = fnv32a(joined.encode()).to_bytes(4, "big")
    return "f" + base64.b32encode(digest).translate(_ID_ALPHABET).decode().rstrip("=")


def shard_of(attempt_id: str) -> str:
    """The two-character shard flytepropeller files an attempt's raw outputs under."""
    index = fnv32a(attempt_id.encode()) % len(_SHARD_CHARACTERS) ** 2
    first, second = divmod(index, len(_SHARD_CHARACTERS))
    return _SHARD_CHARACTERS[first] + _SHARD_CHARACTERS[second]


def fnv32a(data: bytes) -> int:
    value = _FNV32_OFFSET
    for byte in data:
        value = ((value ^ byte) * _FNV32_PRIME) & 0xFFFFFFFF
    return value


def is_remote(prefix: str) -> bool:
    """True for a store the task's flytekit writes to (``s3://``, ``gs://``, ``abfs://``...)."""
    return "://" in prefix and not prefix.startswith(_LOCAL_SCHEME)


def join(prefix: str, *parts: str) -> str:
    """``parts`` under ``prefix``: as a URI for a store, as a plain local path otherwise."""
    if is_remote(prefix):
        return "/".join([prefix.rstrip("/"), *parts])
    return str(Path(local_path(prefix), *parts))


def local_path(prefix: str) -> str:
    return prefix[len(_LOCAL_SCHEME):] if prefix.startswith(_LOCAL_SCHEME) else prefix


def create(prefix: str) -> None:
    """Make a local prefix's folder; a store's prefix is written by the task alone."""
    if not is_remote(prefix):
        Path(prefix).mkdir(parents=True, exist_ok=True)
