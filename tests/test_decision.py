"""Paired statistics and the verdict on synthetic score vectors (seeded numpy), checked against
hand-computed p-values and known differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workhorse.errors import ConfigError
from workhorse.tasks.evaluate.decision import (
    MCNEMAR_EXACT_BELOW,
    CandidateResult,
    QualityPolicy,
    item_values,
    mcnemar,
    paired_bootstrap,
    verdict,
)
from workhorse.tasks.evaluate.scoring import score_item

# --- McNemar ------------------------------------------------------------------------------


def _pairs(b: int, c: int, both_right: int = 5, both_wrong: int = 3) -> tuple[list[bool], list[bool]]:
    """Correctness vectors with b items only the candidate got right, c only the incumbent."""
    cand = [True] * b + [False] * c + [True] * both_right + [False] * both_wrong
    inc = [False] * b + [True] * c + [True] * both_right + [False] * both_wrong
    return cand, inc


def _chi2_p(b: int, c: int) -> float:
    # chi-squared with 1 dof: P(X > x) = erfc(sqrt(x / 2)); continuity-corrected statistic.
    return math.erfc(math.sqrt((abs(b - c) - 1) ** 2 / (b + c) / 2))


def _exact_p(b: int, c: int) -> float:
    # two-sided exact binomial at 1/2: twice the smaller tail, capped at 1
    n, k = b + c, min(b, c)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


@pytest.mark.parametrize(
    "b, c, p_value",
    [
        # b + c = 10, exact: 2 * (C(10,0) + C(10,1) + C(10,2)) / 2^10 = 2 * 56 / 1024 = 0.109375
        (8, 2, 0.109375),
        (2, 8, 0.109375),  # symmetric
        # b + c = 6: 2 * (C(6,0) + C(6,1)) / 2^6 = 2 * 7 / 64 = 0.21875
        (5, 1, 0.21875),
        # all discordant pairs one way: 2 * C(6,0) / 64 = 0.03125
        (6, 0, 0.03125),
        (5, 5, 1.0),
        (0, 0, 1.0),  # no discordant pair: no evidence
        # b + c = 40, chi-squared: (|30 - 10| - 1)^2 / 40 = 9.025 -> p = erfc(sqrt(4.5125)) = 0.002663
        (30, 10, 0.0026631),
    ],
)
def test_mcnemar_hand_computed(b, c, p_value):
    cand, inc = _pairs(b, c)
    got_b, got_c, got_p = mcnemar(cand, inc)
    assert (got_b, got_c) == (b, c)
    assert got_p == pytest.approx(p_value, rel=1e-4)


@pytest.mark.parametrize(
    "b, c, formula",
    [
        (MCNEMAR_EXACT_BELOW - 4, 3, _exact_p),  # b + c = 24: still exact
        (MCNEMAR_EXACT_BELOW - 3, 3, _chi2_p),  # b + c = 25: chi-squared from here on
        (60, 40, _chi2_p),
    ],
)
def test_mcnemar_switches_from_exact_to_chi_squared(b, c, formula):
    assert mcnemar(*_pairs(b, c))[2] == pytest.approx(formula(b, c), rel=1e-9)


def test_mcnemar_rejects_misaligned_vectors():
    with pytest.raises(ValueError, match="aligned"):
        mcnemar([True, False], [True])


# --- paired bootstrap ---------------------------------------------------------------------


def test_bootstrap_constant_difference_has_a_point_interval():
    incumbent = np.random.default_rng(0).random(200)
    assert paired_bootstrap(incumbent + 0.1, incumbent) == pytest.approx((0.1, 0.1, 0.1))


def test_bootstrap_contains_the_true_difference_with_the_expected_width():
    rng = np.random.default_rng(7)
    incumbent = rng.random(1000)
    candidate = incumbent + rng.normal(0.05, 0.2, size=1000)
    diff, low, high = paired_bootstrap(candidate, incumbent)
    assert low < 0.05 < high
    # The paired differences have sd 0.2: normal theory gives 2 * 1.96 * 0.2 / sqrt(1000) = 0.0248.
    assert high - low == pytest.approx(2 * 1.96 * 0.2 / math.sqrt(1000), rel=0.15)
    assert low <= diff <= high


def test_bootstrap_coverage_is_close_to_nominal():
    """Over many samples with a known mean difference of 0.03, the 90 % interval holds it ~90 %
    of the time."""
    rng = np.random.default_rng(11)
    hits = 0
    for trial in range(200):
        incumbent = rng.random(150)
        diff, low, high = paired_bootstrap(
            incumbent + rng.normal(0.03, 0.1, 150), incumbent, n_resamples=1000, confidence=0.90, seed=trial
        )
        hits += low <= 0.03 <= high
    assert 0.82 <= hits / 200 <= 0.97


def test_bootstrap_uses_the_pairing():
    """Correlated scores: the paired interval is far narrower than the spread of either side."""
    rng = np.random.default_rng(2)
    incumbent = rng.random(500)
    _, low, high = paired_bootstrap(incumbent + rng.normal(0, 0.01, 500), incumbent)
    assert high - low < 0.005  # unpaired, the two sides' sd of ~0.29 would give ~0.07


@pytest.mark.parametrize("seed_a, seed_b, same", [(0, 0, True), (5, 5, True), (0, 1, False)])
def test_bootstrap_is_deterministic_by_seed(seed_a, seed_b, same):
    rng = np.random.default_rng(4)
    cand, inc = rng.random(300), rng.random(300)
    a = paired_bootstrap(cand, inc, seed=seed_a)
    b = paired_bootstrap(cand, inc, seed=seed_b)
    assert (a == b) is same
    assert a[0] == b[0]  # the observed mean does not depend on the seed


def test_bootstrap_over_many_items_is_chunked_but_sound():
    # 20,000 items x 2,000 resamples would be a 320 MB index matrix in one piece.
    rng = np.random.default_rng(9)
    incumbent = rng.random(20_000)
    candidate = incumbent + rng.normal(-0.01, 0.3, 20_000)
    diff, low, high = paired_bootstrap(candidate, incumbent)
    assert low < -0.01 < high
    assert high - low == pytest.approx(2 * 1.96 * 0.3 / math.sqrt(20_000), rel=0.15)


@pytest.mark.parametrize("candidate, incumbent, message", [([1.0, 0.0], [1.0], "aligned"), ([], [], "empty")])
def test_bootstrap_rejects_bad_input(candidate, incumbent, message):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(candidate, incumbent)


# --- verdict ------------------------------------------------------------------------------


def synthetic(
    n: int, lose: int, win: int, *, accuracy: float = 0.8, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Incumbent correctness at ``accuracy``; the candidate copies it except on ``lose`` items the
    incumbent got right (candidate wrong) and ``win`` items it got wrong (candidate right).
    The true difference is exactly (win − lose) / n."""
    rng = np.random.default_rng(seed)
    incumbent = (rng.random(n) < accuracy).astype(float)
    candidate = incumbent.copy()
    candidate[rng.choice(np.flatnonzero(incumbent == 1), lose, replace=False)] = 0
    candidate[rng.choice(np.flatnonzero(incumbent == 0), win, replace=False)] = 1
    return candidate, incumbent


