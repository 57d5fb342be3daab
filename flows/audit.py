"""Flow: usage_audit (playbook step 1) - what we spend, on what, and what open models would cost.

Wiring only: read the logs through the usage_log contract, price them, classify each use case,
project candidates × hosting strategies, then write the tables, the HTML report and the
Prefect artifacts. Row-level problems are quarantined; the flow fails only past the plan's
bad-row ratio, with a message naming the file and the broken expectations.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

import workhorse  # noqa: F401  (offline defaults before anything imports LiteLLM)
from workhorse.config import Plan, SpendLogsDb, plan_from
from workhorse.tasks.audit.assessment import AuditSummary, audit_usage_logs, store_audit_tables, summarize
from workhorse.tasks.audit.spendlogs_db import staged_spend_logs
from workhorse.tasks.common.html import audit_markdown, billed_rows, use_case_rows, write_report
from workhorse.workspace import Workspace


def publish(result, plan: Plan, report: str) -> None:
    """Table artifacts (billed months; run-rate per use case) and a markdown one (summary with reasons)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_table_artifact(
        key="usage-audit-billed",
        table=billed_rows(result),
        description="Billed spend per calendar month × use case × model (partial months marked)",
    )
    window = result.window
    basis = (
        f"per run-rate month, {window.label()}" + (f"; {window.warning()}" if window.extrapolated else "")
        if window
        else "no accepted rows"
    )
    create_table_artifact(
        key="usage-audit",
        table=use_case_rows(result, plan),
        description=f"Spend, verdicts and the cheapest fitting option per use case ({basis})",
    )
    create_markdown_artifact(
        key="usage-audit-summary",
        markdown=audit_markdown(result, plan) + f"\nReport: {report}\n",
        description="Usage audit summary",
    )


@flow(name="usage-audit", log_prints=True)
def usage_audit(
    logs: list[str] | None = None,
    plan: str | dict | None = None,
    workspace: str | None = None,
    format: str | None = None,
    max_bad_row_ratio: float | None = None,
    spend_logs_db: SpendLogsDb | None = None,
) -> AuditSummary:
    """Audit LLM usage logs: billed spend per calendar month, use case and model; the run-rate
    over the log window, and savings per candidate and hosting per run-rate month.

    ``spend_logs_db`` (else the plan's ``audit.spend_logs_db``) adds the LiteLLM proxy's
    ``LiteLLM_SpendLogs`` rows, read from its PostgreSQL database; pass it as a ``SpendLogsDb``
    so Prefect stores its URL masked.
    """
    logger = get_run_logger()
    ws = Workspace.resolve(workspace)
    chosen = plan_from(plan, ws.root)
    with staged_spend_logs(spend_logs_db or chosen.audit.spend_logs_db, ws.root, format) as staged:
        result = audit_usage_logs(list(logs or []) + staged, chosen, str(ws.root), format, max_bad_row_ratio)
    folder = ws.subdir("audit")
    tables = store_audit_tables(result, str(folder))
    report = write_report(result, chosen, str(folder / "report.html"))
    publish(result, chosen, report)
    summary = summarize(result, report, tables)
    logger.info(
        "read %s rows, accepted %s, quarantined %s; %s; %s; report: %s",
        summary.read,
        summary.accepted,
        summary.quarantined,
        summary.billed_text(),
        summary.run_rate_text(),
        report,
    )
    if summary.run_rate and summary.run_rate["warning"]:
        logger.warning("run-rate and projections: %s", summary.run_rate["warning"])
    for name in summary.unpriced_models:
        logger.warning("model %s has no price: its rows are counted as unpriced", name)
    return summary
