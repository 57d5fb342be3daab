"""One monitoring window end to end: traffic -> metrics -> rules -> incidents -> actions -> Slack, events.

``monitor_window`` is a plain function (the flow only wires it and publishes artifacts), so
tests and the demo call it with a generated traffic table and a local Slack receiver. Actions:
a critical breach of a non-incumbent model on a use case whose rollout is under way reverts the
rollout at once (no Prefect Automation needed), and the incident's message says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa

from workhorse.errors import DataError
from workhorse.tasks.monitor import alerts, incidents
from workhorse.tasks.monitor import rules as mon
from workhorse.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass
class MonitorSummary:
    """What one window showed and did; ``metrics`` and ``results`` are plain dicts for artifacts."""

    window_start: datetime
    window_end: datetime
    metrics: list[dict] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)
    changes: list[dict] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)
    deliveries: dict = field(default_factory=dict)
    reverts: list[dict] = field(default_factory=list)
    events: int = 0

    @property
    def breaches(self) -> list[dict]:
        return [r for r in self.results if r["state"] == "breach"]


# --- traffic sources --------------------------------------------------------------------------

TRAFFIC_COLUMNS = ("ts", "use_case", "model", "status")


def read_traffic_file(path: str | Path) -> pa.Table:
    """A traffic (or canonical usage) parquet named by the caller; a missing, non-parquet or
    foreign file is a DataError naming it, not an ArrowInvalid from deep inside the window."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise DataError(
            f"{path}: not a readable Parquet traffic log ({str(error).splitlines()[0]})"
        ) from None
    missing = [name for name in TRAFFIC_COLUMNS if name not in table.column_names]
    if missing:
        raise DataError(f"{path}: not a traffic log: column(s) {', '.join(missing)} missing")
    if not pa.types.is_timestamp(table.schema.field("ts").type):
        raise DataError(f"{path}: column ts is {table.schema.field('ts').type}, expected a UTC timestamp")
    return table


def load_traffic(workspace: Workspace, start: datetime, end: datetime) -> pa.Table | None:
    """The rollout's traffic log for the window, else the audit's canonical usage log."""
    try:
        from workhorse.tasks.common.traffic_log import read_traffic
    except ImportError:  # the rollout step is optional: the usage log alone is enough
        read_traffic = None
    if read_traffic is not None:
        table = read_traffic(workspace, since=start, until=end)
        if table.num_rows:
            return table
    usage = Path(workspace.root, "usage", "usage_log.parquet")
    if usage.exists():
        import pyarrow.parquet as pq

        return pq.read_table(usage)
    return None


# --- actions ----------------------------------------------------------------------------------


def rollout_in_progress(workspace: Workspace, use_case: str):
    """The rollout state when one is under way (shadow, a step, or paused), else None."""
    try:
        from workhorse.tasks.rollout.state import TERMINAL, current_state
    except ImportError:
        return None
    state = current_state(workspace, use_case)
    return None if state.stage in TERMINAL else state


def revert_rollout(workspace: Workspace, use_case: str, reason: str, evidence: dict) -> dict:
    """Call the rollout's revert (idempotent). Its own notifier is silenced: the incident's
    Slack message already says what was done, and Slack should hear about it once."""
    from workhorse.tasks.rollout.state import revert

    transition = revert(workspace, use_case, reason, evidence, notify=lambda payload: None)
    return transition.as_dict()


def act_on_breach(
    workspace: Workspace, incident: dict, incumbent: str | None
) -> tuple[str | None, dict | None]:
    """Revert when a critical breach hits the candidate of a rollout under way; say what was done."""
    if incident["severity"] != "critical" or incident["model"] in (incumbent, mon.ALL_MODELS):
        return None, None
    state = rollout_in_progress(workspace, incident["use_case"])
    if state is None or (state.candidate and state.candidate != incident["model"]):
        return None, None
    reason = f"monitoring: {incident['rule']} {incident['detail']}"
    try:
        transition = revert_rollout(workspace, incident["use_case"], reason, _evidence(incident))
    except Exception as error:  # the alert must still go out, saying the revert failed
        log.exception("%s: revert failed", incident["use_case"])
        return (
            f"revert of the {incident['use_case']} rollout FAILED ({type(error).__name__}): revert by hand",
            None,
        )
    return f"rollout of {incident['use_case']} reverted to {state.incumbent or incumbent}", transition


def _evidence(incident: dict) -> dict:
    return {
        k: incident[k]
        for k in ("key", "rule", "model", "severity", "value", "threshold", "baseline", "detail", "opened_at")
    }


# --- the window -------------------------------------------------------------------------------


