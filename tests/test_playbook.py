"""The demo playbook's own pieces: what it evaluates, how it replays the incumbent, its policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from examples.acme.demo_traffic import DEMO_POLICY_OVERRIDES, demo_policy, replayed_answers
from examples.acme.playbook import generate_example_logs
from workhorse.config import load_plan
from workhorse.tasks.evaluate.run import evaluated_use_cases, hostings_for
from workhorse.tasks.golden.sources import GoldenSpec
from workhorse.tasks.golden.versions import write_version

ACME = Path(__file__).resolve().parents[1] / "examples" / "acme"


@pytest.mark.parametrize("latency, batch_evaluated", [("realtime", False), ("batch", True), (None, True)])
def test_batch_hosting_only_where_the_latency_need_allows(latency, batch_evaluated):
    assert ("batch" in hostings_for(latency)) is batch_evaluated
    assert {"api", "self_hosted"} <= set(hostings_for(latency))


def test_only_workhorse_use_cases_with_a_golden_set_are_evaluated(isolated_workspace):
    plan = load_plan(ACME / "workhorse.yaml")
    spec = GoldenSpec("review-sentiment", "classification", labels=["positive", "negative", "neutral"])
    item = spec.item(
        [{"role": "user", "content": "Lovely kettle"}], "positive", source="t", label_origin="human"
    )
    write_version(isolated_workspace, "review-sentiment", [item], [{"kind": "test"}])
    assert evaluated_use_cases(plan, isolated_workspace) == ["review-sentiment"]
    assert plan.use_cases["research-agent"].workload == "frontier"


def test_replay_serves_the_logged_answer_for_each_logged_request():
    spec = GoldenSpec("routing", "classification", labels=["a", "b"])
    silver = spec.item([{"role": "user", "content": "first"}], "a", source="log", label_origin="incumbent")
    relabelled = spec.item(
        [{"role": "user", "content": "second"}],
        "b",
        source="log",
        label_origin="human",
        metadata={"incumbent_output": "a"},
    )
    # A human relabel is what the incumbent should have said; the replay keeps what it did say.
    assert replayed_answers([silver, relabelled]) == {"first": "a", "second": "a"}


def test_demo_policy_changes_only_what_a_short_demo_needs():
    plan = load_plan(ACME / "workhorse.yaml")
    policy, original = demo_policy(plan), plan.rollout.model_dump()
    assert policy["steps"] == original["steps"]
    assert policy["guardrails"]["critical_error_rate"] == original["guardrails"]["critical_error_rate"]
    assert policy["guardrails"]["min_agreement"] == DEMO_POLICY_OVERRIDES["guardrails"]["min_agreement"]
    assert (policy["bake_time"], policy["min_requests"]) == (0, DEMO_POLICY_OVERRIDES["min_requests"])


def test_example_logs_are_generated_into_the_workspace(isolated_workspace):
    paths = generate_example_logs(isolated_workspace.subdir("logs"))
    assert len(paths) == 2 and all(Path(p).stat().st_size > 10_000 for p in paths)
    assert all(Path(p).parent == isolated_workspace.root / "logs" for p in paths)


@pytest.mark.parametrize(
    "hosting, needed", [(["self_hosted", "batch"], False), (["batch"], True), (["self_hosted"], False)]
)
def test_an_offline_engine_starts_only_for_a_batch_arm_without_a_served_twin(hosting, needed):
    from workhorse.config import Plan
    from workhorse.tasks.common.engines import needs_batch_engine

    plan = Plan.model_validate(
        {
            "incumbent": "gpt-4o-mini",
            "use_cases": {
                "reviews": {"task_type": "classification", "labels": ["a", "b"], "latency": "batch"}
            },
            "candidates": [{"model": "hosted_vllm/smollm2-135m-instruct", "hosting": hosting}],
        }
    )
    assert needs_batch_engine(plan) is needed


@pytest.mark.parametrize(
    "flags, kind",
    [
        ("fpu sse2 avx avx2 avx512f avx512bw", "avx512"),
        ("fpu avx avx2 fma", "avx2"),
        ("fpu sse4_2", "neither"),
    ],
)
def test_the_demo_names_the_cpus_vector_extensions(flags, kind):
    from examples.acme.demo import cpu_vector_extensions

    found, avx = cpu_vector_extensions(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert found == kind and avx == sorted(f for f in flags.split() if f.startswith("avx"))


@pytest.mark.parametrize(
    "flags, cpu_build, dtype",
    [
        ("fpu avx avx2 fma", True, "float32"),  # AVX2 only: bf16 is emulated, 4-6x slower
        ("fpu avx avx2 avx512f avx512bw", True, "float32"),  # AVX-512 without its bf16 extension
        ("fpu avx avx2 avx512f avx512_bf16", True, "bfloat16"),  # native bf16
        ("fpu avx avx2 amx_bf16 amx_tile", True, "bfloat16"),
        ("fpu avx avx2 fma", False, "bfloat16"),  # the GPU build of vLLM
    ],
)
def test_the_engine_runs_bf16_only_where_the_hardware_computes_it(flags, cpu_build, dtype, monkeypatch):
    from workhorse.tasks.common.engines import engine_dtype

    monkeypatch.delenv("WORKHORSE_ENGINE_DTYPE", raising=False)
    assert engine_dtype(f"processor\t: 0\nflags\t\t: {flags}\n", cpu_build=cpu_build) == dtype
    monkeypatch.setenv("WORKHORSE_ENGINE_DTYPE", "float16")
    assert engine_dtype(f"flags\t\t: {flags}\n", cpu_build=cpu_build) == "float16"
