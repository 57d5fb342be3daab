"""The `workhorse` command line: a thin layer over the flows.

Every command ends with a short summary and the path of what it wrote.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

import workhorse  # noqa: F401  (sets offline defaults before anything imports LiteLLM)
from workhorse.cli_batch import batch_app


class _Cli(typer.Typer):
    """Every command's WorkhorseError (a plan with a typo, a missing golden set, a refused
    transition) ends as one red line and exit status 1, not a traceback; other errors are bugs
    and keep theirs."""

    def __call__(self, *args, **kwargs):
        from workhorse.children import tie_prefect_server
        from workhorse.errors import WorkhorseError

        tie_prefect_server()  # a temporary Prefect server dies with this command, even on kill -9
        try:
            return super().__call__(*args, **kwargs)
        except WorkhorseError as error:
            Console(stderr=True).print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
            sys.exit(1)


app = _Cli(
    help="Move routine LLM workloads from closed to open models, safely and measurably.",
    no_args_is_help=True,
    add_completion=False,
)
# Logs and CI are not terminals: give tables room instead of 80 columns.
console = Console(width=None if sys.stdout.isatty() else 120)


@app.callback()
def main() -> None:
    """workhorse: audit, golden sets, evaluation, rollout and monitoring of model migrations."""


WorkspaceOption = typer.Option(None, "--workspace", "-w", help="Workspace directory (default ./.workhorse).")
app.add_typer(batch_app, name="batch")


# Commands of the playbook steps are added below, one function each.


@app.command("eval")
def evaluate(
    use_case: str = typer.Argument(..., help="The use case to evaluate (its golden set must exist)."),
    plan: Optional[Path] = typer.Option(None, help="The migration plan (default: the workspace's)."),
    model: list[str] = typer.Option([], help="Only these candidate models (repeatable)."),
    hosting: list[str] = typer.Option([], help="Only these hostings: api, batch, self_hosted."),
    variant: list[str] = typer.Option([], help="Only these prompt variants."),
    no_replay: bool = typer.Option(False, "--no-replay", help="Call the incumbent even where logged."),
    task_runner: Optional[str] = typer.Option(
        None, help="threads (default) or dask: shards on a Dask cluster (default: the plan's eval section)."
    ),
    dask_address: Optional[str] = typer.Option(
        None, help="Scheduler of a running Dask cluster; else a LocalCluster is started."
    ),
    dask_workers: Optional[int] = typer.Option(
        None,
        min=1,
        help="Worker processes of that LocalCluster (default 2). Endpoint limits are split among them.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display (none off a terminal)."),
    workspace: Optional[Path] = WorkspaceOption,
) -> None:
    """Evaluate incumbent and candidates on a golden set: leaderboard, verdict, HTML report."""
    import asyncio

    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from workhorse.flows.evaluate import parallel_eval
    from workhorse.tables import candidate_verdicts_table, verdict_table
    from workhorse.tasks.common.throughput import metering
    from workhorse.tasks.evaluate.progress import console_display

    if task_runner not in (None, "threads", "dask"):  # before Prefect's own check, which prints a traceback
        raise typer.BadParameter(f"{task_runner!r} is not one of: threads, dask", param_hint="--task-runner")
    with (
        temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
        console_display(not quiet),
        metering() as meter,
    ):
        summary = asyncio.run(
            parallel_eval(
                use_case=use_case,
                workspace=str(workspace) if workspace else None,
                plan=str(plan) if plan else None,
                models=model or None,
                hostings=hosting or None,
                variants=variant or None,
                replay=not no_replay,
                task_runner=task_runner,
                dask_address=dask_address,
                dask_workers=dask_workers,
            )
        )
    console.print(verdict_table({use_case: summary}))
    console.print(candidate_verdicts_table({use_case: summary}))
    console.print(f"verdict [bold]{summary['verdict']['decision']}[/] — {summary['verdict']['reason']}")
    if len(summary["verdict"]["candidates"]) > 1:
        console.print(summary["verdict"]["summary"])
    if summary.get("judge"):
        from workhorse.tasks.evaluate.judge import judge_line

        console.print(judge_line(summary["judge"]), markup=False)
    for reason in summary["skipped"]:
        console.print(f"skipped: {reason}")
    console.print(meter.line(), soft_wrap=True)
    console.print(f"report: {summary['report']}")
    if (viewer := Path(summary["report"]).parent / "items.html").exists():
        console.print(f"every test item, answer by answer: {viewer}")


@app.command()
def monitor(
    plan: Optional[Path] = typer.Option(
        None, help="The migration plan (default: the workspace's workhorse.yaml)."
    ),
    window_minutes: Optional[int] = typer.Option(
        None, "--window", help="Window length (default: the plan's)."
    ),
    use_case: Optional[list[str]] = typer.Option(None, "--use-case", "-u", help="Only these use cases."),
    traffic: Optional[Path] = typer.Option(
        None, help="A traffic/usage Parquet file (default: the workspace's logs)."
    ),
    workspace: Optional[Path] = WorkspaceOption,
) -> None:
    """Step 5: one monitoring window: metrics, guardrails, incidents, Slack, revert of a breaching rollout."""
    from workhorse.errors import WorkhorseError
    from workhorse.flows.monitor import monitoring

    try:
        result = monitoring(
            workspace=str(workspace) if workspace else None,
            plan=str(plan) if plan else None,
            window_minutes=window_minutes,
            use_cases=use_case or None,
            traffic_path=str(traffic) if traffic else None,
        )
    except WorkhorseError as error:
        console.print(f"[red]monitoring failed:[/red] {error}")
        raise typer.Exit(1)
    console.print(
        f"window {result['window_start']} – {result['window_end']}: {len(result['breaches'])} breach(es), "
        f"opened {result['opened'] or 'none'}, resolved {result['resolved'] or 'none'}, "
        f"reverted {result['reverts'] or 'none'}"
    )
    console.print(
        f"Slack: {result['sent']} sent, {result['pending']} pending (retried next run); "
        f"no traffic: {', '.join(result['no_traffic']) or '—'}. Incidents in the workspace's state.db."
    )


@app.command()
def serve(
    project: Optional[Path] = typer.Option(None, help="The prefect.yaml (default: ./prefect.yaml)."),
    deployment: Optional[list[str]] = typer.Option(
        None, "--deployment", "-d", help="Only these deployments."
    ),
    limit: Optional[int] = typer.Option(None, help="Flow runs at once (default: no limit)."),
) -> None:
    """Serve every deployment of prefect.yaml with its schedule from this process (no worker needed)."""
    from workhorse.errors import WorkhorseError
    from workhorse.serve import default_project, load_specs, serve_project

    try:
        path = project or default_project()
        specs = load_specs(path, deployment)
    except (OSError, ValueError, WorkhorseError) as error:
        console.print(f"[red]cannot serve:[/red] {error}")
        raise typer.Exit(1)
    for spec in specs:
        when = (
            ", ".join(s.get("cron") or f"every {s.get('interval')} s" for s in spec.schedules) or "on demand"
        )
        console.print(f"  {spec.name:<32} {spec.entrypoint.rsplit(':', 1)[1]:<24} {when}")
    console.print(f"serving {len(specs)} deployments from {path}; Ctrl-C stops (and pauses their schedules)")
    serve_project(path, deployment, limit)


@app.command()
def ui(
    port: Optional[int] = typer.Option(None, help="Port on 127.0.0.1 (default: a free one)."),
    home: Optional[Path] = typer.Option(None, help="PREFECT_HOME of the server (its SQLite database)."),
) -> None:
    """Start a local Prefect server and UI on 127.0.0.1; runs until Ctrl-C."""
    from workhorse.ui import ServerStartError, local_prefect_server

    try:
        with local_prefect_server(port=port, home=home) as server:
            console.print(f"Prefect UI: {server.ui_url}  (server log: {server.log})")
            console.print("Point flows and the CLI at it in another shell:")
            console.print(f"export PREFECT_API_URL={server.api_url}", soft_wrap=True, highlight=False)
            _wait_for_interrupt(server.process)
    except ServerStartError as error:
        console.print(f"[red]Prefect server not started:[/red] {error}")
        raise typer.Exit(1)
    console.print("Prefect server stopped.")


def _wait_for_interrupt(process) -> None:
    """Block until Ctrl-C or SIGTERM (the normal ways out) or until the server dies on its own."""
    import signal
    import time

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    # A shell's `cmd &` starts us with SIGINT ignored; a supervisor stops us with SIGTERM.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        while process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        return
    console.print(f"[red]the Prefect server exited with {process.returncode}[/red]")


blocks_app = typer.Typer(
    help="Prefect Blocks: endpoints and Slack, configured once, read by every run.", no_args_is_help=True
)
app.add_typer(blocks_app, name="blocks")


@blocks_app.command("register")
def blocks_register() -> None:
    """Register workhorse's Block types with Prefect (like `prefect block register -m workhorse.blocks`)."""
    from workhorse.block_setup import register_blocks

    for slug in register_blocks():
        console.print(f"registered block type {slug}")


