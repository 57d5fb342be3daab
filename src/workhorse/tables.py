"""Rich tables of an evaluation's results, as `workhorse eval` and the demo print them."""

from __future__ import annotations

from rich.table import Table


def variant_table(evaluations: dict) -> Table:
    """What each prompt variant scored on dev: constrained decoding is what makes a tiny model usable."""
    table = Table(title="3 · evaluation — prompt variants of the candidate on dev (mean score)")
    variants = sorted(
        {v for e in evaluations.values() for c in e["chosen_variants"].values() for v in c["dev_scores"]}
    )
    table.add_column("use case")
    table.add_column("candidate")
    for variant in variants:
        table.add_column(variant, justify="right")
    table.add_column("chosen")
    for use_case, evaluation in evaluations.items():
        for candidate, choice in evaluation["chosen_variants"].items():
            scores = [
                f"{choice['dev_scores'][v]:.0%}" if v in choice["dev_scores"] else "–" for v in variants
            ]
            table.add_row(use_case, candidate, *scores, choice["variant"])
    return table


def verdict_table(evaluations: dict) -> Table:
    table = Table(title="3 · evaluation — on test, against the incumbent's logged answers")
    for column in ("use case", "arm", "items", "accuracy", "score", "p50 ms", "$ / 1k items"):
        table.add_column(column, justify="left" if column in ("use case", "arm") else "right")
    for use_case, evaluation in evaluations.items():
        for line in (l for l in evaluation["leaderboard"] if l["split"] == "test"):
            table.add_row(
                use_case,
                f"{line['model']} · {line['prompt_variant']}",
                str(line["items"]),
                _fmt(line["accuracy"], "{:.0%}"),
                _fmt(line["score"], "{:.2f}"),
                _fmt(line["latency_p50_ms"], "{:.0f}"),
                _fmt(line["cost_per_1k_items"], "${:.4f}"),
            )
    return table


def candidate_verdicts_table(evaluations: dict) -> Table:
    """One row per candidate and hosting: its own decision, the paired difference and its CI."""
    table = Table(title="3 · evaluation — verdict per candidate (test split)")
    for column in ("use case", "candidate", "hosting", "decision", "why", "Δ vs incumbent", "CI", "n", "p"):
        table.add_column(column, justify="right" if column in ("n", "p", "Δ vs incumbent", "CI") else "left")
    for use_case, evaluation in evaluations.items():
        for c in evaluation["verdict"].get("candidates") or []:
            bar = c.get("against") == "min_score"  # the numbers are the candidate's own, against the bar
            diff = _fmt(c["diff"], "{:.1%}" if bar else "{:+.1%}") + (
                " (abs.)" if bar and c["diff"] is not None else ""
            )
            ci = "–" if c["ci_low"] is None else f"{c['ci_low']:+.1%} … {c['ci_high']:+.1%}"
            table.add_row(
                use_case,
                c["model"] + (" ★" if c["chosen"] else ""),
                c["hosting"],
                c["decision"],
                c["why"],
                diff,
                ci,
                str(c["n"]),
                _fmt(c["p_value"], "{:.2g}"),
            )
    return table


def _fmt(value, pattern: str) -> str:
    return "–" if value is None else pattern.format(value)
