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

app = typer.Typer(help="Move routine LLM workloads from closed to open models, safely and measurably.",
                  no_args_is_help=True, add_completion=False)
# Logs and CI are not terminals: give tables room instead of 80 columns.
console = Console(width=None if sys.stdout.isatty() else 120)

@app.callback()
def main() -> None:
    """workhorse: audit, golden sets, evaluation, rollout and monitoring of model migrations."""


WorkspaceOption = typer.Option(None, "--workspace", "-w", help="Workspace directory (default ./.workhorse).")


@app.command()
def demo(workspace: Optional[Path] = WorkspaceOption,
         example: Path = typer.Option(Path("examples/acme"), help="The example workspace to run.")) -> None:
    """Run the playbook on the bundled Acme example with the embedded model."""
    from workhorse.demo import run_demo

    run_demo(example_dir=example, workspace=workspace, console=console)


# Commands of the playbook steps are added below, one function each.


@app.command()
def audit(logs: list[Path] = typer.Argument(..., help="Log files or folders (CSV, JSONL, Parquet)."),
          plan: Optional[Path] = typer.Option(None, help="The migration plan (default: the workspace's workhorse.yaml)."),
          log_format: Optional[str] = typer.Option(None, "--format", "-f",
                                                   help="canonical | litellm | openai | openai_batch (default: detected)."),
          max_bad_row_ratio: Optional[float] = typer.Option(None, help="Fail past this share of bad rows (default: the plan's)."),
          workspace: Optional[Path] = WorkspaceOption) -> None:
    """Step 1: monthly cost per use case and model, workhorse vs frontier, savings per candidate."""
    from rich.table import Table

    from workhorse.errors import WorkhorseError
    from workhorse.flows.audit import usage_audit

    try:
        summary = usage_audit(logs=[str(p) for p in logs], plan=str(plan) if plan else None,
                              workspace=str(workspace) if workspace else None, format=log_format,
                              max_bad_row_ratio=max_bad_row_ratio)
    except WorkhorseError as error:
        console.print(f"[red]audit failed:[/red] {error}")
        raise typer.Exit(1)
    table = Table("Use case", "Workload", "Now $/month", "Cheapest fitting option", "Projected $/month")
    for row in summary.use_cases:
        projected = row["projected_monthly_usd"]
        table.add_row(row["use_case"], row["workload"], f"{row['monthly_cost_usd']:,.2f}", row["best_option"] or "keep",
                      "—" if projected is None else f"{projected:,.2f}")
    console.print(table)
    console.print(f"read {summary.read:,} rows: {summary.accepted:,} accepted, {summary.quarantined:,} quarantined"
                  + (f" ({summary.quarantine})" if summary.quarantine else ""))
    console.print(f"${summary.monthly_cost_usd:,.2f}/month now, ${summary.projected_monthly_usd:,.2f} with the cheapest "
                  f"fitting options (saving ${summary.monthly_saving_usd:,.2f}). Report: {summary.report}")

golden_app = typer.Typer(help="Golden datasets (step 2): refresh from the plan, import a file, show a version.",
                         no_args_is_help=True)
app.add_typer(golden_app, name="golden")


@golden_app.command("refresh")
def golden_refresh(plan: Path = typer.Option(Path("workhorse.yaml"), help="The migration plan."),
                   use_case: Optional[list[str]] = typer.Option(None, "--use-case", "-u", help="Only these use cases."),
                   workspace: Optional[Path] = WorkspaceOption) -> None:
    """Refresh every use case's golden set from its sources (a new version only when content changed)."""
    from workhorse.flows.golden import golden_dataset_refresh

    rows = _golden(lambda: golden_dataset_refresh(plan=str(plan), workspace=str(workspace) if workspace else None,
                                                  use_cases=use_case or None))
    _print_golden_rows(rows, workspace)


@golden_app.command("import")
def golden_import(file: Path = typer.Argument(..., help="A label CSV/JSONL, OpenAI Evals JSONL or promptfoo CSV."),
                  use_case: str = typer.Option(..., "--use-case", "-u"),
                  task_type: str = typer.Option(..., "--task-type", "-t", help="classification|extraction|summarization|qa|generation"),
                  kind: str = typer.Option("labels", "--format", "-f", help="labels | openai_evals | promptfoo"),
                  input_column: str = typer.Option("input", "--input", help="labels: the input column / promptfoo: the input var"),
                  reference_column: str = typer.Option("reference", "--reference", help="labels: the reference column"),
                  labels: Optional[str] = typer.Option(None, help="classification: the allowed labels, comma-separated"),
                  schema: Optional[Path] = typer.Option(None, help="extraction: a JSON schema file"),
                  workspace: Optional[Path] = WorkspaceOption) -> None:
    """Import one file as a use case's golden set (scrubbed, deduplicated, contract-checked, versioned)."""
    import json

    from workhorse.tasks.golden import GoldenSpec, SourceSpec, refresh_golden, summary_rows

    spec = _golden(lambda: GoldenSpec(use_case, task_type, labels=labels.split(",") if labels else None,
                                      json_schema=json.loads(schema.read_text()) if schema else None))
    mapping = {"input": input_column, "reference": reference_column} if kind == "labels" else {}
    source = _golden(lambda: SourceSpec(kind, str(file), mapping=mapping,
                                        input_var=input_column if kind == "promptfoo" else None))
    rows = summary_rows([_golden(lambda: refresh_golden(workspace, spec, [source]))])
    _print_golden_rows(rows, workspace)


@golden_app.command("show")
def golden_show(use_case: str, version: Optional[int] = typer.Option(None, help="Default: the latest."),
                workspace: Optional[Path] = WorkspaceOption) -> None:
    """Show a golden set version's manifest: counts, hash, sources and the diff."""
    from workhorse.tasks.golden import read_manifest
    from workhorse.tasks.golden_versions import golden_dir

    manifest = _golden(lambda: read_manifest(workspace, use_case, version))
    counts, diff = manifest["counts"], manifest["diff"]
    console.print(f"[bold]{use_case}[/] v{manifest['version']} ({manifest['created_at']}) hash {manifest['content_hash'][:16]}")
    console.print(f"items {counts['items']}: {counts['by_split']}, origins {counts['by_origin']}, silver {counts['silver']}")
    console.print(f"diff vs v{diff['against']}: +{diff['added']} -{diff['removed']} ~{diff['relabelled']} relabelled")
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

    table = Table("use case", "version", "items", "dev/test", "silver", "PII", "dupes", "quarantined", "diff")
    for row in rows:
        table.add_row(row["use_case"], f"v{row['version']}" + (" (new)" if row["new_version"] else ""), str(row["items"]),
                      f"{row['dev']}/{row['test']}", str(row["silver"]), str(row["pii_scrubbed"]), str(row["duplicates"]),
                      str(row["quarantined"]), f"+{row['added']} -{row['removed']} ~{row['relabelled']}")
    console.print(table)
    console.print(f"Golden sets in {Workspace.resolve(workspace).root / 'golden'}")


if __name__ == "__main__":
    app()
