"""Data contracts: vectorised verdicts per row, quarantine reasons, ratios, and agreement with GX."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workhorse.errors import ConfigError, ContractError
from workhorse.tasks.common.contracts import (
    Contract,
    Expectation,
    check_relation,
    connect,
    contract_from_dict,
    enforce_bad_row_ratio,
    load_contract,
    validate_table,
    validate_with_gx,
    write_quarantine,
)

GOOD = {
    "request_id": "r1",
    "ts": "2025-03-01T10:00:00Z",
    "use_case": "ticket-routing",
    "model": "gpt-4o-mini",
    "prompt_tokens": 120,
    "completion_tokens": 3,
    "status": "ok",
    "latency_ms": 420.0,
    "cost_usd": None,
    "request": '[{"role": "user", "content": "hi"}]',
    "response": "billing",
    "metadata": "{}",
}


def rows_table(*overrides: dict) -> pa.Table:
    """A usage table of one good row per override, each override changing a few cells."""
    rows = [{**GOOD, "request_id": f"r{i}", **o} for i, o in enumerate(overrides)]
    columns = {name: [row.get(name) for row in rows] for name in rows[0]}
    return pa.table(columns)


def one(e_type: str, **kwargs) -> Contract:
    return Contract("t", (Expectation(e_type, kwargs),))


@pytest.mark.parametrize(
    "override, broken",
    [
        ({}, None),
        ({"prompt_tokens": -5}, "expect_column_values_to_be_between(prompt_tokens, min=0)"),
        ({"completion_tokens": -1}, "expect_column_values_to_be_between(completion_tokens, min=0)"),
        ({"ts": "2025-03-01 10:00:00"}, "expect_column_values_to_be_timezone_aware(ts)"),
        ({"ts": "yesterday+01"}, "expect_column_values_to_be_of_type(ts, type=TIMESTAMP WITH TIME ZONE)"),
        ({"status": "timeout"}, "expect_column_values_to_be_in_set(status, set=ok|error)"),
        ({"model": None}, "expect_column_values_to_not_be_null(model)"),
        ({"metadata": "{not json"}, "expect_column_values_to_be_json_parseable(metadata)"),
        ({"latency_ms": -3.0}, "expect_column_values_to_be_between(latency_ms, min=0)"),
    ],
)
def test_usage_contract_names_the_broken_expectation(override, broken):
    table = rows_table({}, override)
    result = validate_table(table, load_contract("usage_log"))
    assert result.read == result.accepted_count + result.quarantined_count == 2
    if broken is None:
        assert result.quarantined_count == 0
    else:
        assert result.quarantined_count == 1
        assert broken in result.quarantined.column("_reason")[0].as_py()
        assert result.quarantined.column("request_id")[0].as_py() == "r1"


@pytest.mark.parametrize(
    "cell, ok", [("12", True), ("12.5", False), ("abc", False), ("-0", True), (None, True)]
)
def test_types_are_checked_per_row_and_accepted_rows_are_cast(cell, ok):
    table = pa.table({"n": [cell, "7"]})
    result = validate_table(table, one("expect_column_values_to_be_of_type", column="n", type_="BIGINT"))
    assert result.quarantined_count == (0 if ok else 1)
    assert result.accepted.schema.field("n").type == pa.int64()
    assert 7 in result.accepted.column("n").to_pylist()


def test_every_failed_expectation_of_a_row_is_listed():
    table = rows_table({"prompt_tokens": -1, "status": "weird", "ts": "2025-03-01 10:00"})
    reasons = (
        validate_table(table, load_contract("usage_log")).quarantined.column("_reason")[0].as_py().split("; ")
    )
    assert len(reasons) == 3
    assert {r.split("(")[0] for r in reasons} == {
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_be_timezone_aware",
    }


def test_duplicates_quarantine_every_copy_and_keep_input_order():
    table = rows_table({}, {}, {}).set_column(0, "request_id", pa.array(["a", "dup", "dup"]))
    result = validate_table(table, load_contract("usage_log"))
    assert result.accepted.column("request_id").to_pylist() == ["a"]
    assert result.quarantined.column("request_id").to_pylist() == ["dup", "dup"]


def test_missing_required_column_fails_every_row_and_the_table():
    table = rows_table({}, {}).drop_columns(["prompt_tokens"])
    result = validate_table(table, load_contract("usage_log"))
    assert (result.accepted_count, result.quarantined_count) == (0, 2)
    assert result.table_failures and "prompt_tokens" in result.table_failures[0]
    with pytest.raises(ContractError, match="prompt_tokens"):
        enforce_bad_row_ratio(result, 0.5, "logs.csv")


def test_absent_optional_column_arrives_as_typed_nulls():
    table = rows_table({}).drop_columns(["cost_usd", "latency_ms"])
    result = validate_table(table, load_contract("usage_log"))
    assert result.accepted_count == 1
    assert result.accepted.schema.field("cost_usd").type == pa.float64()


def test_empty_table_is_a_table_failure():
    table = rows_table({}).slice(0, 0)
    result = validate_table(table, load_contract("usage_log"))
    with pytest.raises(ContractError, match=r"row_count.*0 rows"):
        enforce_bad_row_ratio(result, 1.0, "empty.jsonl")


@pytest.mark.parametrize(
    "bad, max_ratio, fails",
    [(1, 0.2, False), (1, 0.19, True), (0, 0.0, False), (4, 0.75, True), (5, 0.99, True)],
)
def test_bad_row_ratio_policy(bad, max_ratio, fails):
    table = rows_table(*([{"prompt_tokens": -1}] * bad + [{}] * (5 - bad)))
    result = validate_table(table, load_contract("usage_log"))
    assert result.quarantined_count == bad
    if fails:
        with pytest.raises(ContractError, match=rf"{bad} of 5 rows .*prompt_tokens"):
            enforce_bad_row_ratio(result, max_ratio, "acme.jsonl")
    else:
        enforce_bad_row_ratio(result, max_ratio, "acme.jsonl")


@pytest.mark.parametrize(
    "values, arrow_type, failing",
    [
        (["2025-01-01T00:00:00Z", "2025-01-01T00:00:00+02:00", "2025-01-01 00:00:00"], pa.string(), [2]),
        ([0, 1], pa.timestamp("us", tz="UTC"), []),
        ([0, 1], pa.timestamp("us"), [0, 1]),
    ],
)
def test_timezone_awareness_by_type_or_suffix(values, arrow_type, failing):
    table = pa.table({"ts": pa.array(values, arrow_type), "i": range(len(values))})
    result = validate_table(table, one("expect_column_values_to_be_timezone_aware", column="ts"), cast=False)
    assert result.quarantined.column("i").to_pylist() == failing


def test_without_drops_a_check():
    contract = load_contract("usage_log").without("expect_column_values_to_be_unique")
    result = validate_table(rows_table({}, {}).set_column(0, "request_id", pa.array(["a", "a"])), contract)
    assert result.accepted_count == 2


def test_python_row_check_plugs_in():
    contract = load_contract("usage_log").with_row_check(
        "response_is_a_label",
        ["use_case", "response"],
        lambda use_case, response: use_case != "ticket-routing" or response in {"billing", "technical"},
    )
    table = rows_table(
        {}, {"response": "a long sentence"}, {"use_case": "summaries", "response": "free text"}
    )
    result = validate_table(table, contract)
    assert result.quarantined.column("request_id").to_pylist() == ["r1"]
    assert result.quarantined.column("_reason")[0].as_py() == "response_is_a_label(use_case, response)"


def test_json_schema_expectation_runs_as_python_predicate():
    schema = {"type": "object", "required": ["total"], "properties": {"total": {"type": "number"}}}
    contract = one("expect_column_values_to_match_json_schema", column="out", json_schema=schema)
    result = validate_table(pa.table({"out": ['{"total": 3}', '{"total": "x"}', "nope", None]}), contract)
    assert result.accepted.column("out").to_pylist() == ['{"total": 3}', None]
    assert result.failures[contract.expectations[0].label] == 2


def test_one_connection_compiles_a_contract_with_python_checks_twice():
    # The audit compiles its contract twice on one connection (without, then with, uniqueness).
    schema = {"type": "object", "required": ["total"]}
    contract = Contract(
        "t",
        (
            Expectation(
                "expect_column_values_to_match_json_schema", {"column": "out", "json_schema": schema}
            ),
            Expectation("expect_column_values_to_be_unique", {"column": "id"}),
        ),
    )
    con = connect()
    con.register("t", pa.table({"id": [1, 2, 2], "out": ['{"total": 1}', "{}", '{"total": 2}']}))
    first = check_relation(con, "t", contract.without("expect_column_values_to_be_unique"))
    second = check_relation(con, "t", contract)
    assert first.failure_counts()[1] == {contract.expectations[0].label: 1}
    assert second.failure_counts()[1] == {
        contract.expectations[0].label: 1,
        contract.expectations[1].label: 2,
    }


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_write_quarantine_keeps_columns_and_reason(tmp_path, suffix):
    result = validate_table(rows_table({}, {"prompt_tokens": -2}), load_contract("usage_log"))
    path = write_quarantine(result, tmp_path / f"q{suffix}")
    if suffix == ".parquet":
        rows = pq.read_table(path).to_pylist()
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["request_id"] for r in rows] == ["r1"]
    assert "prompt_tokens" in rows[0]["_reason"] and rows[0]["prompt_tokens"] == -2


def test_relation_backend_counts_without_materialising(tmp_path):
    path = tmp_path / "u.parquet"
    pq.write_table(rows_table({}, {"prompt_tokens": -1}, {"status": "x"}), path)
    con = connect()
    checked = check_relation(con, f"read_parquet('{path}')", load_contract("usage_log"))
    read, failures = checked.failure_counts()
    accepted = con.execute(f"SELECT count(*) FROM {checked.accepted_sql}").fetchone()[0]
    assert (read, accepted, sum(failures.values())) == (3, 1, 2)
    assert len(pq.read_table(checked.write_quarantine(tmp_path / "q.parquet"))) == 2


@pytest.mark.parametrize(
    "data, message",
    [
        ({"expectations": []}, "not a GX suite"),
        ({"name": "x", "expectations": [{"type": "expect_magic", "kwargs": {}}]}, "expect_magic"),
    ],
)
def test_bad_contract_files_are_config_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        contract_from_dict(data)


def test_unknown_contract_name():
    with pytest.raises(ConfigError, match="no data contract named 'nope'"):
        load_contract("nope")


def test_vectorised_verdict_agrees_with_great_expectations():
    """GX's own verdict on the same rows, expectation by expectation (types aside: GX checks dtypes)."""
    usage = load_contract("usage_log")
    naive = Expectation(
        "expect_column_values_to_match_regex", {"column": "ts", "regex": r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)$"}
    )
    # GX checks dtypes rather than cells, has no timezone expectation, and fails the whole table
    # for an absent optional column (we treat it as NULLs): compare on everything else.
    kept = tuple(
        e
        for e in usage.expectations
        if e.type != "expect_column_values_to_be_of_type"
        and "workhorse_only" not in e.meta
        and e.column in (None, *GOOD)
    )
    contract = Contract("agree", kept + (naive,))
    table = rows_table(
        {},
        {"model": None},
        {"prompt_tokens": -3, "metadata": "{x"},
        {"status": "bad", "latency_ms": -1.0},
        {"ts": "2025-03-01 10:00:00"},
        {"request_id": "r1"},
        {"cost_usd": 0.5},
    )
    table = table.append_column("position", pa.array(range(table.num_rows)))
    ours = validate_table(table, contract, cast=False)
    theirs = validate_with_gx(table, contract)
    ours_by_label: dict[str, list[int]] = {}
    for row in ours.quarantined.to_pylist():
        for label in row["_reason"].split("; "):
            ours_by_label.setdefault(label, []).append(row["position"])
    assert {k: v for k, v in theirs["unexpected"].items() if v} == ours_by_label
    assert theirs["success"] is False and ours.quarantined_count == 5
