"""Quality gates -> a verdict per use case: ``migrate``, ``keep`` or ``inconclusive``, with why.

Candidates are compared with the incumbent on the same golden items, so the statistics are
paired: a bootstrap confidence interval of the mean per-item difference (candidate − incumbent)
and McNemar's test on per-item correctness. The policy is a non-inferiority test: a candidate may
be slightly worse than the incumbent, by at most ``non_inferiority_margin`` (absolute, on the
primary metric's 0..1 scale), and still be the right choice because it is much cheaper.

    before any statistics (the evidence a verdict needs):
      the incumbent answered no test item     -> inconclusive (not evaluated: no key and nothing
                                                 logged, or every call failed), unless the plan
                                                 sets quality_policy.min_score: then each
                                                 candidate is judged against that absolute bar
      the incumbent failed > max_error_rate   -> inconclusive (its answers would flatter the candidate)
      a candidate answered no test item       -> inconclusive for it (not evaluated)
    per candidate, in order:
      n < min_items                          -> keep if n >= 20 and CI high < -margin (clearly worse
                                                              even on few items), else inconclusive
                                                              (under-sampled: too few items to migrate)
      error rate > max_error_rate            -> keep         (unreliable)
      p95 latency > max_p95_latency_ms       -> keep         (too slow)
      CI low  >= -margin                     -> migrate      (non-inferior)
      CI high <  -margin                     -> keep         (clearly worse)
      otherwise                              -> inconclusive (the CI straddles the margin)
    per use case: migrate if any candidate may migrate (the largest saving wins, ties go to the
    higher score); else inconclusive if any candidate is; else keep. Every candidate keeps its
    own assessment and sentence, so the report says why the others lost.

Items are paired only where the incumbent answered and a reference exists; a candidate's failed
call on such an item counts as a wrong answer (a failure in production is one), while the
incumbent's failures are left out (counted as wrong they would flatter the candidate).

The bootstrap CI decides; McNemar's p-value is reported beside it (a candidate can be
significantly worse and still non-inferior: 0.5 pp worse on 4,000 items with a 2 pp margin).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from workhorse.config import DEFAULT_PRIMARY_METRIC, QualityPolicy  # noqa: F401  (the policy lives with the plan)

Decision = Literal["migrate", "keep", "inconclusive"]

# Below this many discordant pairs McNemar uses the exact binomial test; from it on the
# chi-squared approximation with continuity correction (the usual rule of thumb: b + c >= 25).
MCNEMAR_EXACT_BELOW = 25

# Below min_items a candidate can still be kept out when clearly worse, but not on a handful of
# items: a bootstrap over fewer than this many says little even about "clearly".
MIN_ITEMS_TO_KEEP_EARLY = 20


# --- statistics ------------------------------------------------------------------------------


def paired_bootstrap(
    candidate: Sequence[float],
    incumbent: Sequence[float],
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean of (candidate − incumbent) over the same items and its percentile bootstrap CI.

    Items are resampled with replacement, keeping each item's pair together, which is what
    makes the interval narrower than comparing two independent means. Deterministic per seed.
    """
    diffs = _paired_diffs(candidate, incumbent)
    rng = np.random.default_rng(seed)
    means = np.concatenate(
        [
            diffs[rng.integers(0, len(diffs), size=(size, len(diffs)))].mean(axis=1)
            for size in _chunks(n_resamples, len(diffs))
        ]
    )
    alpha = 1 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(diffs.mean()), float(low), float(high)


