"""Analysis of a rollout step: candidate against incumbent over the same window of the traffic log.

Like Kayenta, every guardrail needs both statistical significance (``alpha``) and an effect
bigger than its tolerance before it calls a breach; an effect without significance is
inconclusive, never a pass. Guardrails: error rate (Fisher's exact), p95 latency (binomial test of
the calls slower than the tolerated p95), output validity (labels or JSON schema, Fisher),
agreement with the incumbent on shadow pairs (binomial test), cost share against traffic share.

Outcome of one analysis, in this order: ``critical`` (revert now) > ``fail`` (counts) > ``wait``
(bake time not over) > ``inconclusive`` (too few requests, or a guardrail unsure) > ``pass``.
Critical and failing checks are looked at on every run, so a broken candidate is reverted
without waiting for the bake time.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa

from workhorse.config import Guardrails, RolloutPolicy, UseCase
from workhorse.tasks.common.traffic_log import now_micros, read_traffic
from workhorse.workspace import Workspace

CANDIDATE_ARMS = ("candidate", "shadow")


@dataclass
class Check:
    """One guardrail's verdict with the numbers behind it."""

    name: str
    status: str  # pass | fail | critical | inconclusive | skipped
    candidate: float | None = None
    incumbent: float | None = None
    p_value: float | None = None
    detail: str = ""


@dataclass
class Analysis:
    """The verdict on one step, with the evidence that a revert or a report shows."""

    use_case: str
    stage: str
    version: int
    outcome: str  # critical | fail | wait | inconclusive | pass
    reason: str
    window_start: int
    window_end: int
    counts: dict
    checks: list[Check] = field(default_factory=list)

    def evidence(self) -> dict:
        return {
            "stage": self.stage,
            "outcome": self.outcome,
            "counts": self.counts,
            "window_s": round((self.window_end - self.window_start) / 1e6, 3),
            "checks": [asdict(c) for c in self.checks],
        }


# --- guardrails ---------------------------------------------------------------------------


def _fisher_greater(bad_c: int, n_c: int, bad_i: int, n_i: int) -> float:
    from scipy.stats import fisher_exact

    return float(fisher_exact([[bad_c, n_c - bad_c], [bad_i, n_i - bad_i]], alternative="greater").pvalue)


def error_rate_check(cand_status: list[str], inc_status: list[str], g: Guardrails) -> Check:
    """Is the candidate's error rate higher than the incumbent's, significantly and by enough?"""
    n_c, n_i = len(cand_status), len(inc_status)
    if not n_c or not n_i:
        return Check("error_rate", "inconclusive", detail="no traffic on one arm")
    bad_c, bad_i = cand_status.count("error"), inc_status.count("error")
    rate_c, rate_i = bad_c / n_c, bad_i / n_i
    p = _fisher_greater(bad_c, n_c, bad_i, n_i)
    detail = f"{bad_c}/{n_c} vs {bad_i}/{n_i} errors"
    if p < g.alpha and n_c >= g.min_critical_requests and rate_c >= g.critical_error_rate:
        return Check("error_rate", "critical", rate_c, rate_i, p, detail)
    return Check(
        "error_rate", _graded(p, rate_c - rate_i > g.max_error_rate_increase, g), rate_c, rate_i, p, detail
    )


def _graded(p: float, excess: bool, g: Guardrails) -> str:
    """Significant excess fails; an excess without significance is unsure; else it passes."""
    if excess:
        return "fail" if p < g.alpha else "inconclusive"
    return "pass"


def latency_check(cand_ms: list[float], inc_ms: list[float], g: Guardrails) -> Check:
    """p95 latency: is the candidate's p95 above what the plan tolerates, and significantly so?

    A quantile test, not a test of the whole distribution: if the candidate's true p95 were within
    a bound, at most 5 % of its calls would be slower than that bound, so the count of slower calls
    is tested against Binomial(n, 5 %). A candidate a few ms slower on every call passes (its tail
    is within tolerance), and one stall of the shared machine that delays a call or two of a small
    step cannot revert a healthy candidate: the p95 of 18 calls is nearly their maximum.
    """
    if len(cand_ms) < 5 or len(inc_ms) < 5:
        return Check("latency_p95", "inconclusive", detail=f"{len(cand_ms)} vs {len(inc_ms)} answered calls")
    p95_c, p95_i = float(np.percentile(cand_ms, 95)), float(np.percentile(inc_ms, 95))
    tolerated = max(p95_i * (1 + g.latency_p95_increase), p95_i + g.latency_min_increase_ms)
    critical_bound = max(p95_i * g.latency_critical_ratio, tolerated)
    p_fail, slower = _slower_than(cand_ms, tolerated)
    p_critical, slower_critical = _slower_than(cand_ms, critical_bound)
    detail = (
        f"p95 {p95_c:.0f} ms vs {p95_i:.0f} ms; "
        f"{slower}/{len(cand_ms)} calls over the tolerated {tolerated:.0f} ms"
    )
    if p95_c > critical_bound and p_critical < g.alpha and len(cand_ms) >= g.min_critical_requests:
        detail += f", {slower_critical} over {critical_bound:.0f} ms"
        return Check("latency_p95", "critical", p95_c, p95_i, p_critical, detail)
    return Check("latency_p95", _graded(p_fail, p95_c > tolerated, g), p95_c, p95_i, p_fail, detail)