def monitor_window(
    workspace,
    plan,
    traffic: pa.Table | None = None,
    *,
    now: datetime | None = None,
    window_minutes: int | None = None,
    use_cases: list[str] | None = None,
    webhook_url=None,
    flow_run_url: str | None = None,
    delivery: dict | None = None,
) -> MonitorSummary:
    """Evaluate one window [now - window, now) and act: incidents, reverts, Slack, events.

    ``traffic`` None reads the workspace's traffic log (or usage log) for the window."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    settings = mon.monitor_settings(plan.monitoring)
    start, end = mon.window_bounds(now, window_minutes or settings.window_minutes)
    profiles = mon.profiles_from_plan(plan, ws, use_cases)
    traffic = load_traffic(ws, start, end) if traffic is None else traffic
    connection = mon.open_state_db(ws)
    try:
        summary = _evaluate(connection, ws, settings, profiles, traffic, start, end)
        _act(connection, ws, plan, settings, profiles, summary, flow_run_url)
        summary.deliveries = alerts.deliver_pending(connection, webhook_url, **(delivery or {}))
        summary.events = _emit(summary, flow_run_url)
    finally:
        connection.close()
    return summary


def _evaluate(connection, ws, settings, profiles, traffic, start, end) -> MonitorSummary:
    rows = mon.window_rows(traffic, start, end, profiles) if traffic is not None and traffic.num_rows else []
    metrics = mon.window_metrics(rows, profiles, settings, incidents.open_groups(connection))
    mon.add_baselines(
        metrics, mon.window_history(connection, settings, end), mon.eval_baselines(ws, profiles)
    )
    results = mon.evaluate_rules(metrics, settings)
    changes = incidents.apply_results(
        connection, results, end, timedelta(minutes=settings.cooldown_minutes), start
    )
    breached = {(r.use_case, r.model) for r in results if r.state == "breach"}
    mon.record_windows(connection, metrics, end, breached)
    return MonitorSummary(
        start,
        end,
        [_plain_row(m) for m in metrics],
        [r.to_dict() for r in results],
        [{**c.incident, "change": c.kind} for c in changes],
    )


def _act(connection, ws, plan, settings, profiles, summary: MonitorSummary, flow_run_url) -> None:
    """Reverts first (the message must say what was done), then one queued message per change."""
    for change in summary.changes:
        if change["status"] == "open":
            action, transition = act_on_breach(ws, change, profiles[change["use_case"]].incumbent)
            if action:
                incidents.set_action(connection, change["id"], action)
                change["action"] = action
            if transition:
                summary.reverts.append(transition)
        if change["change"]:
            summary.messages.append(
                _queue(connection, plan, settings, change, flow_run_url, summary.window_end)
            )


def _queue(connection, plan, settings, change: dict, flow_run_url, now) -> dict:
    metric = settings.rules[change["rule"]].metric if change["rule"] in settings.rules else change["rule"]
    section = alerts._alerts_section(plan)
    payload = alerts.build_message(
        change,
        change["change"],
        metric,
        flow_run_url=flow_run_url,
        owner=plan.owner_of(change["use_case"]),
        channel=section.slack_channel,
        mention=section.mention,
    )
    incidents.queue_delivery(connection, change, change["change"], payload, now)
    return payload


def _emit(summary: MonitorSummary, flow_run_url: str | None) -> int:
    """One event per breach of this window and per resolution; a missing event stream is no failure."""
    emitted = 0
    for change in summary.changes:
        try:
            event = alerts.emit_incident_event(change, change["status"] == "resolved", flow_run_url)
        except Exception:  # events are a second channel: the incident and Slack already hold the truth
            log.exception("could not emit the event of %s", change["key"])
            continue
        emitted += event is not None
    return emitted


def _plain_row(row: dict) -> dict:
    """A metrics row with drift results as dicts (artifacts and JSON need plain values)."""
    return {k: (v.__dict__ if isinstance(v, mon.Drift) else v) for k, v in row.items()}


def utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


# --- reporting --------------------------------------------------------------------------------


def _fmt(value, kind: str = "") -> str:
    if value is None:
        return "—"
    if kind == "%":
        return f"{value:.1%}"
    if kind == "ms":
        return f"{value:,.0f}"
    if kind == "$":
        return f"{value:.6f}"
    return str(value)


def _drift_text(drift: dict | None) -> str:
    if not drift:
        return "—"
    return mon.Drift(**drift).describe()


def metrics_table(summary: MonitorSummary) -> list[dict]:
    """One flat row per (use case, model) for a Prefect table artifact."""
    return [
        {
            "use_case": m["use_case"],
            "model": m["model"],
            "state": m["state"],
            "requests": m["requests"],
            "error_rate": _fmt(m.get("error_rate"), "%"),
            "p50_ms": _fmt(m.get("latency_p50_ms"), "ms"),
            "p95_ms": _fmt(m.get("latency_p95_ms"), "ms"),
            "p95_baseline_ms": _fmt(m.get("latency_p95_ms_baseline"), "ms"),
            "cost_usd": _fmt(m.get("cost_usd"), "$"),
            "cost_per_request": _fmt(m.get("cost_per_request"), "$"),
            "validity": _fmt(m.get("validity"), "%"),
            "agreement": _fmt(m.get("agreement"), "%"),
            "drift": _drift_text(m.get("input_length_drift") or m.get("output_label_drift")),
        }
        for m in summary.metrics
    ]


def summary_markdown(summary: MonitorSummary) -> str:
    """The window's metrics, its breaches and what was done, for the Prefect UI."""
    rows = metrics_table(summary)
    head = [
        "use_case",
        "model",
        "state",
        "requests",
        "error_rate",
        "p95_ms",
        "p95_baseline_ms",
        "validity",
        "agreement",
        "drift",
    ]
    lines = [
        f"# Monitoring {summary.window_start:%Y-%m-%d %H:%M}–{summary.window_end:%H:%M} UTC",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
    lines += ["", "## Incidents changed in this window", ""]
    if not summary.changes:
        lines.append("None.")
    for c in summary.changes:
        lines.append(
            f"- **{c['key']}** {c['status']} ({c['severity'] or 'ok'}), {c['detail']}; "
            f"since {c['opened_at']}; message: {c['change'] or 'none (deduplicated or report-only)'}; "
            f"action: {c.get('action') or 'none'}"
        )
    quiet = [
        f"{m['use_case']}" for m in summary.metrics if m["model"] == mon.ALL_MODELS and not m["requests"]
    ]
    if quiet:
        lines += ["", f"No traffic in window (not counted as healthy): {', '.join(quiet)}"]
    delivered = summary.deliveries
    lines += [
        "",
        f"Slack: {len(delivered.get('sent', []))} sent, {len(delivered.get('pending', []))} pending "
        f"(kept for the next run), {delivered.get('attempts', 0)} attempts. Reverts: {len(summary.reverts)}.",
    ]
    return "\n".join(lines)


def summary_dict(summary: MonitorSummary) -> dict:
    """The flow's return value: counts and keys, no secrets."""
    return {
        "window_start": summary.window_start.isoformat(),
        "window_end": summary.window_end.isoformat(),
        "groups": len(summary.metrics),
        "breaches": [r["key"] for r in summary.breaches],
        "opened": [c["key"] for c in summary.changes if c["change"] == "opened"],
        "resolved": [c["key"] for c in summary.changes if c["change"] == "resolved"],
        "messages": len(summary.messages),
        "sent": len(summary.deliveries.get("sent", [])),
        "pending": len(summary.deliveries.get("pending", [])),
        "attempts": summary.deliveries.get("attempts", 0),
        "reverts": [t["use_case"] for t in summary.reverts],
        "events": summary.events,
        "no_traffic": [
            m["use_case"] for m in summary.metrics if m["model"] == mon.ALL_MODELS and not m["requests"]
        ],
    }


# --- weekly re-evaluation ---------------------------------------------------------------------

REEVALUATION_RULE = "reevaluation"


def migrated_use_cases(workspace: Workspace, plan) -> dict[str, str | None]:
    """Use cases now served by an open model: rollout promoted, or listed in the plan's
    ``monitoring.migrated`` (a list of names, or name -> model). Value: the migrated model."""
    listed = plan.monitoring.migrated
    found = dict.fromkeys(listed) if isinstance(listed, list) else dict(listed)
    try:
        from workhorse.tasks.rollout.state import current_state
    except ImportError:
        return found
    for name in plan.use_cases:
        state = current_state(workspace, name)
        if state.stage == "promoted":
            found[name] = state.candidate
    return found


def reevaluation_result(use_case: str, model: str | None, summary: dict) -> mon.RuleResult:
    """A re-run verdict as a rule result: 'keep' means the migrated model no longer meets the
    policy against the incumbent (breach), 'migrate' still does (ok), anything else is undecided."""
    verdict = summary.get("verdict") or {}
    decision = verdict.get("decision")
    state = {"keep": "breach", "migrate": "ok"}.get(decision, "insufficient")
    return mon.RuleResult(
        use_case,
        model or verdict.get("best_candidate") or "candidate",
        REEVALUATION_RULE,
        state,
        severity="critical" if state == "breach" else None,
        value=verdict.get("diff"),
        detail=f"weekly re-evaluation ({summary.get('run_id')}): {decision}. {verdict.get('reason') or ''}",
    )


def alert_results(
    workspace,
    plan,
    results: list[mon.RuleResult],
    *,
    webhook_url=None,
    flow_run_url=None,
    now: datetime | None = None,
    delivery: dict | None = None,
) -> MonitorSummary:
    """Rule results from outside a traffic window (re-evaluation) through the same incidents,
    Slack queue and events, so they dedup and resolve like any other guardrail."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    settings = mon.monitor_settings(plan.monitoring)
    now = now or datetime.now(timezone.utc)
    connection = mon.open_state_db(ws)
    try:
        changes = incidents.apply_results(
            connection, results, now, timedelta(minutes=settings.cooldown_minutes)
        )
        summary = MonitorSummary(
            now, now, [], [r.to_dict() for r in results], [{**c.incident, "change": c.kind} for c in changes]
        )
        for change in (c for c in summary.changes if c["change"]):
            summary.messages.append(_queue(connection, plan, settings, change, flow_run_url, now))
        summary.deliveries = alerts.deliver_pending(connection, webhook_url, **(delivery or {}))
        summary.events = _emit(summary, flow_run_url)
    finally:
        connection.close()
    return summary
