"""Log adapters -> the canonical ``usage_log`` table, and the audit's aggregations.

Every adapter is a DuckDB ``SELECT`` over the raw file that renames and converts columns to the
canonical ones; DuckDB streams the scan, so a 10M-row log never becomes Python objects. The
contract (``data_contracts/usage_log.json``) is compiled onto that select, and the cost
aggregation runs on the accepted rows in the same query.

Formats (detected, or named): ``canonical`` (CSV/Parquet/JSONL with the canonical columns),
``litellm`` (the proxy's ``LiteLLM_SpendLogs`` export, CSV/Parquet/JSONL), ``openai`` (JSONL of
``{"request": {...}, "response": {chat.completion}}``), ``openai_batch`` (Batch API output JSONL).
The use case comes from the row, a ``use_case:<name>`` tag or key in the metadata, or the plan's
rules; else ``unassigned`` (counted, never dropped). Metadata keys that look like secrets
(``*api_key*``, ``authorization``...) and ``sk-...`` strings are redacted before anything is
written.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import duckdb
import pyarrow as pa

from workhorse.errors import DataError
from workhorse.tasks.common.contracts import lit, q

USAGE_SCHEMA = pa.schema(
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
    ]
)
CANONICAL_COLUMNS = tuple(USAGE_SCHEMA.names)
SOURCE_LINE = "_source_line"  # JSONL only: the raw line, so a malformed one is quarantined as it was
VALID_LINE = "_valid_line"  # the same line when it parses, else NULL: JSON functions never see bad input
FORMATS = ("canonical", "litellm", "openai", "openai_batch")
UNASSIGNED = "unassigned"

SECRET_KEYS = r'[^"\\]*(api[_-]?key|authorization|secret|password|bearer|access[_-]?token)[^"\\]*'
SECRET_VALUE = r"sk-[A-Za-z0-9_-]{12,}"
TAG_PATTERN = r"use_case[:=]([A-Za-z0-9_.-]+)"


@dataclass(frozen=True)
class LogFile:
    """One input: where it is, its container (parquet|csv|jsonl) and its log format."""

    path: Path
    container: str
    format: str
    # The file's columns and DuckDB types, when detection has described it (parquet, CSV):
    # describing it again for the source SQL would sniff a CSV a second time (~60 ms).
    columns: dict[str, str] | None = field(default=None, compare=False)


# --------------------------------------------------------------------------- detection


def sniff_container(path: Path) -> str:
    """parquet, csv or jsonl from the bytes; empty and binary files are refused by name."""
    if not path.is_file():
        raise DataError(f"{path}: no such log file")
    with path.open("rb") as handle:
        head = handle.read(8192)
    if not head.strip():
        raise DataError(f"{path}: the file is empty, there are no usage rows to audit")
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{path}: UTF-16 text; usage logs must be UTF-8 (re-save the file as UTF-8)")
    if b"\x00" in head or _mostly_binary(head):
        raise DataError(f"{path}: this is a binary file, not a usage log (expected CSV, JSONL or Parquet)")
    return "jsonl" if head.lstrip().startswith((b"{", b"[")) else "csv"


def _mostly_binary(head: bytes) -> bool:
    try:
        head.decode("utf-8")
        return False
    except UnicodeDecodeError as error:
        return error.start < len(head) - 4  # a multibyte char cut at the buffer's end is still text


def detect_format(
    path: str | Path, fmt: str | None = None, con: duckdb.DuckDBPyConnection | None = None
) -> LogFile:
    """The container from the bytes and the format from the column names (or ``fmt``);
    ``con`` describes parquet and CSV files (a new database otherwise: ~20 ms)."""
    path = Path(path)
    container = sniff_container(path)
    if fmt and fmt not in FORMATS:
        raise DataError(f"unknown log format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt:
        return LogFile(path, container, fmt)
    if container == "jsonl":
        return LogFile(path, container, _format_from_keys(_first_json_keys(path)))
    columns = _raw_columns(con or duckdb.connect(), LogFile(path, container, "canonical"))
    return LogFile(path, container, _format_from_keys(set(columns)), columns)


def _first_json_keys(path: Path) -> set[str]:
    for line in path.open(encoding="utf-8", errors="replace"):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
            continue  # the malformed line is the contract's business, not detection's
        if isinstance(record, dict):
            return set(record) | {
                f"response.{k}"
                for k in (record.get("response") or {})
                if isinstance(record.get("response"), dict)
            }
    return set()


def _format_from_keys(keys: set[str]) -> str:
    if (
        {"startTime", "spend"} <= keys
        or {"model_group", "custom_llm_provider"} & keys
        and "startTime" in keys
    ):
        return "litellm"
    if "custom_id" in keys and "response" in keys:  # custom_id is the Batch API's signature
        return "openai_batch"
    if "request" in keys and {"response.choices", "response.usage"} & keys:
        return "openai"
    return "canonical"


# --------------------------------------------------------------------------- raw scans


def _path_literal(path: Path) -> str:
    return lit(str(path))


def scan_sql(log: LogFile) -> str:
    """A streaming DuckDB scan of the file; CSV as text (the contract judges types per row)."""
    if log.container == "parquet":
        return f"read_parquet({_path_literal(log.path)})"
    if log.container == "csv":
        return f"read_csv({_path_literal(log.path)}, header=true, all_varchar=true, auto_detect=true)"
    # JSONL is read as lines so that a malformed line becomes a quarantined row, not a crash or
    # a silent skip (read_json's ignore_errors drops lines without a word).
    return (
        f"(SELECT line AS {SOURCE_LINE}, CASE WHEN json_valid(line) THEN line END AS {VALID_LINE} "
        f"FROM read_csv({_path_literal(log.path)}, columns={{'line': 'VARCHAR'}}, "
        "header=false, delim=chr(0), quote='', escape='', auto_detect=false, max_line_size=67108864) "
        "WHERE line IS NOT NULL AND trim(line) <> '')"
    )


def _raw_columns(con: duckdb.DuckDBPyConnection, log: LogFile) -> dict[str, str]:
    try:
        return {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {scan_sql(log)}").fetchall()}
    except duckdb.Error as error:
        raise DataError(
            f"{log.path}: cannot be read as {log.container}: {str(error).splitlines()[0]}"
        ) from None


class Fields:
    """SQL for a named field of a row, whether the row is a table row or a JSON line."""

    def __init__(self, columns: dict[str, str], jsonl: bool):
        self.columns, self.jsonl = columns, jsonl

    def text(self, name: str) -> str:
        """The field as text (JSON values keep their JSON text); NULL when absent."""
        if self.jsonl:
            path = lit("$." + ".".join(f'"{p}"' for p in name.split(".")))
            return (
                f"CASE json_type({VALID_LINE}, {path}) "
                f"WHEN 'VARCHAR' THEN json_extract_string({VALID_LINE}, {path}) "
                f"WHEN 'NULL' THEN NULL ELSE json_extract({VALID_LINE}, {path})::VARCHAR END"
            )
        return f"CAST({q(name)} AS VARCHAR)" if name in self.columns else "CAST(NULL AS VARCHAR)"

    def raw(self, name: str) -> str:
        """The field with its own type where the container has types (Parquet); text otherwise."""
        if not self.jsonl and name in self.columns:
            return q(name)
        return self.text(name)

    def has(self, name: str) -> bool:
        return self.jsonl or name in self.columns


def jget(sql: str, path: str) -> str:
    """``json_extract_string`` that yields NULL on malformed JSON instead of failing the query."""
    return f"json_extract_string(CASE WHEN json_valid({sql}) THEN {sql} END, {lit(path)})"


# A secret key and its value, as plain JSON and as JSON escaped inside a JSON string (a JSONL line
# whose metadata is a string): redacting both ways keeps the line valid JSON.
SECRET_PAIR = r'"(' + SECRET_KEYS + r')"\s*:\s*("(\\.|[^"\\])*"|[^,}\]]*)'
ESCAPED_SECRET_PAIR = r'\\"(' + SECRET_KEYS + r')\\"\s*:\s*(\\"[^"]*?\\"|[^,}\]"\\]*)'
REDACTED_PAIR, ESCAPED_REDACTED_PAIR = r'"\1": "[redacted]"', r'\\"\1\\": \\"[redacted]\\"'


def redact(sql: str) -> str:
    """Secrets out of a JSON text column: keys like api_key/authorization, and sk-... values."""
    escaped = f"regexp_replace({sql}, {lit(ESCAPED_SECRET_PAIR)}, {lit(ESCAPED_REDACTED_PAIR)}, 'gi')"
    keyed = f"regexp_replace({escaped}, {lit(SECRET_PAIR)}, {lit(REDACTED_PAIR)}, 'gi')"
    replaced = f"regexp_replace({keyed}, {lit(SECRET_VALUE)}, '[redacted]', 'g')"
    return f"CASE WHEN {_may_hold_secret(sql)} THEN {replaced} ELSE {sql} END"


# Every secret pattern needs one of these words (or 'sk-'): three regexp_replace per row cost
# the audit about as much as its whole contract, and most metadata holds none of them.
SECRET_WORDS = ("key", "authorization", "secret", "password", "bearer", "token")


def _may_hold_secret(sql: str) -> str:
    """A cheap test true for every text a secret pattern can match (and for some others)."""
    # No pattern matches under 9 characters ('"bearer":'), so '{}', the metadata of most canonical
    # logs, costs one length. lower() folds the Kelvin sign to k; 'ſ' (long s) matches s under the
    # patterns' case folding but lower() keeps it, so its presence alone sends the text through.
    words = " OR ".join(f"contains(lower({sql}), {lit(w)})" for w in SECRET_WORDS)
    return f"(length({sql}) >= 9 AND ({words} OR contains({sql}, 'sk-') OR contains({sql}, 'ſ')))"


def _use_case_sql(explicit: str, metadata: str, model: str, rules: Sequence[dict]) -> str:
    """Row value > tag/key in the metadata > the plan's rules > 'unassigned'."""
    from_meta = (
        f"coalesce(nullif(regexp_extract({metadata}, {lit(TAG_PATTERN)}, 1), ''), "
        f"{jget(metadata, '$.use_case')})"
    )
    cases = []
    for rule in rules:
        tests = []
        if rule.get("model"):
            tests.append(f"regexp_matches({model}, {lit(rule['model'])})")
        if rule.get("tag"):
            tests.append(f"regexp_matches(coalesce({metadata}, ''), {lit(rule['tag'])})")
        if tests:
            cases.append(f"WHEN {' AND '.join(tests)} THEN {lit(rule['use_case'])}")
    by_rule = f"CASE {' '.join(cases)} END" if cases else "NULL"
    # CASE, not coalesce: DuckDB then only parses the metadata of rows that lack a use case.
    return (
        f"CASE WHEN nullif({explicit}, '') IS NOT NULL THEN {explicit} "
        f"ELSE coalesce({from_meta}, {by_rule}, {lit(UNASSIGNED)}) END"
    )


