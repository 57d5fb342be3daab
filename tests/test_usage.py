"""Log adapters and the audit on bad inputs: every format lands in the canonical table, every bad
row is quarantined with its reason, counts reconcile, secrets never reach disk."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workhorse.config import AuditPlan, Plan, UseCaseRule
from workhorse.errors import ContractError, DataError
from workhorse.tasks.audit import usage
from workhorse.tasks.audit.assessment import audit_logs

MESSAGES = [{"role": "user", "content": "My card was charged twice"}]


def canonical(i: int = 0, **changes) -> dict:
    row = {
        "request_id": f"req-{i}",
        "ts": f"2025-06-0{1 + i % 9}T10:00:00Z",
        "use_case": "ticket-routing",
        "model": "gpt-4o-mini",
        "provider": "openai",
        "prompt_tokens": 100 + i,
        "completion_tokens": 2,
        "latency_ms": 300.0,
        "status": "ok",
        "error_type": None,
        "cost_usd": None,
        "request": json.dumps(MESSAGES),
        "response": "billing",
        "metadata": "{}",
    }
    return {**row, **changes}


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def write_csv(path: Path, records: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return path


def write_parquet(path: Path, records: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(records), path)
    return path


WRITERS = {"jsonl": write_jsonl, "csv": write_csv, "parquet": write_parquet}


def spendlog(i: int, **changes) -> dict:
    row = {
        "request_id": f"sl-{i}",
        "startTime": "2025-06-02 09:00:00.000",
        "endTime": "2025-06-02 09:00:01.250",
        "model": "gpt-4o-mini",
        "model_group": "gpt-4o-mini",
        "custom_llm_provider": "openai",
        "prompt_tokens": "120",
        "completion_tokens": "3",
        "spend": "0.0000198",
        "status": "success",
        "metadata": json.dumps(
            {
                "tags": ["use_case:review-sentiment"],
                "user_api_key": "sk-live-abcdefghijklmnop",
                "headers": {"Authorization": "Bearer sk-secret-1234567890abcd"},
            }
        ),
        "messages": json.dumps(MESSAGES),
        "response": json.dumps({"choices": [{"message": {"role": "assistant", "content": "positive"}}]}),
    }
    return {**row, **changes}


def openai_record(i: int) -> dict:
    return {
        "request": {"model": "gpt-4o-mini", "messages": MESSAGES, "metadata": {"use_case": "ticket-routing"}},
        "response": {
            "id": f"chatcmpl-{i}",
            "object": "chat.completion",
            "created": 1748768400 + i,
            "model": "gpt-4o-mini",
            "choices": [{"message": {"role": "assistant", "content": "billing"}}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 1},
        },
        "latency_ms": 420,
    }


def batch_record(i: int, error: bool = False) -> dict:
    body = {
        "id": f"chatcmpl-b{i}",
        "object": "chat.completion",
        "created": 1748768400,
        "model": "gpt-4o-mini",
        "choices": [{"message": {"role": "assistant", "content": '{"total": 12.5}'}}],
        "usage": {"prompt_tokens": 200, "completion_tokens": 8},
    }
    return {
        "id": f"batch_req_{i}",
        "custom_id": f"invoice-{i}",
        "response": None if error else {"status_code": 200, "request_id": f"r{i}", "body": body},
        "error": {"code": "server_error", "message": "boom"} if error else None,
    }


@pytest.mark.parametrize("container", ["jsonl", "csv", "parquet"])
def test_canonical_containers_read_the_same(tmp_path, container):
    records = [canonical(i) for i in range(3)]
    path = WRITERS[container](tmp_path / f"logs.{container}", records)
    log = usage.detect_format(path)
    assert (log.container, log.format) == (container, "canonical")
    table = usage.read_usage([path])
    assert table.column("request_id").to_pylist() == ["req-0", "req-1", "req-2"]
    assert [int(v) for v in table.column("prompt_tokens").to_pylist()] == [100, 101, 102]


@pytest.mark.parametrize(
    "maker, suffix, fmt, expected",
    [
        (
            lambda p: write_csv(p, [spendlog(0)]),
            "csv",
            "litellm",
            {
                "request_id": "sl-0",
                "use_case": "review-sentiment",
                "status": "ok",
                "response": "positive",
                "latency_ms": 1250.0,
            },
        ),
        (
            lambda p: write_jsonl(p, [openai_record(0)]),
            "jsonl",
            "openai",
            {
                "request_id": "chatcmpl-0",
                "use_case": "ticket-routing",
                "status": "ok",
                "response": "billing",
                "ts": "2025-06-01T09:00:00Z",
            },
        ),
        (
            lambda p: write_jsonl(p, [batch_record(0)]),
            "jsonl",
            "openai_batch",
            {
                "request_id": "invoice-0",
                "status": "ok",
                "response": '{"total": 12.5}',
                "prompt_tokens": "200",
            },
        ),
        (
            lambda p: write_jsonl(p, [batch_record(1, error=True)]),
            "jsonl",
            "openai_batch",
            {"request_id": "invoice-1", "status": "error", "error_type": "server_error"},
        ),
    ],
)
def test_adapters_map_to_canonical_columns(tmp_path, maker, suffix, fmt, expected):
    path = maker(tmp_path / f"log.{suffix}")
    assert usage.detect_format(path).format == fmt
    row = usage.read_usage([path]).to_pylist()[0]
    assert {k: (float(row[k]) if k == "latency_ms" else row[k]) for k in expected} == expected


def test_litellm_times_are_utc_and_failures_are_errors(tmp_path):
    path = write_csv(tmp_path / "spend.csv", [spendlog(0), spendlog(1, status="failure")])
    result = audit_logs([path], Plan(), workspace_root=tmp_path / "ws", persist_rows=True)
    rows = pq.read_table(tmp_path / "ws" / "usage" / "usage_log.parquet").to_pylist()
    assert {r["status"] for r in rows} == {"ok", "error"}
    assert all(r["ts"].utcoffset().total_seconds() == 0 and r["ts"].hour == 9 for r in rows)
    assert result.accepted == 2 and result.costs.column("logged_cost_usd")[0].as_py() == pytest.approx(
        2 * 0.0000198
    )


def test_batch_rows_are_priced_at_batch_rates(tmp_path):
    from workhorse.tasks.common.pricing import PriceCatalog

    path = write_jsonl(tmp_path / "batch.jsonl", [batch_record(i) for i in range(4)])
    result = audit_logs(
        [path],
        Plan(audit=AuditPlan(use_case_rules=[UseCaseRule(use_case="invoices", model="gpt-4o-mini")])),
        workspace_root=tmp_path / "ws",
    )
    row = result.costs.to_pylist()[0]
    assert (row["hosting"], row["use_case"]) == ("batch", "invoices")
    assert row["cost_usd"] == pytest.approx(PriceCatalog().price("gpt-4o-mini", "batch").cost(800, 32))


def test_secrets_never_reach_parquet_or_quarantine(tmp_path):
    path = write_csv(tmp_path / "spend.csv", [spendlog(0), spendlog(1, prompt_tokens="-5")])
    result = audit_logs([path], Plan(), workspace_root=tmp_path / "ws", max_bad_ratio=0.6)
    written = [tmp_path / "ws" / "usage" / "usage_log.parquet", result.quarantine_path]
    for file in written:
        text = json.dumps(pq.read_table(file).to_pylist(), default=str)
        assert "sk-live" not in text and "sk-secret" not in text and "Bearer" not in text
        assert "[redacted]" in text


def test_use_case_from_rules_when_untagged(tmp_path):
    path = write_jsonl(
        tmp_path / "a.jsonl", [canonical(0, use_case=None), canonical(1, use_case=None, model="gpt-4o")]
    )
    rules = [{"use_case": "agent", "model": "^gpt-4o$"}]
    table = usage.read_usage([path], rules=rules)
    assert table.column("use_case").to_pylist() == [usage.UNASSIGNED, "agent"]


# --------------------------------------------------------------------------- bad inputs

BAD_CASES = [
    # name, file content builder, how many rows are bad, the expectation named
    (
        "malformed JSON line",
        lambda p: write_jsonl(p, [canonical(0), '{"request_id": "req-9", "ts": "2025-06-0', canonical(1)]),
        1,
        "expect_column_values_to_be_json_parseable(_source_line)",
    ),
    (
        "wrong types",
        lambda p: write_csv(p, [canonical(0), canonical(1, prompt_tokens="lots")]),
        1,
        "expect_column_values_to_be_of_type(prompt_tokens, type=BIGINT)",
    ),
    (
        "negative tokens",
        lambda p: write_jsonl(p, [canonical(0), canonical(1, completion_tokens=-4)]),
        1,
        "expect_column_values_to_be_between(completion_tokens, min=0)",
    ),
    (
        "naive timestamps",
        lambda p: write_jsonl(p, [canonical(0), canonical(1, ts="2025-06-01 10:00:00")]),
        1,
        "expect_column_values_to_be_timezone_aware(ts)",
    ),
    (
        "duplicate request ids",
        lambda p: write_jsonl(p, [canonical(0), canonical(1), canonical(1)]),
        2,
        "expect_column_values_to_be_unique(request_id)",
    ),
    (
        "unknown status",
        lambda p: write_parquet(p, [canonical(0), canonical(1, status="timeout")]),
        1,
        "expect_column_values_to_be_in_set(status, set=ok|error)",
    ),
]


@pytest.mark.parametrize("name, build, bad, expectation", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_rows_are_quarantined_with_their_reason(tmp_path, name, build, bad, expectation):
    suffix = "csv" if "types" in name else "parquet" if "status" in name else "jsonl"
    path = build(tmp_path / f"logs.{suffix}")
    result = audit_logs([path], Plan(), workspace_root=tmp_path / "ws", max_bad_ratio=0.7)
    assert result.read == result.accepted + result.quarantined
    assert result.quarantined == bad and result.failures[expectation] == bad
    quarantined = pq.read_table(result.quarantine_path).to_pylist()
    assert len(quarantined) == bad and all(expectation in row["_reason"] for row in quarantined)
    canonical_rows = pq.read_table(tmp_path / "ws" / "usage" / "usage_log.parquet")
    assert canonical_rows.num_rows == result.accepted


@pytest.mark.parametrize("name, build, bad, expectation", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_past_the_ratio_the_audit_fails_naming_file_and_expectation(tmp_path, name, build, bad, expectation):
    suffix = "csv" if "types" in name else "parquet" if "status" in name else "jsonl"
    path = build(tmp_path / f"logs.{suffix}")
    with pytest.raises(ContractError) as error:
        audit_logs([path], Plan(), workspace_root=tmp_path / "ws", max_bad_ratio=0.1)
    message = str(error.value)
    assert str(path) in message and expectation in message and "quarantine:" in message


def test_missing_columns_fail_every_row_with_a_clear_message(tmp_path):
    records = [
        {k: v for k, v in canonical(i).items() if k not in ("prompt_tokens", "completion_tokens")}
        for i in range(3)
    ]
    path = write_csv(tmp_path / "logs.csv", records)
    with pytest.raises(
        ContractError, match=r"expect_column_to_exist\(prompt_tokens\): the column is missing"
    ):
        audit_logs([path], Plan(), workspace_root=tmp_path / "ws", max_bad_ratio=1.0)
    quarantined = list((tmp_path / "ws" / "quarantine").glob("*.parquet"))
    assert len(quarantined) == 1 and pq.read_table(quarantined[0]).num_rows == 3  # nothing dropped


def test_unknown_model_is_counted_unpriced(tmp_path):
    path = write_jsonl(tmp_path / "logs.jsonl", [canonical(0), canonical(1, model="acme-llm-7b")])
    result = audit_logs([path], Plan(), workspace_root=tmp_path / "ws")
    assert result.unpriced_models == ["acme-llm-7b"]
    rows = {r["model"]: r for r in result.costs.to_pylist()}
    assert (
        rows["acme-llm-7b"]["unpriced_tokens"] == 101 + 2
        and rows["acme-llm-7b"]["price_source"] == "unpriced"
    )
    assert rows["gpt-4o-mini"]["unpriced_tokens"] == 0 and rows["gpt-4o-mini"]["cost_usd"] > 0
    assert not result.use_cases.column("fully_priced")[0].as_py()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "the file is empty"),
        (b"\n\n  \n", "the file is empty"),
        (bytes(range(256)) * 8, "binary file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
    ],
)
def test_empty_and_binary_files_are_refused_by_name(tmp_path, content, message):
    path = tmp_path / "logs.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as error:
        audit_logs([path], Plan(), workspace_root=tmp_path / "ws")
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    "paths, fmt, message",
    [
        (["nope.jsonl"], None, "no such log file"),
        ([], None, "no usage log files"),
        (["LOG"], "splunk", "unknown log format 'splunk'"),
    ],
)
def test_wrong_arguments(tmp_path, paths, fmt, message):
    log = write_jsonl(tmp_path / "ok.jsonl", [canonical(0)])
    with pytest.raises(DataError, match=message):
        usage.usage_source(usage.duckdb.connect(), [log if p == "LOG" else tmp_path / p for p in paths], fmt)


def test_a_folder_reads_all_its_logs(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [canonical(0)])
    write_csv(tmp_path / "b.csv", [spendlog(1)])
    result = audit_logs([tmp_path], Plan(), workspace_root=tmp_path / "ws")
    assert result.read == result.accepted == 2
    assert set(result.costs.column("use_case").to_pylist()) == {"ticket-routing", "review-sentiment"}
