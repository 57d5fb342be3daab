"""Spend as billed and a run-rate that says what it is: calendar months as the invoice shows them
(partial months marked by the days covered), the run-rate labelled with its window, and a short
window flagged as an extrapolation."""

from __future__ import annotations

import csv
import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import workhorse  # noqa: F401  (offline price map before litellm is imported)
from workhorse.config import AuditPlan, Plan, UseCase
from workhorse.tasks.audit import usage
from workhorse.tasks.audit.assessment import DAYS_PER_MONTH, RUN_RATE, audit_logs, billed_months
from workhorse.tasks.common.html import audit_markdown, write_audit_report

PLAN = Plan(use_cases={"extraction": UseCase(task_type="extraction", latency="batch")})


def call(
    ts: datetime,
    prompt: int,
    completion: int,
    *,
    model: str = "gpt-4o-mini",
    use_case: str = "extraction",
    hosting: str | None = None,
    n: int = 0,
) -> dict:
    return {
        "request_id": f"r{n}-{ts.isoformat()}",
        "ts": ts,
        "use_case": use_case,
        "model": model,
        "provider": "openai",
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "latency_ms": 800.0,
        "status": "ok",
        "error_type": None,
        "cost_usd": None,
        "request": None,
        "response": '{"total": 12}',
        "metadata": json.dumps({"hosting": hosting} if hosting else {}),
    }


def write(rows: list[dict], path: Path) -> Path:
    pq.write_table(usage.canonical_rows(rows), path)
    return path


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def playbook_month(tmp_path: Path, first: datetime, last: datetime, hosting: str | None = None) -> Path:
    """The playbook's month, 500M input + 100M output tokens on gpt-4o-mini, logged as two rows."""
    return write(
        [
            call(first, 250_000_000, 50_000_000, hosting=hosting, n=1),
            call(last, 250_000_000, 50_000_000, hosting=hosting, n=2),
        ],
        tmp_path / "two_rows.parquet",
    )


def independent_cost(rows: list[dict]) -> float:
    """Each call's cost from LiteLLM itself, summed in Python: nothing shared with the audit's SQL."""
    import litellm

    return sum(
        sum(
            litellm.cost_per_token(
                r["model"], prompt_tokens=r["prompt_tokens"], completion_tokens=r["completion_tokens"]
            )
        )
        for r in rows
    )


# --------------------------------------------------------------------------- the case


@pytest.mark.parametrize("hosting, billed", [(None, "$135.00"), ("batch", "$67.50")])
def test_two_rows_are_billed_as_the_playbook_month_not_a_run_rate(tmp_path, hosting, billed):
    """5 and 20 Oct, together the playbook's tokens: October is billed $135.00 ($67.50 batch), and
    the $273.94 run-rate is shown apart, labelled with its 15-day window."""
    path = playbook_month(tmp_path, utc(2026, 10, 5, 9), utc(2026, 10, 20, 9), hosting)
    result = audit_logs([path], PLAN, workspace_root=tmp_path / "ws")

    [row] = result.billed.to_pylist()
    assert (row["month"], row["use_case"], row["model"]) == ("2026-10", "extraction", "gpt-4o-mini")
    assert f"${row['spend_usd']:.2f}" == billed
    assert (row["prompt_tokens"], row["completion_tokens"], row["requests"]) == (500_000_000, 100_000_000, 2)
    assert row["coverage"] == "2026-10 (partial: 16 days, 5–20 Oct)"
    assert (row["partial"], row["days_covered"], row["days_in_month"]) == (True, 16, 31)

    window = result.window
    assert window.span_days == 15 and not window.extrapolated and window.warning() is None
    assert (
        "2026-10-05 09:00 → 2026-10-20 09:00 UTC (15.0 days between the first and last row" in window.label()
    )
    [uc] = result.use_cases.to_pylist()
    assert uc["monthly_cost_usd"] == pytest.approx(row["spend_usd"] * DAYS_PER_MONTH / 15)
    assert (uc["basis"], uc["window_days"], uc["extrapolated"]) == (RUN_RATE, 15, False)
    assert result.projections.num_rows and set(result.projections.column("basis").to_pylist()) == {RUN_RATE}
    assert {v["basis"] for v in result.total_cost} == {RUN_RATE}


