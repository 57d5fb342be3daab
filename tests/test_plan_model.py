"""The plan is one typed model: every section declares its keys, a misspelt key is an error that
names its path, its line and the key it resembles, and one loader serves every flow."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import yaml

from workhorse import config
from workhorse.config import (
    AlertsPlan,
    MonitorSettings,
    Plan,
    QualityPolicy,
    load_plan,
    parse_plan,
    plan_from,
)
from workhorse.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
ACME = REPO / "examples" / "acme" / "workhorse.yaml"


def acme_with(tmp_path: Path, line_start: str, old: str, new: str) -> tuple[Path, int]:
    """Acme's plan with ``old`` -> ``new`` on the one line starting with ``line_start``, and that
    line's number."""
    lines = ACME.read_text().splitlines()
    [number] = [n for n, line in enumerate(lines, 1) if line.startswith(line_start)]
    lines[number - 1] = lines[number - 1].replace(old, new, 1)
    path = tmp_path / "workhorse.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path, number


# Each row: the line to spoil (its start), the key as written -> misspelt, the path reported, the suggestion.
TYPOS = [
    ("quality_policy:", "quality_policy", "quality_polcy", "quality_polcy", "quality_policy"),
    (
        "  non_inferiority_margin:",
        "non_inferiority_margin",
        "non_inferiority_margn",
        "quality_policy.non_inferiority_margn",
        "non_inferiority_margin",
    ),
    ("    alpha: 0.01", "alpha", "alpah", "rollout.guardrails.alpah", "alpha"),
    ("    owner: Lea Hoffmann", "owner", "ownr", "use_cases.invoice-extraction.ownr", "owner"),
    ("    golden: {size: 40}", "size", "sise", "use_cases.invoice-extraction.golden.sise", "size"),
    ("    notes: SmolLM2", "notes", "note", "candidates.2.note", "notes"),
    ("    error_rate: {warning", "critical", "critcal", "monitoring.rules.error_rate.critcal", "critical"),
    ("  drift: {alpha", "large_sample", "large_samples", "monitoring.drift.large_samples", "large_sample"),
    ("  slack_channel:", "slack_channel", "slack_chanel", "alerts.slack_chanel", "slack_channel"),
]


@pytest.mark.parametrize("line_start, key, typo, path, suggestion", TYPOS, ids=[row[3] for row in TYPOS])
def test_a_misspelt_key_names_its_path_line_and_the_key_it_resembles(
    tmp_path, line_start, key, typo, path, suggestion
):
    plan_file, line = acme_with(tmp_path, line_start, key, typo)
    with pytest.raises(ConfigError) as caught:
        load_plan(plan_file)
    assert str(caught.value) == f"{plan_file} line {line}: unknown key {path} (did you mean {suggestion}?)"


def test_every_wrong_key_is_reported_at_once(tmp_path):
    plan_file = tmp_path / "workhorse.yaml"
    plan_file.write_text(
        "incumbent: gpt-4o-mini\nquality_policy:\n  min_item: 50\n"
        "rollout:\n  steps: [5, 100]\n  bake_tme: 10m\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_plan(plan_file)
    assert str(caught.value).splitlines() == [
        f"{plan_file} line 3: unknown key quality_policy.min_item (did you mean min_items?)",
        f"{plan_file} line 6: unknown key rollout.bake_tme (did you mean bake_time?)",
    ]


def test_an_unknown_key_unlike_any_declared_one_lists_the_declared_keys():
    with pytest.raises(
        ConfigError, match=r"^plan parameter: unknown key alerts\.pager \(known keys: slack_block, "
    ):
        parse_plan({"alerts": {"pager": "ops"}}, "plan parameter")


def test_a_wrong_value_gives_its_line_too(tmp_path):
    plan_file, line = acme_with(tmp_path, "  min_items:", "100", "0")
    with pytest.raises(
        ConfigError, match=rf"line {line}: quality_policy\.min_items: Input should be greater"
    ):
        load_plan(plan_file)


def test_the_acme_plan_validates_with_every_key_it_writes():
    plan = load_plan(ACME)
    assert (
        plan.use_cases["ticket-routing"].golden.size == 60 and plan.use_cases["research-agent"].golden is None
    )
    assert plan.candidates[2].notes.startswith("SmolLM2")
    assert isinstance(plan.monitoring, MonitorSettings) and isinstance(plan.alerts, AlertsPlan)
    assert plan.alerts.slack_channel == "#llm-migration" and plan.alerts.slack_block == "default"
    # A rule in the plan overrides only the keys it names; the rest keep their defaults.
    assert plan.monitoring.rules["error_rate"].metric == "error_rate"
    assert plan.monitoring.rules["validity"].direction == "below"


def readme_yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


@pytest.mark.parametrize("block", readme_yaml_blocks(), ids=lambda block: block.split(":")[0])
def test_the_readmes_yaml_snippets_validate(block):
    """Plan snippets parse as plans; the LiteLLM proxy config (model_list) names a plugin that exists."""
    loaded = yaml.safe_load(block)
    if "model_list" not in loaded:
        assert isinstance(parse_plan(loaded, "README.md"), Plan)
        return
    module, _, name = loaded["litellm_settings"]["callbacks"].rpartition(".")
    assert getattr(importlib.import_module(module), name) is not None
    aliases = {m["model_name"] for m in loaded["model_list"]}
    for fallback in loaded["router_settings"]["fallbacks"]:
        assert all(k in aliases and set(v) <= aliases for k, v in fallback.items())


def test_the_readme_has_yaml_snippets_to_check():
    assert len(readme_yaml_blocks()) >= 2


def test_the_quality_policy_is_one_class():
    from workhorse.tasks.evaluate import decision

    assert decision.QualityPolicy is config.QualityPolicy
    policy = parse_plan(
        {
            "quality_policy": {
                "max_error_rate": 0.1,
                "max_p95_latency_ms": 900,
                "primary_metric": {"qa": "exact_match"},
            }
        }
    ).quality_policy
    assert isinstance(policy, QualityPolicy) and (policy.max_error_rate, policy.max_p95_latency_ms) == (
        0.1,
        900,
    )
    assert (policy.metric_for("qa"), policy.metric_for("summarization")) == ("exact_match", "rougeL")
    assert QualityPolicy.from_dict(policy) is policy


def test_one_loader_takes_a_path_a_folder_a_dict_or_a_plan(tmp_path):
    (tmp_path / "workhorse.yaml").write_text(ACME.read_text())
    from_file, from_folder = plan_from(str(tmp_path / "workhorse.yaml")), plan_from(tmp_path)
    assert from_file == from_folder and from_file.folder == tmp_path
    from_dict = plan_from({"incumbent": "openai/x"})
    assert from_dict.incumbent == "openai/x" and from_dict.folder is None
    assert plan_from(from_dict) is from_dict
    assert plan_from(None, tmp_path) == from_file  # the workspace's plan
    with pytest.raises(
        ConfigError, match=r"^plan parameter: unknown key incumbnet \(did you mean incumbent\?\)"
    ):
        plan_from({"incumbnet": "openai/x"})


def test_the_flows_read_their_plan_with_the_one_loader():
    from workhorse.flows import audit, golden

    assert golden.plan_from is audit.plan_from is config.plan_from
    assert not hasattr(golden, "read_plan") and not hasattr(audit, "read_plan")
