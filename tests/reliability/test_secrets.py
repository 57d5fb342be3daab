"""Secrets and PII: canaries set everywhere a key or webhook can be set, PII seeded into the logs;
after audit -> golden -> eval -> monitoring on a small Acme log, no file under the workspace, no
log line and no Prefect artifact holds a canary, and no stored golden set or eval report holds PII.

The canonical usage copy (``usage/``) and the quarantine keep the prompts as logged, PII included:
they are the customer's own log, re-read by later steps. Golden sets and reports are what gets
shared, and they must be scrubbed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from workhorse.testing.slack_receiver import SlackReceiver

REPO = Path(__file__).resolve().parents[2]
OPENAI_CANARY = "sk-canary-env-7f3a9c2e11d4b5"
BLOCK_CANARY = "sk-canary-block-5e8d0a3f9c21"
LOG_CANARY = "sk-canary-logged-c0ffee1234567"  # a key a careless app logged in the metadata
WEBHOOK_TOKEN = "canary-hook-9b1e4d7a"
PII = {
    "email": "jane.canary@example.com",
    "card": "4111 1111 1111 1111",
    "iban": "DE89 3704 0044 0532 0130 00",
    "phone": "+44 20 7946 0958",
}
USE_CASE = "ticket-routing"
SCRIPT = "<script>alert('canary')</script>"  # a prompt that tries to run in every HTML report


def seed_logs(folder: Path) -> list[Path]:
    """Acme's logs at scale 0.1, every ticket-routing prompt carrying PII and some rows a logged key."""
    sys.path.insert(0, str(REPO / "examples" / "acme"))
    try:
        from generate import write_logs
    finally:
        sys.path.pop(0)
    paths = write_logs(folder, 0.1)
    lines = paths["app"].read_text().splitlines()
    paths["app"].write_text("\n".join(_seeded(line, n) for n, line in enumerate(lines)) + "\n")
    return [paths["app"], paths["proxy"]]


def _seeded(line: str, number: int) -> str:
    try:
        row = json.loads(line)
    except ValueError:
        return line  # the generator's truncated line stays truncated
    if row["use_case"] == USE_CASE:
        messages = json.loads(row["request"])
        messages[-1]["content"] += " Contact: " + " / ".join(PII.values()) + " " + SCRIPT
        row["request"] = json.dumps(messages)
        row["metadata"] = json.dumps(
            {
                **json.loads(row["metadata"]),
                "api_key": LOG_CANARY,
                "headers": {"Authorization": f"Bearer {LOG_CANARY}"},
            }
        )
    return json.dumps(row)


def write_plan(folder: Path) -> Path:
    """One use case, the candidate's key in a ModelEndpoint block, the incumbent's in the environment."""
    plan = {
        "incumbent": "gpt-4o-mini",
        "use_cases": {
            USE_CASE: {
                "task_type": "classification",
                "labels": ["billing", "technical", "account", "shipping"],
                "golden": {"size": 40},
            }
        },
        "candidates": [{"model": "openai/canary-candidate", "endpoint": "canary-endpoint"}],
        "quality_policy": {"min_items": 10},
    }
    path = folder / "workhorse.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


def run_pipeline(workspace: Path, logs: list[Path], plan: Path) -> None:
    """The four steps that read logs, keys and webhooks, as a user runs them."""
    from workhorse.flows.audit import usage_audit
    from workhorse.flows.evaluate import parallel_eval
    from workhorse.flows.golden import golden_dataset_refresh
    from workhorse.flows.monitor import monitoring

    usage_audit(logs=[str(p) for p in logs], plan=str(plan), workspace=str(workspace))
    golden_dataset_refresh(plan=str(plan), workspace=str(workspace), use_cases=[USE_CASE])
    asyncio.run(
        parallel_eval(
            use_case=USE_CASE,
            workspace=str(workspace),
            plan=str(plan),
            variants=["zero-shot"],
            hostings=["api"],
        )
    )
    monitoring(
        workspace=str(workspace),
        plan=str(plan),
        window_minutes=60 * 24 * 31,
        now=datetime(2025, 7, 1, tzinfo=timezone.utc),
    )


