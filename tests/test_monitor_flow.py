"""The monitor end to end over generated traffic, with a local HTTP server standing in for Slack.

Every fault scenario runs the same story: a healthy window (the baseline), the faulty window
(exactly one alert, with the numbers recomputed here from the generated table), the fault again
inside the cooldown (no alert), then a healthy window (exactly one resolution).
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from scipy import stats

from workhorse.config import parse_plan
from workhorse.tasks.golden.item import GoldenItem, make_item_id, split_for
from workhorse.tasks.golden.versions import write_version
from workhorse.tasks.monitor import incidents
from workhorse.tasks.monitor.alerts import message_text
from workhorse.tasks.monitor.rules import input_length, open_state_db
from workhorse.tasks.monitor.window import monitor_window
from workhorse.testing import traffic as T
from workhorse.testing.slack_receiver import SlackReceiver

LABELS = ["billing", "technical", "account", "shipping"]
INVOICE_SCHEMA = {
    "type": "object",
    "required": ["invoice_number", "vendor", "currency", "total"],
    "properties": {
        "invoice_number": {"type": "string"},
        "vendor": {"type": "string"},
        "currency": {"type": "string", "enum": ["EUR", "USD", "GBP"]},
        "total": {"type": "number"},
    },
}
PLAN = {
    "incumbent": "gpt-4o-mini",
    "owner": "Priya (platform)",
    "alerts": {"slack_channel": "#llm-migration"},
    "use_cases": {
        "ticket-routing": {"task_type": "classification", "labels": LABELS, "owner": "Dana"},
        "invoice-extraction": {"task_type": "extraction", "json_schema": INVOICE_SCHEMA},
    },
}
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)
FAST = {"backoff_s": 0.01}


def invoice(rng, i) -> str:
    return json.dumps(
        {
            "invoice_number": f"INV-{i}",
            "vendor": "Acme",
            "currency": rng.choice(["EUR", "USD", "GBP"]),
            "total": round(rng.uniform(10, 900), 2),
        }
    )


def broken_invoice(bad: int):
    return lambda rng, i: (
        "Sorry, I could not read that invoice." if i % 5 == 0 and i < bad * 5 else invoice(rng, i)
    )


def golden_items(use_case: str, n: int = 200) -> list[GoldenItem]:
    rng = random.Random(use_case)
    items = []
    for i in range(n):
        messages = [
            {"role": "user", "content": " ".join(rng.choice(T.WORDS) for _ in range(rng.randint(20, 60)))}
        ]
        item_id = make_item_id(use_case, messages)
        classification = use_case == "ticket-routing"
        items.append(
            GoldenItem(
                item_id,
                use_case,
                "classification" if classification else "extraction",
                messages,
                LABELS[i % 4] if classification else invoice(rng, i),
                split_for(item_id),
                "test",
                "human",
                LABELS if classification else None,
                None if classification else INVOICE_SCHEMA,
            )
        )
    return items


@pytest.fixture
def workspace(isolated_workspace):
    for use_case in ("ticket-routing", "invoice-extraction"):
        write_version(isolated_workspace, use_case, golden_items(use_case), [{"kind": "test"}])
    return isolated_workspace


@pytest.fixture
def plan():
    return parse_plan(PLAN)


def window(start: datetime, fault: str | None = None, seed: int = 0) -> list[dict]:
    """One 15-minute window of both use cases; ``fault`` breaks one thing."""
    routing = dict(latency_ms=400.0, answer=T.labels_answer(LABELS), seed=seed)
    extraction = dict(latency_ms=900.0, answer=invoice, seed=seed)
    if fault == "latency":
        routing["latency_ms"] = 1200.0
    if fault == "errors":
        routing["errors"] = 30
    if fault == "validity":
        extraction["answer"] = broken_invoice(20)
    if fault == "drift":
        routing["input_words"] = (150, 200)
    return T.stream("ticket-routing", "gpt-4o-mini", start, 15, 100, **routing) + T.stream(
        "invoice-extraction", "gpt-4o-mini", start, 15, 100, **extraction
    )


def run(workspace, plan, rows, minute: int, slack, **options):
    return monitor_window(
        workspace,
        plan,
        T.table(rows),
        now=T0 + timedelta(minutes=minute),
        webhook_url=slack.url,
        delivery=FAST,
        **options,
    )


def rows_of(rows, use_case):
    return [r for r in rows if r["use_case"] == use_case]


def expected_numbers(fault: str, healthy: list[dict], faulty: list[dict]) -> tuple[str, str, str]:
    """(incident key, severity, the figure the message must show), recomputed from the rows."""
    routing = rows_of(faulty, "ticket-routing")
    if fault == "latency":
        p95 = lambda rows: np.percentile([r["latency_ms"] for r in rows if r["status"] == "ok"], 95)
        ratio = p95(routing) / p95(rows_of(healthy, "ticket-routing"))
        return "ticket-routing|gpt-4o-mini|latency_p95", "critical", f"{ratio:.2f}× baseline"
    if fault == "errors":
        rate = sum(r["status"] == "error" for r in routing) / len(routing)
        return "ticket-routing|gpt-4o-mini|error_rate", "critical", f"{rate:.1%}"
    if fault == "validity":
        answers = [r["response"] for r in rows_of(faulty, "invoice-extraction")]
        valid = sum(a.startswith("{") for a in answers) / len(answers)
        return "invoice-extraction|gpt-4o-mini|validity", "critical", f"{valid:.1%}"
    lengths = [input_length(r["request"]) for r in routing]
    golden = [input_length(item.input) for item in golden_items("ticket-routing")]
    return "ticket-routing|*|input_drift", "warning", f"{stats.ks_2samp(lengths, golden).statistic:.3g}"


@pytest.mark.parametrize("fault", ["latency", "errors", "validity", "drift"])
@pytest.mark.usefixtures("state_backend")  # the SQLite file and a real PostgreSQL
def test_a_fault_alerts_once_stays_quiet_in_cooldown_and_resolves_once(workspace, plan, fault):
    healthy, faulty = window(T0), window(T0 + timedelta(minutes=15), fault, seed=1)
    with SlackReceiver() as slack:
        first = run(workspace, plan, healthy, 15, slack)
        assert first.breaches == [] and slack.messages == []
        second = run(workspace, plan, healthy + faulty, 30, slack)
        key, severity, figure = expected_numbers(fault, healthy, faulty)
        assert [b["key"] for b in second.breaches] == [key]
        assert len(slack.messages) == 1
        text = message_text(slack.messages[0])
        assert f"{severity.upper()} {key.split('|')[0]}" in text and figure in text, text
        assert "Since*: 2026-11-02 09:15 UTC" in text
        again = window(T0 + timedelta(minutes=30), fault, seed=2)
        third = run(workspace, plan, again, 45, slack)
        assert [b["key"] for b in third.breaches] == [key] and len(slack.messages) == 1
        recovered = run(workspace, plan, window(T0 + timedelta(minutes=45), seed=3), 60, slack)
    assert recovered.breaches == []
    assert len(slack.messages) == 2 and "Resolved: " in message_text(slack.messages[1])
    stored = incidents._dicts(open_state_db(workspace), "SELECT status FROM incidents WHERE key = ?", (key,))
    assert stored == [{"status": "resolved"}]


def test_the_cooldown_ends_in_one_reminder_and_escalation_alerts_at_once(workspace, plan):
    with SlackReceiver() as slack:
        run(workspace, plan, window(T0), 15, slack)
        warning = T.stream(
            "ticket-routing",
            "gpt-4o-mini",
            T0 + timedelta(minutes=15),
            15,
            100,
            errors=8,
            answer=T.labels_answer(LABELS),
        )
        run(workspace, plan, warning, 30, slack)
        critical = T.stream(
            "ticket-routing",
            "gpt-4o-mini",
            T0 + timedelta(minutes=30),
            15,
            100,
            errors=40,
            answer=T.labels_answer(LABELS),
        )
        run(workspace, plan, critical, 45, slack)
        late = T.stream(
            "ticket-routing",
            "gpt-4o-mini",
            T0 + timedelta(minutes=100),
            15,
            100,
            errors=40,
            answer=T.labels_answer(LABELS),
        )
        run(workspace, plan, late, 115, slack)
    headers = [m["blocks"][0]["text"]["text"] for m in slack.messages]
    assert ["WARNING" in headers[0], "(escalated)" in headers[1], "(reminder)" in headers[2]] == [True] * 3
    assert len(headers) == 3


def test_no_traffic_is_its_own_state_and_never_resolves_an_incident(workspace, plan):
    with SlackReceiver() as slack:
        run(workspace, plan, window(T0), 15, slack)
        run(workspace, plan, window(T0 + timedelta(minutes=15), "errors"), 30, slack)
        silent = run(workspace, plan, [], 45, slack)
        trickle = run(
            workspace,
            plan,
            T.stream(
                "ticket-routing",
                "gpt-4o-mini",
                T0 + timedelta(minutes=45),
                15,
                5,
                answer=T.labels_answer(LABELS),
            ),
            60,
            slack,
        )
    states = {r["key"]: r["state"] for r in silent.results}
    assert states["ticket-routing|gpt-4o-mini|error_rate"] == "no_data"
    assert {m["state"] for m in silent.metrics} == {"no traffic in window"}
    assert {r["key"]: r["state"] for r in trickle.results}[
        "ticket-routing|gpt-4o-mini|error_rate"
    ] == "insufficient"
    assert len(slack.messages) == 1  # the opening alert only: silence is not a recovery
    assert len(incidents.open_incidents(open_state_db(workspace))) == 1


@pytest.mark.usefixtures("state_backend")  # the SQLite file and a real PostgreSQL
def test_a_slack_outage_is_retried_and_the_alert_survives_to_the_next_run(workspace, plan):
    with SlackReceiver() as slack:
        run(workspace, plan, window(T0), 15, slack)
        slack.fail_next(3, 500)
        during = run(workspace, plan, window(T0 + timedelta(minutes=15), "errors"), 30, slack)
        assert (during.deliveries["attempts"], len(during.deliveries["pending"]), slack.requests) == (3, 1, 3)
        assert slack.messages == []
        pending = incidents.pending_deliveries(open_state_db(workspace))
        assert [(p["kind"], p["attempts"], p["last_error"]) for p in pending] == [("opened", 3, "HTTP 500")]
        after = run(workspace, plan, window(T0 + timedelta(minutes=30), "errors", seed=2), 45, slack)
    assert (after.deliveries["sent"], after.deliveries["pending"]) == ([pending[0]["id"]], [])
    assert len(slack.messages) == 1 and "30.0%" in message_text(slack.messages[0])


def test_slack_silence_without_a_webhook_keeps_the_alert_queued(workspace, plan):
    summary = monitor_window(workspace, plan, T.table(window(T0, "errors")), now=T0 + timedelta(minutes=15))
    assert summary.breaches and summary.deliveries["pending"] and not summary.deliveries["sent"]
    assert len(incidents.pending_deliveries(open_state_db(workspace))) == 1


@pytest.mark.parametrize(
    "failing_model, reverted", [("deepinfra/Qwen/Qwen3-14B", True), ("gpt-4o-mini", False)]
)
def test_a_critical_breach_during_a_rollout_reverts_the_candidate_only(
    prefect_server, workspace, plan, failing_model, reverted
):
    from workhorse.tasks.rollout.state import current_state, start_rollout

    start_rollout(workspace, "ticket-routing", "gpt-4o-mini", "deepinfra/Qwen/Qwen3-14B")
    start = T0 + timedelta(minutes=15)
    arms = {"gpt-4o-mini": "incumbent", "deepinfra/Qwen/Qwen3-14B": "candidate"}
    rows = [
        row
        for model, arm in arms.items()
        for row in T.stream(
            "ticket-routing",
            model,
            start,
            15,
            60,
            arm=arm,
            stage="5",
            errors=25 if model == failing_model else 0,
            answer=T.labels_answer(LABELS),
        )
    ]
    with SlackReceiver() as slack:
        summary = run(workspace, plan, rows, 30, slack)
        again = run(workspace, plan, rows, 30, slack)
    assert current_state(workspace, "ticket-routing").stage == ("reverted" if reverted else "shadow")
    assert [t["to_stage"] for t in summary.reverts] == (["reverted"] if reverted else [])
    assert again.reverts == [] and len(slack.messages) == 1
    done = "rollout of ticket-routing reverted to gpt-4o-mini"
    assert (done in message_text(slack.messages[0])) is reverted
    if reverted:
        assert "error_rate" in current_state(workspace, "ticket-routing").reason


def test_shadow_agreement_is_measured_on_paired_requests(workspace, plan):
    start = T0 + timedelta(minutes=15)
    prompts = [f"my parcel number {i} is late again" for i in range(60)]
    incumbent = T.stream(
        "ticket-routing", "gpt-4o-mini", start, 15, 60, prompts=prompts, answer=lambda rng, i: LABELS[i % 4]
    )
    shadow = T.stream(
        "ticket-routing",
        "hosted_vllm/smollm2",
        start,
        15,
        60,
        prompts=prompts,
        arm="shadow",
        answer=lambda rng, i: LABELS[i % 4] if i % 10 < 7 else LABELS[(i + 1) % 4],
    )
    with SlackReceiver() as slack:
        summary = run(workspace, plan, incumbent + shadow, 30, slack)
    row = next(m for m in summary.metrics if m["model"] == "hosted_vllm/smollm2")
    assert (row["agreement"], row["agreement_n"]) == (pytest.approx(42 / 60), 60)
    assert "ticket-routing|hosted_vllm/smollm2|shadow_agreement" in [b["key"] for b in summary.breaches]


@pytest.fixture
def captured_events(monkeypatch):
    """Events emitted in the test, caught by Prefect's asserting client."""
    from prefect.events.worker import EventsWorker
    from prefect.testing.fixtures import AssertingEventsClient

    AssertingEventsClient.reset()
    worker = EventsWorker.instance(AssertingEventsClient)
    monkeypatch.setattr(EventsWorker, "instance", lambda *_: worker)

    def events(name: str) -> list:
        worker.drain()
        return [
            e
            for client in AssertingEventsClient.all
            for e in getattr(client, "events", [])
            if e.event == name
        ]

    yield events
    worker.drain()


