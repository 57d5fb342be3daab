"""The usage_audit flow on Acme's generated logs: stored tables, artifacts, report, and the
judgement (workhorse vs frontier, latency) with its reasons."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.support.acme import ACME, acme_generator
from workhorse.config import Plan, UseCase, load_plan
from workhorse.errors import ContractError
from workhorse.tasks.audit.assessment import classify_use_case, workload_from_evidence
from workhorse.tasks.common import pricing


@pytest.fixture(scope="module")
def acme_logs(tmp_path_factory) -> list[str]:
    paths = acme_generator().write_logs(tmp_path_factory.mktemp("acme") / "logs", scale=0.4)
    return [str(p) for p in paths.values()]


@pytest.fixture(scope="module")
def audited(acme_logs, prefect_server, tmp_path_factory):
    """One flow run over Acme's logs; the tests read what it stored."""
    from workhorse.flows.audit import usage_audit

    root = tmp_path_factory.mktemp("ws")
    summary = usage_audit(logs=acme_logs, plan=str(ACME / "workhorse.yaml"), workspace=str(root))
    return summary, root


def test_counts_reconcile_and_the_imperfections_are_quarantined(audited):
    summary, root = audited
    assert summary.read == summary.accepted + summary.quarantined
    quarantined = pq.read_table(summary.quarantine).to_pylist()
    assert len(quarantined) == summary.quarantined == 5  # a truncated line, two retries logged twice
    reasons = " ".join(r["_reason"] for r in quarantined)
    assert "expect_column_values_to_be_unique(request_id)" in reasons and "(_source_line)" in reasons
    assert pq.read_table(root / "usage" / "usage_log.parquet").num_rows == summary.accepted


def test_stored_costs_match_tokens_times_the_price_map(audited):
    """Recompute the incumbent's cost from the stored token sums and the map, per row."""
    summary, _ = audited
    catalog = pricing.PriceCatalog()
    for row in pq.read_table(summary.tables["cost_by_month"]).to_pylist():
        price = catalog.price(row["model"], row["hosting"])
        expected = (row["logged_cost_usd"] or 0) + price.cost(
            row["unlogged_prompt_tokens"], row["unlogged_completion_tokens"]
        )
        assert row["cost_usd"] == pytest.approx(expected)
        assert row["unpriced_tokens"] == 0


def test_projections_follow_the_plan_and_latency(audited):
    summary, _ = audited
    plan = load_plan(ACME / "workhorse.yaml")
    rows = pq.read_table(summary.tables["projections"]).to_pylist()
    assert {r["use_case"] for r in rows} == {
        "ticket-routing",
        "review-sentiment",
        "invoice-extraction",
        "call-summaries",
    }
    assert {r["candidate"] for r in rows} == {c.model for c in plan.candidates}
    catalog = pricing.PriceCatalog()
    use_cases = {r["use_case"]: r for r in pq.read_table(summary.tables["use_cases"]).to_pylist()}
    for row in rows:
        if row["hosting"] == "api":
            uc = use_cases[row["use_case"]]
            expected = catalog.price(row["candidate"]).cost(
                uc["monthly_prompt_tokens"], uc["monthly_completion_tokens"]
            )
            assert row["projected_monthly_usd"] == pytest.approx(expected)
            assert row["saving_pct"] == pytest.approx(
                (row["current_monthly_usd"] - expected) / row["current_monthly_usd"] * 100
            )
        if row["use_case"] == "ticket-routing" and row["hosting"] == "batch":
            assert not row["fits_latency"]


def test_verdicts_carry_reasons(audited):
    summary, _ = audited
    verdicts = {r["use_case"]: r for r in pq.read_table(summary.tables["verdicts"]).to_pylist()}
    assert verdicts["research-agent"]["workload"] == "frontier"
    assert verdicts["invoice-extraction"]["workload"] == "workhorse"
    # call-summaries has no latency in the plan: inferred from office-hours traffic
    assert (
        verdicts["call-summaries"]["latency"] == "realtime"
        and "hours of the day" in verdicts["call-summaries"]["latency_reason"]
    )
    assert all(v["workload_reason"] and v["latency_reason"] for v in verdicts.values())


def test_summary_totals_match_the_stored_tables(audited):
    summary, _ = audited
    use_cases = pq.read_table(summary.tables["use_cases"]).to_pylist()
    assert summary.run_rate_monthly_usd == pytest.approx(
        sum(u["monthly_cost_usd"] for u in use_cases), abs=0.01
    )
    assert 0 < summary.run_rate_projected_usd < summary.run_rate_monthly_usd
    assert {u["basis"] for u in use_cases} == {"run-rate month"} and summary.run_rate["label"].startswith(
        "run-rate over"
    )


def test_billed_months_are_the_cost_groups_summed_not_scaled_by_time(audited):
    """Acme's logs cover June 2025 from the 1st to the 30th: one full month, billed at what the
    cost groups hold (÷ the plan's sample rate), while the run-rate scales it to 30.44 days."""
    summary, _ = audited
    plan = load_plan(ACME / "workhorse.yaml")
    costs = pq.read_table(summary.tables["cost_by_month"]).to_pylist()
    [june] = summary.billed_months
    assert (june["month"], june["coverage"], june["partial"]) == ("2025-06", "2025-06", False)
    assert june["spend_usd"] == pytest.approx(
        sum(r["cost_usd"] for r in costs) / plan.audit.log_sample_rate, abs=0.005
    )
    billed = pq.read_table(summary.tables["billed_by_month"]).to_pylist()
    assert {(r["use_case"], r["model"]) for r in billed} == {(r["use_case"], r["model"]) for r in costs}
    assert summary.billed_text() == f"billed ${june['spend_usd']:,.2f} in 2025-06"
    assert not summary.run_rate["extrapolated"] and 29 < summary.run_rate["days"] < 30


