"""`make demo`: the whole playbook on the bundled Acme example, with the embedded model.

    python -m examples.acme.demo [--workspace DIR]     (from the repository root)

Runs the ``acme_demo`` flow (Acme's logs → the product's migration playbook: audit, golden sets,
evaluation with SmolLM2 served by vLLM → rollouts on replayed traffic → monitoring) and prints a
one-screen summary with the path of each report. The demo imports the product, never the reverse.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from rich.console import Console

from workhorse.tables import candidate_verdicts_table, variant_table, verdict_table
from workhorse.tasks.common.engines import cpu_flags, engine_dtype
from workhorse.tasks.evaluate.judge import judge_line
from workhorse.workspace import Workspace

# Minutes `make demo` takes after set-up from a fresh clone on 2 cores, per CPU class (README, "What
# `make demo` does"); which runs the figures come from: benchmarks/NOTES.md.
EXPECTED_MINUTES = {"avx512": 9, "avx2": 7, "neither": 40}


def cpu_vector_extensions(cpuinfo: str | None = None) -> tuple[str, list[str]]:
    """The CPU's vLLM class (``avx512`` | ``avx2`` | ``neither``) and its AVX flags, from /proc/cpuinfo."""
    avx = sorted(flag for flag in cpu_flags(cpuinfo) if flag.startswith("avx"))
    kind = "avx512" if "avx512f" in avx else "avx2" if "avx2" in avx else "neither"
    return kind, avx


def print_machine(console: Console) -> None:
    kind, flags = cpu_vector_extensions()
    import os

    note = {"avx512": "AVX-512", "avx2": "AVX2 only, no AVX-512", "neither": "no AVX2: vLLM will be slow"}[
        kind
    ]
    console.print(
        f"CPU: {note} ({' '.join(flags) or 'no AVX flags'}), {os.cpu_count()} cores; expect about "
        f"{EXPECTED_MINUTES[kind]} min after set-up (on 2 cores; see the README's table per CPU class); "
        f"the engine runs in {engine_dtype()}"
    )


def run_demo(example_dir: Path, workspace: Path | None, console: Console) -> dict:
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from examples.acme.playbook import acme_demo

    ws = Workspace.resolve(workspace)
    print_machine(console)
    started = time.monotonic()
    # The heartbeat thread makes every synchronous flow call wait about a second at its end.
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        summary = asyncio.run(acme_demo(example_dir=str(example_dir), workspace=str(ws.root)))
    print_summary(console, summary, time.monotonic() - started)
    return summary


def print_summary(console: Console, summary: dict, wall_s: float) -> None:
    audit = summary["audit"]
    console.rule("workhorse demo: Acme's migration playbook")
    console.print(
        f"[bold]1 · audit[/]  {audit.read} log rows read = {audit.accepted} accepted + "
        f"{audit.quarantined} quarantined; {audit.billed_text()}; {audit.run_rate_text()}"
    )
    console.print(
        "[bold]2 · golden sets[/]  "
        + ", ".join(
            f"{row['use_case']} v{row['version']} ({row['items']} items, {row['pii_scrubbed']} PII scrubbed)"
            for row in summary["golden"]
        )
    )
    console.print(variant_table(summary["evaluations"]))
    console.print(verdict_table(summary["evaluations"]))
    print_verdicts(console, summary["evaluations"])
    print_rollouts(console, summary.get("rollouts", []))
    print_monitoring(console, summary.get("monitoring"))
    console.print(f"reports: audit {audit.report}")
    for use_case, evaluation in summary["evaluations"].items():
        console.print(f"         eval  {use_case}: {evaluation['report']}")
    console.print(f"demo finished in {wall_s / 60:.1f} min; workspace {summary['workspace']}")


def print_verdicts(console: Console, evaluations: dict) -> None:
    if any(len(e["verdict"].get("candidates") or []) > 1 for e in evaluations.values()):
        console.print(candidate_verdicts_table(evaluations))
    for use_case, evaluation in evaluations.items():
        verdict = evaluation["verdict"]
        console.print(f"  verdict [bold]{verdict['decision']}[/] — {verdict['reason']}")
        if evaluation.get("judge"):
            console.print(f"    {judge_line(evaluation['judge'])}", markup=False)
        if len(verdict.get("candidates") or []) > 1:
            console.print(f"    {verdict['summary']}")


def print_rollouts(console: Console, rollouts: list[dict]) -> None:
    """Each rollout's path through the steps, in control-loop runs and requests, and the latency
    guardrail it was held to; where it did not go as intended (promoted, or reverted after its
    fault), what happened and why, from the last control-loop run."""
    from rich.markup import escape

    for rollout in rollouts:
        steps = " → ".join(f"{stage} ({calls} req)" for stage, calls in rollout["requests_per_step"].items())
        line = (
            f"[bold]4 · rollout[/]  {rollout['use_case']}: {steps} ⇒ [bold]{rollout['final_stage']}[/] "
            f"after {rollout['control_runs']} control-loop runs"
        )
        after = rollout.get("runs_from_fault_to_revert")
        if rollout.get("fault"):
            line += f"; fault: {rollout['fault']}"
            line += f", reverted {after} control-loop run(s) after it" if after is not None else ""
        if after is None and (rollout.get("fault") or rollout["final_stage"] != "promoted"):
            last = (rollout.get("steps") or [None])[-1]
            why = (
                f"the last control-loop run, at {last['stage']}, was {last['outcome']} ⇒ {last['to_stage']}: "
                f"{escape(last.get('reason') or 'no reason given')}"
                if last
                else "no control-loop run took place"
            )
            line += f"; [yellow]not the intended story[/]: {why}"
        console.print(line)
        if rollout.get("latency_guardrail"):
            probe = (rollout.get("probe") or {}).get("engine")
            console.print(
                "   " + escape(rollout["latency_guardrail"] + (f"; engine probe: {probe}" if probe else ""))
            )


def print_monitoring(console: Console, monitoring: dict | None) -> None:
    from workhorse.tasks.monitor.alerts import message_text

    if not monitoring:
        return
    changes = monitoring.get("incidents") or []
    opened = [c["key"] for c in changes if c.get("change") == "opened"] or list(
        monitoring.get("opened") or []
    )
    console.print(
        f"[bold]5 · monitoring[/]  {monitoring['windows']} window(s); incidents opened: "
        f"{', '.join(opened) or 'none'}; Slack messages: {len(monitoring['messages'])}"
    )
    if not opened and monitoring.get("quiet_reason"):
        console.print(f"   [yellow]no incident opened[/]: {monitoring['quiet_reason']}")
    for message in monitoring["messages"][:2]:
        console.print("   " + message_text(message).replace("\n", "\n   "))


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Acme's migration playbook with the embedded model.")
    parser.add_argument(
        "--workspace", "-w", type=Path, default=None, help="Workspace directory (default ./.workhorse)."
    )
    parser.add_argument(
        "--example",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="The example folder (its workhorse.yaml and generate.py).",
    )
    args = parser.parse_args()
    run_demo(args.example, args.workspace, Console(width=None if sys.stdout.isatty() else 120))


if __name__ == "__main__":
    main()
