"""Flow: golden_dataset_refresh (playbook step 2) - one versioned golden set per use case.

Wiring only: the plan gives each use case's sources, one task per use case refreshes it
(a broken use case does not stop the others), the summary becomes Prefect artifacts, warnings
(e.g. dedup removed an unusual share of rows) are logged, and the flow fails at the end,
naming the use cases whose contract failed.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

import workhorse  # noqa: F401  (offline defaults before anything imports LiteLLM)
from workhorse.config import plan_from
from workhorse.errors import ConfigError, ContractError
from workhorse.tasks.golden.refresh import refresh_golden_set, specs_from_plan, summary_markdown, summary_rows
from workhorse.workspace import Workspace


def publish(reports) -> None:
    """Markdown (counts, cleaning, diff) and table artifacts for the Prefect UI."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_markdown_artifact(
        key="golden-refresh",
        markdown=summary_markdown(reports),
        description="Golden sets: counts, cleaning and diff per use case",
    )
    create_table_artifact(
        key="golden-counts", table=summary_rows(reports), description="Golden set counts per use case"
    )


@flow(name="golden-dataset-refresh", log_prints=True)
def golden_dataset_refresh(
    plan: str | dict | None = None, workspace: str | None = None, use_cases: list[str] | None = None
) -> list[dict]:
    """Refresh the golden sets of the plan's use cases (all, or those named)."""
    logger = get_run_logger()
    chosen_plan = plan_from(plan, Workspace.resolve(workspace).root)
    # The keys as written (declared defaults left out): golden settings keep their own defaults.
    every = specs_from_plan(chosen_plan.model_dump(exclude_unset=True), chosen_plan.folder)
    unknown = sorted(set(use_cases or ()) - {spec.use_case for spec, _, _ in every})
    if unknown:
        raise ConfigError(f"use case(s) {unknown} are not in the plan")
    chosen = [entry for entry in every if not use_cases or entry[0].use_case in use_cases]
    states = {
        spec.use_case: refresh_golden_set(workspace, spec, sources, options, return_state=True)
        for spec, sources, options in chosen
    }
    reports = [state.result() for state in states.values() if state.is_completed()]
    failed = {name: state for name, state in states.items() if not state.is_completed()}
    publish(reports)
    for report in reports:
        logger.info(
            "%s: v%s (%s), %s items, %s quarantined; dedup kept %s, removed %s exact, %s near, "
            "%s conflicting references resolved, %s kept for review",
            report.use_case,
            report.version,
            "new" if report.created else "unchanged",
            report.counts.get("items"),
            report.quarantined,
            report.dedup_kept,
            report.exact_duplicates,
            report.near_duplicates,
            report.conflicts_resolved,
            report.conflicts_kept,
        )
        for warning in report.warnings:
            logger.warning("%s: %s", report.use_case, warning)
    if failed:
        reasons = "; ".join(f"{name}: {state.message}" for name, state in failed.items())
        raise ContractError(f"golden sets not refreshed: {reasons}")
    return summary_rows(reports)