def read_artifacts(flow_run_id) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return [json.dumps(a.data) if not isinstance(a.data, str) else a.data for a in found]


def read_run_logs(flow_run_id) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all()  # logs reach the API in batches
    with get_client(sync_client=True) as client:
        found = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return "\n".join(entry.message for entry in found)


@pytest.mark.parametrize("source", ["parameter", "environment"])
def test_the_flow_publishes_events_and_artifacts_and_never_reveals_the_webhook(
    prefect_server, workspace, captured_events, caplog, monkeypatch, tmp_path, source
):
    import logging

    import pyarrow.parquet as pq
    from pydantic import SecretStr

    from workhorse.flows.monitor import monitoring

    # capsys is not used: Prefect's console handler keeps the stream of the first test that logged,
    # and a closed capture stream there breaks every later flow run. caplog + the API's logs cover it.
    caplog.set_level(logging.INFO)
    prefect_logger = logging.getLogger("prefect")  # it does not propagate to the root logger
    monkeypatch.setattr(prefect_logger, "handlers", [*prefect_logger.handlers, caplog.handler])
    plan_file = tmp_path / "workhorse.yaml"
    plan_file.write_text(json.dumps(PLAN))  # JSON is YAML
    path = tmp_path / "traffic.parquet"
    pq.write_table(T.table(window(T0) + window(T0 + timedelta(minutes=15), "errors", seed=1)), path)
    with SlackReceiver() as slack:
        secret = slack.url
        if source == "environment":
            monkeypatch.setenv("WORKHORSE_SLACK_WEBHOOK_URL", secret)
        options = dict(
            workspace=str(workspace.root),
            plan=str(plan_file),
            traffic_path=str(path),
            slack_webhook_url=SecretStr(secret) if source == "parameter" else None,
        )
        monitoring(now=T0 + timedelta(minutes=15), **options)
        slack.fail_next(3, 500)  # the error path must not leak the URL either
        state = monitoring(now=T0 + timedelta(minutes=30), return_state=True, **options)
    result = state.result()
    assert result["opened"] == ["ticket-routing|gpt-4o-mini|error_rate"] and result["pending"] == 1
    breached = captured_events("workhorse.guardrail.breached")
    assert [(e.resource.id, e.payload["rule"], e.payload["value"]) for e in breached] == [
        ("workhorse.use-case.ticket-routing", "error_rate", 0.3)
    ]
    artifacts = read_artifacts(state.state_details.flow_run_id)
    run_logs = read_run_logs(state.state_details.flow_run_id)
    assert any("30.0%" in a for a in artifacts) and any(
        "ticket-routing|gpt-4o-mini|error_rate" in a for a in artifacts
    )
    stored = b"".join(p.read_bytes() for p in workspace.root.glob("state.db*"))
    token = secret.split("/services/")[1]
    for where, text in {
        "logs": caplog.text,
        "run logs": run_logs,
        "artifacts": " ".join(artifacts),
        "result": json.dumps(result),
        "state.db": stored.decode("latin-1"),
    }.items():
        assert token not in text, where
    # The logs were captured: the scan above looked at real text.
    assert "1 opened" in caplog.text and "window" in run_logs