async def prefect_texts() -> list[str]:
    """Every artifact, flow-run parameter set and stored log line on the Prefect server, as text."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        artifacts = await client.read_artifacts()
        runs = await client.read_flow_runs()
        logs = await client.read_logs()
    return (
        [json.dumps(a.data, default=str) + (a.description or "") for a in artifacts]
        + [json.dumps(r.parameters, default=str) for r in runs]
        + [entry.message for entry in logs]
    )


class Collect(logging.Handler):
    """Every formatted log line, from root and from Prefect's loggers (which do not propagate,
    so pytest's caplog never sees the flow run logs)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def captured_logs(prefect_server):
    from prefect.logging.configuration import setup_logging

    setup_logging()  # Prefect configures its loggers once, lazily; a later setup would drop our handler
    handler = Collect()
    loggers = [
        logging.getLogger(name) for name in (None, "prefect", "prefect.flow_runs", "prefect.task_runs")
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield handler.lines
    for logger, level in zip(loggers, levels):
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
def pipeline(prefect_server, isolated_workspace, fake_openai_server, tmp_path, monkeypatch, captured_logs):
    """Run the pipeline with every canary set; gives (workspace root, log text, Slack messages, requests)."""
    from workhorse.blocks.endpoints import ModelEndpoint

    incumbent, candidate = fake_openai_server(), fake_openai_server()
    ModelEndpoint(model="openai/canary-candidate", api_base=candidate.url, api_key=BLOCK_CANARY).save(
        "canary-endpoint", overwrite=True
    )
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_CANARY)
    monkeypatch.setenv("OPENAI_API_BASE", incumbent.url)
    with SlackReceiver(path=f"/services/T0/B0/{WEBHOOK_TOKEN}") as slack:
        monkeypatch.setenv("WORKHORSE_SLACK_WEBHOOK_URL", slack.url)
        run_pipeline(isolated_workspace.root, seed_logs(tmp_path / "logs"), write_plan(tmp_path))
    requests = candidate.records() + incumbent.records()
    assert {r["auth"] for r in candidate.records()} == {f"Bearer {BLOCK_CANARY}"}, (
        "the block key was not used"
    )
    return isolated_workspace.root, "\n".join(captured_logs), slack.messages, requests


def workspace_files(root: Path, skip: tuple[str, ...] = ()) -> list[Path]:
    return [
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part in skip for part in p.relative_to(root).parts)
    ]


def test_no_canary_in_files_logs_or_artifacts(pipeline):
    root, log_text, slack_messages, requests = pipeline
    assert requests, "no model was called: the eval did not run"
    canaries = [OPENAI_CANARY, BLOCK_CANARY, LOG_CANARY, WEBHOOK_TOKEN]
    files = workspace_files(root)
    assert any(p.name == "state.db" for p in files) and any(p.suffix == ".html" for p in files)
    for path in files:  # bytes: state.db, its -wal, parquet, html, json
        data = path.read_bytes()
        assert not [c for c in canaries if c.encode() in data], path
    assert "quarantined" in log_text, "the capture saw none of the flows' logs: the scan would prove nothing"
    texts = [log_text, *asyncio.run(prefect_texts()), json.dumps(slack_messages)]
    for text in texts:
        assert not [c for c in canaries if c in text], text[:300]


def test_no_pii_in_golden_sets_or_reports(pipeline):
    root, *_ = pipeline
    import pyarrow.parquet as pq

    logged = " ".join(
        filter(None, pq.read_table(root / "usage" / "usage_log.parquet").column("request").to_pylist())
    )
    assert PII["email"] in logged, "the seeded PII never reached the workspace"  # the customer's own log copy
    shared = [
        p
        for p in workspace_files(root, skip=("usage", "quarantine"))
        if p.suffix in (".parquet", ".html", ".json", ".jsonl", ".md")
    ]
    golden = [p for p in shared if "golden" in p.parts and p.suffix == ".parquet"]
    assert golden and any(p.suffix == ".html" and "runs" in p.parts for p in shared)
    for path in shared:
        data = path.read_bytes()
        assert not [k for k, v in PII.items() if v.encode() in data], path
    assert b"[EMAIL]" in b"".join(p.read_bytes() for p in golden), "the golden set lost the seeded prompts"
    for page in [p for p in shared if p.suffix == ".html"]:
        assert SCRIPT not in page.read_text(), page


def test_a_logged_key_inside_string_metadata_is_redacted_and_the_row_kept(tmp_path):
    """Canonical JSONL keeps metadata as a JSON string: redacting it must leave the line valid
    JSON (it once turned such lines into quarantined 'not JSON' rows) and hide the key."""
    from workhorse.config import Plan
    from workhorse.tasks.audit.assessment import audit_logs

    row = {
        "request_id": "r1",
        "ts": "2025-06-01T10:00:00Z",
        "use_case": USE_CASE,
        "model": "gpt-4o-mini",
        "prompt_tokens": 5,
        "completion_tokens": 1,
        "status": "ok",
        "request": "[]",
        "response": "billing",
        "metadata": json.dumps({"api_key": LOG_CANARY, "headers": {"Authorization": f"Bearer {LOG_CANARY}"}}),
    }
    path = tmp_path / "logs.jsonl"
    path.write_text(json.dumps(row) + "\n")
    result = audit_logs([path], Plan(), workspace_root=tmp_path / "ws")
    assert (result.read, result.accepted) == (1, 1)
    assert not [p for p in workspace_files(tmp_path / "ws") if LOG_CANARY.encode() in p.read_bytes()]
