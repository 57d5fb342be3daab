"""LLM-as-judge: parsing, the win-rate statistics, and parallel_eval with scripted fake judges
(position-biased, length-biased, correct) whose calibration decides whether the verdict is trusted."""

from __future__ import annotations

import asyncio
import json
import math
import random

import pyarrow.parquet as pq
import pytest
import yaml

from workhorse.tasks.evaluate.judge import (
    JUDGE_UNPARSEABLE,
    PairOutcome,
    pairwise_table,
    parse_grade,
    parse_pairwise,
    resolve_pair,
    sign_test,
)
from workhorse.tasks.golden.sources import GoldenSpec
from workhorse.tasks.golden.versions import write_version

KEY = "sk-test-judge"
JUDGE_PRICE = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ('{"winner": "B"}', "B"),
        ('{"winner": "tie"}', "tie"),
        ("A", "A"),
        ("Tie", "tie"),
        ("Answer A is better", None),
        ('{"winner": "C"}', None),
        ('{"verdict": "A"}', None),
        ("", None),
        (None, None),
    ],
)
def test_a_pairwise_judgement_parses_only_from_its_constrained_forms(output, expected):
    assert parse_pairwise(output) == expected


@pytest.mark.parametrize(
    ("output", "expected"),
    [('{"score": 4}', 4), ("5", 5), ("1", 1), ("6", None), ("0", None), ("3.5", None), ("four", None)],
)
def test_a_rubric_grade_must_be_a_whole_number_on_the_scale(output, expected):
    assert parse_grade(output, scale=5) == expected


def test_an_unparseable_order_makes_the_pair_an_error_never_a_score():
    from workhorse.tasks.common.runner import EvalResponse

    def row(output):
        return EvalResponse("r", "i1", "judge", "api", "pairwise|c|AB", output, 1.0, 1, 1, 0.0, None, False)

    outcome = resolve_pair("i1", row('{"winner": "B"}'), row("I cannot decide"))
    assert outcome.outcome is None and outcome.error_type == JUDGE_UNPARSEABLE
    table = pairwise_table([outcome, PairOutcome("i2", "win", True)])
    assert table["n"] == 1 and table["errors"] == {JUDGE_UNPARSEABLE: 1}


def test_the_win_rate_interval_covers_a_known_true_win_rate_in_at_least_93_percent_of_200_runs():
    """A correct judge on a synthetic set: each item a win, tie or loss with known chances."""
    chances = {"win": 0.45, "tie": 0.2, "loss": 0.35}
    true_rate = chances["win"] + chances["tie"] / 2
    covered = 0
    for seed in range(200):
        rng = random.Random(seed)
        outcomes = [
            PairOutcome(str(i), rng.choices(list(chances), weights=list(chances.values()))[0], True)
            for i in range(150)
        ]
        table = pairwise_table(outcomes, n_resamples=1000, seed=seed)
        covered += table["ci_low"] <= true_rate <= table["ci_high"]
    assert covered >= 186, f"covered in {covered} of 200"


def test_the_sign_test_leaves_ties_out_and_matches_the_exact_binomial():
    wins, losses = 14, 5
    tail = sum(math.comb(wins + losses, k) for k in range(wins, wins + losses + 1)) / 2 ** (wins + losses)
    assert sign_test(wins, losses) == pytest.approx(min(1.0, 2 * tail))
    outcomes = [
        PairOutcome(str(i), o, True) for i, o in enumerate(["win"] * 14 + ["loss"] * 5 + ["tie"] * 30)
    ]
    table = pairwise_table(outcomes)
    assert (table["wins"], table["ties"], table["losses"]) == (14, 30, 5)
    assert table["sign_test_p"] == pytest.approx(sign_test(14, 5))
    assert table["win_rate"] == pytest.approx((14 + 15) / 49)


# --------------------------------------------------------------------------- through parallel_eval


