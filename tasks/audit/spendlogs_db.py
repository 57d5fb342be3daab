"""LiteLLM proxy spend logs read straight from the proxy's PostgreSQL database (``LiteLLM_SpendLogs``).

The proxy writes one row per call; an audit should not wait for someone to export them. The rows
of a time window (``"startTime" >= since`` and ``< until``) stream through a server-side cursor,
``chunk_rows`` at a time, and each chunk is appended to a staging Parquet file in the run's folder,
so memory holds one chunk whatever the table's size. The staging file then takes the same road as a
CSV export (LiteLLM adapter, contract, quarantine, pricing): both paths agree to the cent.

Secrets stay in the database: only the columns the adapter reads are selected (never ``api_key``,
``proxy_server_request`` or the requester's IP), and secret-looking keys in ``metadata`` (the
hashed ``user_api_key``, forwarded headers) are redacted before the first byte is written. The URL
may hold ``${VAR}`` references, expanded only to connect (libpq's ``PGPASSWORD`` and ``~/.pgpass``
work too); it is only ever shown as ``dburl.describe`` writes it, without password or query string.
"""

from __future__ import annotations

import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from workhorse import dburl
from workhorse.config import SpendLogsDb
from workhorse.errors import ConfigError, DataError
from workhorse.tasks.audit import usage

TABLE = "LiteLLM_SpendLogs"
CHUNK_ROWS = 50_000
STAGING_FILE = f"{TABLE}.parquet"

# What the LiteLLM adapter reads, with the Prisma schema's exact (case-sensitive) names. Text
# casts keep jsonb as its JSON text and timestamps as PostgreSQL prints them, exactly what a
# ``COPY ... TO CSV`` export holds, so both paths parse the same strings.
STAGING_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("startTime", pa.string()),
        ("endTime", pa.string()),
        ("model", pa.string()),
        ("model_group", pa.string()),
        ("custom_llm_provider", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("spend", pa.float64()),
        ("status", pa.string()),
        ("metadata", pa.string()),
        ("request_tags", pa.string()),
        ("messages", pa.string()),
        ("response", pa.string()),
    ]
)
REQUIRED = ("request_id", "startTime", "endTime", "model", "prompt_tokens", "completion_tokens", "spend")
SQL_TYPES = {pa.string(): "text", pa.int64(): "bigint", pa.float64(): "double precision"}


# --------------------------------------------------------------------------- the query


def utc_naive(moment: datetime | None) -> datetime | None:
    """Prisma stores ``startTime`` as UTC without a zone: compare in the same terms."""
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def table_columns(conn, schema: str | None, shown: str) -> set[str]:
    """The spend-log table's columns; a clear error when the table (or a needed column) is missing."""
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
        "AND table_schema = coalesce(%s, current_schema())",
        (TABLE, schema),
    ).fetchall()
    found = {r[0] for r in rows}
    where = f'schema "{schema}"' if schema else "the default schema"
    if not found:
        raise DataError(
            f'no table "{TABLE}" in {where} of {shown}: is this the LiteLLM proxy\'s database '
            "(DATABASE_URL), and has the proxy started once to create its tables?"
        )
    missing = [c for c in REQUIRED if c not in found]
    if missing:
        raise DataError(
            f'"{TABLE}" in {shown} lacks the columns {", ".join(missing)}: not a LiteLLM spend log'
        )
    return found


def select_query(columns: set[str], schema: str | None, since: datetime | None, until: datetime | None):
    """The window's rows, only the adapter's columns; columns an older proxy lacks come as NULL."""
    from psycopg import sql

    picked = []
    for field in STAGING_SCHEMA:
        cast = sql.SQL(SQL_TYPES[field.type])
        value = (
            sql.SQL("{}::{}").format(sql.Identifier(field.name), cast)
            if field.name in columns
            else sql.SQL("NULL::{}").format(cast)
        )
        picked.append(sql.SQL("{} AS {}").format(value, sql.Identifier(field.name)))
    table = sql.Identifier(schema, TABLE) if schema else sql.Identifier(TABLE)
    bounds, params = [], []
    for bound, operator in ((since, ">="), (until, "<")):
        if bound is not None:
            bounds.append(sql.SQL("{} {} %s").format(sql.Identifier("startTime"), sql.SQL(operator)))
            params.append(utc_naive(bound))
    where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(bounds) if bounds else sql.SQL("")
    return sql.SQL("SELECT {} FROM {}{}").format(sql.SQL(", ").join(picked), table, where), params


# --------------------------------------------------------------------------- streaming