# --------------------------------------------------------------------------- adapters


def _canonical(f: Fields) -> dict[str, str]:
    return {name: f.raw(name) for name in CANONICAL_COLUMNS}


def _litellm(f: Fields) -> dict[str, str]:
    start, end = f.text("startTime"), f.text("endTime")
    status = f.text("status")
    return {
        "request_id": f.text("request_id"),
        # LiteLLM's database stores UTC without a zone (Prisma DateTime); say so explicitly.
        "ts": _assume_utc(start),
        "model": f"coalesce(nullif({f.text('model')}, ''), {f.text('model_group')})",
        "provider": f.text("custom_llm_provider"),
        "prompt_tokens": f.raw("prompt_tokens"),
        "completion_tokens": f.raw("completion_tokens"),
        "latency_ms": (
            f"(epoch_ms(TRY_CAST({end} AS TIMESTAMP)) - epoch_ms(TRY_CAST({start} AS TIMESTAMP)))::DOUBLE"
        ),
        "status": (
            f"CASE lower({status}) WHEN 'success' THEN 'ok' WHEN 'failure' THEN 'error' "
            f"ELSE coalesce({status}, 'ok') END"
        ),
        "error_type": jget(f.text("metadata"), "$.error_information.error_class"),
        "cost_usd": f.raw("spend"),
        "request": f.text("messages"),
        "response": _response_text(f.text("response")),
        "metadata": f.text("metadata"),
        # Newer proxies keep the request's tags in their own column, not always in the metadata.
        "use_case": f"regexp_extract(coalesce({f.text('request_tags')}, ''), {lit(TAG_PATTERN)}, 1)",
    }


