"""Slack alerts (Block Kit) and Prefect events for guardrail breaches.

A message says what breached, by how much, since when, the Prefect flow run, and what was
done. Delivery is a small urllib client with bounded retries on 5xx, 429 (honouring
Retry-After) and connection errors: urllib logs nothing, unlike httpx whose INFO log line
carries the URL, and the webhook URL is a secret. Errors are stored as the error class and
status only, for the same reason. ``prefect.blocks.notifications.SlackWebhook`` is not used: it
only posts to real Slack hosts.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone

from pydantic import SecretStr

from workhorse.config import AlertsPlan
from workhorse.tasks.monitor import incidents as store

EVENT_BREACHED = "workhorse.guardrail.breached"
EVENT_RESOLVED = "workhorse.guardrail.resolved"
WEBHOOK_ENV = "WORKHORSE_SLACK_WEBHOOK_URL"
RETRY_STATUSES = {429, 500, 502, 503, 504}
PERCENT_METRICS = {"error_rate", "validity", "agreement"}
ICONS = {"critical": ":rotating_light:", "warning": ":warning:", "resolved": ":white_check_mark:"}


# --- the webhook: one precedence rule, never logged ------------------------------------------


def resolve_webhook_url(
    parameter: str | SecretStr | None = None, plan=None, block_name: str | None = None
) -> SecretStr | None:
    """flow parameter > workspace file (the plan's ``alerts.slack_webhook_url``) > the
    ``SlackAlerts`` Block named by ``block_name`` or the plan's ``alerts.slack_block`` >
    ``WORKHORSE_SLACK_WEBHOOK_URL``. Returned as a SecretStr so a stray print shows stars."""
    from workhorse.config import resolve

    alerts = _alerts_section(plan)
    name = block_name or alerts.slack_block
    value = resolve(
        "slack_webhook_url",
        parameter=_plain(parameter),
        plan_value=alerts.slack_webhook_url,
        block=(lambda: _block_webhook(name)) if name else None,
        env=WEBHOOK_ENV,
    )
    return SecretStr(value) if value else None


def _block_webhook(name: str) -> str | None:
    """The named block's webhook; a block not created yet falls through to the environment."""
    from workhorse.blocks.slack import SlackAlerts

    try:
        return SlackAlerts.load(name, _sync=True).webhook_url.get_secret_value()  # async flows call this too
    except ValueError:  # Prefect's "block document not found"
        return None


def _plain(value: str | SecretStr | None) -> str | None:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def _alerts_section(plan) -> AlertsPlan:
    """The plan's ``alerts`` section, from a Plan or a plain dict plan."""
    if plan is None:
        return AlertsPlan()
    section = plan.alerts if hasattr(plan, "alerts") else (plan.get("alerts") or {})
    return section if isinstance(section, AlertsPlan) else AlertsPlan.model_validate(dict(section))


# --- messages ---------------------------------------------------------------------------------


def format_value(metric: str, value: float | None) -> str:
    if value is None:
        return "—"
    if metric in PERCENT_METRICS:
        return f"{value:.1%}"
    if metric.endswith("_ratio"):
        return f"{value:.2f}× baseline"
    return f"{value:.3g}"


def how_much(metric: str, incident: dict) -> str:
    """'22.0% (limit 15.0%)' / '2.93× baseline (limit 2.00× baseline)'."""
    return f"{format_value(metric, incident['value'])} (limit {format_value(metric, incident['threshold'])})"


def build_message(
    incident: dict,
    kind: str,
    metric: str,
    *,
    flow_run_url: str | None = None,
    owner: str | None = None,
    channel: str | None = None,
    mention: str | None = None,
) -> dict:
    """A Block Kit message for one incident change (opened, escalated, reminder, resolved)."""
    resolved = kind == "resolved"
    icon = ICONS["resolved" if resolved else incident["severity"]]
    model = "all models" if incident["model"] == "*" else incident["model"]
    title = (
        f"Resolved: {incident['use_case']} · {incident['rule']}"
        if resolved
        else f"{(incident['severity'] or '').upper()} {incident['use_case']} · {incident['rule']} breached"
    )
    headline = f"{icon} {title}" + (f" ({kind})" if kind in ("escalated", "reminder") else "")
    fields = [
        ("Use case", incident["use_case"]),
        ("Model", model),
        (
            "Now" if resolved else "Breach",
            how_much(metric, incident) if not resolved else format_value(metric, incident["value"]),
        ),
        ("Since", _since(incident, resolved)),
        ("Owner", owner or "—"),
        ("Incident", incident["key"]),
    ]
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": headline[:150], "emoji": True}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in fields]},
        {"type": "section", "text": {"type": "mrkdwn", "text": incident.get("detail") or " "}},
    ]
    if not resolved:
        done = incident.get("action") or "No automatic action: report to the owner."
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*What was done:* {done}"}})
    link = f"<{flow_run_url}|Prefect flow run>" if flow_run_url else "run outside Prefect"
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"{link} · workhorse monitoring"}]}
    )
    text = " ".join(p for p in (mention, headline, how_much(metric, incident) if not resolved else "") if p)
    return {"text": text, "blocks": blocks, **({"channel": channel} if channel else {})}


