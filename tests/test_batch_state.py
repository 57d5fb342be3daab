"""The state store's schema version: a store written before versioning (schema 1, frozen in
tests/data/state_schema_v1.sql) migrates forward with every row intact, on SQLite and PostgreSQL;
a store from a newer workhorse is refused with a clear error."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from workhorse import store

V1 = Path(__file__).parent / "data" / "state_schema_v1.sql"
OLD_TABLES = (
    "response_cache",
    "rollout_state",
    "rollout_history",
    "traffic_log",
    "incidents",
    "alert_deliveries",
    "monitor_windows",
)


def v1_statements() -> list[str]:
    text = "\n".join(line for line in V1.read_text().splitlines() if not line.startswith("--"))
    return [s.strip() for s in text.split(";") if s.strip()]


def create_v1(backend: str, target: str) -> None:
    """The old store, built without the current code: raw driver, the frozen statements."""
    if backend == "sqlite":
        raw = sqlite3.connect(target)
        raw.executescript(V1.read_text())
        raw.close()
        return
    import psycopg

    with psycopg.connect(target, autocommit=True) as raw:
        for statement in store.postgres_ddl(";\n".join(v1_statements())):
            raw.execute(statement)


def snapshot(connection) -> dict[str, list[tuple]]:
    return {t: sorted(map(tuple, connection.execute(f"SELECT * FROM {t}").fetchall())) for t in OLD_TABLES}


@pytest.fixture(params=["sqlite", "postgresql"])
def old_store(request, tmp_path) -> tuple[str, str]:
    if request.param == "sqlite":
        target = str(tmp_path / "state.db")
    else:
        target = request.getfixturevalue("postgres_url")
    create_v1(request.param, target)
    return request.param, target


def test_a_store_of_the_previous_schema_migrates_forward_with_nothing_lost(old_store):
    backend, target = old_store
    with store.connect(target) as connection:
        after = snapshot(connection)
        version = store.stored_version(connection)
        batch_tables = connection.execute("SELECT COUNT(*) FROM batch_job").fetchone()[0]
    with sqlite3.connect(":memory:") as reference:  # the expected rows, from the fixture alone
        reference.executescript(V1.read_text())
        expected = snapshot(reference)
    assert version == store.SCHEMA_VERSION == 2 and batch_tables == 0
    assert after == expected and all(expected[t] for t in OLD_TABLES if t != "alert_deliveries")
    with store.connect(target) as again:  # a second open applies nothing twice
        rows = again.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
    assert [tuple(r) for r in rows] == [(2,)]


def test_a_store_from_a_newer_schema_is_refused_with_a_clear_error(old_store):
    backend, target = old_store
    with store.connect(target) as connection:
        connection.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (9, "later"))
    store._migrated.clear()  # as a fresh process would
    with pytest.raises(store.StateSchemaError, match=r"schema version 9.*newer.*up to 2.*upgrade workhorse"):
        store.connect(target)