def chunk_table(rows: Sequence[tuple]) -> pa.Table:
    """One fetched chunk as Arrow columns, secrets in the metadata already redacted."""
    columns = list(zip(*rows))
    arrays = [pa.array(values, type=field.type) for values, field in zip(columns, STAGING_SCHEMA)]
    table = pa.Table.from_arrays(arrays, schema=STAGING_SCHEMA)
    index = STAGING_SCHEMA.get_field_index("metadata")
    return table.set_column(index, "metadata", redact_json(table.column("metadata")))


def redact_json(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """The audit's own redaction patterns (RE2, like DuckDB's), applied before anything is written."""
    escaped = pc.replace_substring_regex(
        column, "(?i)" + usage.ESCAPED_SECRET_PAIR, usage.ESCAPED_REDACTED_PAIR
    )
    keyed = pc.replace_substring_regex(escaped, "(?i)" + usage.SECRET_PAIR, usage.REDACTED_PAIR)
    return pc.replace_substring_regex(keyed, usage.SECRET_VALUE, "[redacted]")


def stream_to_parquet(cursor, path: Path, chunk_rows: int) -> int:
    """Fetch ``chunk_rows`` at a time and append each chunk to ``path``; the rows written."""
    import pyarrow.parquet as pq

    written = 0
    with pq.ParquetWriter(path, STAGING_SCHEMA, compression="zstd") as writer:
        while rows := cursor.fetchmany(chunk_rows):
            writer.write_table(chunk_table(rows))
            written += len(rows)
    return written


@dataclass(frozen=True)
class StagedSpendLogs:
    """What one read staged: the file, its rows, where they came from (shown form) and how long it took."""

    path: Path
    rows: int
    source: str
    seconds: float


def stage_spend_logs(source: SpendLogsDb, folder: Path, chunk_rows: int = CHUNK_ROWS) -> StagedSpendLogs:
    """Copy the window's spend logs from PostgreSQL into ``folder/LiteLLM_SpendLogs.parquet``."""
    import psycopg

    started = time.perf_counter()
    url, schema = dburl.split_schema(dburl.expand(source.url.get_secret_value()))
    shown = dburl.describe(url)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / STAGING_FILE
    try:
        with psycopg.connect(url, connect_timeout=10, application_name="workhorse-audit") as conn:
            conn.read_only = True  # an audit never writes to the proxy's database
            query, params = select_query(
                table_columns(conn, schema, shown), schema, source.since, source.until
            )
            with conn.cursor(name=f"workhorse_spend_logs_{uuid.uuid4().hex[:8]}") as cursor:
                cursor.execute(query, params)
                rows = stream_to_parquet(cursor, path, chunk_rows)
    except psycopg.OperationalError as error:
        raise DataError(f"cannot read the LiteLLM database {shown}: {dburl.scrub(str(error), url)}") from None
    except psycopg.Error as error:
        raise DataError(f'reading "{TABLE}" from {shown} failed: {dburl.scrub(str(error), url)}') from None
    if rows == 0:
        raise DataError(f'no rows in "{TABLE}" of {shown} with startTime in {window_text(source)}')
    return StagedSpendLogs(path, rows, shown, time.perf_counter() - started)


def window_text(source: SpendLogsDb) -> str:
    since = source.since.isoformat() if source.since else "the first row"
    until = source.until.isoformat() if source.until else "the last row"
    return f"[{since}, {until})"


# --------------------------------------------------------------------------- the flow's step


@contextmanager
def staged_spend_logs(
    source: SpendLogsDb | None, workspace_root: Path, fmt: str | None
) -> Iterator[list[str]]:
    """The staging file's path (none without a source) for the audit, deleted once the audit is done.

    The staged rows are a raw copy; what the audit keeps lives in ``usage/`` and ``quarantine/``.
    """
    if source is None:
        yield []
        return
    if fmt not in (None, "litellm"):
        raise ConfigError(f"--format {fmt} cannot read the spend-logs database: leave it out or say litellm")
    folder = workspace_root / "runs" / f"spendlogs-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    try:
        staged = read_spend_logs_db(source, str(folder))
        yield [str(staged.path)]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- Prefect task

from prefect import get_run_logger, task  # noqa: E402  (thin wrapper below the logic it wraps)
from prefect.cache_policies import NONE as NO_CACHE  # noqa: E402  (the source holds a secret: never hash it)


@task(name="read-spend-logs-db", cache_policy=NO_CACHE)
def read_spend_logs_db(source: SpendLogsDb, folder: str) -> StagedSpendLogs:
    """Stream the window's LiteLLM_SpendLogs rows from PostgreSQL into a staging Parquet file."""
    staged = stage_spend_logs(source, Path(folder))
    get_run_logger().info(
        "read %s rows of %s from %s (startTime in %s) in %.1f s",
        f"{staged.rows:,}",
        TABLE,
        staged.source,
        window_text(source),
        staged.seconds,
    )
    return staged