def _slower_than(latencies_ms: list[float], bound_ms: float) -> tuple[float, int]:
    """P-value that more than 5 % of calls are slower than the bound (one-sided binomial), and the count."""
    from scipy.stats import binomtest

    slower = sum(ms > bound_ms for ms in latencies_ms)
    return float(binomtest(slower, len(latencies_ms), 0.05, alternative="greater").pvalue), slower


def validity_check(
    cand_out: list[str], inc_out: list[str], validator: Callable[[str], bool] | None, g: Guardrails
) -> Check:
    """Share of answers that break the use case's contract (labels or JSON schema)."""
    if validator is None:
        return Check("validity", "skipped", detail="the use case defines no labels or schema")
    if not cand_out or not inc_out:
        return Check("validity", "inconclusive", detail="no answered calls on one arm")
    bad_c = sum(not validator(o) for o in cand_out)
    bad_i = sum(not validator(o) for o in inc_out)
    p = _fisher_greater(bad_c, len(cand_out), bad_i, len(inc_out))
    valid_c, valid_i = 1 - bad_c / len(cand_out), 1 - bad_i / len(inc_out)
    excess = valid_i - valid_c > g.max_invalid_rate_increase
    return Check(
        "validity",
        _graded(p, excess, g),
        valid_c,
        valid_i,
        p,
        f"{bad_c}/{len(cand_out)} vs {bad_i}/{len(inc_out)} invalid",
    )


def agreement_check(pairs: list[tuple[str, str]], g: Guardrails, *, required: bool) -> Check:
    """Shadow quality: how often the candidate answers a request as the incumbent did."""
    from scipy.stats import binomtest

    if len(pairs) < 5:
        status = "inconclusive" if required else "skipped"
        return Check("agreement", status, detail=f"{len(pairs)} shadow pairs")
    agree = sum(_normal(a) == _normal(b) for a, b in pairs)
    p = float(binomtest(agree, len(pairs), g.min_agreement, alternative="less").pvalue)
    rate = agree / len(pairs)
    return Check(
        "agreement",
        _graded(p, rate < g.min_agreement, g),
        rate,
        g.min_agreement,
        p,
        f"{agree}/{len(pairs)} shadow answers agree",
    )


def _normal(text: str | None) -> str:
    text = (text or "").strip()
    try:
        return json.dumps(json.loads(text), sort_keys=True)
    except ValueError:
        return text.lower().rstrip(".")


def cost_check(cand_cost: list, inc_cost: list, n_c: int, n_i: int, g: Guardrails) -> Check:
    """Cost share against traffic share: a candidate should cost no more per request than allowed."""
    known_c = [c for c in cand_cost if c is not None]
    known_i = [c for c in inc_cost if c is not None]
    if not known_c or not known_i or sum(known_i) <= 0:
        return Check("cost_share", "skipped", detail="costs unknown on one arm")
    total_c, total_i = sum(known_c), sum(known_i)
    cost_share, traffic_share = total_c / (total_c + total_i), n_c / (n_c + n_i)
    ratio = (total_c / n_c) / (total_i / n_i)
    return Check(
        "cost_share",
        "fail" if ratio > g.max_cost_ratio else "pass",
        cost_share,
        traffic_share,
        None,
        f"cost share {cost_share:.1%} for traffic share {traffic_share:.1%} (x{ratio:.2f} per request)",
    )


# --- the analysis -------------------------------------------------------------------------


