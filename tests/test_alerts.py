"""Slack delivery against a local receiver, Block Kit content, webhook precedence, incident lifecycle."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import SecretStr

from workhorse.config import parse_plan
from workhorse.tasks.monitor import incidents
from workhorse.tasks.monitor.alerts import build_message, message_text, post_slack, resolve_webhook_url
from workhorse.tasks.monitor.rules import RuleResult, open_state_db
from workhorse.testing.slack_receiver import SlackReceiver

NOW = datetime(2026, 11, 2, 10, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "failures, status, headers, ok, attempts, received",
    [
        (0, 500, {}, True, 1, 1),
        (1, 500, {}, True, 2, 1),
        (2, 503, {}, True, 3, 1),
        (3, 500, {}, False, 3, 0),
        (1, 429, {"Retry-After": "0.2"}, True, 2, 1),
        (1, 404, {}, False, 1, 0),  # a wrong URL is not retried
    ],
)
def test_delivery_retries_only_what_can_recover(failures, status, headers, ok, attempts, received):
    with SlackReceiver() as slack:
        slack.fail_next(failures, status, headers)
        started = time.monotonic()
        result = post_slack(slack.url, {"text": "hi"}, backoff_s=0.01)
        elapsed = time.monotonic() - started
    assert (result.ok, result.attempts, len(slack.messages)) == (ok, attempts, received)
    assert (elapsed >= 0.2) is bool(headers)  # Retry-After is honoured, plain backoff is short


def test_a_dead_endpoint_fails_after_bounded_attempts_without_naming_the_url():
    with SlackReceiver() as slack:
        url = slack.url
    result = post_slack(SecretStr(url), {"text": "hi"}, attempts=2, backoff_s=0.01, timeout_s=1)
    assert (result.ok, result.attempts, result.status) == (False, 2, None)
    assert "127.0.0.1" not in result.error and "canary" not in result.error


INCIDENT = {
    "id": 1,
    "key": "ticket-routing|m|error_rate",
    "use_case": "ticket-routing",
    "model": "m",
    "rule": "error_rate",
    "severity": "critical",
    "value": 0.22,
    "threshold": 0.15,
    "baseline": None,
    "detail": "22 of 100 requests failed",
    "opened_at": "2026-11-02T09:45:00+00:00",
    "resolved_at": "2026-11-02T10:30:00+00:00",
    "action": None,
}


@pytest.mark.parametrize(
    "metric, value, threshold, shown",
    [
        ("error_rate", 0.22, 0.15, "22.0% (limit 15.0%)"),
        ("latency_p95_ratio", 2.934, 2.0, "2.93× baseline (limit 2.00× baseline)"),
        ("validity", 0.8, 0.85, "80.0% (limit 85.0%)"),
    ],
)
def test_the_message_says_what_by_how_much_since_when_and_where(metric, value, threshold, shown):
    incident = {**INCIDENT, "value": value, "threshold": threshold}
    payload = build_message(
        incident,
        "opened",
        metric,
        flow_run_url="http://ui/runs/flow-run/abc",
        owner="Dana",
        channel="#llm-migration",
        mention="<!here>",
    )
    text = message_text(payload)
    assert (
        shown in text
        and "2026-11-02 09:45 UTC" in text
        and "<http://ui/runs/flow-run/abc|Prefect flow run>" in text
    )
    assert payload["text"].startswith("<!here>") and payload["channel"] == "#llm-migration"
    assert "No automatic action" in text


def test_a_resolution_says_how_long_it_lasted_and_what_was_done_is_shown():
    resolved = message_text(build_message({**INCIDENT, "value": 0.01}, "resolved", "error_rate"))
    assert "Resolved: ticket-routing" in resolved and "lasted 45 min" in resolved
    acted = message_text(
        build_message(
            {**INCIDENT, "action": "rollout of ticket-routing reverted to gpt-4o-mini"},
            "opened",
            "error_rate",
        )
    )
    assert "*What was done:* rollout of ticket-routing reverted to gpt-4o-mini" in acted


@pytest.mark.parametrize(
    "parameter, in_plan, env, expected",
    [
        ("http://param", "http://plan", "http://env", "http://param"),
        (None, "http://plan", "http://env", "http://plan"),
        (None, None, "http://env", "http://env"),
        (None, None, None, None),
    ],
)
def test_webhook_precedence_without_a_block(monkeypatch, parameter, in_plan, env, expected):
    if env:
        monkeypatch.setenv("WORKHORSE_SLACK_WEBHOOK_URL", env)
    plan = parse_plan({"alerts": {"slack_webhook_url": in_plan} if in_plan else {}})
    found = resolve_webhook_url(parameter, plan)
    assert (found.get_secret_value() if found else None) == expected
    assert found is None or expected not in repr(found)


def result(
    state: str, severity: str | None = None, value: float = 0.2, rule: str = "error_rate"
) -> RuleResult:
    return RuleResult("uc", "m", rule, state, severity, value, 0.15)


# Each row: the rule states of consecutive windows (minutes after NOW) -> the message kinds queued.
LIFECYCLES = [
    ([(0, "breach", "warning"), (15, "breach", "warning")], ["opened"]),
    (
        [(0, "breach", "warning"), (15, "breach", "critical"), (30, "breach", "critical")],
        ["opened", "escalated"],
    ),
    ([(0, "breach", "critical"), (15, "breach", "warning")], ["opened"]),  # de-escalation is not news
    (
        [(0, "breach", "warning"), (59, "breach", "warning"), (60, "breach", "warning")],
        ["opened", "reminder"],
    ),
    ([(0, "breach", "warning"), (15, "no_data", None), (30, "insufficient", None)], ["opened"]),
    ([(0, "breach", "warning"), (15, "ok", None), (30, "ok", None)], ["opened", "resolved"]),
    (
        [(0, "breach", "warning"), (15, "ok", None), (30, "breach", "warning")],
        ["opened", "resolved", "opened"],
    ),
    ([(0, "ok", None), (15, "no_data", None)], []),
]


@pytest.mark.parametrize("windows, expected", LIFECYCLES)
@pytest.mark.usefixtures("state_backend")  # the SQLite file and a real PostgreSQL
def test_incident_lifecycle_dedups_escalates_and_resolves(isolated_workspace, windows, expected):
    connection = open_state_db(isolated_workspace)
    kinds = []
    for minute, state, severity in windows:
        now = NOW + timedelta(minutes=minute)
        for change in incidents.apply_results(
            connection, [result(state, severity)], now, timedelta(minutes=60)
        ):
            if change.kind:
                kinds.append(change.kind)
                incidents.queue_delivery(connection, change.incident, change.kind, {"text": change.kind}, now)
    assert kinds == expected
    assert [d["kind"] for d in incidents.pending_deliveries(connection)] == expected


def test_a_report_only_rule_is_recorded_but_never_queued(isolated_workspace):
    connection = open_state_db(isolated_workspace)
    breach = RuleResult("uc", "m", "cost_per_request", "breach", "warning", 1.8, 1.5, report_only=True)
    changes = incidents.apply_results(connection, [breach], NOW, timedelta(minutes=60))
    assert [(c.incident["status"], c.kind) for c in changes] == [("open", None)]
