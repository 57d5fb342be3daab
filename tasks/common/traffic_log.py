"""The traffic log: every routed call of a rollout, one row each, in the workspace's state store.

``traffic_log`` is the usage_log schema plus ``rollout_stage`` and ``arm``
(incumbent | candidate | shadow). It is append-only. Callers never wait on the database: ``log`` puts
the row on a queue and a writer thread inserts batches with ``executemany`` in one transaction,
so hundreds of concurrent callers cost one commit per batch and no row is lost. ``read_traffic``
is the one reader (guardrails, monitoring) and returns Arrow.

Rows hold no credentials: the router builds them from the call's outcome only, and ``log``
drops any metadata key that looks like a secret, in case a caller passes one by mistake.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Iterable

import pyarrow as pa

from workhorse import store
from workhorse.workspace import Workspace

ARMS = ("incumbent", "candidate", "shadow")

TRAFFIC_LOG_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("use_case", pa.string()),
        ("model", pa.string()),
        ("provider", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("latency_ms", pa.float64()),
        ("status", pa.string()),
        ("error_type", pa.string()),
        ("cost_usd", pa.float64()),
        ("request", pa.string()),
        ("response", pa.string()),
        ("metadata", pa.string()),
        ("rollout_stage", pa.string()),
        ("arm", pa.string()),
    ]
)
COLUMNS = TRAFFIC_LOG_SCHEMA.names

# ts is stored as integer microseconds since the epoch: exact, and range scans use the index.
SCHEMA = """
CREATE TABLE IF NOT EXISTS traffic_log (
    request_id TEXT NOT NULL, ts INTEGER NOT NULL, use_case TEXT NOT NULL, model TEXT NOT NULL,
    provider TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, latency_ms REAL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'error')), error_type TEXT, cost_usd REAL,
    request TEXT, response TEXT, metadata TEXT, rollout_stage TEXT,
    arm TEXT NOT NULL CHECK (arm IN ('incumbent', 'candidate', 'shadow'))
);
CREATE INDEX IF NOT EXISTS traffic_log_use_case_ts ON traffic_log (use_case, ts);
"""
_SECRET_HINTS = ("api_key", "apikey", "authorization", "secret", "password", "token_value")


def connect(workspace: Workspace):
    """A connection to the state store with the traffic table in place."""
    connection = store.connect(workspace)
    connection.ensure(SCHEMA)
    return connection


def to_micros(value: datetime | str | float | int | None) -> int | None:
    """A time as epoch microseconds: datetimes (naive = UTC), ISO strings, or epoch seconds."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, datetime):
        value = (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    return int(round(float(value) * 1_000_000))


def now_micros() -> int:
    return time.time_ns() // 1000


def make_row(**values: Any) -> dict:
    """A complete traffic row: defaults for the optional columns, an id and a timestamp."""
    row = dict.fromkeys(COLUMNS)
    row.update(request_id=uuid.uuid4().hex, ts=time.time(), metadata={})
    row.update(values)
    return row


def _as_record(row: dict) -> tuple:
    values = {**dict.fromkeys(COLUMNS), **row}
    values["ts"] = to_micros(values["ts"]) if values["ts"] is not None else now_micros()
    if values["arm"] not in ARMS:
        raise ValueError(f"traffic row arm must be one of {ARMS}, not {values['arm']!r}")
    for name in ("metadata", "request"):
        if values[name] is not None and not isinstance(values[name], str):
            values[name] = json.dumps(
                _scrub(values[name]) if name == "metadata" else values[name], default=str
            )
    return tuple(values[c] for c in COLUMNS)


def _scrub(metadata: Any) -> Any:
    if not isinstance(metadata, dict):
        return metadata
    return {k: _scrub(v) for k, v in metadata.items() if not any(h in str(k).lower() for h in _SECRET_HINTS)}


class TrafficLogger:
    """Non-blocking, thread-safe appender: ``log(row)`` queues, a writer thread batches inserts.

    ``flush()`` returns once every row logged before it is committed; ``close()`` flushes and
    stops the thread. Usable as a context manager.
    """

    def __init__(self, workspace: Workspace, batch_size: int = 500):
        self.workspace = workspace
        self.batch_size = batch_size
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write_forever, name="traffic-log-writer", daemon=True)
        connect(workspace).close()  # the table exists before the first reader looks
        self._thread.start()

    def log(self, row: dict) -> None:
        """Queue one row (validated now, so a bad row fails its caller, not the writer)."""
        if self._error is not None:
            raise RuntimeError("the traffic log writer failed") from self._error
        self._queue.put(_as_record(row))

    def log_many(self, rows: Iterable[dict]) -> None:
        for row in rows:
            self.log(row)

    def flush(self) -> None:
        self._queue.join()
        if self._error is not None:
            raise RuntimeError("the traffic log writer failed") from self._error

    def close(self) -> None:
        if self._thread.is_alive():
            self.flush()
            self._queue.put(None)
            self._thread.join(timeout=30)

    def __enter__(self) -> "TrafficLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write_forever(self) -> None:
        connection = connect(self.workspace)
        try:
            while True:
                batch = [self._queue.get()]
                while len(batch) < self.batch_size:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = None in batch
                self._insert(connection, [r for r in batch if r is not None])
                for _ in batch:
                    self._queue.task_done()
                if stop:
                    return
        finally:
            connection.close()

    def _insert(self, connection, records: list[tuple]) -> None:
        if not records:
            return
        marks = ",".join("?" * len(COLUMNS))
        try:
            with connection.transaction():  # one commit per batch
                connection.executemany(
                    f"INSERT INTO traffic_log ({','.join(COLUMNS)}) VALUES ({marks})", records
                )
        except Exception as error:  # kept and raised to the next caller: a lost row must be loud
            self._error = error


def read_traffic(
    workspace: Workspace | str | None, use_case: str | None = None, since=None, until=None
) -> pa.Table:
    """Traffic rows (``TRAFFIC_LOG_SCHEMA``), optionally for one use case and ``since <= ts <= until``.

    ``since``/``until`` accept datetimes (naive = UTC), ISO strings or epoch seconds.
    """
    workspace = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    clauses, values = [], []
    for clause, value in (
        ("use_case = ?", use_case),
        ("ts >= ?", to_micros(since)),
        ("ts <= ?", to_micros(until)),
    ):
        if value is not None:
            clauses.append(clause)
            values.append(value)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    with connect(workspace) as connection:
        rows = connection.execute(
            f"SELECT {','.join(COLUMNS)} FROM traffic_log{where} ORDER BY ts", values
        ).fetchall()
    columns = {name: [r[i] for r in rows] for i, name in enumerate(COLUMNS)}
    columns["ts"] = pa.array(columns["ts"], pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    return pa.table(columns, schema=TRAFFIC_LOG_SCHEMA)
