"""The sandbox's state: SQLite (stdlib) for entities and executions, files for blobs.

Rows hold the same protobuf messages the Admin API returns (``admin.Task``,
``admin.Execution``, ``admin.NodeExecution`` ...) serialized, plus the few columns needed
to find them; everything is committed as it happens, so a restart keeps what was
registered and every execution's record. One connection is shared by the gRPC worker
threads and the executor's event threads behind a lock: SQLite serializes writers anyway,
and the sandbox's volume is a notebook's, not a cluster's. The database runs in WAL mode
(readers never wait for the writer) with a busy timeout, so a second reader, such as the
``sqlite3`` shell of someone looking at it, delays a write instead of failing it.

Layout of a data dir::

    sandbox.db          this store
    uploads/            archives and files put through DataProxy signed URLs
    executions/P/D/N/   per-execution data (inputs.pb, node outputs, attempt dirs)
    raw/                offloaded task data (files, directories)
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

BUSY_TIMEOUT_SECONDS = 30  # how long a write waits for another connection's lock
CACHED_ENTITIES = 4096  # registered entities kept in memory (newest used last)

SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (id TEXT PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS entities (
    kind INTEGER, project TEXT, domain TEXT, name TEXT, version TEXT,
    created_at REAL NOT NULL, digest BLOB NOT NULL, body BLOB NOT NULL,
    PRIMARY KEY (kind, project, domain, name, version));
CREATE TABLE IF NOT EXISTS named_entities (
    kind INTEGER, project TEXT, domain TEXT, name TEXT, body BLOB NOT NULL,
    PRIMARY KEY (kind, project, domain, name));
CREATE TABLE IF NOT EXISTS executions (
    project TEXT, domain TEXT, name TEXT, created_at REAL NOT NULL, body BLOB NOT NULL,
    inputs BLOB, outputs BLOB, job BLOB,
    PRIMARY KEY (project, domain, name));
CREATE TABLE IF NOT EXISTS node_executions (
    project TEXT, domain TEXT, execution TEXT, node_id TEXT, parent_id TEXT,
    created_at REAL NOT NULL, body BLOB NOT NULL, inputs BLOB, outputs BLOB, dynamic BLOB,
    PRIMARY KEY (project, domain, execution, node_id));
CREATE TABLE IF NOT EXISTS task_executions (
    project TEXT, domain TEXT, execution TEXT, node_id TEXT, task TEXT, retry INTEGER,
    created_at REAL NOT NULL, body BLOB NOT NULL, inputs BLOB, outputs BLOB,
    PRIMARY KEY (project, domain, execution, node_id, task, retry));
"""