def test_the_playbook_month_logged_in_full_is_billed_exactly(tmp_path):
    """The same tokens from the 1st to the 31st: a full month, $135.00, and a run-rate of 30.44/31 of it."""
    path = playbook_month(tmp_path, utc(2026, 10, 1, 0, 5), utc(2026, 10, 31, 23, 55))
    result = audit_logs([path], PLAN, workspace_root=tmp_path / "ws")
    [row] = result.billed.to_pylist()
    assert f"${row['spend_usd']:.2f}" == "$135.00" and row["coverage"] == "2026-10" and not row["partial"]
    assert result.use_cases.column("monthly_cost_usd")[0].as_py() == pytest.approx(
        row["spend_usd"] * DAYS_PER_MONTH / result.window.span_days
    )


# --------------------------------------------------------------------------- a month of real-looking logs


def month_of_calls(seed: int = 3) -> list[dict]:
    """A call every ~2 hours from 30 Sep 22:00 to 1 Nov 01:00 (UTC) on two models and two use cases."""
    rng, rows, ts = random.Random(seed), [], utc(2026, 9, 30, 22)
    while ts < utc(2026, 10, 31, 22):
        model, use_case = rng.choice(
            [("gpt-4o-mini", "extraction"), ("gpt-4o-mini", "routing"), ("gpt-4o", "routing")]
        )
        rows.append(
            call(ts, rng.randint(50, 4000), rng.randint(1, 800), model=model, use_case=use_case, n=len(rows))
        )
        ts += timedelta(minutes=rng.randint(60, 180))
    return rows + [call(utc(2026, 11, 1, 1), 1_000, 100, n=len(rows))]


def write_spend_logs(rows: list[dict], path: Path) -> Path:
    """The rows as LiteLLM_SpendLogs, with the spend the proxy computes per call."""
    import litellm

    columns = [
        "request_id",
        "spend",
        "prompt_tokens",
        "completion_tokens",
        "startTime",
        "endTime",
        "model",
        "model_group",
        "custom_llm_provider",
        "metadata",
        "request_tags",
        "messages",
        "response",
        "status",
    ]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for r in rows:
            spend = sum(
                litellm.cost_per_token(
                    r["model"], prompt_tokens=r["prompt_tokens"], completion_tokens=r["completion_tokens"]
                )
            )
            start = r["ts"].strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
            writer.writerow(
                {
                    "request_id": r["request_id"],
                    "spend": repr(spend),
                    "prompt_tokens": r["prompt_tokens"],
                    "completion_tokens": r["completion_tokens"],
                    "startTime": start,
                    "endTime": start,
                    "model": r["model"],
                    "model_group": r["model"],
                    "custom_llm_provider": "openai",
                    "metadata": json.dumps({"tags": [f"use_case:{r['use_case']}"]}),
                    "request_tags": json.dumps([f"use_case:{r['use_case']}"]),
                    "messages": "[]",
                    "response": "",
                    "status": "success",
                }
            )
    return path


@pytest.mark.parametrize("source", ["canonical, priced by the audit", "litellm spend logs, spend logged"])
def test_a_full_month_is_billed_at_its_exact_spend(tmp_path, source):
    rows = month_of_calls()
    path = (
        write(rows, tmp_path / "calls.parquet")
        if source.startswith("canonical")
        else write_spend_logs(rows, tmp_path / "spendlogs.csv")
    )
    result = audit_logs([path], PLAN, workspace_root=tmp_path / "ws")

    billed = {(r["month"], r["use_case"], r["model"]): r for r in result.billed.to_pylist()}
    for key, row in billed.items():
        logged = [r for r in rows if (r["ts"].strftime("%Y-%m"), r["use_case"], r["model"]) == key]
        assert row["spend_usd"] == pytest.approx(independent_cost(logged), rel=1e-9)
        assert row["requests"] == len(logged)
    months = {m["month"]: m for m in billed_months(result.billed)}
    october = [r for r in rows if r["ts"].month == 10]
    assert round(months["2026-10"]["spend_usd"], 2) == round(independent_cost(october), 2)
    assert months["2026-10"]["coverage"] == "2026-10" and not months["2026-10"]["partial"]
    assert months["2026-09"]["coverage"] == "2026-09 (partial: 1 day, 30 Sep)"
    assert months["2026-11"]["coverage"] == "2026-11 (partial: 1 day, 1 Nov)"


# --------------------------------------------------------------------------- a short window


def three_day_sample(tmp_path: Path) -> Path:
    rows = [
        call(utc(2026, 10, 5, 9) + timedelta(hours=6 * i), 2_000, 300, n=i) for i in range(13)
    ]  # 5 → 8 Oct
    return write(rows, tmp_path / "three_days.parquet")


