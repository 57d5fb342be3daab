"""`workhorse plan check`: read a plan as every flow reads it, and say what each use case will do.

The golden set (its sources, or the usage-log sample and its size), the incumbent and each
candidate × hosting with whether it can be called here (a key in the environment or a block) or is
skipped and why, the primary metric the verdict is taken on, and where the outputs land. The same
functions decide as in the flows (`contenders_from_plan`, `QualityPolicy.metric_for`), so the
check cannot drift from what a run does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from workhorse.config import Plan

OUTPUTS = (
    "golden/<use case>/v<N>.parquet and manifest.json (golden refresh)",
    "runs/<run id>/responses.parquet, scores.parquet, verdict.json, report.html, items.html (eval)",
    "audit/ tables and report.html (audit); state.db: response cache, rollout state, incidents",
)


@dataclass
class UseCaseCheck:
    name: str
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def golden_lines(plan: Plan) -> dict[str, str]:
    """What the golden refresh will build per use case, from the specs the flow itself builds."""
    from workhorse.tasks.golden.refresh import specs_from_plan

    lines = {}
    for spec, sources, options in specs_from_plan(plan.model_dump(exclude_unset=True), plan.folder):
        parts = [
            f"{options.sample.size} items sampled from the usage log ({source.path or 'workspace usage/'})"
            if source.kind == "usage_log"
            else f"{source.kind} {source.path}"
            for source in sources
        ]
        lines[spec.use_case] = f"golden: {'; '.join(parts)}; test split {spec.test_fraction:.0%}"
    return lines


def check_use_case(plan: Plan, name: str, workspace_root: Path, golden: dict[str, str]) -> UseCaseCheck:
    from workhorse.tasks.evaluate.run import contenders_from_plan

    case, check = plan.use_cases[name], UseCaseCheck(name)
    check.lines.append(f"task: {case.task_type}" + (f", {len(case.labels)} labels" if case.labels else ""))
    check.lines.append(
        golden.get(name, "golden: none (workload: frontier; a golden section would build one)")
    )
    if case.workload == "frontier":
        check.warnings.append(
            "not evaluated: the playbook keeps frontier work on its model (workload: frontier)"
        )
        return check
    incumbent, candidates, skipped = contenders_from_plan(plan, name, None, None, None, workspace_root)
    replay = "" if incumbent.callable else " (no key here: its logged answers are replayed)"
    check.lines.append(f"incumbent: {incumbent.spec.model}{replay}")
    for contender in candidates:
        where = f" at {contender.spec.api_base}" if contender.spec.api_base else ""
        check.lines.append(f"candidate: {contender.spec.model} ({contender.spec.hosting}){where}")
    check.warnings += [f"skipped: {reason}" for reason in skipped if not reason.startswith("incumbent ")]
    if not candidates:
        check.warnings.append("no candidate can be called here: the verdict will be inconclusive")
    policy = plan.quality_policy
    check.lines.append(
        f"verdict on: {policy.metric_for(case.task_type)} (test split), margin "
        f"{policy.non_inferiority_margin:g}, at least {policy.min_items} items"
    )
    return check


def check_plan(plan: Plan, workspace_root: Path) -> list[UseCaseCheck]:
    golden = golden_lines(plan)
    return [check_use_case(plan, name, workspace_root, golden) for name in plan.use_cases]