@blocks_app.command("init")
def blocks_init(
    keep: bool = typer.Option(False, "--keep", help="Keep existing blocks instead of overwriting them."),
) -> None:
    """Save blocks from the environment: WORKHORSE_SLACK_WEBHOOK_URL, OPENAI_API_KEY, HOSTED_VLLM_API_BASE, ….

    Secrets are stored in the blocks and never printed: only names and masked values."""
    from workhorse.block_setup import ENDPOINTS, init_blocks

    try:
        saved = init_blocks(overwrite=not keep)
    except ValueError as error:  # Prefect refuses to overwrite an existing block without --overwrite
        console.print(f"[red]blocks not saved:[/red] {error}")
        raise typer.Exit(1)
    for block in saved:
        console.print(f"saved {block.slug}/{block.name}: {block.shown}", highlight=False)
    if not saved:
        names = ["WORKHORSE_SLACK_WEBHOOK_URL"] + [e.key_env or e.base_env for e in ENDPOINTS]
        console.print(f"no block saved: none of {', '.join(names)} is set")


rollout_app = typer.Typer(
    help="Staged rollout (step 4): status, start, advance, promote, pause, abort.", no_args_is_help=True
)
app.add_typer(rollout_app, name="rollout")


@rollout_app.command("status")
def rollout_status(use_case: str, workspace: Optional[Path] = WorkspaceOption) -> None:
    """Stage, weights, counters and the last reason of a use case's rollout, with its history."""
    from workhorse.tasks.rollout.state import current_state, history

    state = current_state(workspace, use_case)
    _print_rollout(state, workspace)
    for step in history(workspace, use_case)[-10:]:
        console.print(
            f"  v{step['version']} {step['action']}: {step['from_stage']} → {step['to_stage']} "
            f"({step['reason'] or ''})"
        )
    _print_replicas(use_case, workspace)


