"""Flow: golden_dataset_refresh (playbook step 2) - one versioned golden set per use case.

Wiring only: the plan gives each use case's sources, one task per use case refreshes it
(a broken use case does not stop the others), the summary becomes Prefect artifacts, and the
flow fails at the end, naming the use cases whose contract failed.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

import workhorse  # noqa: F401  (offline defaults before anything imports LiteLLM)
from workhorse.errors import ContractError
from workhorse.tasks.golden import (refresh_golden_set, specs_from_plan, summary_markdown,
                                    summary_rows)


def read_plan(plan: str | dict | None) -> tuple[dict, Path | None]:
    """The plan as a dict and the folder its relative paths start from."""
    import yaml

    if isinstance(plan, dict):
        return plan, None
    path = Path(plan or "workhorse.yaml")
    return yaml.safe_load(path.read_text()) or {}, path.resolve().parent


def publish(reports) -> None:
    """Markdown (counts, cleaning, diff) and table artifacts for the Prefect UI."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_markdown_artifact(key="golden-refresh", markdown=summary_markdown(reports),
                             description="Golden sets: counts, cleaning and diff per use case")
    create_table_artifact(key="golden-counts", table=summary_rows(reports),
                          description="Golden set counts per use case")


@flow(name="golden-dataset-refresh", log_prints=True)
def golden_dataset_refresh(plan: str | dict | None = None, workspace: str | None = None,
                           use_cases: list[str] | None = None) -> list[dict]:
    """Refresh the golden sets of the plan's use cases (all, or those named)."""
    logger = get_run_logger()
    content, base_dir = read_plan(plan)
    chosen = [entry for entry in specs_from_plan(content, base_dir) if not use_cases or entry[0].use_case in use_cases]
    states = {spec.use_case: refresh_golden_set(workspace, spec, sources, options, return_state=True)
              for spec, sources, options in chosen}
    reports = [state.result() for state in states.values() if state.is_completed()]
    failed = {name: state for name, state in states.items() if not state.is_completed()}
    publish(reports)
    for report in reports:
        logger.info("%s: v%s (%s), %s items, %s quarantined", report.use_case, report.version,
                    "new" if report.created else "unchanged", report.counts.get("items"), report.quarantined)
    if failed:
        reasons = "; ".join(f"{name}: {state.message}" for name, state in failed.items())
        raise ContractError(f"golden sets not refreshed: {reasons}")
    return summary_rows(reports)
