"""Batch collector: resumes the evaluations that ended "waiting for batch".

Scheduled every few minutes (prefect.yaml): each waiting run is evaluated again with its own
parameters and run id, so its batches are polled once and, when they are done, collected and
taken to the verdict; answers already paid come from the store, nothing is submitted twice.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from workhorse.flows.evaluate import parallel_eval
from workhorse.tasks.evaluate.batch import waiting_runs
from workhorse.workspace import Workspace


@flow(name="batch-collector", log_prints=True)
async def batch_collector(workspace: str | None = None) -> list[dict]:
    """Resume every run waiting for batch in the workspace; each is returned with its new status
    (still waiting, or its verdict's decision). Each polls within its own plan's ``eval.batch.wait_s``."""
    logger = get_run_logger()
    ws = Workspace.resolve(workspace)
    resumed = []
    for waiting in waiting_runs(ws):
        summary = await parallel_eval(**waiting["parameters"])
        status = summary.get("status") or (summary.get("verdict") or {}).get("decision")
        logger.info(f"{waiting['run_id']}: {status}")
        resumed.append({"run_id": waiting["run_id"], "status": status})
    return resumed
