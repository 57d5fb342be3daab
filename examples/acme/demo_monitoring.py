"""The demo's monitoring step: windows over the rollouts' traffic log, alerts to a local Slack receiver.

Windows end just after the last row of traffic and go back from there, so the rollout's fault
falls whole inside the last window and the earlier ones are its baselines. Without rollout
traffic, a generated pair of windows (healthy, then a candidate error burst) stands in.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa

from workhorse.tasks.monitor.alerts import message_text
from workhorse.tasks.monitor.rules import monitor_settings
from workhorse.tasks.monitor.window import MonitorSummary, monitor_window, summary_dict


def run_demo_monitoring(
    workspace, plan=None, traffic: pa.Table | None = None, webhook_url: str | None = None, console=None
) -> dict:
    """Monitoring at the end of ``make demo``: consecutive windows over ``traffic`` (default: a
    healthy window then a candidate error burst), posted to ``webhook_url`` or to a local Slack
    receiver started here; prints every message. Returns the last window's summary dict plus
    ``messages`` (the Slack payloads received locally, or sent)."""
    from workhorse.config import plan_workspace
    from workhorse.testing.slack_receiver import SlackReceiver

    ws, plan = plan_workspace(workspace, plan)
    settings = monitor_settings(plan.monitoring)
    traffic = error_burst_traffic(plan) if traffic is None else traffic
    with SlackReceiver() as receiver:
        url = webhook_url or receiver.url
        summaries = [
            monitor_window(ws, plan, traffic, now=end, webhook_url=url, delivery={"backoff_s": 0.05})
            for end in demo_window_ends(traffic, settings.window_minutes)
        ]
        messages = receiver.messages if webhook_url is None else [m for s in summaries for m in s.messages]
    _print_demo(console, summaries, messages)
    return {
        **summary_dict(summaries[-1]),
        "windows": len(summaries),
        "messages": messages,
        "incidents": [c for s in summaries for c in s.changes if c["change"]],
        "quiet_reason": quiet_reason(summaries),
    }


def demo_window_ends(traffic: pa.Table, minutes: int, most: int = 8) -> list[datetime]:
    """Ends of consecutive windows back from just after the last row (at most ``most``, each with
    traffic), oldest first: the last window holds the latest ``minutes`` whole, so a fault at the
    end of the traffic is never cut by a window boundary, and earlier windows are its baselines."""
    import pyarrow.compute as pc

    first, last = pc.min(traffic["ts"]).as_py(), pc.max(traffic["ts"]).as_py()
    ends, end = [], last + timedelta(microseconds=1)  # windows are [start, end)
    while end > first and len(ends) < most:
        ends.append(end)
        end -= timedelta(minutes=minutes)
    return ends[::-1]


def quiet_reason(summaries: list[MonitorSummary]) -> str | None:
    """Why no window opened an incident, in one line (None when one did): no traffic, breaches
    of incidents already open, or every rule within limits or short of requests."""
    from collections import Counter

    if any(c["change"] == "opened" for s in summaries for c in s.changes):
        return None
    results = [r for s in summaries for r in s.results]
    breached = sorted({r["key"] for r in results if r["state"] == "breach"})
    if breached:
        return f"{', '.join(breached)} breached, but no new incident (already open, or report-only)"
    if not any(m["requests"] for s in summaries for m in s.metrics):
        return "no traffic in any window"
    states = ", ".join(f"{n} {state}" for state, n in Counter(r["state"] for r in results).items())
    rates = [r for r in results if r["rule"] == "error_rate" and r["value"] is not None]
    worst = max(rates, key=lambda r: r["value"], default=None)
    return f"no rule breached ({states})" + (
        f"; highest error rate {worst['key']} {worst['value']:.1%} ({worst['detail']})" if worst else ""
    )


def error_burst_traffic(plan) -> pa.Table:
    """A healthy window, then one where the first candidate fails 30 % of the time on the first
    classification use case (the incumbent stays healthy)."""
    from workhorse.testing import traffic as generated

    name, case = next(
        ((n, c) for n, c in plan.use_cases.items() if c.task_type == "classification"),
        ("ticket-routing", None),
    )
    labels = list(case.labels) if case else ["billing", "technical"]
    candidate = (plan.candidates_for(name) or [None])[0]
    model = candidate.model if candidate else "hosted_vllm/smollm2-135m-instruct"
    start = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=2 * 15)
    answer = generated.labels_answer(labels)
    rows = []
    for index, window_start in enumerate((start, start + timedelta(minutes=15))):
        rows += generated.stream(name, plan.incumbent, window_start, 15, 80, answer=answer, seed=index)
        rows += generated.stream(
            name,
            model,
            window_start,
            15,
            40,
            answer=answer,
            seed=index,
            arm="candidate",
            errors=12 if index else 0,
        )
    return generated.table(rows)


def _print_demo(console, summaries: list[MonitorSummary], messages: list[dict]) -> None:
    say = console.print if console is not None else print
    last = summaries[-1]
    say(
        f"Monitoring: {len(summaries)} window(s), "
        f"last {last.window_start:%H:%M}–{last.window_end:%H:%M} UTC, "
        f"{len(last.breaches)} breach(es), {len(messages)} Slack message(s)"
    )
    for message in messages:
        say("--- Slack ---\n" + message_text(message))
