"""The audit reading LiteLLM_SpendLogs straight from a real PostgreSQL: the same answer as a CSV
export to the cent, the time window honoured, memory bounded by the chunk, clear errors, and no
password or key hash anywhere it writes."""

from __future__ import annotations

import hashlib
import json
import re
import time
from datetime import datetime
from pathlib import Path

import duckdb
import psycopg
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.support import spendlogs
from workhorse.config import Plan, SpendLogsDb, parse_plan
from workhorse.dburl import describe as describe_url
from workhorse.errors import ConfigError, DataError
from workhorse.tasks.audit.assessment import audit_logs
from workhorse.tasks.audit.spendlogs_db import STAGING_SCHEMA, stage_spend_logs

ROWS = 1_000_000
PASSWORD = "S3cret-Pa55word-4-audit"
KEY_HASHES = [hashlib.sha256(f"sk-virtual-key-{k}".encode()).hexdigest() for k in range(13)]
LEAKS = ["sk-live-", "sk-proxy-", *KEY_HASHES]


def broken(i: int, kind: str, **changes) -> dict:
    """A row a proxy can really hold that the usage_log contract must refuse."""
    row = {
        "request_id": f"broken-{kind}-{i}",
        "call_type": "acompletion",
        "api_key": KEY_HASHES[0],
        "spend": 0.001,
        "prompt_tokens": 100,
        "completion_tokens": 5,
        "startTime": datetime(2025, 5, 10, 12, 0, i),
        "endTime": datetime(2025, 5, 10, 12, 0, i, 500_000),
        "model": "gpt-4o-mini",
        "model_group": "gpt-4o-mini",
        "custom_llm_provider": "openai",
        "status": "success",
        "request_tags": '["use_case:ticket-routing"]',
        "metadata": json.dumps({"tags": ["use_case:ticket-routing"], "user_api_key": KEY_HASHES[0]}),
        "messages": '[{"role": "user", "content": "hi"}]',
        "response": '{"choices": []}',
    }
    return {**row, **changes}


MALFORMED = [
    row
    for i in range(4)
    for row in (
        broken(i, "tokens", prompt_tokens=-5),
        broken(i, "model", model="", model_group=None),
        broken(i, "clock", endTime=datetime(2025, 5, 10, 11, 59, i)),
        broken(i, "spend", spend=-0.01),
        broken(i, "status", status="pending"),
    )
]


def fresh_database(server) -> str:
    import uuid

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return server.url.rsplit("/", 1)[0] + "/" + name


def fill(url: str, rows: int, extra: list[dict] = ()) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        spendlogs.create_spend_logs_table(conn)
        spendlogs.generate_spend_logs(conn, rows)
        if extra:
            spendlogs.copy_spend_logs(conn, list(extra))
        spendlogs.create_spend_logs_indexes(conn)


def peak_rss_growth_mb(call):
    """Run ``call`` and return (its result, how far it raised this process's peak RSS, in MB)."""

    def rss(field: str) -> int:
        return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))

    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux)
    before = rss("VmRSS")
    result = call()
    return result, (rss("VmHWM") - before) / 1024