def _print_replicas(use_case: str, workspace: Optional[Path]) -> None:
    """The LiteLLM proxies that read this use case's weights in the last minute (gateway plugin)."""
    import time

    from workhorse.tasks.rollout.replicas import replicas

    for replica in replicas(workspace, use_case):
        age = time.time() - replica["seen_at"] / 1e6
        console.print(
            f"  proxy {replica['replica_id']}: serves v{replica['version']} ({replica['stage']}), "
            f"read {age:.0f} s ago"
        )


gateway_app = typer.Typer(help="Rollouts inside a LiteLLM proxy (the gateway plugin).", no_args_is_help=True)
app.add_typer(gateway_app, name="gateway")


@gateway_app.command("litellm-config")
def gateway_litellm_config(
    plan: Optional[Path] = typer.Option(None, help="The migration plan (workhorse.yaml or its folder)."),
    candidate: list[str] = typer.Option(
        [], help="USE_CASE=MODEL; default: the rollout's, else the only one."
    ),
    refresh_s: float = typer.Option(5.0, help="Seconds between two reads of the weights by each proxy."),
    key: str = typer.Option("user", help="The sticky key: user, header:<name> or metadata:<name>."),
    workspace: Optional[Path] = WorkspaceOption,
) -> None:
    """Print the LiteLLM proxy config (deployments, aliases, fallbacks, the callback) and write the
    plugin's settings to <workspace>/routing/gateway.yaml."""
    from workhorse.config import plan_workspace
    from workhorse.tasks.rollout.gateway import candidate_choices, write_gateway_config

    ws, chosen = plan_workspace(workspace, plan)
    _, text = write_gateway_config(chosen, ws, candidate_choices(candidate), refresh_s, key)
    sys.stdout.write(text)