POLICY = QualityPolicy(non_inferiority_margin=0.02, min_items=100)


@pytest.mark.parametrize(
    "case, n, lose, win, decision, why",
    [
        ("clearly better", 1000, 10, 80, "migrate", "non_inferior"),  # +7 pp
        ("clearly worse", 1000, 100, 10, "keep", "worse"),  # -9 pp, CI about +-2 pp
        ("within margin", 4000, 40, 20, "migrate", "non_inferior"),  # -0.5 pp, margin 2 pp
        ("straddles margin", 1000, 30, 10, "inconclusive", "straddles"),  # -2 pp, CI about -3.3..-0.7
        ("under-sampled", 60, 0, 10, "inconclusive", "under_sampled"),  # better, but 60 < 100 items
        ("worse, few items", 60, 30, 0, "keep", "worse"),  # -50 pp: too few to migrate, enough to keep
        ("worse, a handful", 12, 6, 0, "inconclusive", "under_sampled"),  # 12 < 20: too few even for that
    ],
)
def test_verdict_on_synthetic_candidates(case, n, lose, win, decision, why):
    candidate, incumbent = synthetic(n, lose, win)
    result = verdict(
        "ticket-routing",
        incumbent,
        [CandidateResult("qwen", "api", "constrained", candidate, projected_monthly_saving_usd=120.0)],
        POLICY,
    )
    assert (result.decision, result.assessments[0].why) == (decision, why), result.reason
    assert (result.best_candidate, result.hosting, result.prompt_variant, result.n) == (
        "qwen",
        "api",
        "constrained",
        n,
    )
    assert "ticket-routing" in result.reason and str(n) in result.reason
    if why != "under_sampled":
        assert result.diff == pytest.approx((win - lose) / n)
        assert result.ci_low <= result.diff <= result.ci_high
        assert result.p_value == pytest.approx(mcnemar(candidate.astype(bool), incumbent.astype(bool))[2])
        assert f"{(win - lose) / n * 100:+.1f} pp" in result.reason


