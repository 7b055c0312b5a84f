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
restart. A map task over a cached task caches each element on its own inputs. A hit names the
task execution that stored the entry (``catalog_key``), as datacatalog's artifact metadata does.

``cache_serialize=True`` takes datacatalog's reservation before computing: of the attempts that
miss the same key at once, the one holding the reservation computes while the others wait, then
answer from the cache (or, if it failed, the next one takes the reservation and computes). The
holder renews the reservation while it runs; one not renewed for ``RESERVATION_EXPIRY_S`` (its
holder crashed) is free to take, so a crash never blocks the others for good:

    turn = wait_turn(ctx, template, key, owner, cancel)   # blocks while another attempt computes
    if turn.outputs is not None: ...                       # it did: a cache hit
    try: ...compute and store...
    finally: turn.release()
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from flyteidl.core import catalog_pb2, identifier_pb2, literals_pb2, tasks_pb2

CACHE_DIR = "task-cache"
# How often a reservation's holder renews it, and how long one not renewed lasts (datacatalog's
# heartbeat interval times its heartbeat grace period multiplier, 3).
RESERVATION_HEARTBEAT_S = 5.0
RESERVATION_EXPIRY_S = 3 * RESERVATION_HEARTBEAT_S
# How often a waiting attempt looks at the cache and the reservation again.
RESERVATION_POLL_S = 0.2
RESERVATIONS = "reservations"


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


def store(cache_dir: Path, key: str, outputs: literals_pb2.LiteralMap,
          source: identifier_pb2.TaskExecutionIdentifier | None = None) -> None:
    """Write the entry (and the task execution that computed it) whole or not at all (a
    concurrent run may be storing the same key)."""
    path = _path(cache_dir, key)
    if source is not None:
        _write_whole(_source_path(cache_dir, key), source.SerializeToString(deterministic=True))
    _write_whole(path, outputs.SerializeToString(deterministic=True))


def catalog_key(cache_dir: Path, template: tasks_pb2.TaskTemplate, key: str) -> catalog_pb2.CatalogMetadata:
    """What a cache hit says about its entry, named as propeller's datacatalog client names it:
    the task's dataset, the inputs' tag, and the task execution that stored it (when known)."""
    metadata = catalog_pb2.CatalogMetadata(
        dataset_id=identifier_pb2.Identifier(
            resource_type=identifier_pb2.DATASET, project=template.id.project, domain=template.id.domain,
            name=f"flyte_task-{template.id.name}", version=f"{template.metadata.discovery_version}-{key[:8]}",
        ),
        artifact_tag=catalog_pb2.CatalogArtifactTag(name=f"flyte_cached-{key}"),
    )
    try:
        metadata.source_task_execution.ParseFromString(_source_path(cache_dir, key).read_bytes())
    except FileNotFoundError:
        pass  # stored by an element of a map task, or before the sandbox kept sources
    return metadata


def _write_whole(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".entry-")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(temp, path)


def _path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / key[:2] / f"{key}.pb"


def _source_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / key[:2] / f"{key}.source.pb"


# --- cache_serialize: one attempt computes, the others wait for its outputs ----------------------


@dataclass
class Turn:
    """An attempt's turn at a cached task: the outputs another attempt computed meanwhile, or the
    right to compute them (a reservation renewed until ``release``)."""

    outputs: literals_pb2.LiteralMap | None = None
    reservation: Path | None = None
    owner: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        """Give the reservation up (after storing the outputs, or failing): a waiter goes next."""
        self._stop.set()
        if self.reservation is not None:
            with _reservations_locked(self.reservation.parent):
                if _holder(self.reservation)[0] == self.owner:
                    self.reservation.unlink(missing_ok=True)

    def _renew_until_released(self) -> None:
        while not self._stop.wait(RESERVATION_HEARTBEAT_S):
            _get_or_extend(self.reservation, self.owner)


def wait_turn(ctx, template: tasks_pb2.TaskTemplate, key: str | None, owner: str, cancel: threading.Event) -> Turn:
    """For a task declared ``cache_serialize``: wait while another attempt (``owner`` names this
    one) computes the same key; a Turn with its outputs once stored, else with the reservation.
    A task that is not serialized, or a run launched with ``overwrite_cache``, takes its turn at
    once (propeller takes no reservation for those either); a cancelled wait takes an empty Turn."""
    spec = ctx.job.spec
    overwrite = spec is not None and spec.overwrite_cache
    if key is None or not template.metadata.cache_serializable or overwrite:
        return Turn()
    reservation = Path(ctx.cache_dir) / RESERVATIONS / f"{key}.json"
    while not cancel.is_set():
        outputs = lookup(ctx.cache_dir, key)
        if outputs is not None:
            return Turn(outputs=outputs)
        if _get_or_extend(reservation, owner):
            turn = Turn(reservation=reservation, owner=owner)
            threading.Thread(target=turn._renew_until_released, name=f"reservation-{owner}", daemon=True).start()
            return turn
        cancel.wait(RESERVATION_POLL_S)
    return Turn()


def _get_or_extend(reservation: Path, owner: str) -> bool:
    """datacatalog's GetOrExtendReservation: take the reservation if it is free, expired or ours."""
    with _reservations_locked(reservation.parent):
        holder, expires_at = _holder(reservation)
        if holder not in (None, owner) and expires_at > time.time():
            return False
        record = {"owner": owner, "expires_at": time.time() + RESERVATION_EXPIRY_S}
        _write_whole(reservation, json.dumps(record).encode())
        return True


def _holder(reservation: Path) -> tuple[str | None, float]:
    try:
        record = json.loads(reservation.read_text())
        return record["owner"], float(record["expires_at"])
    except (FileNotFoundError, ValueError, KeyError):
        return None, 0.0


@contextmanager
def _reservations_locked(directory: Path):
    """One reservation change at a time, across the sandbox's threads and any process sharing the cache."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
