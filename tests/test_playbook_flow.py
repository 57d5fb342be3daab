"""The product's migration_playbook on a plan that is not Acme's: audit → golden → evaluation in
one flow run, for a team's own logs and a candidate behind its own endpoint (a fake server),
with no embedded engine started because no candidate needs one."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import yaml

from tests.support.eval_kit import LABELS
from workhorse.tasks.golden.versions import load_golden

INCUMBENT = "gpt-4o-mini"


def write_usage_log(path, count: int = 150) -> list[dict]:
    """Canonical JSONL rows of one classification use case, the incumbent's answers logged."""
    start = datetime(2026, 10, 1, tzinfo=timezone.utc)
    rows = []
    for index in range(count):
        label = LABELS[index % 3]
        text = f"ticket {index}: customer writes about {label} topic number {index * 7 % 101}"
        rows.append(
            {
                "request_id": f"r{index}",
                "ts": (start + timedelta(hours=index)).isoformat(),
                "use_case": "routing",
                "model": INCUMBENT,
                "provider": "openai",
                "prompt_tokens": 40,
                "completion_tokens": 2,
                "latency_ms": 500.0,
                "status": "ok",
                "error_type": None,
                "cost_usd": None,
                "request": json.dumps([{"role": "user", "content": text}]),
                "response": label,
                "metadata": json.dumps({"tags": ["use_case:routing"]}),
            }
        )
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return rows


def test_the_playbook_audits_refreshes_and_evaluates_a_teams_own_plan(
    isolated_workspace, prefect_server, fake_openai_server, tmp_path, monkeypatch
):
    from workhorse.flows.playbook import migration_playbook

    log = tmp_path / "usage.jsonl"
    rows = write_usage_log(log)
    ws = isolated_workspace
    # The golden set is built from the logs by the flow; the candidate answers every logged question right.
    candidate = fake_openai_server(
        answers={json.loads(r["request"])[-1]["content"]: r["response"] for r in rows}
    )
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-playbook")
    monkeypatch.setenv("OPENAI_API_BASE", candidate.url)  # nothing may reach a real provider
    plan = {
        "incumbent": INCUMBENT,
        "use_cases": {"routing": {"task_type": "classification", "labels": LABELS}},
        "candidates": [{"model": "openai/team-model", "hosting": ["api"], "api_base": candidate.url}],
        "quality_policy": {"min_items": 20, "non_inferiority_margin": 0.05},
        "eval": {"variants": ["zero-shot"]},
    }
    plan_path = tmp_path / "workhorse.yaml"
    plan_path.write_text(yaml.safe_dump(plan))

    summary = asyncio.run(migration_playbook(plan=str(plan_path), logs=[str(log)], workspace=str(ws.root)))

    assert summary["audit"].read == len(rows) == summary["audit"].accepted
    golden = load_golden(ws, "routing")
    assert golden and {item.reference for item in golden} <= set(LABELS)
    evaluation = summary["evaluations"]["routing"]
    verdict = evaluation["verdict"]
    assert verdict["decision"] == "migrate", verdict["reason"]
    test_items = [i for i in golden if i.split == "test"]
    assert verdict["candidates"][0]["n"] == len(test_items)
    assert not list((ws.root / "vllm").glob("vllm-server-*.log"))  # no embedded engine was started
