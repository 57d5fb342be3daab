"""No verdict without evidence, a verdict per candidate, one price source, and paid answers
that survive scoring: parallel_eval against fake servers whose answers the tests script."""

from __future__ import annotations

import asyncio
import csv
import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.support.eval_kit import LABELS, evaluate, make_items, plan_file, scripted
from workhorse.tasks.golden.sources import GoldenSpec, import_promptfoo_csv
from workhorse.tasks.golden.versions import write_version
from workhorse.testing.fake_openai import Faults

KEY = "sk-test-verdict-evidence"


@pytest.fixture
def promptfoo_golden(isolated_workspace, tmp_path):
    """A golden set imported from a promptfoo CSV: references, and no incumbent answer anywhere."""
    rows = [{"text": item.input[-1]["content"], "__expected": item.reference} for item in make_items()]
    path = tmp_path / "tests.csv"
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=["text", "__expected"])
        writer.writeheader()
        writer.writerows(rows)
    items = import_promptfoo_csv(path, GoldenSpec("routing", "classification", labels=LABELS))
    write_version(isolated_workspace, "routing", items, [{"kind": "promptfoo"}])
    return items


def always_right(items) -> dict[str, str]:
    return scripted(items, 1.0, seed=0)


def test_an_incumbent_whose_every_call_failed_is_not_evaluated_never_scored_zero(
    prefect_server, promptfoo_golden, isolated_workspace, fake_openai_server, tmp_path, monkeypatch
):
    down = fake_openai_server(faults=Faults(server_error=1.0))
    candidate = fake_openai_server(answers=always_right(promptfoo_golden))
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_API_BASE", down.url)  # the incumbent's calls all fail
    plan = plan_file(tmp_path, [{"model": "openai/good", "api_base": candidate.url}])

    summary = evaluate(isolated_workspace, plan, variants=["zero-shot"])

    verdict = summary["verdict"]
    assert verdict["decision"] == "inconclusive", verdict["reason"]
    assert verdict["candidates"][0]["why"] == "incumbent_not_evaluated"
    assert "not evaluated" in verdict["reason"] and "server_error" in verdict["reason"]
    line = next(l for l in summary["leaderboard"] if l["model"] == "openai/incumbent-model")
    assert line["answered"] == 0 and line["accuracy"] is None  # not a measured 0 %


def test_no_key_and_nothing_logged_is_inconclusive_unless_the_plan_sets_an_absolute_bar(
    prefect_server, promptfoo_golden, isolated_workspace, fake_openai_server, tmp_path, monkeypatch
):
    candidate = fake_openai_server(answers=scripted(promptfoo_golden, 0.97, seed=2))
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    incumbent = "anthropic/claude-3-haiku-20240307"  # no ANTHROPIC_API_KEY here, nothing logged
    plan = plan_file(tmp_path, [{"model": "openai/good", "api_base": candidate.url}], incumbent=incumbent)

    without_bar = evaluate(isolated_workspace, plan, variants=["zero-shot"])["verdict"]
    assert without_bar["decision"] == "inconclusive"
    assert "no logged answers" in without_bar["reason"] and "min_score" in without_bar["reason"]

    plan = plan_file(
        tmp_path,
        [{"model": "openai/good", "api_base": candidate.url}],
        incumbent=incumbent,
        quality_policy={"min_score": 0.9},
    )
    with_bar = evaluate(isolated_workspace, plan, variants=["zero-shot"])["verdict"]
    chosen = with_bar["candidates"][0]
    assert with_bar["decision"] == "migrate" and chosen["against"] == "min_score", with_bar["reason"]
    assert "absolute bar" in with_bar["reason"] and "90.0%" in with_bar["reason"]
    assert chosen["ci_low"] >= 0.9
    # Against the bar the number is the candidate's own accuracy, recomputed here from its stored scores.
    summary = json.loads(
        (isolated_workspace.run_dir(newest_run(isolated_workspace)) / "verdict.json").read_text()
    )
    scores = [
        r
        for r in pq.read_table(summary["scores"]).to_pylist()
        if r["model"] == "openai/good" and r["split"] == "test"
    ]
    assert chosen["diff"] == pytest.approx(sum(r["correct"] for r in scores) / len(scores))


def newest_run(workspace) -> str:
    """The newest run's id (runs are named by use case and time)."""
    runs = sorted(p for p in (workspace.root / "runs").iterdir() if (p / "verdict.json").exists())
    return max(runs, key=lambda p: (p / "verdict.json").stat().st_mtime).name