def _assume_utc(ts: str) -> str:
    return (
        f"CASE WHEN regexp_matches({ts}, '(Z|[+-][0-9]{{2}}(:?[0-9]{{2}})?)$') "
        f"THEN {ts} ELSE {ts} || '+00:00' END"
    )


def _response_text(sql: str) -> str:
    """The assistant's text from a chat.completion JSON; plain text stays as it is."""
    valid = f"CASE WHEN json_valid({sql}) THEN {sql} END"
    content = f"json_extract_string({valid}, '$.choices[0].message.content')"
    tools = f"json_extract({valid}, '$.choices[0].message.tool_calls')::VARCHAR"
    return (
        f"CASE WHEN json_type({valid}) = 'OBJECT' AND json_exists({valid}, '$.choices') "
        f"THEN coalesce({content}, {tools}) ELSE {sql} END"
    )


def _openai(f: Fields) -> dict[str, str]:
    error = f.text("error")
    return {
        "request_id": f"coalesce({f.text('response.id')}, {f.text('request_id')})",
        "ts": (
            f"coalesce(strftime(to_timestamp(TRY_CAST({f.text('response.created')} AS BIGINT)), "
            f"'%Y-%m-%dT%H:%M:%SZ'), {f.text('ts')})"
        ),
        "model": f"coalesce({f.text('request.model')}, {f.text('response.model')})",
        "provider": "'openai'",
        "prompt_tokens": f"coalesce({f.text('response.usage.prompt_tokens')}, '0')",
        "completion_tokens": f"coalesce({f.text('response.usage.completion_tokens')}, '0')",
        "latency_ms": f.text("latency_ms"),
        "status": f"CASE WHEN {error} IS NULL OR {error} = 'null' THEN 'ok' ELSE 'error' END",
        "error_type": f"coalesce({jget(error, '$.type')}, {jget(error, '$.code')})",
        "cost_usd": f.text("cost_usd"),
        "request": f.text("request.messages"),
        "response": _response_text(f.text("response")),
        "metadata": f"coalesce({f.text('metadata')}, {f.text('request.metadata')}, '{{}}')",
    }


