"""`workhorse batch status|collect|cancel`: the provider batch jobs of the workspace's eval runs."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

batch_app = typer.Typer(
    help="Provider batch jobs of eval runs: status, collect (resume waiting runs), cancel.",
    no_args_is_help=True,
)
console = Console(width=None if sys.stdout.isatty() else 120)
WorkspaceOption = typer.Option(None, "--workspace", "-w", help="Workspace directory (default ./.workhorse).")
RunOption = typer.Option(None, "--run", help="Only this eval run's batches (default: every run).")


@batch_app.command("status")
def batch_status(run: Optional[str] = RunOption, workspace: Optional[Path] = WorkspaceOption) -> None:
    """Every batch job: provider id, status, lines, times, batch cost against the synchronous cost."""
    from rich.table import Table

    from workhorse.tasks.evaluate.batch import read_jobs, waiting_runs
    from workhorse.workspace import Workspace

    ws = Workspace.resolve(workspace)
    jobs = read_jobs(ws, run)
    table = Table(
        "job",
        "batch",
        "model",
        "status",
        "lines",
        "done",
        "failed",
        "submitted",
        "finished",
        "$ batch",
        "$ sync",
    )
    for job in jobs:
        table.add_row(
            job["job_key"],
            job["batch_id"] or "-",
            job["model"],
            job["status"] or job["stage"],
            str(job["lines"]),
            str(job["completed"]),
            str(job["failed"]),
            (job["submitted_at"] or "-")[:19],
            (job["finished_at"] or "-")[:19],
            _usd(job["cost_usd"]),
            _usd(job["sync_cost_usd"]),
        )
    console.print(table)
    waiting = [w for w in waiting_runs(ws) if run in (None, w["run_id"])]
    for record in waiting:
        since, jobs = record["since"][:19], ", ".join(record["jobs"])
        console.print(f"{record['run_id']}: waiting for batch since {since}, jobs {jobs}")
    console.print(f"{len(jobs)} batch job(s), {len(waiting)} run(s) waiting, in {ws.root}")


@batch_app.command("collect")
def batch_collect(workspace: Optional[Path] = WorkspaceOption) -> None:
    """Resume every run waiting for batch (what the scheduled batch-collector deployment does)."""
    from workhorse.flows.batch_collector import batch_collector
    from workhorse.workspace import Workspace

    ws = Workspace.resolve(workspace)
    resumed = asyncio.run(batch_collector(workspace=str(ws.root)))
    for run in resumed:
        console.print(f"{run['run_id']}: {run['status']}")
    console.print(f"{len(resumed)} waiting run(s) resumed; reports in {ws.root / 'runs'}")


@batch_app.command("cancel")
def batch_cancel(run: Optional[str] = RunOption, workspace: Optional[Path] = WorkspaceOption) -> None:
    """Cancel running batches; what they answered is collected by the next resume, the rest resubmitted."""
    from workhorse.tasks.evaluate.batch import cancel_jobs
    from workhorse.workspace import Workspace

    ws = Workspace.resolve(workspace)
    cancelled = asyncio.run(cancel_jobs(ws, run))
    for job in cancelled:
        console.print(f"{job['job']} ({job['batch_id']}): {job['status']}")
    console.print(f"{len(cancelled)} batch(es) cancelled in {ws.root}")


def _usd(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
