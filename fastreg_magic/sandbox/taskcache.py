"""Task output caching, as Flyte's datacatalog does it for ``@task(cache=True, cache_version=...)``.

A task whose metadata is ``discoverable`` has its outputs remembered under a key made of:
- its project, domain and name;
- its ``cache_version`` (``discovery_version``) and its interface;
- its input values. An input with a ``hash`` (set by flytekit, e.g. through a ``HashMethod``)
  counts by that hash, and inputs named in ``cache_ignore_input_vars`` do not count.

The task's version is not part of the key, as in Flyte: re-registering the same code under a new
version keeps its cache; changing ``cache_version`` starts afresh. A later run with the same key, in
any execution, takes the outputs without running the task (CACHE_HIT); the run that computed them
stores them (CACHE_POPULATED). An execution launched with ``overwrite_cache`` runs the task and
replaces the entry. Entries are files under the sandbox's data dir (``CACHE_DIR``), so they outlive a
restart. A map task over a cached task caches each element on its own inputs.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from flyteidl.core import literals_pb2, tasks_pb2

CACHE_DIR = "task-cache"


def key_of(template: tasks_pb2.TaskTemplate, inputs: literals_pb2.LiteralMap) -> str | None:
    """The cache key of running ``template`` on ``inputs``; None when the task is not cached."""
    metadata = template.metadata
    if not metadata.discoverable:
        return None
    digest = hashlib.sha256()
    for part in (template.id.project, template.id.domain, template.id.name, metadata.discovery_version):
        digest.update(part.encode() + b"\0")
    digest.update(template.interface.SerializeToString(deterministic=True) + b"\0")
    ignored = set(metadata.cache_ignore_input_vars)
    for name in sorted(inputs.literals):
        if name in ignored:
            continue
        literal = inputs.literals[name]
        value = literal.hash.encode() if literal.hash else literal.SerializeToString(deterministic=True)
        digest.update(name.encode() + b"\0" + value + b"\0")
    return digest.hexdigest()


def find(ctx, template: tasks_pb2.TaskTemplate,
         inputs: literals_pb2.LiteralMap) -> tuple[str | None, literals_pb2.LiteralMap | None]:
    """``(key, outputs)`` for running ``template`` on ``inputs`` in the run ``ctx``: no key when the
    task is not cached (or the sandbox keeps no cache); no outputs on a miss, or when the execution
    was launched to recompute cached tasks (``overwrite_cache``)."""
    key = key_of(template, inputs) if ctx.cache_dir is not None else None
    spec = ctx.job.spec
    if key is None or (spec is not None and spec.overwrite_cache):
        return key, None
    return key, lookup(ctx.cache_dir, key)


def lookup(cache_dir: Path, key: str) -> literals_pb2.LiteralMap | None:
    try:
        data = _path(cache_dir, key).read_bytes()
    except FileNotFoundError:
        return None
    outputs = literals_pb2.LiteralMap()
    outputs.ParseFromString(data)
    return outputs


def store(cache_dir: Path, key: str, outputs: literals_pb2.LiteralMap) -> None:
    """Write the entry whole or not at all (a concurrent run may be storing the same key)."""
    path = _path(cache_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".entry-")
    with os.fdopen(fd, "wb") as out:
        out.write(outputs.SerializeToString(deterministic=True))
    os.replace(temp, path)


def _path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / key[:2] / f"{key}.pb"