def _openai_batch(f: Fields) -> dict[str, str]:
    body, error = "response.body", f.text("error")
    status_code = f"TRY_CAST({f.text('response.status_code')} AS INT)"
    return {
        "request_id": f"coalesce({f.text('custom_id')}, {f.text('id')})",
        "ts": (
            f"strftime(to_timestamp(TRY_CAST({f.text(body + '.created')} AS BIGINT)), '%Y-%m-%dT%H:%M:%SZ')"
        ),
        "model": f.text(body + ".model"),
        "provider": "'openai'",
        "prompt_tokens": f"coalesce({f.text(body + '.usage.prompt_tokens')}, '0')",
        "completion_tokens": f"coalesce({f.text(body + '.usage.completion_tokens')}, '0')",
        "latency_ms": "CAST(NULL AS VARCHAR)",
        "status": (
            f"CASE WHEN ({error} IS NULL OR {error} = 'null') AND coalesce({status_code}, 200) < 400 "
            f"THEN 'ok' ELSE 'error' END"
        ),
        "error_type": f"coalesce({jget(error, '$.code')}, CAST({status_code} AS VARCHAR))",
        "cost_usd": "CAST(NULL AS VARCHAR)",
        "request": "CAST(NULL AS VARCHAR)",
        "response": _response_text(f.text(body)),
        # Batch rows are priced at batch rates: the hosting travels in the metadata.
        "metadata": (
            f"json_object('hosting', 'batch', 'batch_request_id', {f.text('id')}, "
            f"'custom_id', {f.text('custom_id')})::VARCHAR"
        ),
    }


ADAPTERS = {"canonical": _canonical, "litellm": _litellm, "openai": _openai, "openai_batch": _openai_batch}


