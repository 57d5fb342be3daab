"""The `workhorse` command line: a thin layer over the flows.

Every command ends with a short summary and the path of what it wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

import workhorse  # noqa: F401  (sets offline defaults before anything imports LiteLLM)

app = typer.Typer(help="Move routine LLM workloads from closed to open models, safely and measurably.",
                  no_args_is_help=True, add_completion=False)
console = Console()

WorkspaceOption = typer.Option(None, "--workspace", "-w", help="Workspace directory (default ./.workhorse).")


@app.command()
def demo(workspace: Optional[Path] = WorkspaceOption,
         example: Path = typer.Option(Path("examples/acme"), help="The example workspace to run.")) -> None:
    """Run the playbook on the bundled Acme example with the embedded model."""
    from workhorse.demo import run_demo

    run_demo(example_dir=example, workspace=workspace, console=console)


# Commands of the playbook steps are added below, one function each.


if __name__ == "__main__":
    app()