def test_report_and_artifacts(audited):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    summary, _ = audited
    html = Path(summary.report).read_text()
    assert "<svg" in html and "research-agent" in html and "Break-even" in html and "<script" not in html
    assert (
        "Billed spend per calendar month" in html and "Per run-rate month: run-rate over 2025-06-01" in html
    )

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=["usage-audit", "usage-audit-billed", "usage-audit-summary"])
                )
            )

    # Other tests' audits share the session's server: keep this flow run's artifacts, found by the
    # audit's run id in its markdown summary.
    every = asyncio.run(artifacts())
    [run] = {a.flow_run_id for a in every if a.key == "usage-audit-summary" and summary.run_id in a.data}
    found = {a.key: a for a in every if a.flow_run_id == run}
    assert set(found) == {"usage-audit", "usage-audit-billed", "usage-audit-summary"}
    assert "ticket-routing" in str(found["usage-audit"].data) and "Why" in found["usage-audit-summary"].data
    assert "per run-rate month, run-rate over" in found["usage-audit"].description
    assert "2025-06" in str(found["usage-audit-billed"].data)
    assert "## Billed spend per calendar month" in found["usage-audit-summary"].data


def test_the_flow_fails_past_the_bad_row_ratio(acme_logs, prefect_server, tmp_path):
    from workhorse.flows.audit import usage_audit

    with pytest.raises(ContractError, match=r"broke the usage_log contract, more than the allowed 0\.0%"):
        usage_audit(
            logs=acme_logs, plan=str(ACME / "workhorse.yaml"), workspace=str(tmp_path), max_bad_row_ratio=0.0
        )
    assert len(list((tmp_path / "quarantine").glob("*.parquet"))) == 1


# --------------------------------------------------------------------------- judgement, plain


@pytest.mark.parametrize(
    "evidence, workload, reason",
    [
        ({"sampled": 50, "tool_share": 0.6, "mean_messages": 7}, "frontier", "agentic"),
        ({"sampled": 50, "tool_share": 0.0, "mean_messages": 9}, "frontier", "agentic"),
        ({"sampled": 50, "json_share": 0.95, "mean_messages": 2}, "workhorse", "JSON"),
        (
            {"sampled": 50, "distinct_responses": 4, "mean_response_chars": 8},
            "workhorse",
            "4 distinct short answers",
        ),
        (
            {
                "sampled": 50,
                "distinct_responses": 900,
                "mean_response_chars": 300,
                "mean_completion_tokens": 80,
            },
            "workhorse",
            "short",
        ),
        (
            {
                "sampled": 50,
                "distinct_responses": 900,
                "mean_response_chars": 5000,
                "mean_completion_tokens": 1500,
            },
            "frontier",
            "long",
        ),
        ({"sampled": 0}, "unknown", "no successful calls"),
    ],
)
def test_workload_from_evidence(evidence, workload, reason):
    verdict, why = workload_from_evidence(evidence)
    assert verdict == workload and reason in why


@pytest.mark.parametrize(
    "case, evidence, expected",
    [
        (
            UseCase(task_type="classification"),
            {"sampled": 9, "tool_share": 0.9},
            ("workhorse", "task_type classification"),
        ),
        (UseCase(task_type="generation", workload="frontier"), {}, ("frontier", "set in workhorse.yaml")),
        (UseCase(task_type="generation"), {"sampled": 9, "json_share": 1.0}, ("workhorse", "JSON")),
    ],
)
def test_plan_before_evidence(case, evidence, expected):
    verdict = classify_use_case("x", Plan(use_cases={"x": case}), evidence)
    assert (verdict.workload, expected[1] in verdict.workload_reason) == (expected[0], True)


@pytest.mark.parametrize(
    "latency, evidence, expected",
    [
        ("batch", {"active_hours": 20}, "batch"),
        (None, {"batch_share": 0.9, "active_hours": 24}, "batch"),
        (None, {"active_hours": 3}, "batch"),
        (None, {"active_hours": 16}, "realtime"),
    ],
)
def test_latency_need(latency, evidence, expected):
    plan = Plan(use_cases={"x": UseCase(task_type="qa", latency=latency)})
    assert classify_use_case("x", plan, evidence).latency == expected


def test_shortlist_when_the_plan_names_no_candidates(tmp_path):
    from workhorse.tasks.audit.assessment import audit_logs

    paths = acme_generator().write_logs(tmp_path / "logs", scale=0.1)
    plan = Plan(use_cases={"ticket-routing": UseCase(task_type="classification", latency="realtime")})
    result = audit_logs(list(paths.values()), plan, workspace_root=tmp_path / "ws", max_bad_ratio=0.2)
    rows = [r for r in result.projections.to_pylist() if r["use_case"] == "ticket-routing"]
    assert {r["origin"] for r in rows} == {"shortlist"}
    assert 2 <= len({r["candidate"] for r in rows if r["hosting"] == "api"}) <= 3
    assert any(r["hosting"] == "self_hosted" for r in rows)