def source_sql(con: duckdb.DuckDBPyConnection, log: LogFile, rules: Sequence[dict] = ()) -> str:
    """``(SELECT <canonical columns> FROM <scan>)`` for one file, secrets redacted, use case set.

    A canonical file that lacks a required column keeps lacking it, so the contract reports it.
    """
    raw = log.columns if log.columns is not None else _raw_columns(con, log)
    fields = Fields(raw, log.container == "jsonl")
    exprs = ADAPTERS[log.format](fields)
    if log.format == "canonical" and not fields.jsonl:
        exprs = {k: v for k, v in exprs.items() if k in raw or k in OPTIONAL_COLUMNS or k == "use_case"}
    exprs["metadata"] = redact(f"coalesce({exprs.get('metadata', 'NULL')}, '{{}}')")
    exprs["use_case"] = _use_case_sql(
        exprs.get("use_case", "NULL"), exprs["metadata"], exprs.get("model", "NULL"), rules
    )
    for column in OPTIONAL_COLUMNS:
        exprs.setdefault(column, "CAST(NULL AS VARCHAR)")
    if fields.jsonl:
        exprs[SOURCE_LINE] = redact(SOURCE_LINE)
    select = ", ".join(f"{v} AS {q(k)}" for k, v in exprs.items())
    return f"(SELECT {select} FROM {scan_sql(log)})"


OPTIONAL_COLUMNS = ("provider", "latency_ms", "error_type", "cost_usd", "request", "response", "metadata")


def usage_source(
    con: duckdb.DuckDBPyConnection,
    paths: Iterable[str | Path],
    fmt: str | None = None,
    rules: Sequence[dict] = (),
) -> tuple[str, list[LogFile]]:
    """All inputs as one relation (``UNION ALL BY NAME``); a folder means the log files inside it."""
    logs = [detect_format(path, fmt, con) for path in expand_paths(paths)]
    if not logs:
        raise DataError("no usage log files given")
    parts = [source_sql(con, log, rules) for log in logs]
    return "(" + " UNION ALL BY NAME ".join(f"SELECT * FROM {p}" for p in parts) + ")", logs


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders expand to their .csv/.jsonl/.parquet files, sorted."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix in (".csv", ".jsonl", ".parquet", ".json"))
        else:
            found.append(path)
    return found


# --------------------------------------------------------------------------- aggregations

# A batch call's hosting travels in its metadata. The other rows stay NULL here and become 'api'
# in the second GROUP BY, over a few hundred rows: a 10M-row column of 'api' strings, hashed as
# a key, costs ~0.2 CPU-s (benchmarks/NOTES.md).
HOSTING_SQL = f"CASE WHEN metadata LIKE '%hosting%' THEN {jget('metadata', '$.hosting')} END"
# The UTC month of a TIMESTAMPTZ by arithmetic on its microseconds: date_trunc on a zoned time
# asks ICU's calendar per row (~1 CPU-second per 10M rows, two thirds of a bare GROUP BY).
# Infinite times (no microsecond value) fall back to date_trunc, so every value keeps its month.
MONTH_SQL = "coalesce(date_trunc('month', make_timestamp(epoch_us(ts))), date_trunc('month', ts)::TIMESTAMP)"