def test_migrate_reason_names_the_saving():
    candidate, incumbent = synthetic(1000, 10, 80)
    result = verdict(
        "uc",
        incumbent,
        [CandidateResult("qwen", "self_hosted", "few-shot", candidate, projected_monthly_saving_usd=1234.5)],
        POLICY,
    )
    assert result.projected_monthly_saving_usd == 1234.5
    assert "$1,234.50 saved per run-rate month" in result.reason and "is better" in result.reason


def test_a_slightly_worse_migration_says_non_inferior_not_better():
    candidate, incumbent = synthetic(4000, 40, 20)
    result = verdict("uc", incumbent, [CandidateResult("m", "api", "v", candidate)], POLICY)
    assert "non-inferior within the 2.0 pp margin" in result.reason and "an unknown saving" in result.reason


@pytest.mark.parametrize(
    "operational, policy, why",
    [
        ({"error_rate": 0.08}, POLICY, "errors"),
        ({"error_rate": 0.02, "latency_p95_ms": 2500.0}, QualityPolicy(max_p95_latency_ms=2000), "latency"),
    ],
)
def test_operational_gates_keep_a_better_candidate(operational, policy, why):
    candidate, incumbent = synthetic(1000, 10, 80)
    result = verdict(
        "uc", incumbent, [CandidateResult("m", "api", "v", candidate, operational=operational)], policy
    )
    assert (result.decision, result.assessments[0].why) == ("keep", why)
    assert ("8.0%" if why == "errors" else "2500 ms") in result.reason


def test_errors_within_the_limit_do_not_block():
    candidate, incumbent = synthetic(1000, 10, 80)
    result = verdict(
        "uc",
        incumbent,
        [CandidateResult("m", "api", "v", candidate, operational={"error_rate": 0.05})],
        POLICY,
    )
    assert result.decision == "migrate"  # 5 % is the limit itself, not above it


def _candidate(name: str, saving, lose: int, win: int, n: int = 1000) -> CandidateResult:
    candidate, _ = synthetic(n, lose, win)
    return CandidateResult(name, "api", "v", candidate, projected_monthly_saving_usd=saving)


@pytest.mark.parametrize(
    "candidates, chosen",
    [
        # Among non-inferior candidates the largest saving wins, even with a lower score.
        ([("small-saving", 50.0, 0, 50), ("big-saving", 300.0, 5, 5)], "big-saving"),
        # Same saving: the higher score wins.
        ([("lower", 100.0, 5, 5), ("higher", 100.0, 0, 40)], "higher"),
        # An unknown saving ranks below any known one.
        ([("unknown", None, 0, 80), ("known", 10.0, 5, 5)], "known"),
        # A clearly worse candidate never wins on price.
        ([("cheap-but-bad", 9999.0, 150, 0), ("fine", 1.0, 5, 5)], "fine"),
    ],
)
def test_the_best_non_inferior_candidate_is_chosen(candidates, chosen):
    _, incumbent = synthetic(1000, 0, 0)
    result = verdict("uc", incumbent, [_candidate(*c) for c in candidates], POLICY)
    assert (result.decision, result.best_candidate) == ("migrate", chosen)


def test_an_undecided_candidate_makes_the_use_case_inconclusive_not_keep():
    _, incumbent = synthetic(1000, 0, 0)
    result = verdict(
        "uc", incumbent, [_candidate("worse", 1.0, 100, 10), _candidate("close", 1.0, 30, 10)], POLICY
    )
    assert (result.decision, result.best_candidate) == ("inconclusive", "close")


def test_all_worse_keeps_and_reports_the_closest():
    _, incumbent = synthetic(1000, 0, 0)
    result = verdict(
        "uc", incumbent, [_candidate("far", 1.0, 200, 0), _candidate("near", 1.0, 100, 10)], POLICY
    )
    assert (result.decision, result.best_candidate) == ("keep", "near")