def qa_items(count: int = 120):
    """QA items whose incumbent answer (logged) is right except on every fifth item, where it
    rambles: long and wrong. The candidate is always right and short."""
    spec = GoldenSpec("facts", "qa")
    items, incumbent_wrong = [], set()
    for index in range(count):
        question = f"question {index}: which city hosts depot {index}?"
        reference = f"city {index}"
        wrong = index % 5 == 0
        logged = (
            f"I believe it is probably somewhere near town {index + 7} but I am not sure"
            if wrong
            else reference
        )
        item = spec.item(
            [{"role": "user", "content": question}],
            reference,
            source="test",
            label_origin="human",
            metadata={"model": "gpt-4o-mini", "incumbent_output": logged},
        )
        items.append(item)
        if wrong:
            incumbent_wrong.add(item.item_id)
    return items, incumbent_wrong


def human_labels(path, count: int = 12):
    """Preferences where the right answer is the shorter one, shown first or second in turn."""
    rows = []
    for index in range(count):
        right, wrong = f"port {index}", f"it could be any of several harbours, maybe harbour {index + 3}"
        first = index % 2 == 0
        rows.append(
            {
                "input": f"which port ships crate {index}?",
                "reference": right,
                "answer_a": right if first else wrong,
                "answer_b": wrong if first else right,
                "preferred": "A" if first else "B",
            }
        )
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path.name


def judged_plan(tmp_path, candidate_url, judge_url, **judge):
    plan = {
        "incumbent": "gpt-4o-mini",
        "use_cases": {
            "facts": {
                "task_type": "qa",
                "judge": {"kind": "pairwise", "model": "openai/judge", "api_base": judge_url} | judge,
            }
        },
        "candidates": [{"model": "openai/cand", "api_base": candidate_url}],
        "quality_policy": {"min_items": 20, "non_inferiority_margin": 0.05},
        "pricing": {"overrides": {"openai/judge": JUDGE_PRICE}},
    }
    path = tmp_path / "workhorse.yaml"
    path.write_text(yaml.safe_dump(plan))
    return str(path)


def evaluate(workspace, plan):
    from workhorse.flows.evaluate import parallel_eval

    return asyncio.run(
        parallel_eval(use_case="facts", workspace=str(workspace.root), plan=plan, variants=["zero-shot"])
    )


@pytest.fixture
def facts(isolated_workspace, fake_openai_server, monkeypatch):
    items, incumbent_wrong = qa_items()
    write_version(isolated_workspace, "facts", items, [{"kind": "test"}])
    candidate = fake_openai_server(answers={i.input[-1]["content"]: i.reference for i in items})
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return items, incumbent_wrong, candidate


def test_a_judge_that_always_prefers_position_a_is_position_inconsistent_not_a_win(
    prefect_server, facts, isolated_workspace, fake_openai_server, tmp_path
):
    items, _, candidate = facts
    judge = fake_openai_server(judge="position_a")
    plan = judged_plan(tmp_path, candidate.url, judge.url)

    summary = evaluate(isolated_workspace, plan)

    verdict, figures = summary["verdict"], summary["judge"]
    table = figures["per_candidate"]["openai/cand"]
    tested = sum(1 for i in items if i.split == "test")
    assert table["n"] == tested and table["ties"] == tested and table["wins"] == table["losses"] == 0
    assert table["win_rate"] == 0.5 and table["position_inconsistency"] == 1.0
    assert verdict["decision"] == "inconclusive"
    assert "openai/judge" in verdict["reason"] and "flips with the answers' order" in verdict["reason"]
    assert figures["calibration"]["trusted"] is False and figures["decided"] is True
    # The judge's own cost line, recomputed from its stored calls at the plan's price.
    calls = pq.read_table(
        isolated_workspace.run_dir(summary["run_id"]) / "judge_responses.parquet"
    ).to_pylist()
    assert len(calls) == 2 * tested and all(c["model"] == "judge openai/judge" for c in calls)
    expected = sum(
        c["prompt_tokens"] * JUDGE_PRICE["input_cost_per_token"]
        + c["completion_tokens"] * JUDGE_PRICE["output_cost_per_token"]
        for c in calls
        if not c["cached"]  # identical prompts (two equal answers) are paid once
    )
    assert figures["cost_usd"] == pytest.approx(expected) and expected > 0
    stored = json.loads((isolated_workspace.run_dir(summary["run_id"]) / "verdict.json").read_text())
    assert stored["judge"]["cost_usd"] == pytest.approx(expected)
    assert "Judge" in (isolated_workspace.run_dir(summary["run_id"]) / "report.html").read_text()

    # Through the one runner: a re-run answers every judgement from the response cache.
    again = evaluate(isolated_workspace, plan)["judge"]
    assert again["calls"] == 0 and again["cached"] == 2 * tested and again["cost_usd"] == 0


