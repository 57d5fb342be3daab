"""parallel_eval against fake OpenAI-compatible servers whose answers a test scripts: variant
choice on dev, replay of logged incumbent answers, verdicts, batch files, skipped contenders."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.support.eval_kit import LABELS, evaluate, make_items, plan_file, scripted
from workhorse.tasks.common.runner import EvalResponse, ModelSpec
from workhorse.tasks.evaluate.matrix import (
    AS_LOGGED,
    Contender,
    build_requests,
    few_shot_examples,
    replay_incumbent,
)
from workhorse.tasks.golden.sources import GoldenSpec
from workhorse.tasks.golden.versions import write_version

CANARY = "sk-canary-eval-4c1d9e"


@pytest.fixture
def golden(isolated_workspace):
    items = make_items()
    write_version(isolated_workspace, "routing", items, [{"kind": "test"}])
    return items


def test_verdicts_follow_quality_and_variant_is_tuned_on_dev_only(
    prefect_server, golden, isolated_workspace, fake_openai_server, tmp_path, monkeypatch
):
    incumbent = fake_openai_server(answers=scripted(golden, 0.85, seed=1))
    good = fake_openai_server(answers=scripted(golden, 0.97, seed=2))
    poor = fake_openai_server(answers=scripted(golden, 0.3, seed=3))
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    monkeypatch.setenv("OPENAI_API_BASE", incumbent.url)
    plan = plan_file(
        tmp_path,
        [{"model": "openai/good", "api_base": good.url}, {"model": "openai/poor", "api_base": poor.url}],
    )

    summary = evaluate(isolated_workspace, plan, variants=["zero-shot", "few-shot"])

    assert summary["verdict"]["decision"] == "migrate", summary["verdict"]["reason"]
    assert summary["verdict"]["best_candidate"] == "openai/good"
    responses = pq.read_table(summary["responses"]).to_pylist()
    by_id = {item.item_id: item for item in golden}
    for model in ("openai/good", "openai/poor"):
        dev_variants = {
            r["prompt_variant"]
            for r in responses
            if r["model"] == model and by_id[r["item_id"]].split == "dev"
        }
        test_variants = {
            r["prompt_variant"]
            for r in responses
            if r["model"] == model and by_id[r["item_id"]].split == "test"
        }
        assert dev_variants == {"zero-shot", "few-shot"}
        assert test_variants == {summary["chosen_variants"][model]["variant"]}
    # The incumbent answered only test items, with its production prompt.
    incumbent_rows = [r for r in responses if r["model"] == "openai/incumbent-model"]
    assert {by_id[r["item_id"]].split for r in incumbent_rows} == {"test"}
    assert {r["prompt_variant"] for r in incumbent_rows} == {AS_LOGGED}
    poor_line = next(
        a for a in summary["leaderboard"] if a["model"] == "openai/poor" and a["split"] == "test"
    )
    assert poor_line["accuracy"] < 0.5
    for path in isolated_workspace.root.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path


def test_logged_incumbent_answers_are_replayed_not_paid(
    prefect_server, isolated_workspace, fake_openai_server, tmp_path, monkeypatch
):
    items = make_items(logged_model="gpt-4o-mini")
    write_version(isolated_workspace, "routing", items, [{"kind": "test"}])
    incumbent = fake_openai_server()
    candidate = fake_openai_server(answers=scripted(items, 0.95, seed=4))
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    monkeypatch.setenv("OPENAI_API_BASE", incumbent.url)
    plan = plan_file(tmp_path, [{"model": "openai/cand", "api_base": candidate.url}], incumbent="gpt-4o-mini")

    summary = evaluate(isolated_workspace, plan, variants=["zero-shot"])

    assert incumbent.records() == []  # every incumbent answer came from the logs
    rows = [r for r in pq.read_table(summary["responses"]).to_pylist() if r["model"] == "gpt-4o-mini"]
    assert rows and all(r["hosting"] == "replay" and r["cached"] for r in rows)


def test_candidates_without_credentials_are_skipped_and_said(
    prefect_server, golden, isolated_workspace, tmp_path
):
    plan = plan_file(tmp_path, [{"model": "deepinfra/Qwen/Qwen3-14B", "hosting": ["api"]}])
    summary = evaluate(isolated_workspace, plan)
    assert summary["verdict"]["decision"] == "inconclusive"
    assert any("Qwen3-14B" in reason and "API key" in reason for reason in summary["skipped"])
    assert any("replay" in reason for reason in summary["skipped"])


def test_few_shot_examples_come_from_dev_and_cover_labels(golden):
    dev = [item for item in golden if item.split == "dev"]
    examples = few_shot_examples(dev)
    assert {e.split for e in examples} == {"dev"}
    assert {e.reference for e in examples} == set(LABELS)
    contender = Contender("candidate", ModelSpec(model="m"), ("few-shot",))
    request = build_requests(contender, "few-shot", [examples[0]], examples)[0]
    assert examples[0].input[-1]["content"] not in [
        m["content"] for m in request.messages[:-1]
    ]  # never its own answer


def test_replay_only_matches_the_logged_model():
    items = make_items(10, logged_model="gpt-4o-mini")
    same, rest = replay_incumbent(
        Contender("incumbent", ModelSpec(model="openai/gpt-4o-mini"), ()), items, "r"
    )
    other, remaining = replay_incumbent(Contender("incumbent", ModelSpec(model="gpt-4o"), ()), items, "r")
    assert len(same) == 10 and rest == [] and other == [] and len(remaining) == 10


def test_candidate_key_and_endpoint_come_from_a_model_endpoint_block(
    prefect_server, golden, isolated_workspace, fake_openai_server, tmp_path
):
    from workhorse.blocks.endpoints import ModelEndpoint

    server = fake_openai_server(answers=scripted(golden, 0.9, seed=6))
    block_key = "sk-canary-block-91be"
    ModelEndpoint(model="openai/from-block", api_base=server.url, api_key=block_key).save(
        "eval-test", overwrite=True
    )
    plan = plan_file(
        tmp_path, [{"model": "openai/from-block", "endpoint": "eval-test"}]
    )  # no key in the environment

    summary = evaluate(isolated_workspace, plan, variants=["zero-shot"])

    assert not any("from-block" in reason for reason in summary["skipped"])
    assert {r["auth"] for r in server.records()} == {f"Bearer {block_key}"}
    for path in isolated_workspace.root.rglob("*"):
        if path.is_file():
            assert block_key.encode() not in path.read_bytes(), path


def test_a_missing_endpoint_block_is_a_clear_config_error(
    prefect_server, golden, isolated_workspace, tmp_path
):
    from workhorse.errors import ConfigError

    plan = plan_file(tmp_path, [{"model": "openai/x", "endpoint": "no-such-block"}])
    with pytest.raises(ConfigError, match="no-such-block"):
        evaluate(isolated_workspace, plan)


def test_weekly_reevaluation_alerts_once_when_a_migrated_model_falls_behind(
    prefect_server, golden, isolated_workspace, fake_openai_server, tmp_path, monkeypatch
):
    from workhorse.flows.reevaluate import weekly_reevaluation
    from workhorse.testing.slack_receiver import SlackReceiver

    incumbent = fake_openai_server(answers=scripted(golden, 0.9, seed=7))
    slipped = fake_openai_server(answers=scripted(golden, 0.3, seed=8))
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    monkeypatch.setenv("OPENAI_API_BASE", incumbent.url)
    plan = yaml.safe_load(open(plan_file(tmp_path, [{"model": "openai/slipped", "api_base": slipped.url}])))
    plan["monitoring"] = {"migrated": {"routing": "openai/slipped"}}
    (tmp_path / "workhorse.yaml").write_text(yaml.safe_dump(plan))

    with SlackReceiver() as slack:
        monkeypatch.setenv("WORKHORSE_SLACK_WEBHOOK_URL", slack.url)
        result = asyncio.run(
            weekly_reevaluation(
                workspace=str(isolated_workspace.root),
                plan=str(tmp_path / "workhorse.yaml"),
                refresh_golden=False,
            )
        )
        assert result["verdicts"] == {"routing": "keep"}
        assert len(slack.messages) == 1 and "routing" in json.dumps(slack.messages[0])


def test_replayed_rows_carry_the_logged_tokens_latency_and_cost(isolated_workspace):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from workhorse.tasks.evaluate.run import replay_for

    spec = GoldenSpec("routing", "classification", labels=LABELS)
    items = [
        spec.item(
            [{"role": "user", "content": f"logged {i}"}],
            "alpha",
            source="usage_log",
            label_origin="incumbent",
            metadata={"model": "gpt-4o-mini", "request_id": f"req-{i}"},
        )
        for i in range(3)
    ]
    logged = [
        {
            "request_id": "req-0",
            "prompt_tokens": 40,
            "completion_tokens": 2,
            "latency_ms": 650.0,
            "cost_usd": 7.2e-06,
        },
        {
            "request_id": "req-1",
            "prompt_tokens": 55,
            "completion_tokens": 3,
            "latency_ms": 700.0,
            "cost_usd": None,
        },
    ]
    pq.write_table(pa.Table.from_pylist(logged), isolated_workspace.subdir("usage") / "usage_log.parquet")
    incumbent = Contender("incumbent", ModelSpec(model="gpt-4o-mini"), (AS_LOGGED,))

    rows, remaining = replay_for(incumbent, items, "r", isolated_workspace)

    by_id = {row.item_id: row for row in rows}
    first, second, third = (by_id[item.item_id] for item in items)
    assert remaining == [] and (first.prompt_tokens, first.latency_ms, first.cost_usd) == (40, 650.0, 7.2e-06)
    import litellm

    prices = litellm.model_cost["gpt-4o-mini"]  # no logged spend: priced from the logged tokens
    assert second.cost_usd == pytest.approx(
        55 * prices["input_cost_per_token"] + 3 * prices["output_cost_per_token"]
    )
    assert third.cost_usd is None and third.prompt_tokens is None  # not in the log: unknown, not zero


@pytest.mark.parametrize(
    "count, size", [(0, 200), (1, 200), (200, 200), (201, 200), (804, 200), (10, 3), (5, 0)]
)
def test_shards_keep_every_request_in_order_and_are_as_equal_as_they_can_be(count, size):
    from workhorse.tasks.evaluate.matrix import shards

    parts = shards(list(range(count)), size)
    assert [r for part in parts for r in part] == list(range(count))
    lengths = [len(part) for part in parts]
    assert all(0 < n <= max(size, 1) for n in lengths)
    assert len(parts) == -(-count // max(size, 1))  # no more shards than the size asks for
    assert not lengths or max(lengths) - min(lengths) <= 1


# ---------------------------------------------------------------- scoring rows of extraction answers

ENTITIES_SCHEMA = {"type": "array", "items": {"type": "string"}}


def extraction_items(references, schema=ENTITIES_SCHEMA):
    spec = GoldenSpec("extract", "extraction", json_schema=schema)
    return [
        spec.item([{"role": "user", "content": f"note {i}"}], reference, source="test", label_origin="human")
        for i, reference in enumerate(references)
    ]


def answered(items, outputs, error_type=None):
    return [
        EvalResponse(
            run_id="r",
            item_id=item.item_id,
            model="m",
            hosting="api",
            prompt_variant="v",
            output=output,
            latency_ms=1.0,
            prompt_tokens=1,
            completion_tokens=1,
            cost_usd=0.0,
            error_type=error_type,
            cached=False,
        )
        for item, output in zip(items, outputs)
    ]


def test_score_rows_take_list_references_as_text_or_as_values():
    from workhorse.tasks.evaluate.matrix import score_rows

    stored = extraction_items([["Acme", "Globex", "Acme"]])[0]  # stored as JSON text, as the golden set does
    built = replace(stored, item_id="built-in-code", reference=["Acme", "Globex", "Acme"])  # already a value
    for item in (stored, built):
        [row] = score_rows([item], answered([item], ['["globex", "Acme"]']))
        # matched Acme + Globex = 2 of 2 predicted, of 3 expected: P 1, R 2/3, F1 4/5
        assert (row["correct"], row["value"]) == (False, pytest.approx(4 / 5))
        assert json.loads(row["reference"]) == ["Acme", "Globex", "Acme"] and row["error_type"] is None
        assert row["prediction"] == '["globex", "Acme"]'


def test_a_scoring_error_is_that_items_error_class_and_the_rest_are_scored(tmp_path):
    from workhorse.tasks.evaluate.matrix import score_rows

    good, broken, failed = extraction_items([["Acme"], ["Acme"], ["Acme"]])
    broken = replace(broken, json_schema={"type": "array", "items": {"type": "strnig"}})  # jsonschema chokes
    rows = answered([good, broken], ['["Acme"]', '["Acme"]']) + answered(
        [failed], [None], error_type="timeout"
    )

    scores = score_rows([good, broken, failed], rows)

    by_id = {row["item_id"]: row for row in scores}
    assert (by_id[good.item_id]["correct"], by_id[good.item_id]["error_type"]) == (True, None)
    row = by_id[broken.item_id]
    assert (row["correct"], row["value"], row["error_type"], row["prediction"]) == (
        False,
        0.0,
        "scoring_error",
        None,
    )
    assert json.loads(row["details"])["scoring_error"].startswith("UnknownType: Unknown type 'strnig'")
    assert by_id[failed.item_id]["error_type"] == "timeout"  # the call's own error is kept
    pq.write_table(pa.Table.from_pylist(scores), tmp_path / "scores.parquet")
    assert pq.read_table(tmp_path / "scores.parquet").column("error_type").to_pylist() == [
        None,
        "scoring_error",
        "timeout",
    ]


@pytest.mark.parametrize(
    "options, value",
    [
        (None, 1.0),  # multiset: the same three names
        ({"list_order": "multiset"}, 1.0),
        ({"list_order": "ordered"}, 2 / 3),  # longest common subsequence 2 of 3 both ways
    ],
)
def test_score_rows_pass_the_use_cases_list_order_to_the_scorer(options, value):
    from workhorse.tasks.evaluate.matrix import score_rows

    items = extraction_items([["a", "b", "c"]])
    [row] = score_rows(items, answered(items, ['["b", "a", "c"]']), options)
    assert row["value"] == pytest.approx(value)


def test_an_unknown_list_order_fails_before_any_item_is_scored():
    from workhorse.tasks.evaluate.matrix import score_rows

    items = extraction_items([["a"]])
    with pytest.raises(ValueError, match="list_order 'alphabetical'"):
        score_rows(items, answered(items, ['["a"]']), {"list_order": "alphabetical"})


def test_an_array_schema_extraction_runs_to_a_verdict_and_a_report(
    prefect_server, isolated_workspace, fake_openai_server, tmp_path, monkeypatch
):
    lines_schema = {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["sku", "qty"],
            "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
        },
    }
    rng = random.Random(3)
    references = [
        [{"sku": f"SKU-{rng.randint(100, 999)}", "qty": rng.randint(1, 5)} for _ in range(rng.randint(1, 3))]
        for _ in range(80)
    ]
    items = extraction_items(references, lines_schema)
    items = [
        replace_input(
            item, f"order {i}: " + "; ".join(f"{line['qty']} of {line['sku']}" for line in reference)
        )
        for i, (item, reference) in enumerate(zip(items, references))
    ]
    write_version(isolated_workspace, "extract", items, [{"kind": "test"}])
    text = {item.item_id: item.input[-1]["content"] for item in items}
    incumbent = fake_openai_server(answers={text[i.item_id]: i.reference for i in items})
    # The candidate drops the last line of every third order.
    candidate = fake_openai_server(
        answers={
            text[i.item_id]: json.dumps(
                json.loads(i.reference)[:-1] if n % 3 == 0 else json.loads(i.reference)
            )
            for n, i in enumerate(items)
        }
    )
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    monkeypatch.setenv("OPENAI_API_BASE", incumbent.url)
    plan = {
        "incumbent": "openai/incumbent-model",
        "use_cases": {"extract": {"task_type": "extraction", "json_schema": lines_schema}},
        "candidates": [{"model": "openai/cand", "api_base": candidate.url}],
        "quality_policy": {"min_items": 20, "non_inferiority_margin": 0.05},
    }
    (tmp_path / "workhorse.yaml").write_text(yaml.safe_dump(plan))

    from workhorse.flows.evaluate import parallel_eval

    summary = asyncio.run(
        parallel_eval(
            use_case="extract",
            workspace=str(isolated_workspace.root),
            plan=str(tmp_path / "workhorse.yaml"),
            variants=["zero-shot"],
        )
    )

    assert summary["verdict"]["decision"] == "keep", summary["verdict"]["reason"]  # a third of orders wrong
    scores = pq.read_table(summary["scores"]).to_pylist()
    assert len(pq.read_table(summary["responses"])) == len(scores) > 0
    incumbent_scores = [s for s in scores if s["model"] == "openai/incumbent-model"]
    assert incumbent_scores and all(s["correct"] and s["value"] == 1.0 for s in incumbent_scores)
    assert {s["error_type"] for s in scores} == {None}
    assert isolated_workspace.run_dir(summary["run_id"]).joinpath("report.html").exists()


def replace_input(item, text):
    """The item with another user text (and the id and split that follow from it)."""
    from workhorse.tasks.golden.item import make_item_id, split_for

    messages = [{"role": "user", "content": text}]
    item_id = make_item_id(item.use_case, messages)
    return replace(item, input=messages, item_id=item_id, split=split_for(item_id))


def test_prompt_tuning_uses_at_most_the_plans_tuning_items(
    prefect_server, golden, isolated_workspace, fake_openai_server, tmp_path, monkeypatch
):
    candidate = fake_openai_server(answers=scripted(golden, 0.9, seed=6))
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    plan = plan_file(tmp_path, [{"model": "openai/cand", "api_base": candidate.url}])
    with open(plan) as handle:
        document = yaml.safe_load(handle)
    document["eval"] = {"tuning_items": 10}
    with open(plan, "w") as handle:
        yaml.safe_dump(document, handle)

    summary = evaluate(isolated_workspace, plan, variants=["zero-shot", "few-shot"])

    by_id = {item.item_id: item for item in golden}
    dev_rows = [
        r for r in pq.read_table(summary["responses"]).to_pylist() if by_id[r["item_id"]].split == "dev"
    ]
    dev_ids = sorted(i.item_id for i in golden if i.split == "dev")
    for variant in ("zero-shot", "few-shot"):
        assert sorted(r["item_id"] for r in dev_rows if r["prompt_variant"] == variant) == dev_ids[:10]
    test_rows = [
        r
        for r in pq.read_table(summary["responses"]).to_pylist()
        if r["model"] == "openai/cand" and by_id[r["item_id"]].split == "test"
    ]
    assert len(test_rows) == sum(i.split == "test" for i in golden)  # the verdict still sees all of test


def test_the_embedded_model_served_and_batched_answers_each_prompt_once(
    isolated_workspace, fake_openai_server, monkeypatch
):
    """Same model, same prompt: the batch arm takes the served answer at its own price, and the
    engine is asked once (two engines on one CPU would compute it twice, side by side)."""
    import workhorse.tasks.evaluate.run as eval_run

    items = make_items(9)
    engine = fake_openai_server(answers=scripted(items, 1.0, seed=7))
    served = Contender(
        "candidate",
        ModelSpec(
            model=eval_run.EMBEDDED_LITELLM,
            name="smollm2 (self_hosted)",
            hosting="self_hosted",
            input_cost_per_token=2e-6,
            output_cost_per_token=2e-6,
        ),
        ("zero-shot",),
    )
    batched = Contender(
        "candidate",
        ModelSpec(
            model=eval_run.EMBEDDED_LITELLM,
            name="smollm2 (batch)",
            hosting="batch",
            input_cost_per_token=1e-6,
            output_cost_per_token=1e-6,
        ),
        ("zero-shot",),
    )
    requests = build_requests(served, "zero-shot", items) + build_requests(batched, "zero-shot", items)
    monkeypatch.setattr(eval_run, "run_offline_shard", lambda *a, **k: pytest.fail("the offline engine ran"))

    with eval_run.EvalContext(isolated_workspace, "twins", 50, engine_api_base=engine.url) as context:
        rows = asyncio.run(eval_run.generate(context, requests, "test"))

    assert len(engine.records()) == len(items)  # one call per prompt, not two
    by_arm = {(r.model, r.item_id): r for r in rows}
    for item in items:
        alone, twin = (
            by_arm[("smollm2 (self_hosted)", item.item_id)],
            by_arm[("smollm2 (batch)", item.item_id)],
        )
        assert twin.output == alone.output == item.reference and twin.hosting == "batch"
        tokens = twin.prompt_tokens + twin.completion_tokens
        assert twin.cost_usd == pytest.approx(tokens * 1e-6) and alone.cost_usd == pytest.approx(
            tokens * 2e-6
        )
        assert twin.latency_ms is None and alone.latency_ms is not None


def test_the_answer_budget_comes_from_dev_references_within_the_task_types_room():
    from workhorse.tasks.evaluate.matrix import MAX_TOKENS, answer_budget

    spec = GoldenSpec("invoices", "extraction", json_schema={"type": "object"})
    dev = [
        spec.item(
            [{"role": "user", "content": f"invoice {i}"}],
            {"total": i, "vendor": "x" * 30},
            source="t",
            label_origin="human",
        )
        for i in range(5)
    ]
    longest = max(len(item.reference) for item in dev)
    assert answer_budget(dev) == 2 * -(-longest // 3) + 16 < MAX_TOKENS["extraction"]
    long = [
        spec.item([{"role": "user", "content": "y"}], {"v": "z" * 2000}, source="t", label_origin="human")
    ]
    assert answer_budget(long) == MAX_TOKENS["extraction"]  # never above the task type's room
    assert answer_budget([]) is None
    request = build_requests(
        Contender("candidate", ModelSpec(model="openai/x"), ("zero-shot",)),
        "zero-shot",
        dev[:1],
        max_tokens=answer_budget(dev),
    )[0]
    assert request.params["max_tokens"] == answer_budget(dev)


def test_a_misspelt_prompt_variant_is_a_clear_error():
    from workhorse.errors import ConfigError
    from workhorse.tasks.evaluate.run import checked_variants

    assert checked_variants(None)[0] == "zero-shot" and checked_variants(["constrained"]) == ("constrained",)
    with pytest.raises(ConfigError, match="few-shot-constraind"):
        checked_variants(["zero-shot", "few-shot-constraind"])
