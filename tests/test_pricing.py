"""Pricing: the playbook's figures from the price map and formulas, batch and self-hosted prices,
unknown models, the shortlist, and the break-even month."""

from __future__ import annotations

import logging

import pytest

import workhorse  # noqa: F401
from workhorse.config import Plan, SelfHostingPlan
from workhorse.tasks.audit.assessment import catalog_for
from workhorse.tasks.common import pricing


@pytest.fixture(scope="module")
def cost_map():
    return pricing.model_cost_map()


def test_playbook_api_figure_from_the_price_map(cost_map):
    """500M input + 100M output tokens/month on gpt-4o-mini = $135.00 (playbook)."""
    import litellm

    entry = cost_map["gpt-4o-mini"]
    cost = pricing.PriceCatalog().price("gpt-4o-mini").cost(500_000_000, 100_000_000)
    assert cost == pytest.approx(
        500e6 * entry["input_cost_per_token"] + 100e6 * entry["output_cost_per_token"]
    )
    assert cost == pytest.approx(
        sum(litellm.cost_per_token("gpt-4o-mini", prompt_tokens=500_000_000, completion_tokens=100_000_000))
    )
    assert f"${cost:.2f}" == "$135.00"


def test_playbook_batch_figure(cost_map):
    """The same month through the batch API = $67.50 (the map's *_cost_per_token_batches)."""
    entry = cost_map["gpt-4o-mini"]
    price = pricing.PriceCatalog().price("gpt-4o-mini", "batch")
    cost = price.cost(500_000_000, 100_000_000)
    assert cost == pytest.approx(
        500e6 * entry["input_cost_per_token_batches"] + 100e6 * entry["output_cost_per_token_batches"]
    )
    assert f"${cost:.2f}" == "$67.50" and price.source == "litellm batch"


def test_playbook_self_hosted_figure():
    """An H100 at $2/hour producing 158,760 tokens/hour = $0.0126 per 1k tokens."""
    gpu_hourly, tokens_per_hour = 2.0, 158_760
    price = pricing.SelfHosting(gpu_hourly, tokens_per_hour).price("hosted_vllm/x")
    assert price.per_1k_output == pytest.approx(gpu_hourly / tokens_per_hour * 1000)
    assert f"${price.per_1k_output:.4f}" == "$0.0126"


@pytest.mark.parametrize("discount", [0.5, 0.4])
def test_batch_price_falls_back_to_a_share_of_list(cost_map, discount):
    model = "deepinfra/Qwen/Qwen3-14B"
    entry = cost_map[model]
    assert "input_cost_per_token_batches" not in entry
    price = pricing.PriceCatalog(batch_discount=discount).price(model, "batch")
    assert price.input_per_token == pytest.approx(entry["input_cost_per_token"] * discount)
    assert price.output_per_token == pytest.approx(entry["output_cost_per_token"] * discount)


@pytest.mark.parametrize("logged", ["gpt-4o-mini", "openai/gpt-4o-mini", "gpt-4o-mini-2024-07-18"])
def test_logged_model_names_resolve(cost_map, logged):
    price = pricing.PriceCatalog().price(logged)
    assert price.input_per_token == cost_map["gpt-4o-mini"]["input_cost_per_token"]


def test_unknown_model_is_unpriced_with_a_warning_not_zero(caplog):
    catalog = pricing.PriceCatalog()
    with caplog.at_level(logging.WARNING):
        assert catalog.price("acme-internal-llm") is None
        assert catalog.price("acme-internal-llm") is None
    assert sum("acme-internal-llm" in r.message for r in caplog.records) == 1  # once, not per row
    table = catalog.prices_table(["acme-internal-llm", "gpt-4o-mini"])
    rows = {r["model"]: r for r in table.to_pylist()}
    assert (
        rows["acme-internal-llm"]["input_per_token"] is None
        and rows["acme-internal-llm"]["price_source"] == "unpriced"
    )
    assert rows["gpt-4o-mini"]["input_per_token"] > 0


def test_overrides_win_over_the_map():
    override = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
    price = pricing.PriceCatalog(overrides={"gpt-4o-mini": override}).price("gpt-4o-mini")
    assert (price.input_per_token, price.output_per_token, price.source) == (1e-6, 2e-6, "override")


def test_measured_throughput_replaces_the_configured_one(isolated_workspace):
    model = "hosted_vllm/smollm2-135m-instruct"
    plan = Plan(self_hosting=SelfHostingPlan(gpu_hourly_usd=2.0, tokens_per_hour=158_760))
    assert (
        catalog_for(plan, isolated_workspace.root)
        .price(model, "self_hosted")
        .source.startswith("self-hosted (configured")
    )
    pricing.record_throughput(isolated_workspace.root, model, tokens_per_s=100.0)
    price = catalog_for(plan, isolated_workspace.root).price(model, "self_hosted")
    assert price.output_per_token == pytest.approx(2.0 / 360_000)
    assert "measured" in price.source


def test_shortlist_is_open_weight_priced_ranked_and_diverse(cost_map):
    shortlist = pricing.shortlist_candidates(5e6, 1e6)
    assert 2 <= len(shortlist) <= 3
    costs = [p.cost(5e6, 1e6) for p in shortlist]
    assert costs == sorted(costs)
    for price in shortlist:
        entry = cost_map[price.model]
        assert pricing.OPEN_WEIGHT.search(price.model) and entry["mode"] == "chat"
        assert price.input_per_token == entry["input_cost_per_token"] > 0
    families = {pricing.OPEN_WEIGHT.search(p.model).group(0).lower().replace("-", "") for p in shortlist}
    assert len(families) == len(shortlist)


@pytest.mark.parametrize(
    "current, variable, fixed, one_off, month",
    [
        (5_000, 1_000, 0, 20_000, 5),  # 4,000/month repays 20,000 in month 5
        (5_000, 1_000, 0, 20_001, 6),  # a dollar more needs another month
        (10_000, 500, 3_500, 30_000, 5),  # fixed costs eat into the saving: 6,000/month
        (135, 12, 0, 0, 1),  # no one-off: pays from the first month
        (135, 20, 4_000, 10_000, None),  # the playbook's warning: low volume never pays for GPUs
    ],
)
def test_break_even_month(current, variable, fixed, one_off, month):
    view = pricing.total_cost_view(current, variable, fixed_monthly_usd=fixed, one_off_usd=one_off)
    assert view.break_even_month == month
    assert view.net_monthly_saving_usd == pytest.approx(current - variable - fixed)
    if month is None:
        assert view.reason.startswith("never")
    else:  # the cumulative saving covers the one-off exactly in that month, not before
        assert (
            month * view.net_monthly_saving_usd >= one_off > (month - 1) * view.net_monthly_saving_usd
            or one_off == 0
        )


def test_fixed_monthly_cost_of_self_hosting():
    plan = SelfHostingPlan(
        gpu_hourly_usd=2.0, gpus=2, engineering_fte=1.0, fte_monthly_usd=12_000, other_fixed_monthly_usd=300
    )
    assert plan.fixed_monthly_usd == pytest.approx(2.0 * 730 * 2 + 12_000 + 300)


def test_volume_for_break_even():
    assert pricing.volume_for_break_even(2e-7, 5e-8, 1_500) == pytest.approx(1_500 / 1.5e-7)
    assert pricing.volume_for_break_even(1e-7, 2e-7, 1_500) is None