def test_a_length_biased_judge_is_caught_by_human_labels_and_a_correct_one_is_trusted(
    prefect_server, facts, isolated_workspace, fake_openai_server, tmp_path
):
    items, incumbent_wrong, candidate = facts
    judge = fake_openai_server(judge="longer")
    plan = judged_plan(
        tmp_path, candidate.url, judge.url, human_labels=human_labels(tmp_path / "prefs.jsonl")
    )

    biased = evaluate(isolated_workspace, plan)

    calibration = biased["judge"]["calibration"]
    assert calibration["source"] == "human_labels" and calibration["n"] == 12
    assert calibration["agreement"] == 0.0 and calibration["position_inconsistency"] == 0.0
    assert biased["verdict"]["decision"] == "inconclusive"
    assert "agrees with the human preference labels 0%" in biased["verdict"]["reason"]

    # Another judge model (the same one would be answered from the response cache).
    fair_judge = fake_openai_server(judge="correct")
    labels = human_labels(tmp_path / "prefs.jsonl")
    plan = judged_plan(
        tmp_path, candidate.url, fair_judge.url, model="openai/fair-judge", human_labels=labels
    )
    fair = evaluate(isolated_workspace, plan)

    assert (
        fair["judge"]["calibration"]["trusted"] is True and fair["judge"]["calibration"]["agreement"] == 1.0
    )
    tested = [i for i in items if i.split == "test"]
    table = fair["judge"]["per_candidate"]["openai/cand"]
    wins = sum(i.item_id in incumbent_wrong for i in tested)
    assert (table["wins"], table["ties"], table["losses"]) == (wins, len(tested) - wins, 0)
    assert fair["verdict"]["decision"] == "migrate", fair["verdict"]["reason"]
    assert "pairwise judge openai/fair-judge" in fair["verdict"]["reason"]
    assert fair["verdict"]["diff"] == pytest.approx(table["win_rate"] - 0.5)


def test_a_rubric_judge_grades_each_answer_and_is_calibrated_on_the_reference(
    prefect_server, facts, isolated_workspace, fake_openai_server, tmp_path
):
    from typer.testing import CliRunner

    from workhorse.cli import app

    items, incumbent_wrong, candidate = facts
    judge = fake_openai_server(judge="correct")
    plan = judged_plan(tmp_path, candidate.url, judge.url, kind="rubric", scale=5)

    result = CliRunner().invoke(
        app,
        [
            "eval",
            "facts",
            "--plan",
            plan,
            "--variant",
            "zero-shot",
            "--workspace",
            str(isolated_workspace.root),
        ],
    )

    assert result.exit_code == 0, result.output
    assert "judge openai/judge (rubric)" in result.output and "trusted" in result.output
    run = next((isolated_workspace.root / "runs").iterdir())
    summary = json.loads((run / "verdict.json").read_text())
    figures = summary["judge"]
    tested = [i for i in items if i.split == "test"]
    wrong = sum(i.item_id in incumbent_wrong for i in tested)
    assert figures["per_candidate"]["openai/cand"]["grades"] == {"5": len(tested)}
    assert figures["per_candidate"]["incumbent"]["grades"] == {"1": wrong, "5": len(tested) - wrong}
    assert figures["calibration"]["agreement"] > 0.7 and figures["calibration"]["trusted"]
    assert summary["verdict"]["decision"] == "migrate" and "rubric grade" in summary["verdict"]["reason"]
    assert summary["verdict"]["diff"] == pytest.approx(wrong / len(tested))  # grades 1 -> 0, 5 -> 1


def test_the_team_overrides_the_judge_prompt_by_path_and_a_broken_one_is_refused(tmp_path):
    from workhorse.config import JudgePlan
    from workhorse.errors import ConfigError
    from workhorse.tasks.evaluate.judge import JudgePrompts

    (tmp_path / "ours.txt").write_text("Q: $input\nFirst: $answer_a\nSecond: $answer_b\nWho wins?")
    judge = JudgePlan(kind="pairwise", model="openai/judge", prompt_file="ours.txt")
    messages = JudgePrompts.from_plan(judge, tmp_path).render(judge, "why?", None, answer_a="x", answer_b="y")
    assert messages == [{"role": "user", "content": "Q: why?\nFirst: x\nSecond: y\nWho wins?"}]

    (tmp_path / "broken.txt").write_text("Q: $input\nOnly one answer: $answer_a")
    with pytest.raises(ConfigError, match=r"lacks \$answer_b"):
        JudgePrompts.from_plan(judge.model_copy(update={"prompt_file": "broken.txt"}), tmp_path)


