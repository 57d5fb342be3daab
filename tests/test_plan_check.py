"""`workhorse plan check`: a plan read as the flows read it, and what each use case will do said
before anything runs; a misspelt key fails with its path, and nothing is written."""

from __future__ import annotations

import re

import yaml
from typer.testing import CliRunner

from workhorse.cli import app


def write_plan(tmp_path, **extra) -> str:
    labels = tmp_path / "labels.csv"
    labels.write_text("text,label\nhello,a\n")
    plan = {
        "incumbent": "openai/gpt-4o-mini",
        "use_cases": {
            "routing": {
                "task_type": "classification",
                "labels": ["a", "b"],
                "golden": {"sources": [{"kind": "labels", "path": "labels.csv"}], "test_fraction": 0.3},
            },
            "invoices": {"task_type": "extraction", "golden": {"size": 75}},
            "agent": {"task_type": "generation", "workload": "frontier"},
        },
        "candidates": [
            {"model": "openai/local-qwen", "api_base": "http://127.0.0.1:9/v1"},
            {"model": "deepinfra/Qwen/Qwen3-14B", "hosting": ["api", "batch"]},
        ],
        "quality_policy": {"primary_metric": {"extraction": "f1"}, "min_items": 40},
        **extra,
    }
    path = tmp_path / "workhorse.yaml"
    path.write_text(yaml.safe_dump(plan))
    return str(path)


def blocks(output: str) -> dict[str, str]:
    """The output's block per use case (its name on a line of its own, then indented lines)."""
    found, name = {}, None
    for line in output.splitlines():
        if re.match(r"\d\d:\d\d:\d\d", line):  # a log line (e.g. the price map lacks a model)
            continue
        if line and not line.startswith(" ") and not line.startswith("plan OK"):
            name = line.strip()
            found[name] = ""
        elif name and line.startswith("  "):
            found[name] += line.strip() + "\n"
    return found


def test_each_use_case_says_its_golden_set_contenders_metric_and_skips(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-plan-check")
    result = CliRunner().invoke(app, ["plan", "check", "--plan", write_plan(tmp_path)])

    assert result.exit_code == 0, result.output
    use_cases = blocks(result.output)
    assert set(use_cases) == {"routing", "invoices", "agent"}
    routing, invoices, agent = use_cases["routing"], use_cases["invoices"], use_cases["agent"]
    assert f"golden: labels {tmp_path / 'labels.csv'}; test split 30%" in routing
    assert "golden: 75 items sampled from the usage log" in invoices
    assert "incumbent: openai/gpt-4o-mini\n" in routing  # the key is set: called, not replayed
    assert "candidate: openai/local-qwen (api) at http://127.0.0.1:9/v1" in routing
    assert "skipped: candidate deepinfra/Qwen/Qwen3-14B (api): no API key" in routing
    assert "skipped: candidate deepinfra/Qwen/Qwen3-14B (batch): no API key" in routing
    assert (
        "verdict on: correct" in routing and "verdict on: f1" in invoices and "at least 40 items" in invoices
    )
    assert "golden: none" in agent and "not evaluated" in agent and "candidate" not in agent
    assert "sk-test-plan-check" not in result.output
    assert not (tmp_path / "workspace").exists() or not any((tmp_path / "workspace").iterdir())


def test_without_a_key_the_incumbent_is_replayed(tmp_path):
    result = CliRunner().invoke(app, ["plan", "check", "--plan", write_plan(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "incumbent: openai/gpt-4o-mini (no key here: its logged answers are replayed)" in result.output


def test_a_misspelt_key_fails_with_its_path(tmp_path):
    result = CliRunner().invoke(app, ["plan", "check", "--plan", write_plan(tmp_path, quality_polcy={})])
    assert result.exit_code != 0
    # The CLI prints a WorkhorseError's message; CliRunner hands the error itself back.
    assert "unknown key quality_polcy (did you mean quality_policy?)" in str(result.exception)