def _since(incident: dict, resolved: bool) -> str:
    opened = incident["opened_at"][:16].replace("T", " ") + " UTC"
    if resolved and incident.get("resolved_at"):
        minutes = datetime.fromisoformat(incident["resolved_at"]) - datetime.fromisoformat(
            incident["opened_at"]
        )
        return f"{opened} (lasted {int(minutes.total_seconds() // 60)} min)"
    return opened


def message_text(payload: dict) -> str:
    """The message as plain lines, for a terminal (the demo) or a log."""
    lines = []
    for block in payload.get("blocks", []):
        if block["type"] in ("header", "section") and "text" in block:
            lines.append(block["text"]["text"])
        for f in block.get("fields", []):
            lines.append("  " + f["text"].replace("\n", ": "))
        for e in block.get("elements", []):
            lines.append(e["text"])
    return "\n".join(lines)


# --- delivery ---------------------------------------------------------------------------------


@dataclass
class Delivery:
    ok: bool
    attempts: int
    status: int | None = None
    error: str | None = None


def post_slack(
    url: SecretStr | str,
    payload: dict,
    *,
    attempts: int = 3,
    backoff_s: float = 0.5,
    timeout_s: float = 10.0,
    max_wait_s: float = 5.0,
) -> Delivery:
    """POST the payload; retry 5xx/429/connection errors up to ``attempts`` times in all."""
    target = _plain(url)
    body = json.dumps(payload).encode()
    status, error = None, None
    for attempt in range(1, attempts + 1):
        status, error, retry_after = _post_once(target, body, timeout_s)
        if status is not None and 200 <= status < 300:
            return Delivery(True, attempt, status)
        if status is not None and status not in RETRY_STATUSES:
            break  # 4xx other than 429: the payload or the URL is wrong, retrying cannot help
        if attempt < attempts:
            time.sleep(
                min(max_wait_s, retry_after if retry_after is not None else backoff_s * 2 ** (attempt - 1))
            )
    return Delivery(False, attempt, status, error)


def _post_once(url: str, body: bytes, timeout_s: float) -> tuple[int | None, str | None, float | None]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, None, None
    except urllib.error.HTTPError as failure:
        return failure.code, f"HTTP {failure.code}", _retry_after(failure.headers.get("Retry-After"))
    except (urllib.error.URLError, OSError) as failure:
        # The class name only: some messages quote the host, which is part of the secret.
        return None, type(getattr(failure, "reason", failure)).__name__, None


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def deliver_pending(connection, url: SecretStr | None, **options) -> dict:
    """Send every queued message in order (this run's and earlier runs' that failed).
    Returns counts and the attempts; an outage leaves the rest queued for the next run."""
    sent, failed, attempts = [], [], 0
    for delivery in store.pending_deliveries(connection):
        if url is None:
            failed.append(delivery["id"])
            store.record_attempt(connection, delivery["id"], 0, None, "no Slack webhook configured")
            continue
        result = post_slack(url, json.loads(delivery["payload"]), **options)
        attempts += result.attempts
        now = datetime.now(timezone.utc) if result.ok else None
        store.record_attempt(connection, delivery["id"], result.attempts, now, result.error)
        (sent if result.ok else failed).append(delivery["id"])
    return {"sent": sent, "pending": failed, "attempts": attempts}


# --- Prefect events ---------------------------------------------------------------------------


def emit_incident_event(incident: dict, resolved: bool = False, flow_run_url: str | None = None):
    """``workhorse.guardrail.breached`` (or ``.resolved``) on the resource ``workhorse.use-case.<name>``,
    so a Prefect Automation can act on it. Returns the Event, or None outside a Prefect API."""
    from prefect.context import FlowRunContext
    from prefect.events import emit_event
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value() and FlowRunContext.get() is None:
        return None  # emitting here would start a temporary Prefect server (~10 s) just to drop it

    resource = {
        "prefect.resource.id": f"workhorse.use-case.{incident['use_case']}",
        "prefect.resource.name": incident["use_case"],
        "workhorse.rule": incident["rule"],
        "workhorse.severity": incident["severity"] or "none",
    }
    related = [
        {"prefect.resource.id": f"workhorse.model.{incident['model']}", "prefect.resource.role": "model"}
    ]
    payload = {
        k: incident.get(k)
        for k in (
            "key",
            "rule",
            "model",
            "value",
            "threshold",
            "baseline",
            "detail",
            "opened_at",
            "action",
            "severity",
        )
    }
    payload["flow_run_url"] = flow_run_url
    return emit_event(
        EVENT_RESOLVED if resolved else EVENT_BREACHED, resource=resource, related=related, payload=payload
    )