def test_continuous_scores_have_no_mcnemar_unless_correctness_is_given():
    rng = np.random.default_rng(5)
    incumbent = rng.random(300)
    candidate = np.clip(incumbent + rng.normal(0, 0.05, 300), 0, 1)
    plain = verdict(
        "uc", incumbent, [CandidateResult("m", "api", "v", candidate)], POLICY, task_type="summarization"
    )
    assert plain.p_value is None and plain.metric == "rougeL" and "ROUGE-L" in plain.reason
    flagged = verdict(
        "uc",
        incumbent,
        [CandidateResult("m", "api", "v", candidate, correct=candidate >= 0.3)],
        POLICY,
        task_type="summarization",
        incumbent_correct=incumbent >= 0.3,
    )
    assert flagged.p_value == pytest.approx(mcnemar(candidate >= 0.3, incumbent >= 0.3)[2])


def test_no_candidates_is_inconclusive():
    result = verdict("uc", [1.0] * 200, [], POLICY)
    assert (result.decision, result.best_candidate) == ("inconclusive", None)


def test_misaligned_candidate_is_an_error():
    with pytest.raises(ValueError, match="same items"):
        verdict("uc", [1.0] * 200, [CandidateResult("m", "api", "v", [1.0] * 199)], POLICY)


def test_verdict_is_deterministic():
    candidate, incumbent = synthetic(1000, 30, 10)
    cands = [CandidateResult("m", "api", "v", candidate)]
    assert verdict("uc", incumbent, cands, POLICY) == verdict("uc", incumbent, cands, POLICY)


# --- policy -------------------------------------------------------------------------------


def test_policy_from_the_workhorse_yaml_section():
    policy = QualityPolicy.from_dict(
        {
            "non_inferiority_margin": 0.01,
            "min_items": 300,
            "confidence": 0.9,
            "max_error_rate": 0.02,
            "primary_metric": {"qa": "exact_match"},
        }
    )
    assert (policy.non_inferiority_margin, policy.min_items, policy.confidence, policy.max_error_rate) == (
        0.01,
        300,
        0.9,
        0.02,
    )
    assert policy.metric_for("qa") == "exact_match"
    assert policy.metric_for("summarization") == "rougeL"  # defaults kept for the rest


def test_policy_accepts_a_pydantic_section_and_none():
    class Section:
        def model_dump(self):
            return {"min_items": 50}

    assert QualityPolicy.from_dict(Section()).min_items == 50
    assert QualityPolicy.from_dict(None) == QualityPolicy()


@pytest.mark.parametrize(
    "data, message",
    [
        ({"min_item": 50}, "unknown keys \\['min_item'\\]"),
        ({"non_inferiority_margin": -0.1}, "non_inferiority_margin"),
        ({"confidence": 1.0}, "confidence"),
        ({"min_items": 0}, "min_items"),
    ],
)
def test_policy_rejects_bad_values(data, message):
    with pytest.raises(ConfigError, match=message):
        QualityPolicy.from_dict(data)


def test_margin_comes_from_the_policy():
    candidate, incumbent = synthetic(4000, 40, 20)  # -0.5 pp: fine at 2 pp, clearly worse at 0.1 pp
    strict = QualityPolicy(non_inferiority_margin=0.001)
    assert (
        verdict("uc", incumbent, [CandidateResult("m", "api", "v", candidate)], POLICY).decision == "migrate"
    )
    assert verdict("uc", incumbent, [CandidateResult("m", "api", "v", candidate)], strict).decision == "keep"


@pytest.mark.parametrize(
    "metric, expected",
    [
        ("correct", [1.0, 0.0]),
        ("value", [1.0, 0.5]),
        ("f1", [1.0, 0.5]),
        ("exact_match", [1.0, 0.0]),
    ],
)
def test_item_values_pick_the_primary_metric(metric, expected):
    scores = [score_item("qa", "Paris", "paris"), score_item("qa", "in Paris, France", "Paris")]
    assert item_values(scores, metric) == pytest.approx(expected)


@pytest.mark.parametrize(
    "saving, text",
    [
        (None, "an unknown saving"),
        (0.0, "$0.00 saved"),
        (0.00423, "$0.00423 saved"),
        (1234.5, "$1,234.50 saved"),
    ],
)
def test_a_tiny_saving_keeps_its_digits_and_says_its_basis(saving, text):
    from workhorse.tasks.evaluate.decision import _money

    assert _money(saving).startswith(text)
    assert saving is None or _money(saving).endswith("per run-rate month")