def test_a_bad_human_label_row_is_an_error_naming_it(tmp_path):
    from workhorse.errors import ConfigError
    from workhorse.tasks.evaluate.judge import read_human_labels

    path = tmp_path / "prefs.csv"
    path.write_text("input,answer_a,answer_b,preferred\nq1,a,b,A\nq2,a,b,maybe\n")
    with pytest.raises(ConfigError, match="row 2"):
        read_human_labels(path)


@pytest.mark.integration
def test_the_embedded_model_judges_through_real_vllm_with_every_judgement_parsed(
    prefect_server, vllm_server, isolated_workspace, fake_openai_server, tmp_path, monkeypatch
):
    """Weak as a judge, but the path is real: the choice constraint reaches vLLM, so each of the
    135M model's judgements is one of A, B or tie, priced at the self-hosting rate."""
    items, _ = qa_items(40)
    write_version(isolated_workspace, "facts", items, [{"kind": "test"}])
    candidate = fake_openai_server(answers={i.input[-1]["content"]: i.reference for i in items})
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    plan = judged_plan(tmp_path, candidate.url, vllm_server.api_base, model="embedded")

    summary = evaluate(isolated_workspace, plan)

    tested = sum(1 for i in items if i.split == "test")
    table = summary["judge"]["per_candidate"]["openai/cand"]
    assert table["n"] == tested and table["errors"] == {}
    assert table["wins"] + table["ties"] + table["losses"] == tested
    calls = pq.read_table(
        isolated_workspace.run_dir(summary["run_id"]) / "judge_responses.parquet"
    ).to_pylist()
    assert {c["output"] for c in calls} <= {"A", "B", "tie"} and {c["hosting"] for c in calls} == {
        "self_hosted"
    }
    assert summary["judge"]["cost_usd"] is not None and summary["judge"]["cost_usd"] > 0
    assert summary["verdict"]["decision"] in ("migrate", "keep", "inconclusive")


def test_a_judge_whose_judgements_fail_is_not_trusted_and_says_why():
    from workhorse.config import JudgePlan
    from workhorse.tasks.common.runner import ModelSpec
    from workhorse.tasks.evaluate.judge import JudgeRun, calibrate

    run = JudgeRun(JudgePlan(kind="pairwise", model="openai/judge"), ModelSpec("openai/judge"))
    run.arms = {"incumbent": ("inc", "as-logged"), "cand": ("cand", "zero-shot")}
    run.pairs["cand"] = [PairOutcome(f"i{n}", "win", True) for n in range(12)] + [
        PairOutcome(f"e{n}", None, error_type=JUDGE_UNPARSEABLE) for n in range(3)
    ]
    scores = [
        {"model": model, "prompt_variant": variant, "item_id": f"i{n}", "correct": model == "cand"}
        for n in range(12)
        for model, variant in run.arms.values()
    ]

    calibration = calibrate(run, scores, "f1", max_error_rate=0.05)

    assert (calibration.agreement, calibration.n) == (1.0, 12)  # it prefers the right answer each time
    assert (calibration.judgements, calibration.failed) == (15, 3)
    assert calibration.problems == ("3 of its 15 judgements failed (3 judge_unparseable)",)


def test_the_judge_is_held_to_the_plans_limits_like_any_model(tmp_path):
    from workhorse.config import JudgePlan, parse_plan
    from workhorse.tasks.evaluate.judge import judge_spec

    plan = parse_plan({"limits": {"openai/judge": {"max_concurrency": 3, "rpm": 60, "tpm": 9000}}}, "test")
    spec = judge_spec(
        JudgePlan(kind="pairwise", model="openai/judge", api_base="http://127.0.0.1:9"), plan, tmp_path
    )
    assert (spec.max_concurrency, spec.rpm, spec.tpm) == (3, 60, 9000)