@rollout_app.command("start")
def rollout_start(
    use_case: str,
    candidate: Optional[str] = typer.Option(None, help="Default: the plan's first."),
    incumbent: Optional[str] = typer.Option(None, help="Default: the plan's incumbent."),
    plan: Optional[Path] = typer.Option(None, help="The migration plan (its rollout policy)."),
    workspace: Optional[Path] = WorkspaceOption,
) -> None:
    """Start a rollout at the policy's first step (shadow by default)."""
    from workhorse.config import plan_workspace
    from workhorse.tasks.rollout.state import current_state, start_rollout

    _, chosen = plan_workspace(workspace, plan)  # binds the workspace to the plan's state store
    case = chosen.use_cases.get(use_case)
    incumbent = incumbent or (case.incumbent if case and case.incumbent else chosen.incumbent)
    candidates = chosen.candidates_for(use_case)
    candidate = candidate or (candidates[0].model if candidates else None)
    if not candidate:
        console.print(f"[red]no candidate for {use_case}:[/red] pass --candidate or name one in the plan")
        raise typer.Exit(1)
    _rollout(lambda: start_rollout(workspace, use_case, incumbent, candidate, chosen.rollout))
    _print_rollout(current_state(workspace, use_case), workspace)


@rollout_app.command("advance")
def rollout_advance(
    use_case: str,
    force: bool = typer.Option(False, help="Move one step on without analysis."),
    plan: Optional[Path] = typer.Option(None, help="The migration plan (labels, schema)."),
    workspace: Optional[Path] = WorkspaceOption,
) -> None:
    """Run the control loop once (judge the step, advance at most one), or --force one step."""
    from workhorse.tasks.rollout.state import advance, current_state

    if force:
        _rollout(lambda: advance(workspace, use_case, manual=True))
    else:
        from workhorse.flows.rollout import staged_rollout

        result = staged_rollout(
            use_case, workspace=str(workspace) if workspace else None, plan=str(plan) if plan else None
        )
        console.print(f"analysis: {result['outcome']}")
    _print_rollout(current_state(workspace, use_case), workspace)


@rollout_app.command("promote")
def rollout_promote(use_case: str, workspace: Optional[Path] = WorkspaceOption) -> None:
    """Give the candidate 100 % now, skipping the remaining steps."""
    from workhorse.tasks.rollout.state import current_state, promote

    _rollout(lambda: promote(workspace, use_case))
    _print_rollout(current_state(workspace, use_case), workspace)


@rollout_app.command("pause")
def rollout_pause(
    use_case: str,
    reason: str = typer.Option("paused by operator"),
    workspace: Optional[Path] = WorkspaceOption,
) -> None:
    """Hold the current weights; the control loop leaves the rollout alone."""
    from workhorse.tasks.rollout.state import current_state, pause

    _rollout(lambda: pause(workspace, use_case, reason))
    _print_rollout(current_state(workspace, use_case), workspace)


@rollout_app.command("abort")
def rollout_abort(
    use_case: str,
    reason: str = typer.Option("aborted by operator"),
    workspace: Optional[Path] = WorkspaceOption,
) -> None:
    """Revert: the incumbent gets 100 % again (alert and event as for an automatic revert)."""
    from workhorse.tasks.rollout.state import abort, current_state

    _rollout(lambda: abort(workspace, use_case, reason))
    _print_rollout(current_state(workspace, use_case), workspace)


def _rollout(call):
    """Apply a transition; a refused one is an answer (exit 1 with why), and a no-op says so."""
    from workhorse.errors import WorkhorseError

    try:
        transition = call()
    except WorkhorseError as error:
        console.print(f"[red]rollout unchanged:[/red] {error}")
        raise typer.Exit(1)
    if not transition.changed:
        console.print(f"no change: {transition.use_case} is {transition.to_stage}")
    return transition