def test_three_candidates_get_three_verdicts_in_verdict_json_and_the_cli(
    prefect_server, isolated_workspace, fake_openai_server, tmp_path, monkeypatch
):
    from workhorse.cli import app

    items = make_items(logged_model="gpt-4o-mini")
    write_version(isolated_workspace, "routing", items, [{"kind": "test"}])
    servers = {
        name: fake_openai_server(answers=scripted(items, accuracy, seed))
        for name, accuracy, seed in (("good", 1.0, 1), ("fair", 0.93, 2), ("poor", 0.3, 3))
    }
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    overrides = {
        "openai/good": {"input_cost_per_token": 1e-7, "output_cost_per_token": 4e-7},
        "openai/poor": {"input_cost_per_token": 5e-8, "output_cost_per_token": 2e-7},
    }
    plan = plan_file(
        tmp_path,
        [{"model": f"openai/{name}", "api_base": server.url} for name, server in servers.items()],
        incumbent="gpt-4o-mini",
        pricing={"overrides": overrides},
    )

    result = CliRunner().invoke(
        app,
        [
            "eval",
            "routing",
            "--plan",
            plan,
            "--variant",
            "zero-shot",
            "--workspace",
            str(isolated_workspace.root),
        ],
    )

    assert result.exit_code == 0, result.output
    verdict = json.loads(
        (isolated_workspace.run_dir(newest_run(isolated_workspace)) / "verdict.json").read_text()
    )
    candidates = {c["model"]: c for c in verdict["verdict"]["candidates"]}
    assert set(candidates) == {"openai/good", "openai/fair", "openai/poor"}
    assert candidates["openai/poor"]["decision"] == "keep" and candidates["openai/poor"]["ci_high"] < -0.05
    assert all(c["reason"] and c["n"] > 50 for c in candidates.values())
    assert sum(c["chosen"] for c in candidates.values()) == 1
    for name in ("openai/good", "openai/fair", "openai/poor"):
        assert name in result.output
    assert "lost" in verdict["verdict"]["summary"]
    # One price source: the plan's overrides price the eval's rows; a model nobody prices stays unpriced.
    rows = pq.read_table(verdict["responses"]).to_pylist()
    for row in (r for r in rows if r["model"] == "openai/good"):
        assert row["cost_usd"] == pytest.approx(row["prompt_tokens"] * 1e-7 + row["completion_tokens"] * 4e-7)
    assert all(r["cost_usd"] is None for r in rows if r["model"] == "openai/fair")
    fair = next(l for l in verdict["leaderboard"] if l["model"] == "openai/fair" and l["split"] == "test")
    assert fair["cost_per_1k_items"] is None
    report = (isolated_workspace.run_dir(verdict["run_id"]) / "report.html").read_text()
    assert 'id="unpriced-band"' in report and "openai/fair · zero-shot (unpriced)" in report


def test_a_crash_in_scoring_keeps_the_paid_answers_and_the_rerun_makes_no_call(
    prefect_server, isolated_workspace, fake_openai_server, tmp_path, monkeypatch
):
    import workhorse.tasks.evaluate.run as eval_run

    items = make_items(logged_model="gpt-4o-mini")
    write_version(isolated_workspace, "routing", items, [{"kind": "test"}])
    candidate = fake_openai_server(answers=scripted(items, 0.9, seed=4))
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    plan = plan_file(tmp_path, [{"model": "openai/cand", "api_base": candidate.url}], incumbent="gpt-4o-mini")

    real_scorer, calls = eval_run.score_rows, []

    def broken_scorer(
        items, rows, options=None
    ):  # scores dev, then breaks on the test phase: every answer is paid by then
        calls.append(len(rows))
        if len(calls) > 1:
            raise RuntimeError("scorer bug")
        return real_scorer(items, rows, options)

    with monkeypatch.context() as patch:
        patch.setattr(eval_run, "score_rows", broken_scorer)
        with pytest.raises(Exception, match="scorer bug"):
            evaluate(isolated_workspace, plan, variants=["zero-shot", "few-shot"], run_id="eval-crash")
    paid = len(candidate.records())
    stored = pq.read_table(isolated_workspace.run_dir("eval-crash") / "responses.parquet").to_pylist()
    assert paid > 0 and len([r for r in stored if r["model"] == "openai/cand"]) == paid

    summary = evaluate(isolated_workspace, plan, variants=["zero-shot", "few-shot"], run_id="eval-crash")

    assert len(candidate.records()) == paid  # resumed from the checkpoints: zero new calls
    assert summary["verdict"]["decision"] in ("migrate", "inconclusive", "keep")


def test_a_fully_cached_rerun_starts_no_engine(isolated_workspace, monkeypatch):
    """Answers of the embedded model already in the cache: no server start, no offline engine."""
    import workhorse.tasks.evaluate.run as eval_run
    from workhorse.tasks.common.runner import ResponseCache, response_row
    from workhorse.tasks.evaluate.matrix import Contender, build_requests

    items = make_items(12)
    served = Contender(
        "candidate",
        eval_run.ModelSpec(model=eval_run.EMBEDDED_LITELLM, hosting="self_hosted"),
        ("zero-shot",),
    )
    batched = Contender(
        "candidate",
        eval_run.ModelSpec(model=eval_run.EMBEDDED_LITELLM, name="smollm2 (batch)", hosting="batch"),
        ("zero-shot",),
    )
    requests = build_requests(served, "zero-shot", items) + build_requests(batched, "zero-shot", items)
    cache = ResponseCache(isolated_workspace)
    for request in requests:
        cache.put(
            request.cache_key,
            response_row(
                request, "earlier", output="alpha", prompt_tokens=9, completion_tokens=1, latency_ms=5.0
            ),
        )
    cache.close()

    def no_engine(*args, **kwargs):
        raise AssertionError("an engine was started for answers already in the cache")

    monkeypatch.setattr(eval_run.EvalContext, "server_base", no_engine)
    monkeypatch.setattr(eval_run, "run_offline_shard", no_engine)
    with eval_run.EvalContext(isolated_workspace, "eval-cached", shard_size=50) as context:
        rows = asyncio.run(
            eval_run.generate.fn(context, requests, phase="test")
            if hasattr(eval_run.generate, "fn")
            else eval_run.generate(context, requests, "test")
        )

    assert len(rows) == len(requests) and all(r.cached and r.output == "alpha" for r in rows)
