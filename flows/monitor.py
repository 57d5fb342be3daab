"""Step 5 — monitoring: every few minutes, one traffic window per run.

Wiring only: resolve the plan and the Slack webhook, evaluate the window (metrics, rules,
incidents, reverts, Slack, events in ``tasks.monitor_run``), publish the window as artifacts.
A breach on a use case under rollout reverts it here, so no Prefect Automation is required.
"""

from __future__ import annotations

from datetime import datetime

from prefect import flow, get_run_logger, task
from pydantic import SecretStr

import workhorse  # noqa: F401  (offline defaults before anything imports LiteLLM)
from workhorse.config import plan_workspace
from workhorse.tasks.monitor.alerts import resolve_webhook_url
from workhorse.tasks.monitor.window import (
    metrics_table,
    monitor_window,
    read_traffic_file,
    summary_dict,
    summary_markdown,
)
from workhorse.workspace import Workspace


@task(name="evaluate-window")
def evaluate_window(
    workspace: Workspace,
    plan,
    traffic_path: str | None,
    now: datetime | None,
    window_minutes: int | None,
    use_cases: list[str] | None,
    webhook: SecretStr | None,
):
    """Metrics, rules, incidents and actions of one window (Slack retries are in the client)."""
    from prefect.runtime import flow_run

    traffic = read_traffic_file(traffic_path) if traffic_path else None
    return monitor_window(
        workspace,
        plan,
        traffic,
        now=now,
        window_minutes=window_minutes,
        use_cases=use_cases,
        webhook_url=webhook,
        flow_run_url=flow_run.ui_url,
    )


def publish(summary) -> None:
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_markdown_artifact(
        key="monitoring-window",
        markdown=summary_markdown(summary),
        description="Monitoring: metrics, breaches and actions of the last window",
    )
    create_table_artifact(
        key="monitoring-metrics",
        table=metrics_table(summary),
        description="Metrics per use case and model in the last window",
    )


@flow(name="monitoring", log_prints=True)
def monitoring(
    workspace: str | None = None,
    plan: str | dict | None = None,
    window_minutes: int | None = None,
    use_cases: list[str] | None = None,
    now: datetime | None = None,
    slack_webhook_url: SecretStr | None = None,
    traffic_path: str | None = None,
) -> dict:
    """Evaluate the window ending ``now`` (default: the current time) and alert on breaches."""
    logger = get_run_logger()
    ws, plan = plan_workspace(workspace, plan)
    webhook = resolve_webhook_url(slack_webhook_url, plan)
    if webhook is None:
        logger.warning("no Slack webhook configured: alerts are queued in state.db until one is")
    summary = evaluate_window(ws, plan, traffic_path, now, window_minutes, use_cases, webhook)
    publish(summary)
    result = summary_dict(summary)
    logger.info(
        "window %s–%s: %d breaches, %d opened, %d resolved, %d Slack sent, %d pending, reverts %s",
        result["window_start"],
        result["window_end"],
        len(result["breaches"]),
        len(result["opened"]),
        len(result["resolved"]),
        result["sent"],
        result["pending"],
        result["reverts"] or "none",
    )
    return result
