"""Metrics, drift tests, baselines, rules and settings of the monitor, checked against numpy/scipy."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from scipy import stats

from workhorse.config import parse_plan
from workhorse.errors import ConfigError
from workhorse.tasks.monitor.rules import (
    DriftSettings,
    UseCaseProfile,
    categorical_drift,
    eval_baselines,
    evaluate,
    input_length,
    is_valid,
    monitor_settings,
    numeric_drift,
    percentile,
)

SCHEMA = {
    "type": "object",
    "required": ["total"],
    "properties": {"total": {"type": "number"}, "currency": {"type": "string", "enum": ["EUR", "USD"]}},
}


@pytest.mark.parametrize(
    "values", [[1.0], [3.0, 1.0], list(range(7)), [random.Random(1).random() for _ in range(101)]]
)
@pytest.mark.parametrize("q", [50, 95])
def test_percentile_matches_numpy(values, q):
    assert percentile(values, q) == pytest.approx(np.percentile(values, q))


def gauss(mean: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(mean, 10) for _ in range(n)]


@pytest.mark.parametrize(
    "window_mean, n, method, drifted",
    [
        (100, 200, "ks", False),
        (115, 200, "ks", True),
        (100, 3000, "wasserstein", False),
        (103, 3000, "wasserstein", True),  # 0.3 sd: a distance, not a p-value, decides at this size
        (150, 10, "ks", None),  # too few samples: untested, never 'no drift'
    ],
)
def test_numeric_drift_uses_ks_for_small_and_a_distance_for_large_windows(window_mean, n, method, drifted):
    window, golden = gauss(window_mean, n, 1), gauss(100, 500, 2)
    drift = numeric_drift(window, golden, DriftSettings())
    assert (drift.method, drift.drifted) == (method, drifted)
    if method == "ks" and drifted is not None:
        reference = stats.ks_2samp(window, golden)
        assert (drift.statistic, drift.p_value) == pytest.approx((reference.statistic, reference.pvalue))
    if method == "wasserstein":
        assert drift.statistic == pytest.approx(stats.wasserstein_distance(window, golden) / np.std(golden))


@pytest.mark.parametrize(
    "window_weights, n, method, drifted",
    [
        ([1, 1, 1], 300, "chi2", False),
        ([3, 1, 1], 300, "chi2", True),
        ([1, 1, 1], 3000, "jensen-shannon", False),
        ([0, 1, 1], 3000, "jensen-shannon", True),
    ],
)
def test_label_drift_uses_chi_squared_for_small_and_jensen_shannon_for_large(
    window_weights, n, method, drifted
):
    labels = ["a", "b", "c"]
    window = random.Random(3).choices(labels, weights=window_weights, k=n)
    golden = labels * 100
    drift = categorical_drift(window, golden, DriftSettings())
    assert (drift.method, drift.drifted) == (method, drifted)
    if method == "chi2":
        observed = [window.count(x) for x in labels]
        assert drift.p_value == pytest.approx(stats.chisquare(observed, [n / 3] * 3).pvalue, rel=1e-2)


@pytest.mark.parametrize(
    "task_type, output, valid",
    [
        ("extraction", '{"total": 12.5, "currency": "EUR"}', True),
        ("extraction", '```json\n{"total": 3}\n```', True),
        ("extraction", '{"total": "twelve"}', False),
        ("extraction", '{"currency": "EUR"}', False),
        ("extraction", "Sorry, no.", False),
        ("classification", "Billing.", True),
        ("classification", "I think it is billing", False),
        ("summarization", "  ", False),
    ],
)
def test_validity_follows_the_use_case_contract(task_type, output, valid):
    profile = UseCaseProfile("uc", task_type, labels=["billing", "technical"], json_schema=SCHEMA)
    assert is_valid(profile, output) is valid


@pytest.mark.parametrize(
    "messages, length",
    [
        ([{"role": "system", "content": "You route tickets."}, {"role": "user", "content": "hello"}], 5),
        (
            json.dumps(
                [
                    {"role": "user", "content": "abc"},
                    {"role": "assistant", "content": "x"},
                    {"role": "user", "content": "de"},
                ]
            ),
            5,
        ),
        ("not json at all", 15),
    ],
)
def test_input_length_counts_user_turns_only(messages, length):
    assert input_length(messages) == length


ROW = {
    "use_case": "uc",
    "model": "m",
    "requests": 100,
    "errors": 7,
    "error_rate": 0.07,
    "validity": 0.9,
    "validity_n": 93,
}


@pytest.mark.parametrize(
    "rule, row, state, severity",
    [
        ("error_rate", ROW, "breach", "warning"),
        ("error_rate", {**ROW, "error_rate": 0.2, "errors": 20}, "breach", "critical"),
        ("error_rate", {**ROW, "error_rate": 0.01, "errors": 1}, "ok", None),
        ("error_rate", {**ROW, "requests": 5}, "insufficient", None),
        ("error_rate", {**ROW, "requests": 0, "error_rate": None}, "no_data", None),
        ("validity", ROW, "breach", "warning"),
        ("validity", {**ROW, "validity": 0.99}, "ok", None),
        ("validity", {**ROW, "validity": None, "validity_n": 0}, "no_data", None),
    ],
)
def test_a_rule_tells_breach_ok_no_data_and_insufficient_apart(rule, row, state, severity):
    settings = monitor_settings({})
    found = evaluate(rule, settings.rules[rule], row)
    assert (found.state, found.severity) == (state, severity)


def test_plan_rules_override_only_the_keys_they_name_and_bad_keys_are_refused():
    settings = monitor_settings({"cooldown_minutes": 5, "rules": {"error_rate": {"critical": 0.3}}})
    rule = settings.rules["error_rate"]
    assert (settings.cooldown_minutes, rule.warning, rule.critical) == (5, 0.05, 0.3)
    with pytest.raises(ConfigError, match="rules.error_rate.critcal"):
        monitor_settings({"rules": {"error_rate": {"critcal": 0.3}}})


def test_the_last_eval_run_gives_the_first_window_its_latency_baseline(isolated_workspace):
    for run, p95 in (("eval-old", 900.0), ("eval-new", 640.0)):
        folder = isolated_workspace.run_dir(run)
        board = [
            {"model": "gpt-4o-mini", "split": "test", "latency_p95_ms": p95, "cost_per_1k_items": 0.2},
            {"model": "gpt-4o-mini", "split": "dev", "latency_p95_ms": 1.0, "cost_per_1k_items": 9.0},
        ]
        (folder / "verdict.json").write_text(
            json.dumps({"use_case": "uc", "verdict": {}, "leaderboard": board})
        )
        import os

        os.utime(folder / "verdict.json", (1, 1 if run == "eval-old" else 2))
    found = eval_baselines(isolated_workspace, {"uc": None})
    assert found == {
        ("uc", "gpt-4o-mini"): {"latency_p95_ms": 640.0, "cost_per_request": pytest.approx(0.0002)}
    }


@pytest.mark.parametrize(
    "decision, state", [("keep", "breach"), ("migrate", "ok"), ("inconclusive", "insufficient")]
)
def test_a_reevaluation_verdict_becomes_a_guardrail_result(decision, state):
    from workhorse.tasks.monitor.window import reevaluation_result

    found = reevaluation_result(
        "uc",
        "open/model",
        {"run_id": "r1", "verdict": {"decision": decision, "diff": -0.06, "reason": "6 points behind"}},
    )
    assert (found.state, found.model, found.value) == (state, "open/model", -0.06)


def test_a_promoted_use_case_that_falls_behind_alerts_once_and_resolves(isolated_workspace):
    from workhorse.tasks.monitor.window import alert_results, migrated_use_cases, reevaluation_result
    from workhorse.tasks.rollout.state import promote, start_rollout
    from workhorse.testing.slack_receiver import SlackReceiver

    plan = parse_plan(
        {
            "use_cases": {
                "uc": {"task_type": "classification", "labels": ["a", "b"]},
                "other": {"task_type": "qa"},
            },
            "monitoring": {"migrated": ["other"]},
        }
    )
    start_rollout(isolated_workspace, "uc", "gpt-4o-mini", "open/model")
    promote(isolated_workspace, "uc")
    migrated = migrated_use_cases(isolated_workspace, plan)
    assert migrated == {"other": None, "uc": "open/model"}
    verdict = lambda d: {"run_id": "r", "verdict": {"decision": d, "diff": -0.05, "reason": "behind"}}
    with SlackReceiver() as slack:
        for decision in ("keep", "keep", "migrate"):
            alert_results(
                isolated_workspace,
                plan,
                [reevaluation_result("uc", "open/model", verdict(decision))],
                webhook_url=slack.url,
            )
    assert [m["blocks"][0]["text"]["text"].split()[1] for m in slack.messages] == ["CRITICAL", "Resolved:"]