def _print_rollout(state, workspace: Optional[Path]) -> None:
    from workhorse.store import describe
    from workhorse.workspace import Workspace

    weights = state.weights
    console.print(
        f"[bold]{state.use_case}[/]: {state.stage} — incumbent {state.incumbent or '—'} "
        f"{weights['incumbent']} %, candidate {state.candidate or '—'} {weights['candidate']} %"
        + (" + shadow" if state.shadow else "")
        + f"; failures {state.failures}, in a row {state.consecutive_errors}, "
        f"inconclusive {state.inconclusive}; state v{state.version} "
        f"in {describe(Workspace.resolve(workspace).state_url)}"
    )
    if state.reason:
        console.print(f"why: {state.reason}")


@app.command()
def audit(
    logs: Optional[list[Path]] = typer.Argument(None, help="Log files or folders (CSV, JSONL, Parquet)."),
    plan: Optional[Path] = typer.Option(
        None, help="The migration plan (default: the workspace's workhorse.yaml)."
    ),
    log_format: Optional[str] = typer.Option(
        None, "--format", "-f", help="canonical | litellm | openai | openai_batch (default: detected)."
    ),
    max_bad_row_ratio: Optional[float] = typer.Option(
        None, help="Fail past this share of bad rows (default: the plan's)."
    ),
    from_db: Optional[str] = typer.Option(
        None,
        "--from-db",
        help="Read LiteLLM_SpendLogs from the proxy's PostgreSQL "
        "database: postgresql://user@host/db ('${VAR}' for the password, or PGPASSWORD).",
    ),
    since: Optional[str] = typer.Option(
        None, help="--from-db: rows with startTime >= this (ISO date/time, UTC)."
    ),
    until: Optional[str] = typer.Option(
        None, help="--from-db: rows with startTime < this (ISO date/time, UTC)."
    ),
    workspace: Optional[Path] = WorkspaceOption,
) -> None:
    """Step 1: billed spend per calendar month, use case and model; workhorse vs frontier; the
    run-rate over the log window and savings per candidate per run-rate month."""
    from pydantic import ValidationError
    from rich.table import Table

    from workhorse.config import SpendLogsDb
    from workhorse.errors import WorkhorseError
    from workhorse.flows.audit import usage_audit

    try:
        # A SpendLogsDb (SecretStr url), not a dict: Prefect then stores the parameter masked.
        source = SpendLogsDb(url=from_db, since=since, until=until) if from_db else None
        summary = usage_audit(
            logs=[str(p) for p in logs or []],
            plan=str(plan) if plan else None,
            workspace=str(workspace) if workspace else None,
            format=log_format,
            max_bad_row_ratio=max_bad_row_ratio,
            spend_logs_db=source,
        )
    except ValidationError as error:
        problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in error.errors())
        console.print(f"[red]audit failed:[/red] {problems}")
        raise typer.Exit(1)
    except WorkhorseError as error:
        console.print(f"[red]audit failed:[/red] {error}")
        raise typer.Exit(1)
    console.print(_billed_table(summary))
    window = summary.run_rate
    label = window["label"] if window else "no run-rate: no accepted rows"
    table = Table(
        "Use case",
        "Workload",
        "Run-rate $/month",
        "Cheapest fitting option",
        "Projected $/run-rate month",
        title=label[0].upper() + label[1:],
    )
    for row in summary.use_cases:
        projected = row["run_rate_projected_usd"]
        table.add_row(
            row["use_case"],
            row["workload"],
            f"{row['run_rate_monthly_usd']:,.2f}",
            row["best_option"] or "keep",
            "—" if projected is None else f"{projected:,.2f}",
        )
    console.print(table)
    if window and window["warning"]:
        console.print(f"[yellow]{window['warning']}[/yellow]")
    console.print(
        f"read {summary.read:,} rows: {summary.accepted:,} accepted, {summary.quarantined:,} quarantined"
        + (f" ({summary.quarantine})" if summary.quarantine else "")
    )
    console.print(f"{summary.billed_text()}; {summary.run_rate_text()}. Report: {summary.report}")