def _paired_diffs(candidate: Sequence[float], incumbent: Sequence[float]) -> np.ndarray:
    a, b = np.asarray(candidate, dtype=float), np.asarray(incumbent, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores must be aligned: {a.shape} vs {b.shape}")
    if not len(a):
        raise ValueError("paired scores are empty")
    return a - b


def _chunks(n_resamples: int, n_items: int, max_cells: int = 4_000_000) -> list[int]:
    """Resample sizes that keep each index matrix under ~32 MB, however many items there are."""
    per_chunk = max(1, max_cells // n_items)
    return [min(per_chunk, n_resamples - start) for start in range(0, n_resamples, per_chunk)]


def mcnemar(candidate_correct: Sequence[bool], incumbent_correct: Sequence[bool]) -> tuple[int, int, float]:
    """McNemar's test on paired correctness: (b, c, two-sided p-value).

    b = items only the candidate got right, c = items only the incumbent got right. With fewer
    than ``MCNEMAR_EXACT_BELOW`` discordant pairs the exact binomial test (b of b + c at 1/2);
    from there chi-squared with continuity correction, (|b − c| − 1)² / (b + c), one dof.
    """
    from scipy import stats

    cand, inc = np.asarray(candidate_correct, dtype=bool), np.asarray(incumbent_correct, dtype=bool)
    if cand.shape != inc.shape:
        raise ValueError(f"paired correctness must be aligned: {cand.shape} vs {inc.shape}")
    b, c = int(np.sum(cand & ~inc)), int(np.sum(~cand & inc))
    if b + c == 0:
        return b, c, 1.0  # no discordant pair: no evidence of any difference
    if b + c < MCNEMAR_EXACT_BELOW:
        return b, c, float(stats.binomtest(b, b + c, 0.5).pvalue)
    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    return b, c, float(stats.chi2.sf(statistic, df=1))


# --- policy: QualityPolicy (the plan's quality_policy section) is declared in workhorse.config ------


def item_values(scores: Sequence[Any], metric: str) -> list[float]:
    """Per-item numbers of one metric from ``ItemScore`` objects: the vectors the verdict pairs."""
    if metric == "correct":
        return [float(s.correct) for s in scores]
    if metric == "value":
        return [float(s.value) for s in scores]
    return [float(s.details[metric]) for s in scores]


# --- verdict -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CandidateResult:
    """One (model, hosting, prompt variant) on the test items, aligned item by item with the incumbent."""

    model: str
    hosting: str
    prompt_variant: str
    scores: Sequence[float]
    correct: Sequence[bool] | None = None  # for McNemar; taken from binary scores when absent
    operational: Mapping[str, Any] = field(default_factory=dict)  # scoring.operational_metrics
    projected_monthly_saving_usd: float | None = None


@dataclass(frozen=True)
class IncumbentEvidence:
    """What the incumbent answered on the test items: checked before any statistics.

    ``missing`` says why it answered nothing when it had no chance to (no key, nothing logged)."""

    answered: int
    failed: int = 0
    missing: str = ""
    errors: Mapping[str, int] = field(default_factory=dict)

    @property
    def error_rate(self) -> float:
        attempted = self.answered + self.failed
        return self.failed / attempted if attempted else 0.0

    def problem(self, policy: "QualityPolicy") -> tuple[str, str] | None:
        """(why, sentence) when the incumbent cannot anchor a comparison, else None."""
        if self.answered == 0:
            return (
                "incumbent_not_evaluated",
                self.missing or f"every call failed ({_error_counts(self.errors)})",
            )
        if self.error_rate > policy.max_error_rate:
            return "incumbent_errors", (
                f"it failed {self.error_rate:.1%} of its calls ({_error_counts(self.errors)}), "
                f"above the {policy.max_error_rate:.1%} the policy allows"
            )
        return None


def _error_counts(errors: Mapping[str, int]) -> str:
    return (
        ", ".join(f"{count} {kind}" for kind, count in sorted(errors.items(), key=lambda kv: -kv[1]))
        or "no answer"
    )


@dataclass(frozen=True)
class Assessment:
    """How one candidate fared against the policy; the verdict picks among these."""

    candidate: CandidateResult
    decision: Decision
    # non_inferior | worse | straddles | under_sampled | errors | latency | not_evaluated |
    # incumbent_not_evaluated | incumbent_errors | no_reference | meets_bar | below_bar | straddles_bar
    why: str
    n: int
    diff: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    note: str = ""  # the evidence behind a precondition that failed, in words


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    best_candidate: str | None
    hosting: str | None
    prompt_variant: str | None
    diff: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    n: int
    projected_monthly_saving_usd: float | None
    reason: str
    use_case: str = ""
    metric: str = ""
    assessments: tuple[Assessment, ...] = ()
    candidates: tuple[dict, ...] = ()  # every candidate's own verdict (candidate_verdicts), chosen first
    summary: str = ""  # which candidate the decision names, and why each other one lost


def verdict(
    use_case: str,
    incumbent_scores: Sequence[float],
    candidates: Sequence[CandidateResult],
    policy: QualityPolicy | None = None,
    *,
    task_type: str = "classification",
    incumbent_correct: Sequence[bool] | None = None,
    incumbent: IncumbentEvidence | None = None,
) -> Verdict:
    """The decision for one use case; the reason is one sentence with the numbers behind it.

    ``incumbent``: what the incumbent answered; without it the incumbent scores are taken as evidence."""
    policy = policy or QualityPolicy()
    metric = policy.metric_for(task_type)
    if not candidates:
        return Verdict(
            "inconclusive",
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            len(incumbent_scores),
            None,
            f"{use_case}: no candidate was evaluated.",
            use_case,
            metric,
        )
    problem = incumbent.problem(policy) if incumbent else None
    if problem and policy.min_score is not None:
        assessments = tuple(assess_against_bar(c, policy, problem[1]) for c in candidates)
    elif problem:
        assessments = tuple(Assessment(c, "inconclusive", problem[0], 0, note=problem[1]) for c in candidates)
    else:
        assessments = tuple(assess(c, incumbent_scores, policy, incumbent_correct) for c in candidates)
    chosen = _choose(assessments)
    return _verdict_from(use_case, metric, policy, chosen, assessments)


def assess(
    candidate: CandidateResult,
    incumbent_scores: Sequence[float],
    policy: QualityPolicy,
    incumbent_correct: Sequence[bool] | None = None,
) -> Assessment:
    """One candidate against the policy, gates in the order of the module docstring."""
    n = len(candidate.scores)
    if n != len(incumbent_scores):
        raise ValueError(
            f"{candidate.model}/{candidate.prompt_variant}: {n} scores but the incumbent has "
            f"{len(incumbent_scores)}; the verdict needs the same items"
        )
    precondition = _candidate_precondition(candidate, n)
    if precondition:
        return precondition
    if n < policy.min_items:
        return _under_sampled(candidate, incumbent_scores, policy, n, incumbent_correct)
    gate = _operational_gate(candidate, policy)
    if gate:
        return Assessment(candidate, "keep", gate, n)
    diff, low, high = paired_bootstrap(
        candidate.scores,
        incumbent_scores,
        n_resamples=policy.n_resamples,
        confidence=policy.confidence,
        seed=policy.seed,
    )
    decision, why = _by_margin(low, high, policy.non_inferiority_margin)
    return Assessment(
        candidate, decision, why, n, diff, low, high, _p_value(candidate, incumbent_scores, incumbent_correct)
    )


def _candidate_precondition(candidate: CandidateResult, n: int) -> Assessment | None:
    """A candidate that answered nothing was not evaluated: its zeros are no evidence of quality."""
    if candidate.operational.get("answered") == 0:
        return Assessment(
            candidate,
            "inconclusive",
            "not_evaluated",
            n,
            note=candidate.operational.get("errors_text") or "every call failed",
        )
    if n == 0:
        return Assessment(
            candidate,
            "inconclusive",
            "no_reference",
            0,
            note="no test item has both a reference and an answer of the incumbent",
        )
    return None


def assess_against_bar(
    candidate: CandidateResult, policy: QualityPolicy, why_no_incumbent: str
) -> Assessment:
    """The candidate's mean score against ``policy.min_score``, when there is no incumbent to pair with.

    The same bootstrap, of the candidate's own scores (paired with zeros, its CI is the mean's)."""
    n = len(candidate.scores)
    precondition = _candidate_precondition(candidate, n)
    if precondition:
        return precondition
    if n < policy.min_items:
        return Assessment(candidate, "inconclusive", "under_sampled", n, note=why_no_incumbent)
    gate = _operational_gate(candidate, policy)
    if gate:
        return Assessment(candidate, "keep", gate, n, note=why_no_incumbent)
    mean, low, high = paired_bootstrap(
        candidate.scores,
        [0.0] * n,
        n_resamples=policy.n_resamples,
        confidence=policy.confidence,
        seed=policy.seed,
    )
    decision, why = (
        ("migrate", "meets_bar")
        if low >= policy.min_score
        else ("keep", "below_bar")
        if high < policy.min_score
        else ("inconclusive", "straddles_bar")
    )
    return Assessment(candidate, decision, why, n, mean, low, high, note=why_no_incumbent)


def _under_sampled(
    candidate: CandidateResult,
    incumbent_scores: Sequence[float],
    policy: QualityPolicy,
    n: int,
    incumbent_correct: Sequence[bool] | None,
) -> Assessment:
    """Too few items to migrate on; but a candidate clearly worse even on few items is kept out.

    The minimum sample size guards against a migration the data cannot support. Keeping the
    incumbent needs no such guard when the whole interval lies below the margin."""
    if n < MIN_ITEMS_TO_KEEP_EARLY:
        return Assessment(candidate, "inconclusive", "under_sampled", n)
    diff, low, high = paired_bootstrap(
        candidate.scores,
        incumbent_scores,
        n_resamples=policy.n_resamples,
        confidence=policy.confidence,
        seed=policy.seed,
    )
    if high >= -policy.non_inferiority_margin:
        return Assessment(candidate, "inconclusive", "under_sampled", n)
    return Assessment(
        candidate,
        "keep",
        "worse",
        n,
        diff,
        low,
        high,
        _p_value(candidate, incumbent_scores, incumbent_correct),
    )


def _operational_gate(candidate: CandidateResult, policy: QualityPolicy) -> str | None:
    error_rate = candidate.operational.get("error_rate")
    if error_rate is not None and error_rate > policy.max_error_rate:
        return "errors"
    p95 = candidate.operational.get("latency_p95_ms")
    if policy.max_p95_latency_ms is not None and p95 is not None and p95 > policy.max_p95_latency_ms:
        return "latency"
    return None


def _by_margin(low: float, high: float, margin: float) -> tuple[Decision, str]:
    if low >= -margin:
        return "migrate", "non_inferior"
    if high < -margin:
        return "keep", "worse"
    return "inconclusive", "straddles"


def _p_value(
    candidate: CandidateResult, incumbent_scores: Sequence[float], incumbent_correct: Sequence[bool] | None
) -> float | None:
    """McNemar on correctness when both sides have it (given, or scores that are all 0/1)."""
    cand = candidate.correct if candidate.correct is not None else _as_binary(candidate.scores)
    inc = incumbent_correct if incumbent_correct is not None else _as_binary(incumbent_scores)
    if cand is None or inc is None:
        return None
    return mcnemar(cand, inc)[2]


def _as_binary(scores: Sequence[float]) -> list[bool] | None:
    return [bool(s) for s in scores] if all(s in (0, 1) for s in scores) else None


def _choose(assessments: Sequence[Assessment]) -> Assessment:
    """The candidate to report: among the best decision class, the largest saving, then the score.

    For migrate this is the candidate to adopt; for inconclusive the most promising one (highest
    CI lower bound); for keep the closest to the incumbent.
    """
    for decision in ("migrate", "inconclusive", "keep"):
        group = [a for a in assessments if a.decision == decision]
        if group:
            return max(group, key=_rank_key if decision == "migrate" else _closeness_key)
    raise AssertionError("unreachable: every assessment has a decision")


def _rank_key(a: Assessment) -> tuple:
    saving = a.candidate.projected_monthly_saving_usd
    # An unknown saving ranks below any known one: we cannot promise money we did not measure.
    return (saving is not None, saving if saving is not None else 0.0, a.diff)


def _closeness_key(a: Assessment) -> tuple:
    return (-math.inf if a.ci_low is None else a.ci_low, -math.inf if a.diff is None else a.diff)


def _verdict_from(
    use_case: str, metric: str, policy: QualityPolicy, chosen: Assessment, assessments: tuple[Assessment, ...]
) -> Verdict:
    c = chosen.candidate
    v = Verdict(
        chosen.decision,
        c.model,
        c.hosting,
        c.prompt_variant,
        chosen.diff,
        chosen.ci_low,
        chosen.ci_high,
        chosen.p_value,
        chosen.n,
        c.projected_monthly_saving_usd,
        reason(use_case, metric, policy, chosen),
        use_case,
        metric,
        assessments,
    )
    return replace(v, candidates=tuple(candidate_verdicts(v, policy)), summary=why_chosen(v))


def candidate_verdicts(v: Verdict, policy: QualityPolicy) -> list[dict]:
    """Every candidate's own verdict (chosen first), with its numbers and sentence."""
    chosen = _chosen_of(v)
    ordered = sorted(v.assessments, key=lambda a: a is not chosen)
    return [
        {
            "model": a.candidate.model,
            "hosting": a.candidate.hosting,
            "prompt_variant": a.candidate.prompt_variant,
            "decision": a.decision,
            "why": a.why,
            "chosen": a is chosen,
            "n": a.n,
            "diff": a.diff,
            "ci_low": a.ci_low,
            "ci_high": a.ci_high,
            "p_value": a.p_value,
            "against": "min_score" if a.why in BAR_REASONS else "incumbent",
            "projected_monthly_saving_usd": a.candidate.projected_monthly_saving_usd,
            "reason": reason(v.use_case, v.metric, policy, a),
        }
        for a in ordered
    ]


def _chosen_of(v: Verdict) -> Assessment | None:
    return next(
        (
            a
            for a in v.assessments
            if (a.candidate.model, a.candidate.hosting, a.candidate.prompt_variant)
            == (v.best_candidate, v.hosting, v.prompt_variant)
        ),
        None,
    )


def why_chosen(v: Verdict) -> str:
    """The use case's decision in one line: which candidate, and why each other one lost."""
    chosen = _chosen_of(v)
    if chosen is None:
        return v.reason
    peers = sum(a.decision == chosen.decision for a in v.assessments)
    rule = {
        "migrate": "may migrate, with the largest projected saving"
        if peers > 1
        else "is the one that may migrate",
        "inconclusive": "is the most promising, though not settled",
        "keep": "came closest to the incumbent",
    }[chosen.decision]
    lines = [
        f"{v.decision}: {chosen.candidate.model} ({chosen.candidate.hosting}) {rule}"
        if len(v.assessments) > 1
        else f"{v.decision}: {chosen.candidate.model} ({chosen.candidate.hosting})"
    ]
    lines += [
        f"{a.candidate.model} ({a.candidate.hosting}) lost: {a.decision}, {_WHY_WORDS.get(a.why, a.why)}"
        + (f" ({_pp(a.diff)}, CI {_pp(a.ci_low)} to {_pp(a.ci_high)})" if a.ci_low is not None else "")
        for a in v.assessments
        if a is not chosen
    ]
    return "; ".join(lines) + "."


BAR_REASONS = frozenset({"meets_bar", "below_bar", "straddles_bar"})
_WHY_WORDS = {
    "non_inferior": "non-inferior but a smaller saving",
    "worse": "worse beyond the margin",
    "straddles": "its CI straddles the margin",
    "under_sampled": "too few items",
    "errors": "too many failed calls",
    "latency": "too slow",
    "not_evaluated": "not evaluated",
    "incumbent_not_evaluated": "the incumbent was not evaluated",
    "incumbent_errors": "the incumbent failed too often",
    "no_reference": "no reference to score against",
    "meets_bar": "meets the absolute bar but a smaller saving",
    "below_bar": "below the absolute bar",
    "straddles_bar": "its CI straddles the absolute bar",
}


# --- the one-sentence reason -------------------------------------------------------------------

_METRIC_NAMES = {
    "correct": "accuracy",
    "value": "score",
    "rougeL": "ROUGE-L F",
    "rouge1": "ROUGE-1 F",
    "rouge2": "ROUGE-2 F",
    "f1": "F1",
    "exact_match": "exact match",
}


def _pp(x: float) -> str:
    return f"{x * 100:+.1f} pp"


def _money(x: float | None) -> str:
    """The audit's projected saving, per run-rate month (its basis); a saving below a cent keeps
    three significant digits: "$0.00" would read as nothing."""
    if x is None:
        return "an unknown saving (unpriced, or no audit)"
    amount = f"${x:,.2f}" if x == 0 or abs(x) >= 0.01 else f"${x:.3g}"
    return f"{amount} saved per run-rate month"


def reason(use_case: str, metric: str, policy: QualityPolicy, a: Assessment) -> str:
    """One sentence naming the candidate, the numbers and the rule that decided."""
    c, margin = a.candidate, policy.non_inferiority_margin * 100
    who = f"{use_case}: {c.model} ({c.hosting}, {c.prompt_variant})"
    if a.why == "errors":
        return (
            f"{who} failed {c.operational['error_rate']:.1%} of calls, above the "
            f"{policy.max_error_rate:.1%} the policy allows."
        )
    if a.why == "latency":
        return (
            f"{who} has a p95 latency of {c.operational['latency_p95_ms']:.0f} ms, above the "
            f"{policy.max_p95_latency_ms:.0f} ms limit."
        )
    if a.why == "under_sampled":
        return f"{who} was tested on {a.n} items, fewer than the {policy.min_items} required (under-sampled)."
    if a.why == "not_evaluated":
        return f"{who} was not evaluated: {a.note}."
    if a.why in ("incumbent_not_evaluated", "incumbent_errors"):
        return (
            f"{who} cannot be compared: the incumbent was not evaluated, {a.note}; set "
            f"quality_policy.min_score to judge candidates against an absolute bar instead."
        )
    if a.why == "no_reference":
        return f"{who} cannot be scored: {a.note}."
    if a.why in BAR_REASONS:
        return _against_bar(who, metric, policy, a)
    numbers = _numbers(metric, policy, a)
    if a.why == "non_inferior":
        claim = "is better" if a.ci_low > 0 else f"is non-inferior within the {margin:.1f} pp margin"
        return f"{who} {claim}: {numbers}, {_money(c.projected_monthly_saving_usd)}."
    if a.why == "worse":
        return f"{who} is worse beyond the {margin:.1f} pp margin: {numbers}."
    return (
        f"{who} is undecided, its CI straddles the -{margin:.1f} pp margin: {numbers}; "
        f"more items would settle it."
    )


def _against_bar(who: str, metric: str, policy: QualityPolicy, a: Assessment) -> str:
    claim = {"meets_bar": "meets", "below_bar": "is below", "straddles_bar": "straddles"}[a.why]
    return (
        f"{who} {claim} the plan's absolute bar (quality_policy.min_score {policy.min_score:.1%}): "
        f"{_METRIC_NAMES.get(metric, metric)} {a.diff:.1%} ({policy.confidence:.0%} CI {a.ci_low:.1%} to "
        f"{a.ci_high:.1%}, n={a.n}), used because the incumbent was not evaluated ({a.note})"
        + (f", {_money(a.candidate.projected_monthly_saving_usd)}." if a.why == "meets_bar" else ".")
    )


def _numbers(metric: str, policy: QualityPolicy, a: Assessment) -> str:
    mcnemar_part = f", McNemar p={a.p_value:.3g}" if a.p_value is not None else ""
    return (
        f"{_METRIC_NAMES.get(metric, metric)} {_pp(a.diff)} vs the incumbent ({policy.confidence:.0%} CI "
        f"{_pp(a.ci_low)} to {_pp(a.ci_high)}, n={a.n}{mcnemar_part})"
    )