@pytest.fixture(scope="module")
def million(postgres_server, tmp_path_factory):
    """1M generated spend-log rows + 20 malformed ones, and the same table exported to CSV."""
    url = fresh_database(postgres_server)
    started = time.perf_counter()
    fill(url, ROWS - len(MALFORMED), MALFORMED)
    csv = tmp_path_factory.mktemp("export") / "spend_logs.csv"
    with psycopg.connect(url) as conn:
        spendlogs.export_csv(conn, csv)
        table_mb = (
            conn.execute("SELECT pg_total_relation_size('\"LiteLLM_SpendLogs\"')").fetchone()[0] / 2**20
        )
    print(
        f"\nfilled {ROWS:,} rows and exported {csv.stat().st_size / 2**20:.0f} MB of CSV "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return url, csv, table_mb


def cost_cells(result) -> dict:
    return {
        (r["month"], r["use_case"], r["model"], r["hosting"]): (
            r["requests"],
            r["errors"],
            r["prompt_tokens"],
            r["completion_tokens"],
            r["cost_usd"],
        )
        for r in result.costs.to_pylist()
    }


def projection_cells(result) -> dict:
    return {
        (r["use_case"], r["candidate"], r["hosting"]): (r["current_monthly_usd"], r["projected_monthly_usd"])
        for r in result.projections.to_pylist()
    }


def quarantined(result) -> set:
    return {(r["request_id"], r["_reason"]) for r in pq.read_table(result.quarantine_path).to_pylist()}


def assert_same_money(ours: dict, theirs: dict) -> None:
    assert ours.keys() == theirs.keys()
    for key, values in ours.items():
        *counts, cost = values
        *their_counts, their_cost = theirs[key]
        assert counts == their_counts, key
        assert cost == pytest.approx(their_cost, abs=0.005), (
            key
        )  # to the cent (float sums differ in order only)


def test_a_million_rows_audit_from_the_database_as_from_their_csv_export(million, tmp_path):
    url, csv, table_mb = million
    started = time.perf_counter()
    staged, peak_mb = peak_rss_growth_mb(lambda: stage_spend_logs(SpendLogsDb(url=url), tmp_path / "run"))
    print(
        f"\nDB read: {staged.rows:,} rows in {time.perf_counter() - started:.1f} s, "
        f"peak RSS +{peak_mb:.0f} MB "
        f"(table {table_mb:.0f} MB)"
    )
    # A read that held the rows as Python objects would need several times the table's size.
    assert staged.rows == ROWS and peak_mb < table_mb / 2
    from_db = audit_logs([staged.path], Plan(), workspace_root=tmp_path / "db", persist_rows=False)
    from_csv = audit_logs([csv], Plan(), workspace_root=tmp_path / "csv", persist_rows=False)
    print(
        f"audit of the staged rows {from_db.seconds['total']:.1f} s, "
        f"of the CSV export {from_csv.seconds['total']:.1f} s"
    )
    assert (from_db.read, from_db.accepted, from_db.quarantined) == (
        from_csv.read,
        from_csv.accepted,
        from_csv.quarantined,
    )
    assert (from_db.read, from_db.quarantined) == (ROWS, len(MALFORMED))
    assert quarantined(from_db) == quarantined(from_csv)
    assert {rid for rid, _ in quarantined(from_db)} == {row["request_id"] for row in MALFORMED}
    assert_same_money(cost_cells(from_db), cost_cells(from_csv))
    assert {k[1] for k in cost_cells(from_db)} >= {
        "ticket-routing",
        "invoice-extraction",
        "call-summaries",
        "support-agent",
        "unassigned",
    }
    assert_same_money(
        {k: (v[0],) for k, v in projection_cells(from_db).items()},
        {k: (v[0],) for k, v in projection_cells(from_csv).items()},
    )
    for key, (_, projected) in projection_cells(from_db).items():
        assert projected == pytest.approx(projection_cells(from_csv)[key][1], abs=0.005), key
    assert {v.workload for v in from_db.verdicts.values()} == {v.workload for v in from_csv.verdicts.values()}


def test_the_staged_file_holds_no_secret(million, tmp_path):
    url, _, _ = million
    staged = stage_spend_logs(SpendLogsDb(url=url, until="2025-04-08"), tmp_path / "run")
    assert pq.read_schema(staged.path).names == STAGING_SCHEMA.names  # never api_key, proxy_server_request...
    con = duckdb.connect()
    leaks = " OR ".join(f"contains(metadata, '{leak}')" for leak in LEAKS)
    counts = con.sql(
        f"SELECT count(*), count(*) FILTER (WHERE {leaks}), "
        f"count(*) FILTER (WHERE contains(metadata, '[redacted]')) FROM '{staged.path}'"
    ).fetchall()[0]
    assert counts[0] > 50_000 and counts[1] == 0 and counts[2] == counts[0]


def test_only_rows_of_the_window_are_read(postgres_url, tmp_path):
    edges = [
        broken(0, "at-since", startTime=datetime(2025, 5, 1), endTime=datetime(2025, 5, 1, 0, 0, 1)),
        broken(0, "at-until", startTime=datetime(2025, 6, 1), endTime=datetime(2025, 6, 1, 0, 0, 1)),
    ]
    fill(postgres_url, 5_000, edges)
    # 02:00 at +02:00 is midnight UTC: an offset is honoured, not dropped.
    source = SpendLogsDb(url=postgres_url, since="2025-05-01T02:00:00+02:00", until="2025-06-01")
    staged = stage_spend_logs(source, tmp_path)
    with psycopg.connect(postgres_url) as conn:
        inside = conn.execute("""SELECT count(*) FROM "LiteLLM_SpendLogs"
                                 WHERE "startTime" >= '2025-05-01' AND "startTime" < '2025-06-01'""").fetchone()[  # noqa: E501
            0
        ]
    ids = set(pq.read_table(staged.path, columns=["request_id"]).column("request_id").to_pylist())
    starts = pq.read_table(staged.path, columns=["startTime"]).column("startTime").to_pylist()
    assert staged.rows == inside < 5_000 and "broken-at-since-0" in ids and "broken-at-until-0" not in ids
    assert min(starts) >= "2025-05-01" and max(starts) < "2025-06-01"


def _missing_table(url: str) -> str:
    return url  # a fresh database without the proxy's tables


def _unreachable(url: str) -> str:
    from tests.support.postgres import free_port

    return re.sub(r":\d+/", f":{free_port()}/", url)


@pytest.mark.parametrize(
    "make_url, expected",
    [
        (
            _missing_table,
            'no table "LiteLLM_SpendLogs" in the default schema of postgresql://postgres@127.0.0.1',
        ),
        (_unreachable, "cannot read the LiteLLM database postgresql://postgres@127.0.0.1"),
    ],
)
def test_a_wrong_database_is_a_clear_error_without_the_password(postgres_url, tmp_path, make_url, expected):
    url = make_url(postgres_url).replace("postgres@", f"postgres:{PASSWORD}@")
    with pytest.raises(DataError) as caught:
        stage_spend_logs(SpendLogsDb(url=url), tmp_path)
    assert expected in str(caught.value) and PASSWORD not in str(caught.value)
    error = caught.value  # no psycopg exception chained to it, whose text could carry more
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def test_a_malformed_url_is_refused_without_quoting_it(tmp_path):
    with pytest.raises(
        ConfigError, match="neither a postgresql:// URL nor a libpq connection string"
    ) as caught:
        stage_spend_logs(SpendLogsDb(url=f"host=db password={PASSWORD} port"), tmp_path)
    assert PASSWORD not in str(caught.value)


def test_password_references_are_expanded_only_to_connect(postgres_url, tmp_path, monkeypatch):
    fill(postgres_url, 100)
    url = postgres_url.replace("postgres@", "postgres:${WH_TEST_PGPASSWORD}@")
    with pytest.raises(ConfigError, match=r"\$\{WH_TEST_PGPASSWORD\}, which is not set"):
        stage_spend_logs(SpendLogsDb(url=url), tmp_path)
    monkeypatch.setenv("WH_TEST_PGPASSWORD", PASSWORD)
    assert stage_spend_logs(SpendLogsDb(url=url), tmp_path).rows == 100
    assert describe_url(url.replace("${WH_TEST_PGPASSWORD}", PASSWORD)).startswith(
        "postgresql://postgres@127.0.0.1:"
    )


def test_a_plan_refuses_a_literal_password_but_takes_a_reference():
    with pytest.raises(ConfigError, match="must not hold a password"):
        parse_plan({"audit": {"spend_logs_db": {"url": f"postgresql://litellm:{PASSWORD}@db/litellm"}}})
    plan = parse_plan(
        {
            "audit": {
                "spend_logs_db": {
                    "url": "postgresql://litellm:${LITELLM_DB_PASSWORD}@db/litellm",
                    "since": "2025-05-01",
                }
            }
        }
    )
    assert plan.audit.spend_logs_db.since == datetime(2025, 5, 1)


def readable(path: Path) -> bytes:
    if path.suffix == ".parquet":
        return json.dumps(pq.read_table(path).to_pylist(), default=str).encode()
    return path.read_bytes()


def test_cli_audits_the_database_and_no_file_or_prefect_run_holds_the_password(
    postgres_url, prefect_server, tmp_path
):
    from prefect.client.orchestration import get_client

    from workhorse.cli import app

    fill(postgres_url, 3_000, MALFORMED[:1])
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # trust auth: any password gets in
        conn.execute(f"CREATE ROLE auditor LOGIN PASSWORD '{PASSWORD}'")
        conn.execute('GRANT SELECT ON "LiteLLM_SpendLogs" TO auditor')
    url = postgres_url.replace("postgres@", f"auditor:{PASSWORD}@")
    workspace = tmp_path / "ws"
    result = CliRunner().invoke(
        app,
        [
            "audit",
            "--from-db",
            url,
            "--since",
            "2025-04-01",
            "--until",
            "2025-07-01",
            "--workspace",
            str(workspace),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "read 3,001 rows: 3,000 accepted, 1 quarantined" in result.output and PASSWORD not in result.output
    written = [p for p in workspace.rglob("*") if p.is_file()]
    assert any(p.name == "usage_log.parquet" for p in written) and not list(
        workspace.glob("runs/spendlogs-*")
    )
    for path in written:  # parquet is compressed: compare its values, not its bytes
        data = readable(path)
        assert PASSWORD.encode() not in data, path
        assert not any(leak.encode() in data for leak in LEAKS), path
    with get_client(sync_client=True) as client:
        runs = [r for r in client.read_flow_runs() if "spend_logs_db" in r.parameters]
    assert runs and all(PASSWORD not in json.dumps(r.parameters) for r in runs)


def test_cli_names_a_missing_table_in_one_line(postgres_url, prefect_server, tmp_path):
    from workhorse.cli import app

    url = postgres_url.replace("postgres@", f"postgres:{PASSWORD}@")
    result = CliRunner().invoke(app, ["audit", "--from-db", url, "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 1
    assert "audit failed:" in result.output and 'no table "LiteLLM_SpendLogs"' in result.output
    assert "Traceback" not in result.output and PASSWORD not in result.output