def _billed_table(summary):
    """Billed spend per calendar month × use case × model, with a total per month of several rows."""
    from rich.table import Table

    table = Table(
        "Month (UTC)", "Use case", "Model", "Requests", "Billed $", title="Billed spend per calendar month"
    )
    for month in summary.billed_months:
        rows = [r for r in summary.billed if r["month"] == month["month"]]
        for row in rows:
            table.add_row(
                month["coverage"],
                row["use_case"],
                row["model"],
                f"{row['requests']:,}",
                f"{row['spend_usd']:,.2f}" + ("" if row["fully_priced"] else " + unpriced"),
            )
        if len(rows) > 1:
            table.add_row(month["coverage"], "[bold]total[/]", "", "", f"[bold]{month['spend_usd']:,.2f}[/]")
        table.add_section()
    return table


plan_app = typer.Typer(help="The migration plan: check it before anything runs.", no_args_is_help=True)
app.add_typer(plan_app, name="plan")


@plan_app.command("check")
def plan_check(
    plan: Optional[Path] = typer.Option(
        None, help="The plan (default: the workspace's, else ./workhorse.yaml)."
    ),
    workspace: Optional[Path] = WorkspaceOption,
) -> None:
    """Validate the plan; say what each use case will do: golden set, contenders, metric, who is skipped."""
    from workhorse.config import load_plan
    from workhorse.plan_check import OUTPUTS, check_plan
    from workhorse.workspace import Workspace

    root = Workspace.resolve(workspace).root
    checked = load_plan(plan, root)
    for case in check_plan(checked, root):
        console.print(f"[bold]{case.name}[/]")
        for line in case.lines:
            console.print(f"  {line}", highlight=False, soft_wrap=True)
        for warning in case.warnings:
            console.print(f"  [yellow]{warning}[/]", highlight=False, soft_wrap=True)
    console.print(f"plan OK: {len(checked.use_cases)} use case(s). Runs write under {root}:")
    for output in OUTPUTS:
        console.print(f"  {output}", highlight=False)


golden_app = typer.Typer(
    help="Golden datasets (step 2): refresh from the plan, import a file, show a version.",
    no_args_is_help=True,
)
app.add_typer(golden_app, name="golden")


@golden_app.command("refresh")
def golden_refresh(
    plan: Path = typer.Option(Path("workhorse.yaml"), help="The migration plan."),
    use_case: Optional[list[str]] = typer.Option(None, "--use-case", "-u", help="Only these use cases."),
    workspace: Optional[Path] = WorkspaceOption,
) -> None:
    """Refresh every use case's golden set from its sources (a new version only when content changed)."""
    from workhorse.flows.golden import golden_dataset_refresh

    rows = _golden(
        lambda: golden_dataset_refresh(
            plan=str(plan), workspace=str(workspace) if workspace else None, use_cases=use_case or None
        )
    )
    _print_golden_rows(rows, workspace)


@golden_app.command("import")
def golden_import(
    file: Path = typer.Argument(..., help="A label CSV/JSONL, OpenAI Evals JSONL or promptfoo CSV."),
    use_case: str = typer.Option(..., "--use-case", "-u"),
    task_type: str = typer.Option(
        ..., "--task-type", "-t", help="classification|extraction|summarization|qa|generation"
    ),
    kind: str = typer.Option("labels", "--format", "-f", help="labels | openai_evals | promptfoo"),
    input_column: str = typer.Option(
        "input", "--input", help="labels: the input column / promptfoo: the input var"
    ),
    reference_column: str = typer.Option("reference", "--reference", help="labels: the reference column"),
    labels: Optional[str] = typer.Option(None, help="classification: the allowed labels, comma-separated"),
    schema: Optional[Path] = typer.Option(None, help="extraction: a JSON schema file"),
    workspace: Optional[Path] = WorkspaceOption,
) -> None:
    """Import one file as a use case's golden set (scrubbed, deduplicated, contract-checked, versioned)."""
    import json

    from workhorse.tasks.golden.refresh import GoldenSpec, SourceSpec, refresh_golden, summary_rows

    spec = _golden(
        lambda: GoldenSpec(
            use_case,
            task_type,
            labels=labels.split(",") if labels else None,
            json_schema=json.loads(schema.read_text()) if schema else None,
        )
    )
    mapping = {"input": input_column, "reference": reference_column} if kind == "labels" else {}
    source = _golden(
        lambda: SourceSpec(
            kind, str(file), mapping=mapping, input_var=input_column if kind == "promptfoo" else None
        )
    )
    rows = summary_rows([_golden(lambda: refresh_golden(workspace, spec, [source]))])
    _print_golden_rows(rows, workspace)