def checked_cost_by_month(checked) -> tuple[pa.Table, int, dict[str, int]]:
    """The cost groups of the accepted rows, rows read, and failures per expectation.

    The contract's flags and the GROUP BY run in one DuckDB query, so a clean log costs about
    what a bare GROUP BY over the file costs; only when rows failed does a second scan count
    the failures per expectation.
    """
    # Group by the truncated timestamp and format the few groups afterwards: formatting 10M
    # timestamps would cost more than the whole contract. Group by status too, then merge the
    # statuses in a second GROUP BY over a few hundred rows: an aggregate with a FILTER costs
    # ~20 ms per 10M rows, and the split turns most of them into plain counts and sums
    # (benchmarks/NOTES.md).
    by_status = f"""
        SELECT {MONTH_SQL} AS month, use_case, model, {HOSTING_SQL} AS hosting, _ok, status,
               count(*) AS requests, sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
               sum(cost_usd) AS logged_cost_usd,
               sum(prompt_tokens) FILTER (WHERE cost_usd IS NULL) AS unlogged_prompt_tokens,
               sum(completion_tokens) FILTER (WHERE cost_usd IS NULL) AS unlogged_completion_tokens,
               min(ts) AS first_ts, max(ts) AS last_ts,{EVIDENCE_BY_STATUS}
        FROM {checked.conformed_ok_sql} GROUP BY ALL"""  # noqa: E501
    grouped = f"""
        SELECT month, use_case, model, coalesce(hosting, 'api') AS hosting, _ok, sum(requests)::BIGINT AS requests,
               {_for_status("requests", "error")} AS errors,
               sum(prompt_tokens)::BIGINT AS prompt_tokens, sum(completion_tokens)::BIGINT AS completion_tokens,
               sum(logged_cost_usd) AS logged_cost_usd,
               coalesce(sum(unlogged_prompt_tokens), 0)::BIGINT AS unlogged_prompt_tokens,
               coalesce(sum(unlogged_completion_tokens), 0)::BIGINT AS unlogged_completion_tokens,
               min(first_ts) AS first_ts, max(last_ts) AS last_ts,{EVIDENCE_MERGED}
        FROM ({by_status}) GROUP BY ALL"""  # noqa: E501
    table = checked.con.sql(
        f"SELECT * REPLACE (strftime(month, '%Y-%m') AS month) FROM ({grouped})"
    ).to_arrow_table()
    read = sum(table.column("requests").to_pylist())
    accepted = table.filter(table.column("_ok")).drop_columns(["_ok"])
    failures = dict(checked.failure_counts()[1]) if accepted.num_rows < table.num_rows else {}
    order = [("month", "ascending"), ("use_case", "ascending"), ("model", "ascending")]
    return accepted.sort_by(order), read, failures


# Evidence about the work, as sums that merge across groups, so it rides along the cost scan
# instead of costing a second one. Per status first (see checked_cost_by_month), then merged:
# the answers count for successful calls only, the requests for every call.
EVIDENCE_BY_STATUS = """
               count(response) AS answers,
               count(*) FILTER (WHERE left(ltrim(response), 1) IN ('{', '[')) AS json_answers,
               approx_count_distinct(lower(trim(response))) AS distinct_answers,
               sum(length(response)) AS answer_chars,
               sum(json_array_length(CASE WHEN left(request, 1) = '[' AND json_valid(request) THEN request END)) AS messages,
               count(*) FILTER (WHERE left(request, 1) = '[') AS message_requests,
               count(*) FILTER (WHERE contains(request, '"tool_calls"') OR contains(request, '"role": "tool"')
                                OR contains(request, '"role":"tool"')) AS tool_requests,
               bit_or(1::UBIGINT << (epoch_us(ts) // 3600000000 % 24)::UBIGINT) AS hours"""  # UTC hour, no zone lookup  # noqa: E501


def _for_status(column: str, status: str) -> str:
    return f"coalesce(sum({column}) FILTER (WHERE status = '{status}'), 0)::BIGINT"


EVIDENCE_MERGED = f"""
               {_for_status("answers", "ok")} AS ev_answers, {_for_status("json_answers", "ok")} AS ev_json,
               {_for_status("distinct_answers", "ok")} AS ev_distinct, {_for_status("answer_chars", "ok")} AS ev_chars,
               {_for_status("completion_tokens", "ok")} AS ev_completion, {_for_status("requests", "ok")} AS ev_ok,
               coalesce(sum(messages), 0)::BIGINT AS ev_messages, sum(message_requests)::BIGINT AS ev_requests,
               sum(tool_requests)::BIGINT AS ev_tools, bit_or(hours) AS ev_hours"""  # noqa: E501


def evidence_from_groups(groups: pa.Table) -> dict[str, dict]:
    """Per use case, what the logs say about the work: JSON outputs, label sets, turns, tools, hours.

    ``distinct_responses`` sums the per-group distinct counts: an upper bound, so "a small fixed
    label set" is only claimed when it surely is one.
    """
    evidence: dict[str, dict] = {}
    for row in groups.to_pylist():
        ev = evidence.setdefault(
            row["use_case"], {"hours": 0, "batch": 0, **{k: 0 for k in row if k.startswith("ev_")}}
        )
        for key in ev:
            if key.startswith("ev_") and key != "ev_hours":
                ev[key] += row[key] or 0
        ev["hours"] |= row["ev_hours"] or 0
        ev["batch"] += row["requests"] if row["hosting"] == "batch" else 0
        ev["requests"] = ev.get("requests", 0) + row["requests"]
    return {name: _evidence(ev) for name, ev in evidence.items()}