class Store:
    """Thread-safe access to the sandbox's SQLite database and blob directories."""

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir).resolve()
        self.uploads_dir = self.data_dir / "uploads"
        self.executions_dir = self.data_dir / "executions"
        self.raw_dir = self.data_dir / "raw"
        for directory in (self.data_dir, self.uploads_dir, self.executions_dir, self.raw_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self._db = sqlite3.connect(self.data_dir / "sandbox.db", check_same_thread=False, isolation_level=None,
                                   timeout=BUSY_TIMEOUT_SECONDS)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        # Read-through caches of rows only this store writes: a registration looks up the project on
        # every Create and each workflow's tasks right after creating them.
        self._projects: dict[str, bytes] = {}
        self._entities: OrderedDict[tuple, tuple[bytes, bytes]] = OrderedDict()

    def close(self) -> None:
        with self.lock:
            self._db.close()

    # -- plain SQL -------------------------------------------------------------------------

    def query(self, sql: str, params: Iterable = ()) -> list[sqlite3.Row]:
        with self.lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    def execute(self, sql: str, params: Iterable = ()) -> None:
        with self.lock:
            self._db.execute(sql, tuple(params))

    def transaction(self) -> "_Transaction":
        return _Transaction(self)

    # -- projects -----------------------------------------------------------------------

    def put_project(self, project_id: str, body: Message) -> None:
        data = body.SerializeToString()
        with self.lock:
            self.execute("INSERT OR REPLACE INTO projects VALUES (?, ?)", (project_id, data))
            self._projects[project_id] = data

    def get_project(self, project_id: str, cls: type[M]) -> M | None:
        with self.lock:
            data = self._projects.get(project_id)
            if data is None:
                rows = self.query("SELECT body FROM projects WHERE id = ?", (project_id,))
                if not rows:
                    return None
                data = self._projects[project_id] = rows[0][0]
        return _parse(cls, data)

    def list_projects(self, cls: type[M]) -> list[M]:
        return [_parse(cls, row[0]) for row in self.query("SELECT body FROM projects ORDER BY id")]

    # -- tasks, workflows, launch plans ----------------------------------------------------

    def add_entity(self, kind: int, key: tuple, digest: bytes, body: Message) -> bool:
        """Insert a new entity version; False (and nothing written) when that version exists already."""
        data = body.SerializeToString()
        with self.lock:
            inserted = self._db.execute(
                "INSERT OR IGNORE INTO entities VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (kind, *key, time.time(), digest, data)
            ).rowcount
            if inserted:
                self._remember_entity((kind, *key), data, digest)
            return bool(inserted)

    def replace_entity(self, kind: int, key: tuple, body: Message) -> None:
        data = body.SerializeToString()
        with self.lock:
            self.execute(
                "UPDATE entities SET body = ? WHERE kind = ? AND project = ? AND domain = ? AND name = ? AND version = ?",
                (data, kind, *key),
            )
            self._entities.pop((kind, *key), None)

    def get_entity(self, kind: int, key: tuple, cls: type[M]) -> tuple[M, bytes] | None:
        with self.lock:
            cached = self._entities.get((kind, *key))
            if cached is not None:
                self._entities.move_to_end((kind, *key))
            else:
                rows = self.query(
                    "SELECT body, digest FROM entities WHERE kind = ? AND project = ? AND domain = ? AND name = ? "
                    "AND version = ?",
                    (kind, *key),
                )
                if not rows:
                    return None
                cached = self._remember_entity((kind, *key), rows[0][0], rows[0][1])
        return _parse(cls, cached[0]), cached[1]

    def _forget_cached(self) -> None:
        self._projects.clear()
        self._entities.clear()

    def _remember_entity(self, cache_key: tuple, data: bytes, digest: bytes) -> tuple[bytes, bytes]:
        self._entities[cache_key] = (data, digest)
        if len(self._entities) > CACHED_ENTITIES:
            self._entities.popitem(last=False)
        return data, digest

    def list_entities(self, kind: int, project: str, domain: str, name: str | None, cls: type[M]) -> list[M]:
        sql = "SELECT body FROM entities WHERE kind = ? AND project = ? AND domain = ?"
        params: list = [kind, project, domain]
        if name:
            sql += " AND name = ?"
            params.append(name)
        return [_parse(cls, row[0]) for row in self.query(sql + " ORDER BY created_at DESC", params)]

    def entity_names(self, kind: int, project: str, domain: str) -> list[str]:
        rows = self.query(
            "SELECT name FROM entities WHERE kind = ? AND project = ? AND domain = ? GROUP BY name ORDER BY name",
            (kind, project, domain),
        )
        return [row[0] for row in rows]

    def put_named_entity(self, kind: int, key: tuple, body: Message) -> None:
        self.execute("INSERT OR REPLACE INTO named_entities VALUES (?, ?, ?, ?, ?)", (kind, *key, body.SerializeToString()))

    def get_named_entity(self, kind: int, key: tuple, cls: type[M]) -> M | None:
        rows = self.query(
            "SELECT body FROM named_entities WHERE kind = ? AND project = ? AND domain = ? AND name = ?", (kind, *key)
        )
        return _parse(cls, rows[0][0]) if rows else None

    # -- executions ------------------------------------------------------------------------

    def add_execution(self, key: tuple, body: Message, inputs: Message, job: bytes | None = None) -> None:
        self.execute(
            "INSERT INTO executions (project, domain, name, created_at, body, inputs, job) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*key, time.time(), body.SerializeToString(), inputs.SerializeToString(), job),
        )

    def get_execution(self, key: tuple, cls: type[M]) -> M | None:
        rows = self.query("SELECT body FROM executions WHERE project = ? AND domain = ? AND name = ?", key)
        return _parse(cls, rows[0][0]) if rows else None

    def execution_data(self, key: tuple) -> tuple[bytes | None, bytes | None]:
        rows = self.query("SELECT inputs, outputs FROM executions WHERE project = ? AND domain = ? AND name = ?", key)
        return (rows[0][0], rows[0][1]) if rows else (None, None)

    def update_execution(self, key: tuple, cls: type[M], change: Callable[[M], bytes | None]) -> M | None:
        """Read, change and write an execution atomically; ``change`` may return new output bytes."""
        with self.lock:
            current = self.get_execution(key, cls)
            if current is None:
                return None
            outputs = change(current)
            self.execute(
                "UPDATE executions SET body = ?, outputs = COALESCE(?, outputs) WHERE project = ? AND domain = ? AND name = ?",
                (current.SerializeToString(), outputs, *key),
            )
            return current

    def list_executions(self, project: str, domain: str, cls: type[M]) -> list[M]:
        rows = self.query(
            "SELECT body FROM executions WHERE project = ? AND domain = ? ORDER BY created_at DESC", (project, domain)
        )
        return [_parse(cls, row[0]) for row in rows]

    def all_executions(self, cls: type[M]) -> list[M]:
        return [_parse(cls, row[0]) for row in self.query("SELECT body FROM executions")]

    # -- node and task executions ----------------------------------------------------------

    def get_node_execution(self, key: tuple, cls: type[M]) -> M | None:
        rows = self.query(
            "SELECT body FROM node_executions WHERE project = ? AND domain = ? AND execution = ? AND node_id = ?", key
        )
        return _parse(cls, rows[0][0]) if rows else None

    def put_node_execution(self, key: tuple, parent_id: str | None, body: Message, **data: bytes | None) -> None:
        with self.lock:
            exists = self.query(
                "SELECT 1 FROM node_executions WHERE project = ? AND domain = ? AND execution = ? AND node_id = ?", key
            )
            if not exists:
                self.execute(
                    "INSERT INTO node_executions (project, domain, execution, node_id, parent_id, created_at, body) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (*key, parent_id, time.time(), body.SerializeToString()),
                )
            else:
                self.execute(
                    "UPDATE node_executions SET body = ? WHERE project = ? AND domain = ? AND execution = ? AND node_id = ?",
                    (body.SerializeToString(), *key),
                )
            for column, value in data.items():
                if value is not None:
                    self.execute(
                        f"UPDATE node_executions SET {column} = ? "  # column names come from this module only
                        "WHERE project = ? AND domain = ? AND execution = ? AND node_id = ?",
                        (value, *key),
                    )

    def node_execution_data(self, key: tuple) -> tuple[bytes | None, bytes | None, bytes | None]:
        rows = self.query(
            "SELECT inputs, outputs, dynamic FROM node_executions "
            "WHERE project = ? AND domain = ? AND execution = ? AND node_id = ?",
            key,
        )
        return tuple(rows[0]) if rows else (None, None, None)

    def list_node_executions(self, execution_key: tuple, parent_id: str | None, cls: type[M]) -> list[M]:
        sql = "SELECT body FROM node_executions WHERE project = ? AND domain = ? AND execution = ? AND "
        sql += "parent_id IS NULL" if parent_id is None else "parent_id = ?"
        params = list(execution_key) + ([] if parent_id is None else [parent_id])
        # rowid: the order they were created in (each is inserted once, then updated in place)
        return [_parse(cls, row[0]) for row in self.query(sql + " ORDER BY rowid", params)]

    def all_node_executions(self, execution_key: tuple, cls: type[M]) -> list[M]:
        rows = self.query("SELECT body FROM node_executions WHERE project = ? AND domain = ? AND execution = ?",
                          execution_key)
        return [_parse(cls, row[0]) for row in rows]

    def all_task_executions(self, execution_key: tuple, cls: type[M]) -> list[M]:
        rows = self.query("SELECT body FROM task_executions WHERE project = ? AND domain = ? AND execution = ?",
                          execution_key)
        return [_parse(cls, row[0]) for row in rows]

    def get_task_execution(self, key: tuple, cls: type[M]) -> M | None:
        rows = self.query(
            "SELECT body FROM task_executions WHERE project = ? AND domain = ? AND execution = ? AND node_id = ? "
            "AND task = ? AND retry = ?",
            key,
        )
        return _parse(cls, rows[0][0]) if rows else None

    def put_task_execution(self, key: tuple, body: Message, **data: bytes | None) -> None:
        with self.lock:
            exists = self.get_task_execution(key, type(body)) is not None
            if not exists:
                self.execute(
                    "INSERT INTO task_executions (project, domain, execution, node_id, task, retry, created_at, body) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (*key, time.time(), body.SerializeToString()),
                )
            else:
                self.execute(
                    "UPDATE task_executions SET body = ? WHERE project = ? AND domain = ? AND execution = ? "
                    "AND node_id = ? AND task = ? AND retry = ?",
                    (body.SerializeToString(), *key),
                )
            for column, value in data.items():
                if value is not None:
                    self.execute(
                        f"UPDATE task_executions SET {column} = ? WHERE project = ? AND domain = ? AND execution = ? "
                        "AND node_id = ? AND task = ? AND retry = ?",
                        (value, *key),
                    )

    def task_execution_data(self, key: tuple) -> tuple[bytes | None, bytes | None]:
        rows = self.query(
            "SELECT inputs, outputs FROM task_executions WHERE project = ? AND domain = ? AND execution = ? "
            "AND node_id = ? AND task = ? AND retry = ?",
            key,
        )
        return (rows[0][0], rows[0][1]) if rows else (None, None)

    def list_task_executions(self, node_key: tuple, cls: type[M]) -> list[M]:
        rows = self.query(
            "SELECT body FROM task_executions WHERE project = ? AND domain = ? AND execution = ? AND node_id = ? "
            "ORDER BY retry, created_at",
            node_key,
        )
        return [_parse(cls, row[0]) for row in rows]


class _Transaction:
    """``with store.transaction():`` groups writes (and holds the lock) so they land together."""

    def __init__(self, store: Store):
        self._store = store

    def __enter__(self) -> Store:
        self._store.lock.acquire()
        try:
            self._store._db.execute("BEGIN IMMEDIATE")  # take the write lock now, not at the first write
        except BaseException:
            self._store.lock.release()
            raise
        return self._store

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._store._db.execute("ROLLBACK" if exc_type else "COMMIT")
            if exc_type:
                self._store._forget_cached()  # they may hold rows written inside the rolled-back transaction
        finally:
            self._store.lock.release()


def _parse(cls: type[M], data: bytes) -> M:
    message = cls()
    message.ParseFromString(data)
    return message
