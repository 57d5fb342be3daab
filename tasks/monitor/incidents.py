"""Incidents and their pending Slack deliveries, in the state store: dedup, cooldown, escalation, resolution.

An incident is keyed by (use case, model, rule). While it is open, a breach alerts once, again
only after the cooldown or when the severity rises, and a healthy window resolves it with one
message. ``no_data``/``insufficient`` windows leave it as it is. Messages are queued in
``alert_deliveries`` inside the same transaction that changes the incident, so a Slack outage
or a crash between the two never loses an alert: the queue is drained on every run.
Nothing here ever holds the webhook URL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable

from workhorse.store import rows_as_dicts

SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL, use_case TEXT NOT NULL, model TEXT NOT NULL, rule TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
    severity TEXT, value REAL, threshold REAL, baseline REAL, detail TEXT,
    report_only INTEGER NOT NULL DEFAULT 0,
    opened_at TEXT NOT NULL, last_seen_at TEXT NOT NULL, resolved_at TEXT,
    last_alert_at TEXT, last_alert_severity TEXT, action TEXT, flow_run_url TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS incidents_one_open ON incidents(key) WHERE status = 'open';
CREATE TABLE IF NOT EXISTS alert_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id INTEGER NOT NULL REFERENCES incidents(id),
    kind TEXT NOT NULL CHECK (kind IN ('opened', 'escalated', 'reminder', 'resolved')),
    payload TEXT NOT NULL,
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    delivered_at TEXT,
    last_error TEXT
);
"""
RANK = {None: 0, "warning": 1, "critical": 2}


@dataclass
class Change:
    """What a run did to an incident; ``kind`` None means 'still open, nothing to say'."""

    incident: dict
    kind: str | None


def ensure_schema(connection) -> None:
    connection.ensure(SCHEMA)


def open_incidents(connection) -> list[dict]:
    ensure_schema(connection)
    return _dicts(connection, "SELECT * FROM incidents WHERE status = 'open' ORDER BY id")


def open_groups(connection) -> set[tuple[str, str]]:
    """(use case, model) pairs with an open incident: they get a metrics row even without traffic."""
    return {(i["use_case"], i["model"]) for i in open_incidents(connection)}


def apply_results(
    connection, results: Iterable, now: datetime, cooldown: timedelta, since: datetime | None = None
) -> list[Change]:
    """Open, update, escalate or resolve incidents from one window's rule results, atomically.
    ``now`` is the window's end; a new incident is open ``since`` the window's start."""
    ensure_schema(connection)
    changes = []
    # Two monitor runs at once must not open the same key twice: one writer of incidents at a time.
    with connection.transaction(lock="incidents"):
        current = {i["key"]: i for i in _dicts(connection, "SELECT * FROM incidents WHERE status = 'open'")}
        for result in results:
            change = _apply(connection, result, current.get(result.key), now, cooldown, since or now)
            if change:
                changes.append(change)
    return changes


def _apply(
    connection, result, incident: dict | None, now: datetime, cooldown: timedelta, since: datetime
) -> Change | None:
    if result.state == "breach":
        return _breach(connection, result, incident, now, cooldown, since)
    if result.state == "ok" and incident:
        connection.execute(
            "UPDATE incidents SET status = 'resolved', resolved_at = ?, last_seen_at = ?, value = ?, "
            "detail = ? WHERE id = ?",
            (now.isoformat(), now.isoformat(), result.value, result.detail, incident["id"]),
        )
        return Change(_get(connection, incident["id"]), None if incident["report_only"] else "resolved")
    return None  # no data / insufficient: the incident stays as it is, open or not


def _breach(connection, result, incident, now, cooldown, since) -> Change:
    if incident is None:
        cursor = connection.execute(
            "INSERT INTO incidents (key, use_case, model, rule, status, severity, value, threshold, "
            "baseline, detail, report_only, opened_at, last_seen_at) "
            "VALUES (?, ?, ?, ?, 'open', ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                result.key,
                result.use_case,
                result.model,
                result.rule,
                result.severity,
                result.value,
                result.threshold,
                result.baseline,
                result.detail,
                int(result.report_only),
                since.isoformat(),
                now.isoformat(),
            ),
        )
        return Change(_get(connection, cursor.fetchone()[0]), None if result.report_only else "opened")
    connection.execute(
        "UPDATE incidents SET severity = ?, value = ?, threshold = ?, baseline = ?, detail = ?, "
        "last_seen_at = ? WHERE id = ?",
        (
            result.severity,
            result.value,
            result.threshold,
            result.baseline,
            result.detail,
            now.isoformat(),
            incident["id"],
        ),
    )
    return Change(
        _get(connection, incident["id"]),
        None if result.report_only else _realert(incident, result, now, cooldown),
    )


def _realert(incident: dict, result, now: datetime, cooldown: timedelta) -> str | None:
    """Escalation re-alerts at once; the same severity only after the cooldown."""
    if RANK[result.severity] > RANK[incident["last_alert_severity"]]:
        return "escalated" if incident["last_alert_severity"] else "opened"
    last = incident["last_alert_at"]
    if last is None or now - datetime.fromisoformat(last) >= cooldown:
        return "reminder"
    return None


def set_action(connection, incident_id: int, action: str) -> None:
    connection.execute("UPDATE incidents SET action = ? WHERE id = ?", (action, incident_id))


def queue_delivery(connection, incident: dict, kind: str, payload: dict, now: datetime) -> int:
    """Queue a message and mark the incident as alerted at this severity (the alert is owed now)."""
    with connection.transaction(lock="incidents"):
        delivery_id = connection.execute(
            "INSERT INTO alert_deliveries (incident_id, kind, payload, created_at) "
            "VALUES (?, ?, ?, ?) RETURNING id",
            (incident["id"], kind, json.dumps(payload), now.isoformat()),
        ).fetchone()[0]
        if kind != "resolved":
            connection.execute(
                "UPDATE incidents SET last_alert_at = ?, last_alert_severity = ? WHERE id = ?",
                (now.isoformat(), incident["severity"], incident["id"]),
            )
    return delivery_id


def pending_deliveries(connection) -> list[dict]:
    ensure_schema(connection)
    return _dicts(connection, "SELECT * FROM alert_deliveries WHERE delivered_at IS NULL ORDER BY id")


def record_attempt(
    connection, delivery_id: int, attempts: int, delivered_at: datetime | None, error: str | None
) -> None:
    connection.execute(
        "UPDATE alert_deliveries SET attempts = attempts + ?, delivered_at = ?, last_error = ? WHERE id = ?",
        (attempts, delivered_at.isoformat() if delivered_at else None, error, delivery_id),
    )


def get_incident(connection, incident_id: int) -> dict:
    return _get(connection, incident_id)


def _get(connection, incident_id: int) -> dict:
    return _dicts(connection, "SELECT * FROM incidents WHERE id = ?", (incident_id,))[0]


def _dicts(connection, sql: str, params: tuple = ()) -> list[dict]:
    return rows_as_dicts(connection.execute(sql, params))