def analyze(
    table: pa.Table,
    policy: RolloutPolicy,
    *,
    use_case: str,
    stage: str,
    version: int,
    step_started_at: int,
    now: int | None = None,
    validator: Callable[[str], bool] | None = None,
) -> Analysis:
    """Judge one step from traffic rows (already read); the window is [step start, now]."""
    now = now or now_micros()
    rows = [r for r in _window(table, use_case, stage, step_started_at, now)]
    cand = [r for r in rows if r["arm"] in CANDIDATE_ARMS]
    inc = [r for r in rows if r["arm"] == "incumbent"]
    checks = _checks(cand, inc, policy.guardrails, validator, shadow=stage == "shadow")
    counts = {"candidate": len(cand), "incumbent": len(inc)}
    outcome, reason = _outcome(checks, counts, policy, baked=now - step_started_at >= policy.bake_time * 1e6)
    return Analysis(use_case, stage, version, outcome, reason, step_started_at, now, counts, checks)


def _window(table: pa.Table, use_case: str, stage: str, start: int, end: int):
    for row in table.to_pylist():
        ts = int(row["ts"].timestamp() * 1e6) if row["ts"] is not None else 0
        if row["use_case"] == use_case and row["rollout_stage"] == stage and start <= ts <= end:
            yield row


def _checks(cand: list[dict], inc: list[dict], g: Guardrails, validator, *, shadow: bool) -> list[Check]:
    ok_c = [r for r in cand if r["status"] == "ok"]
    ok_i = [r for r in inc if r["status"] == "ok"]
    return [
        error_rate_check([r["status"] for r in cand], [r["status"] for r in inc], g),
        latency_check([r["latency_ms"] for r in ok_c], [r["latency_ms"] for r in ok_i], g),
        validity_check([r["response"] for r in ok_c], [r["response"] for r in ok_i], validator, g),
        agreement_check(shadow_pairs(ok_c, ok_i), g, required=shadow),
        cost_check([r["cost_usd"] for r in cand], [r["cost_usd"] for r in inc], len(cand), len(inc), g),
    ]


def shadow_pairs(cand_ok: list[dict], inc_ok: list[dict]) -> list[tuple[str, str]]:
    """(candidate, incumbent) answers to the same request: shadow rows name their incumbent row."""
    by_id = {r["request_id"]: r["response"] for r in inc_ok}
    pairs = []
    for row in cand_ok:
        twin = json.loads(row["metadata"] or "{}").get("shadow_of")
        if row["arm"] == "shadow" and twin in by_id:
            pairs.append((row["response"], by_id[twin]))
    return pairs


def _outcome(checks: list[Check], counts: dict, policy: RolloutPolicy, *, baked: bool) -> tuple[str, str]:
    def named(status: str) -> str:
        return "; ".join(f"{c.name} {c.detail}" for c in checks if c.status == status)

    if any(c.status == "critical" for c in checks):
        return "critical", named("critical")
    if any(c.status == "fail" for c in checks):
        return "fail", named("fail")
    if not baked:
        return "wait", f"bake time {policy.bake_time:g} s not over"
    short = {arm: n for arm, n in counts.items() if n < policy.min_requests}
    if short:
        return "inconclusive", "too few requests: " + ", ".join(
            f"{arm} {n}/{policy.min_requests}" for arm, n in short.items()
        )
    if any(c.status == "inconclusive" for c in checks):
        return "inconclusive", named("inconclusive")
    return (
        "pass",
        f"all guardrails pass on {counts['candidate']} candidate / {counts['incumbent']} incumbent calls",
    )


def validator_for(use_case: UseCase | None) -> Callable[[str], bool] | None:
    """The use case's contract on one answer: one of its labels, or JSON valid under its schema."""
    if use_case is None:
        return None
    if use_case.labels:
        labels = {label.lower() for label in use_case.labels}
        return lambda text: (text or "").strip().lower().rstrip(".") in labels
    if use_case.json_schema:
        import jsonschema

        checker = jsonschema.Draft202012Validator(use_case.json_schema)
        return lambda text: _json_valid(text, checker)
    return None


def _json_valid(text: str | None, checker) -> bool:
    try:
        return checker.is_valid(json.loads(text or ""))
    except ValueError:
        return False


def analyze_rollout(
    workspace: Workspace | str | None,
    use_case: str,
    *,
    now: int | None = None,
    validator: Callable[[str], bool] | None = None,
) -> Analysis | None:
    """Analyse the current step of a use case from the traffic log; None when nothing is rolling out."""
    from workhorse.tasks.rollout.state import current_state

    state = current_state(workspace, use_case)
    if not state.is_active:
        return None
    now = now or now_micros()
    table = read_traffic(workspace, use_case, since=state.step_started_at / 1e6, until=now / 1e6 + 1e-6)
    return analyze(
        table,
        state.rollout_policy,
        use_case=use_case,
        stage=state.stage,
        version=state.version,
        step_started_at=state.step_started_at,
        now=now,
        validator=validator,
    )
