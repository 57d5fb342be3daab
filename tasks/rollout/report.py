"""The rollout's markdown report: state, weights, the last verdict and each guardrail's numbers."""

from __future__ import annotations


def rollout_markdown(result: dict) -> str:
    """Markdown for a Prefect artifact from a control-loop result (``flows.rollout.summary``)."""
    weights = result["weights"]
    lines = [
        f"# Rollout of {result['use_case']}",
        "",
        f"**Stage:** {result['stage']} — incumbent {weights['incumbent']} %, "
        f"candidate {weights['candidate']} %" + (" (shadow)" if weights["shadow"] else ""),
        "",
        f"**Last analysis:** {result['outcome']}",
        "",
        f"**Why:** {result['reason'] or '—'}",
        "",
    ]
    transition = result.get("transition")
    if transition:
        lines += [
            f"**Transition:** {transition['from_stage']} → {transition['to_stage']} "
            f"({transition['action']}, {'applied' if transition['changed'] else 'no change'})",
            "",
        ]
    analysis = result.get("analysis")
    if analysis:
        lines += [
            f"Window {analysis['window_s']} s; requests {analysis['counts']}",
            "",
            "| guardrail | status | candidate | incumbent | p-value | detail |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {c['name']} | {c['status']} | {_num(c['candidate'])} | {_num(c['incumbent'])} | "
            f"{_num(c['p_value'])} | {c['detail']} |"
            for c in analysis["checks"]
        ]
    return "\n".join(lines) + "\n"


def _num(value) -> str:
    return "—" if value is None else f"{value:.4g}"