@golden_app.command("show")
def golden_show(
    use_case: str,
    version: Optional[int] = typer.Option(None, help="Default: the latest."),
    workspace: Optional[Path] = WorkspaceOption,
) -> None:
    """Show a golden set version's manifest: counts, hash, sources and the diff."""
    from workhorse.tasks.golden.refresh import read_manifest
    from workhorse.tasks.golden.versions import golden_dir

    manifest = _golden(lambda: read_manifest(workspace, use_case, version))
    counts, diff = manifest["counts"], manifest["diff"]
    console.print(
        f"[bold]{use_case}[/] v{manifest['version']} ({manifest['created_at']}) "
        f"hash {manifest['content_hash'][:16]}"
    )
    console.print(
        f"items {counts['items']}: {counts['by_split']}, "
        f"origins {counts['by_origin']}, silver {counts['silver']}"
    )
    console.print(
        f"diff vs v{diff['against']}: +{diff['added']} -{diff['removed']} ~{diff['relabelled']} relabelled"
    )
    dedup = manifest.get("refresh", {})
    if "dedup_kept" in dedup:
        console.print(
            f"dedup: kept {dedup['dedup_kept']}, exact {dedup['exact_duplicates']}, near "
            f"{dedup['near_duplicates']}, conflicting {dedup['conflicting_references']} "
            f"({dedup['conflicts_resolved']} resolved by label origin, "
            f"{dedup['conflicts_kept']} kept for review)",
            highlight=False,
            soft_wrap=True,
        )
    for warning in manifest.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)
    path = golden_dir(workspace, use_case) / f"v{manifest['version']}.manifest.json"
    console.print(f"manifest: {path}")


def _golden(call):
    """Run a golden step; a refused set is an answer, not a crash: say why (with the quarantine path)."""
    from workhorse.errors import WorkhorseError

    try:
        return call()
    except WorkhorseError as error:
        console.print(f"[red]golden set not refreshed:[/red] {error}")
        raise typer.Exit(1)


def _print_golden_rows(rows: list[dict], workspace: Optional[Path]) -> None:
    from rich.table import Table

    from workhorse.workspace import Workspace

    table = Table(
        "use case",
        "version",
        "items",
        "dev/test",
        "silver",
        "PII",
        "kept",
        "exact",
        "near",
        "conflicts",
        "quarantined",
        "diff",
    )
    for row in rows:
        table.add_row(
            row["use_case"],
            f"v{row['version']}" + (" (new)" if row["new_version"] else ""),
            str(row["items"]),
            f"{row['dev']}/{row['test']}",
            str(row["silver"]),
            str(row["pii_scrubbed"]),
            str(row["dedup_kept"]),
            str(row["exact"]),
            str(row["near"]),
            str(row["conflicts_resolved"] + row["conflicts_kept"]),
            str(row["quarantined"]),
            f"+{row['added']} -{row['removed']} ~{row['relabelled']}",
        )
    console.print(table)
    for row in rows:
        console.print(
            f"{row['use_case']} dedup: kept {row['dedup_kept']}, exact {row['exact']}, near {row['near']}, "
            f"conflicting {row['conflicts_resolved'] + row['conflicts_kept']} ({row['conflicts_resolved']} "
            f"resolved by label origin, {row['conflicts_kept']} kept for review)",
            highlight=False,
            soft_wrap=True,
        )
        for warning in row["warnings"]:
            console.print(
                f"[yellow]warning:[/yellow] {row['use_case']}: {warning}", highlight=False, soft_wrap=True
            )
    console.print(f"Golden sets in {Workspace.resolve(workspace).root / 'golden'}")


if __name__ == "__main__":
    app()
