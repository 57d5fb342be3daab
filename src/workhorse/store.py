"""The workspace's state database: response cache, rollout state, incidents, traffic log.

Two backends behind one small connection type, chosen by the state URL:

- SQLite (the default, ``<workspace>/state.db``): WAL with synchronous=NORMAL makes every commit
  survive a killed process (only a power cut can lose the last ones) at tens of microseconds,
  so rows are committed one by one and a crashed run never pays twice for an answer.
- PostgreSQL (``state_url: postgresql://…`` in workhorse.yaml, or ``WORKHORSE_STATE_URL``):
  the state shared by many app replicas and workers on several machines.

Callers write one SQL dialect: ``?`` placeholders, ``INTEGER``/``REAL`` columns,
``INSERT … ON CONFLICT … DO UPDATE`` and ``RETURNING`` (SQLite ≥ 3.35 and PostgreSQL both have
them). ``transaction(lock=…)`` serialises writers the way each backend can: ``BEGIN IMMEDIATE``
on SQLite (one writer per file), a transaction-scoped advisory lock on PostgreSQL (one writer
per lock name, so two use cases never wait on each other).

The schema is versioned (``schema_version``): version 1 is the store as released, where each
module ``ensure``s its own tables; later versions are forward migrations in ``MIGRATIONS``, applied
once per database when a connection opens it. A store written by a newer workhorse is refused.

The URL may carry ``${VAR}`` references (a password kept in the environment); it is expanded
only when connecting, and ``describe`` is the only form that is ever logged.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit

from workhorse import dburl
from workhorse.errors import ConfigError

POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


def is_postgres(url: str) -> bool:
    return urlsplit(url).scheme in POSTGRES_SCHEMES


def describe(url: str | os.PathLike) -> str:
    """The state URL as it may be shown: no password, no query string (it can hold one too)."""
    return dburl.describe(str(url)) if is_postgres(str(url)) else str(url)


def connect(target: Any) -> "StateConnection":
    """A connection to a workspace's state (a Workspace, a postgresql:// URL or an SQLite path),
    migrated forward to ``SCHEMA_VERSION``. Each module ``ensure``s its own tables besides."""
    url = target.state_url if hasattr(target, "state_url") else str(target)
    connection = PostgresConnection(url) if is_postgres(url) else SQLiteConnection(Path(url))
    try:
        migrate(connection)
    except BaseException:
        connection.close()
        raise
    return connection


class StateSchemaError(ConfigError):
    """The state store was written by a newer workhorse than this one."""


# Tables of the provider batch jobs (the first state added since release). A job is one provider
# batch: its key is ours, chosen before any provider call, so a killed run finds it again.
BATCH_SCHEMA = """
CREATE TABLE IF NOT EXISTS batch_job (
    job_key TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    model TEXT NOT NULL,
    litellm_model TEXT,
    api_base TEXT,
    attempt INTEGER NOT NULL,
    stage TEXT NOT NULL,
    input_path TEXT,
    file_id TEXT,
    batch_id TEXT,
    status TEXT,
    lines INTEGER NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    submitted_at TEXT,
    finished_at TEXT,
    cost_usd REAL,
    sync_cost_usd REAL
);
CREATE INDEX IF NOT EXISTS batch_job_run ON batch_job (run_id);
CREATE TABLE IF NOT EXISTS batch_line (
    custom_id TEXT NOT NULL,
    job_key TEXT NOT NULL,
    state TEXT NOT NULL,
    output TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    error_type TEXT,
    error_message TEXT,
    PRIMARY KEY (custom_id, job_key)
);
CREATE INDEX IF NOT EXISTS batch_line_job ON batch_line (job_key);
"""

# version -> the SQL (SQLite dialect) that takes a store from the version before to it.
MIGRATIONS: dict[int, str] = {2: BATCH_SCHEMA}
SCHEMA_VERSION = max(MIGRATIONS)
VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL);"
)
_migrated: set[str] = set()  # databases already at SCHEMA_VERSION in this process


def stored_version(connection: "StateConnection") -> int:
    """The store's schema version; a store from before versioning (or a new one) is version 1."""
    row = connection.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return row[0] if row and row[0] is not None else 1


def migrate(connection: "StateConnection") -> int:
    """Bring the store forward to ``SCHEMA_VERSION`` (the steps in one locked transaction, each
    recorded in ``schema_version``); refuse a store whose version this workhorse does not know.
    A store already current costs one read and takes no write lock."""
    if connection.name in _migrated:
        return SCHEMA_VERSION
    connection.ensure(VERSION_TABLE)
    if _known(connection, stored_version(connection)) < SCHEMA_VERSION:
        with connection.transaction(lock="workhorse.schema"):
            version = _known(connection, stored_version(connection))  # another process may have moved it
            for step in range(version + 1, SCHEMA_VERSION + 1):
                connection.script(MIGRATIONS[step])
                connection.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, CURRENT_TIMESTAMP)", (step,)
                )
    if connection.dialect == "postgresql":  # SQLite files come and go under one path: checked each time
        _migrated.add(connection.name)
    return SCHEMA_VERSION


