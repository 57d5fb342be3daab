"""Weekly re-evaluation of migrated use cases: refresh the golden set, re-run the evaluation,
and alert when the migrated model fell behind the policy (the verdict went back to 'keep').

Models and traffic change under a migration that once passed; this catches a quality slide that
latency and error guardrails cannot see. Alerts go through the monitoring incidents, so a
repeated 'keep' does not page twice and a later 'migrate' resolves it.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from pydantic import SecretStr

import workhorse  # noqa: F401  (offline defaults before anything imports LiteLLM)
from workhorse.config import plan_workspace
from workhorse.tasks.monitor.alerts import resolve_webhook_url
from workhorse.tasks.monitor.window import (
    alert_results,
    migrated_use_cases,
    reevaluation_result,
    summary_dict,
)


@flow(name="weekly-reevaluation", log_prints=True)
async def weekly_reevaluation(
    workspace: str | None = None,
    plan: str | dict | None = None,
    use_cases: list[str] | None = None,
    refresh_golden: bool = True,
    slack_webhook_url: SecretStr | None = None,
) -> dict:
    """Golden refresh + eval per migrated use case, then one guardrail result per use case."""
    from prefect.runtime import flow_run

    from workhorse.flows.evaluate import parallel_eval
    from workhorse.flows.golden import golden_dataset_refresh

    logger = get_run_logger()
    ws, loaded = plan_workspace(workspace, plan)
    migrated = {k: v for k, v in migrated_use_cases(ws, loaded).items() if not use_cases or k in use_cases}
    results, verdicts = [], {}
    for use_case, model in migrated.items():
        if refresh_golden:
            state = golden_dataset_refresh(
                plan=plan, workspace=str(ws.root), use_cases=[use_case], return_state=True
            )
            if not state.is_completed():  # evaluate on the last good version rather than not at all
                logger.warning(
                    "%s: golden refresh failed (%s); evaluating the previous version", use_case, state.message
                )
        summary = await parallel_eval(use_case, workspace=str(ws.root), plan=plan)
        verdicts[use_case] = (summary.get("verdict") or {}).get("decision")
        results.append(reevaluation_result(use_case, model, summary))
    alerted = alert_results(
        ws,
        loaded,
        results,
        webhook_url=resolve_webhook_url(slack_webhook_url, loaded),
        flow_run_url=flow_run.ui_url,
    )
    logger.info("re-evaluated %s: %s", sorted(migrated) or "none (nothing migrated)", verdicts)
    return {"verdicts": verdicts, **summary_dict(alerted)}
