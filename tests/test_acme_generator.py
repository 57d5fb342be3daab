"""The Acme example: deterministic logs whose answers are real and whose plan parses."""

from __future__ import annotations

import json

import jsonschema
import pytest

from tests.support.acme import ACME, acme_generator
from workhorse.config import load_plan


@pytest.fixture(scope="module")
def gen():
    return acme_generator()


def test_same_seed_same_bytes(gen, tmp_path):
    first = gen.write_logs(tmp_path / "a", scale=0.1)
    second = gen.write_logs(tmp_path / "b", scale=0.1)
    assert all(first[k].read_bytes() == second[k].read_bytes() for k in first)
    assert gen.write_logs(tmp_path / "c", scale=0.1, seed=1)["app"].read_bytes() != first["app"].read_bytes()


def test_answers_are_the_plans_labels_and_schema(gen):
    plan = load_plan(ACME / "workhorse.yaml")
    rows = [r for r in gen.generate_rows(scale=0.2) if r["status"] == "ok"]
    by_case = {}
    for row in rows:
        by_case.setdefault(row["use_case"], []).append(row)
    assert set(by_case) == set(plan.use_cases)
    for name in ("ticket-routing", "review-sentiment"):
        assert {r["response"] for r in by_case[name]} <= set(plan.use_cases[name].labels)
    for row in by_case["invoice-extraction"]:
        jsonschema.validate(json.loads(row["response"]), plan.use_cases["invoice-extraction"].json_schema)
        assert json.loads(row["response"])["invoice_number"] in row["messages"][1]["content"]


def test_incumbents_per_use_case_and_the_agent_uses_tools(gen):
    rows = gen.generate_rows(scale=0.5)
    tickets = [r for r in rows if r["use_case"] == "ticket-routing" and r["status"] == "ok"]
    agent = [r for r in rows if r["use_case"] == "research-agent"]
    assert all(r["model"] == "gpt-4o" and any("tool_calls" in m for m in r["messages"]) for r in agent)
    assert all(r["model"] == "gpt-4o-mini" for r in tickets)
    assert {r["ts"].day for r in rows} == set(range(1, 31))