def _known(connection: "StateConnection", version: int) -> int:
    if version > SCHEMA_VERSION:
        raise StateSchemaError(
            f"the state store {connection.name} has schema version {version}, written by a newer "
            f"workhorse; this one knows versions up to {SCHEMA_VERSION}: upgrade workhorse to open it"
        )
    return version


class StateConnection:
    """What the state modules use: execute, executemany, ensure (schema), transaction, close."""

    dialect = ""
    name = ""  # the database, as it may be logged

    def execute(self, sql: str, params: Sequence = ()) -> Any:
        raise NotImplementedError

    def executemany(self, sql: str, rows: Sequence[Sequence]) -> None:
        raise NotImplementedError

    def ensure(self, schema: str) -> None:
        """Create the tables of ``schema`` if missing (once per process and database)."""
        raise NotImplementedError

    def script(self, schema: str) -> None:
        """Run the statements of an SQLite-dialect ``schema`` inside the open transaction."""
        raise NotImplementedError

    @contextmanager
    def transaction(self, lock: str | None = None) -> Iterator["StateConnection"]:
        raise NotImplementedError

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> "StateConnection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SQLiteConnection(StateConnection):
    dialect = "sqlite"

    def __init__(self, path: Path):
        self.name = str(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._raw = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._raw.execute("PRAGMA journal_mode=WAL")
        self._raw.execute("PRAGMA synchronous=NORMAL")

    def execute(self, sql: str, params: Sequence = ()) -> sqlite3.Cursor:
        return self._raw.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence]) -> None:
        self._raw.executemany(sql, rows)

    def ensure(self, schema: str) -> None:
        self._raw.executescript(schema)

    def script(self, schema: str) -> None:
        """The statements of ``schema`` inside the open transaction (executescript would commit it)."""
        for statement in (s.strip() for s in schema.split(";")):
            if statement:
                self._raw.execute(statement)

    @contextmanager
    def transaction(self, lock: str | None = None) -> Iterator["SQLiteConnection"]:
        self._raw.execute("BEGIN IMMEDIATE")  # the one writer of the file until COMMIT
        try:
            yield self
        except BaseException:
            if self._raw.in_transaction:
                self._raw.execute("ROLLBACK")
            raise
        self._raw.execute("COMMIT")


# PostgreSQL spellings of the few SQLite-isms the schemas use. Microsecond timestamps do not fit
# PostgreSQL's 4-byte INTEGER, so every integer column is BIGINT.
_POSTGRES_TYPES = (
    (re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"), "BIGSERIAL PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
)
_ensured: set[tuple[str, int]] = set()  # (database, schema hash): DDL once per process
_ensured_lock = threading.Lock()


def postgres_ddl(schema: str) -> list[str]:
    """The statements of an SQLite-dialect schema, in PostgreSQL's spelling."""
    for pattern, replacement in _POSTGRES_TYPES:
        schema = pattern.sub(replacement, schema)
    return [statement.strip() for statement in schema.split(";") if statement.strip()]


def _lock_id(name: str) -> int:
    """A stable 64-bit advisory-lock id for a name (crc32 of two halves; same in every process)."""
    return (zlib.crc32(name.encode()) << 31) ^ zlib.crc32(name[::-1].encode())


class PostgresConnection(StateConnection):
    dialect = "postgresql"

    def __init__(self, url: str):
        import psycopg

        self.database = self.name = describe(url)
        expanded = dburl.expand(url)
        # autocommit: every statement is its own transaction unless transaction() opens one,
        # which is the same contract as the SQLite connection in isolation_level=None.
        try:
            self._raw = psycopg.connect(expanded, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as error:
            raise ConnectionError(
                f"cannot reach the state database {self.database}: {dburl.scrub(str(error), expanded)}"
            ) from None

    def execute(self, sql: str, params: Sequence = ()) -> Any:
        return self._raw.execute(_placeholders(sql), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence]) -> None:
        with self._raw.cursor() as cursor:
            cursor.executemany(_placeholders(sql), rows)

    def ensure(self, schema: str) -> None:
        key = (self.database, zlib.crc32(schema.encode()))
        with _ensured_lock:
            if key in _ensured:
                return
        # Concurrent CREATE TABLE IF NOT EXISTS can still collide in PostgreSQL's catalog:
        # the first process creates, the others wait on the lock and find the tables there.
        with self.transaction(lock="workhorse.schema"):
            for statement in postgres_ddl(schema):
                self._raw.execute(statement)
        with _ensured_lock:
            _ensured.add(key)

    def script(self, schema: str) -> None:
        for statement in postgres_ddl(schema):
            self._raw.execute(statement)

    @contextmanager
    def transaction(self, lock: str | None = None) -> Iterator["PostgresConnection"]:
        with self._raw.transaction():
            if lock is not None:
                self._raw.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_id(lock),))
            yield self


def _placeholders(sql: str) -> str:
    """``?`` → ``%s`` (psycopg's marker); a literal ``%`` must then be doubled."""
    return sql.replace("%", "%%").replace("?", "%s")


def rows_as_dicts(cursor: Any) -> list[dict]:
    """Every row of a cursor as ``{column: value}`` (both drivers' descriptions start with the name)."""
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]