def _evidence(ev: dict) -> dict:
    answers, ok = ev["ev_answers"], ev["ev_ok"]
    return {
        "sampled": ok,
        "json_share": ev["ev_json"] / answers if answers else 0.0,
        "distinct_responses": ev["ev_distinct"],
        "mean_response_chars": ev["ev_chars"] / answers if answers else 0.0,
        "mean_completion_tokens": ev["ev_completion"] / ok if ok else 0.0,
        "mean_messages": ev["ev_messages"] / ev["ev_requests"] if ev["ev_requests"] else 0.0,
        "tool_share": ev["ev_tools"] / ev["requests"] if ev["requests"] else 0.0,
        "batch_share": ev["batch"] / ev["requests"] if ev["requests"] else 0.0,
        "active_hours": bin(ev["hours"]).count("1"),
    }


def price_costs(
    con: duckdb.DuckDBPyConnection, grouped: pa.Table, prices: pa.Table, batch_prices: pa.Table
) -> pa.Table:
    """Add ``cost_usd`` (logged spend + unlogged tokens × price) and the tokens nobody could price."""
    con.register("_grouped", grouped)
    con.register("_prices", prices)
    con.register("_batch_prices", batch_prices)
    return con.sql("""
        SELECT g.*, CASE WHEN g.hosting = 'batch' THEN b.price_source ELSE p.price_source END AS price_source,
               coalesce(g.logged_cost_usd, 0) + coalesce(
                   g.unlogged_prompt_tokens * CASE WHEN g.hosting = 'batch' THEN b.input_per_token ELSE p.input_per_token END
                 + g.unlogged_completion_tokens * CASE WHEN g.hosting = 'batch' THEN b.output_per_token ELSE p.output_per_token END, 0) AS cost_usd,
               CASE WHEN (CASE WHEN g.hosting = 'batch' THEN b.input_per_token ELSE p.input_per_token END) IS NULL
                    THEN g.unlogged_prompt_tokens + g.unlogged_completion_tokens ELSE 0 END AS unpriced_tokens
        FROM _grouped g LEFT JOIN _prices p USING (model) LEFT JOIN _batch_prices b USING (model)
        ORDER BY month, use_case, model""").to_arrow_table()  # noqa: E501


def write_canonical(con: duckdb.DuckDBPyConnection, accepted_sql: str, path: Path) -> Path:
    """The accepted rows as canonical parquet (what golden sets sample from), streamed: no sort,
    so 10M rows never sit in memory at once (readers order what they need)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = ", ".join(f"CAST({q(f.name)} AS {_duck(f.type)}) AS {q(f.name)}" for f in USAGE_SCHEMA)
    con.execute(f"COPY (SELECT {cols} FROM {accepted_sql}) TO {lit(str(path))} (FORMAT PARQUET)")
    return path


def _duck(arrow_type: pa.DataType) -> str:
    return {pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.float64(): "DOUBLE"}.get(
        arrow_type, "TIMESTAMPTZ"
    )


def read_usage(paths: Iterable[str | Path], fmt: str | None = None, rules: Sequence[dict] = ()) -> pa.Table:
    """Small inputs as a canonical Arrow table, unvalidated (tests, notebooks); big ones stay in DuckDB."""
    from workhorse.tasks.common.contracts import connect

    con = connect()
    sql, _ = usage_source(con, paths, fmt, rules)
    return con.sql(f"SELECT * FROM {sql}").to_arrow_table()


def canonical_rows(rows: list[dict]) -> pa.Table:
    """Canonical usage rows from dicts (tests, generators), with the schema's types."""
    return pa.Table.from_pylist(rows, schema=USAGE_SCHEMA)


def tag_use_case(metadata: dict, use_case: str) -> dict:
    """Metadata carrying the use case the way LiteLLM tags carry it (``use_case:<name>``)."""
    tags = [t for t in metadata.get("tags", []) if not re.match(TAG_PATTERN, t)]
    return {**metadata, "tags": tags + [f"use_case:{use_case}"]}