def test_a_three_day_sample_is_flagged_as_an_extrapolation(tmp_path):
    result = audit_logs([three_day_sample(tmp_path)], PLAN, workspace_root=tmp_path / "ws")
    window = result.window
    assert window.extrapolated and window.span_days == 3
    assert (
        "only 3.0 days between the first and last row, under the 7-day minimum (audit.min_coverage_days)"
        in window.warning()
    )
    assert result.projections.num_rows and all(result.projections.column("extrapolated").to_pylist())
    assert result.total_cost and all(v["extrapolated"] for v in result.total_cost)
    assert result.use_cases.column("extrapolated").to_pylist() == [True]
    # Billed spend is exact whatever the window: nothing to extrapolate.
    assert result.billed.column("coverage").to_pylist() == ["2026-10 (partial: 4 days, 5–8 Oct)"]
    markdown = audit_markdown(result, PLAN)
    html = write_audit_report(result, PLAN, tmp_path / "report.html").read_text()
    for text in (markdown, html):
        assert "Extrapolation: only 3.0 days" in text and "2026-10 (partial: 4 days, 5–8 Oct)" in text


def test_the_minimum_coverage_is_a_plan_setting(tmp_path):
    plan = Plan(use_cases=PLAN.use_cases, audit=AuditPlan(min_coverage_days=2))
    result = audit_logs([three_day_sample(tmp_path)], plan, workspace_root=tmp_path / "ws")
    assert not result.window.extrapolated and result.window.warning() is None
    assert not any(result.projections.column("extrapolated").to_pylist())


def test_a_sampled_log_is_billed_for_every_call(tmp_path):
    """Logs holding 10 % of calls: the invoice counts all of them, and both views say so."""
    path = playbook_month(tmp_path, utc(2026, 10, 5, 9), utc(2026, 10, 20, 9))
    plan = Plan(use_cases=PLAN.use_cases, audit=AuditPlan(log_sample_rate=0.1))
    result = audit_logs([path], plan, workspace_root=tmp_path / "ws")
    [row] = result.billed.to_pylist()
    assert f"${row['spend_usd']:.2f}" == "$1350.00" and row["requests"] == 20 and row["sample_rate"] == 0.1
    assert "logs hold 10% of calls, scaled ×10" in result.window.label()


# --------------------------------------------------------------------------- where it shows


def test_cli_flow_and_tables_show_billed_months_and_the_labelled_run_rate(
    tmp_path, prefect_server, monkeypatch
):
    from typer.testing import CliRunner

    from workhorse import cli

    monkeypatch.setattr(
        cli.console, "width", 240
    )  # one line per table row, whatever the test runner's terminal
    path = playbook_month(tmp_path, utc(2026, 10, 5, 9), utc(2026, 10, 20, 9))
    done = CliRunner().invoke(cli.app, ["audit", str(path), "--workspace", str(tmp_path / "ws")])
    assert done.exit_code == 0, done.output
    out = done.output
    assert "Billed spend per calendar month" in out and "2026-10 (partial: 16 days, 5–20 Oct)" in out
    assert (
        "Run-rate over 2026-10-05 09:00 → 2026-10-20 09:00 UTC (15.0 days between the first and last row"
        in out
    )
    assert (
        "billed $135.00 in 2026-10 (partial: 16 days, 5–20 Oct); run-rate $273.94/month over 15.0 days" in out
    )
    assert "per run-rate month" in out and "/month now" not in out

    stored = pq.read_table(tmp_path / "ws" / "audit" / "billed_by_month.parquet").to_pylist()
    assert [(r["coverage"], round(r["spend_usd"], 2)) for r in stored] == [
        ("2026-10 (partial: 16 days, 5–20 Oct)", 135.0)
    ]
    projections = pq.read_table(tmp_path / "ws" / "audit" / "projections.parquet").to_pylist()
    assert {(r["basis"], r["extrapolated"]) for r in projections} == {(RUN_RATE, False)}


def test_the_flow_summary_says_which_is_which(tmp_path, prefect_server):
    from workhorse.flows.audit import usage_audit

    summary = usage_audit(logs=[str(three_day_sample(tmp_path))], workspace=str(tmp_path / "ws"))
    assert summary.billed_months[0]["coverage"] == "2026-10 (partial: 4 days, 5–8 Oct)"
    assert (
        summary.billed_text().startswith("billed $")
        and "in 2026-10 (partial: 4 days, 5–8 Oct)" in summary.billed_text()
    )
    assert summary.run_rate["extrapolated"] and "min_coverage_days" in summary.run_rate["warning"]
    assert (
        "over 3.0 days of logs (2026-10-05 → 2026-10-08, an extrapolation: under the 7-day minimum)"
        in summary.run_rate_text()
    )
    assert "per run-rate month" in summary.run_rate_text()
