"""Reports: self-contained HTML (inline SVG charts, no JS) and markdown, built from small sections.

A report is a list of sections; each step adds its own with a small function that returns an
HTML fragment (``section``, ``table_html``, ``bar_chart_svg``) and writes the page with
``write_html``. Nothing here needs a plotting library, so reports open anywhere, offline.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Iterable, Sequence

from prefect import task

PALETTE = ("#3b6ea8", "#e08a2c", "#4f9d69", "#b5485d", "#7a5ea8", "#8c8c8c")
STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;\
color:#222;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6rem 0;font-size:13px}\
th,td{padding:4px 10px;border-bottom:1px solid #eee;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f6f6f6}.muted{color:#777}.bad{color:#b5485d}.good{color:#2d7a46}
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def money(value: float | None) -> str:
    """Dollars with cents under $100 and whole dollars above; '—' when unknown (never $0)."""
    if value is None:
        return "—"
    return f"${value:,.2f}" if abs(value) < 100 else f"${value:,.0f}"


def cents(value: float | None) -> str:
    """Dollars with cents always: billed spend is read against an invoice."""
    return "—" if value is None else f"${value:,.2f}"


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}%"


def section(title: str, *fragments: str) -> str:
    return f"<section><h2>{esc(title)}</h2>{''.join(fragments)}</section>"


def paragraph(text: str, css: str = "") -> str:
    return f"<p class='{css}'>{esc(text)}</p>"


def table_html(
    rows: Sequence[dict],
    columns: Sequence[tuple[str, str]],
    numeric: Iterable[str] = (),
    table_id: str | None = None,
) -> str:
    """An HTML table of ``rows`` with (key, header) columns; values are pre-formatted strings."""
    numeric = set(numeric)
    head = "".join(f"<th>{esc(h)}</th>" for _, h in columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td class='{'n' if k in numeric else ''}'>{esc(r.get(k))}</td>" for k, _ in columns)
        + "</tr>"
        for r in rows
    )
    opening = f"<table id='{esc(table_id)}'>" if table_id else "<table>"
    return f"{opening}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def bar_chart_svg(
    labels: Sequence[str],
    series: dict[str, Sequence[float]],
    *,
    title: str = "",
    unit: str = "$",
    width: int = 760,
    bar_height: int = 14,
) -> str:
    """Horizontal grouped bars as inline SVG: one group per label, one bar per series."""
    peak = max([v for values in series.values() for v in values if v] or [1.0])
    group = bar_height * len(series) + 10
    height, left = 40 + group * len(labels) + 20 * len(series), 170
    parts = [
        (
            f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
            f"role='img' aria-label='{esc(title)}'>"
        ),
        f"<text x='0' y='16' font-weight='bold'>{esc(title)}</text>",
    ]
    for i, label in enumerate(labels):
        y0 = 30 + i * group
        parts.append(f"<text x='0' y='{y0 + bar_height}' font-size='12'>{esc(label)}</text>")
        for j, (name, values) in enumerate(series.items()):
            value = values[i] or 0.0
            length = (width - left - 90) * value / peak
            y = y0 + j * bar_height
            parts.append(
                f"<rect x='{left}' y='{y}' width='{length:.1f}' height='{bar_height - 2}' "
                f"fill='{PALETTE[j % len(PALETTE)]}'/>"
                f"<text x='{left + length + 4:.1f}' y='{y + bar_height - 3}' font-size='11'>"
                f"{esc(_short(value, unit))}</text>"
            )
    legend_y = 30 + group * len(labels) + 6
    for j, name in enumerate(series):
        parts.append(
            f"<rect x='{left + j * 170}' y='{legend_y}' width='10' height='10' "
            f"fill='{PALETTE[j % len(PALETTE)]}'/>"
            f"<text x='{left + j * 170 + 14}' y='{legend_y + 9}' font-size='11'>{esc(name)}</text>"
        )
    return "".join(parts) + "</svg>"


def _short(value: float, unit: str) -> str:
    return money(value) if unit == "$" else f"{value:,.0f}{unit}"


def page(title: str, subtitle: str, sections: Sequence[str]) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
        f"<style>{STYLE}</style></head>"
        f"<body><h1>{esc(title)}</h1><p class='muted'>{esc(subtitle)}</p>{''.join(sections)}</body></html>"
    )


def write_html(path: Path, title: str, subtitle: str, sections: Sequence[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page(title, subtitle, sections), encoding="utf-8")
    return path


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> str:
    head = "| " + " | ".join(h for _, h in columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(str(r.get(k, "")) for k, _ in columns) + " |\n" for r in rows)


# --------------------------------------------------------------------------- the audit's sections


def best_options(result) -> dict[str, dict]:
    """Per use case, the cheapest projection that meets its latency need and has a price."""
    best: dict[str, dict] = {}
    for row in result.projections.to_pylist():
        if row["fits_latency"] and row["projected_monthly_usd"] is not None:
            current = best.get(row["use_case"])
            if current is None or row["projected_monthly_usd"] < current["projected_monthly_usd"]:
                best[row["use_case"]] = row
    return best


def billed_rows(result) -> list[dict]:
    """One display row per calendar month × use case × model: spend as the invoice shows it."""
    return [
        {
            "month": r["coverage"],
            "use_case": r["use_case"],
            "model": r["model"],
            "requests": f"{r['requests']:,}",
            "prompt_tokens": f"{r['prompt_tokens']:,}",
            "completion_tokens": f"{r['completion_tokens']:,}",
            "spend": cents(r["spend_usd"]) + ("" if r["fully_priced"] else " + unpriced"),
        }
        for r in result.billed.to_pylist()
    ]


BILLED_COLUMNS = [
    ("month", "Month (UTC)"),
    ("use_case", "Use case"),
    ("model", "Model"),
    ("requests", "Requests"),
    ("prompt_tokens", "Input tokens"),
    ("completion_tokens", "Output tokens"),
    ("spend", "Spend"),
]


def billed_notes(result, plan) -> list[tuple[str, str]]:
    """(text, css) lines under the billed table: totals per month, what partial means, sampling."""
    from workhorse.tasks.audit.assessment import billed_months

    months = billed_months(result.billed)
    notes = (
        [("Per month: " + "; ".join(f"{m['coverage']} {cents(m['spend_usd'])}" for m in months) + ".", "")]
        if months
        else []
    )
    notes.append(
        (
            "Exact sums of the logged calls' cost per UTC calendar month, not scaled by time. "
            "A partial month counts the calendar days from the first logged row's day to the last one's: "
            "the invoice for it holds more if calls were made outside the logs.",
            "muted",
        )
    )
    if plan.audit.log_sample_rate < 1:
        notes.append(
            (
                f"The logs hold {plan.audit.log_sample_rate * 100:g}% of calls (audit.log_sample_rate): "
                f"every figure is divided by it, as the invoice counts every call.",
                "muted",
            )
        )
    return notes


def run_rate_notes(result) -> list[tuple[str, str]]:
    """(text, css) lines that say what the run-rate is, and whether it is an extrapolation."""
    if result.window is None:
        return [("No run-rate: no accepted rows.", "bad")]
    window = result.window
    notes = [
        (
            f"Per run-rate month: {window.label()}. Projections, the total-cost view and the "
            f"break-even month below are built on it.",
            "",
        )
    ]
    return notes + (
        [(window.warning()[0].upper() + window.warning()[1:] + ".", "bad")] if window.extrapolated else []
    )


def basis_note(result) -> str:
    """One line for the tables built on the run-rate: their basis, and whether it is an extrapolation."""
    window = result.window
    if window is None:
        return ""
    short = (
        f"Per run-rate month, over {window.span_days:.1f} days of logs ({window.first_ts:%Y-%m-%d} → "
        f"{window.last_ts:%Y-%m-%d})"
    )
    return paragraph(
        short + (": an extrapolation (see above)." if window.extrapolated else "."),
        "bad" if window.extrapolated else "muted",
    )


def use_case_rows(result, plan) -> list[dict]:
    """One display row per use case: run-rate spend, verdicts with reasons, owner, best option."""
    best, rows = best_options(result), []
    for uc in result.use_cases.to_pylist():
        verdict, option = result.verdicts[uc["use_case"]], best.get(uc["use_case"])
        rows.append(
            {
                "use_case": uc["use_case"],
                "models": uc["models"],
                "monthly_requests": f"{uc['monthly_requests']:,.0f}",
                "monthly_cost": money(uc["monthly_cost_usd"]) + ("" if uc["fully_priced"] else " + unpriced"),
                "workload": verdict.workload,
                "workload_reason": verdict.workload_reason,
                "latency": verdict.latency,
                "latency_reason": verdict.latency_reason,
                "owner": plan.owner_of(uc["use_case"]) or "—",
                "best": f"{option['candidate']} ({option['hosting']})" if option else "keep incumbent",
                "projected": money(option["projected_monthly_usd"]) if option else "—",
                "saving": f"{money(option['saving_usd'])} ({pct(option['saving_pct'])})" if option else "—",
            }
        )
    return rows


USE_CASE_COLUMNS = [
    ("use_case", "Use case"),
    ("models", "Model"),
    ("monthly_requests", "Requests/run-rate month"),
    ("monthly_cost", "Run-rate/month"),
    ("workload", "Workload"),
    ("workload_reason", "Why"),
    ("latency", "Latency"),
    ("latency_reason", "Why"),
    ("owner", "Owner"),
    ("best", "Cheapest fitting option"),
    ("projected", "Projected/run-rate month"),
    ("saving", "Saving/run-rate month"),
]


def audit_chart(result) -> str:
    """Run-rate per use case: current vs the cheapest fitting option."""
    best = best_options(result)
    names = result.use_cases.column("use_case").to_pylist()
    current = result.use_cases.column("monthly_cost_usd").to_pylist()
    projected = [best[n]["projected_monthly_usd"] if n in best else c for n, c in zip(names, current)]
    return bar_chart_svg(
        names,
        {"current (incumbent)": current, "projected (cheapest fitting option)": projected},
        title="Spend per run-rate month, per use case",
    )


def projection_rows(result) -> list[dict]:
    return [
        {
            **r,
            "current": money(r["current_monthly_usd"]),
            "projected": money(r["projected_monthly_usd"]),
            "saving": money(r["saving_usd"]),
            "saving_pct": pct(r["saving_pct"]),
            "fits": "yes" if r["fits_latency"] else "no",
        }
        for r in result.projections.to_pylist()
    ]


PROJECTION_COLUMNS = [
    ("use_case", "Use case"),
    ("candidate", "Candidate"),
    ("hosting", "Hosting"),
    ("origin", "From"),
    ("current", "Current/run-rate month"),
    ("projected", "Projected/run-rate month"),
    ("saving", "Saving"),
    ("saving_pct", "%"),
    ("fits", "Meets latency"),
    ("note", "Price source / note"),
]


def total_cost_rows(result) -> list[dict]:
    return [
        {
            "candidate": v["candidate"],
            "hosting": v["hosting"],
            "use_cases": v["use_cases"],
            "current": money(v["current_monthly_usd"]),
            "variable": money(v["variable_monthly_usd"]),
            "fixed": money(v["fixed_monthly_usd"]),
            "net": money(v["net_monthly_saving_usd"]),
            "break_even": v["break_even_month"] or "never",
            "reason": v["reason"],
        }
        for v in result.total_cost
    ]


TOTAL_COST_COLUMNS = [
    ("candidate", "Candidate"),
    ("hosting", "Hosting"),
    ("use_cases", "Use cases"),
    ("current", "Current/run-rate month"),
    ("variable", "Variable/run-rate month"),
    ("fixed", "Fixed/month"),
    ("net", "Net saving/run-rate month"),
    ("break_even", "Break-even month"),
    ("reason", "Why"),
]


def data_quality_fragment(result) -> str:
    text = f"Read {result.read:,} rows: {result.accepted:,} accepted, {result.quarantined:,} quarantined."
    rows = [{"expectation": k, "rows": v} for k, v in sorted(result.failures.items(), key=lambda kv: -kv[1])]
    where = (
        paragraph(f"Quarantined rows, each with the expectations it broke: {result.quarantine_path}")
        if result.quarantine_path
        else ""
    )
    unpriced = (
        paragraph(f"Unpriced models (counted apart, not as $0): {', '.join(result.unpriced_models)}", "bad")
        if result.unpriced_models
        else ""
    )
    return (
        paragraph(text)
        + (
            table_html(rows, [("expectation", "Failed expectation"), ("rows", "Rows")], ["rows"])
            if rows
            else ""
        )
        + where
        + unpriced
    )


def _paragraphs(notes: list[tuple[str, str]]) -> str:
    return "".join(paragraph(text, css) for text, css in notes)


def audit_sections(result, plan) -> list[str]:
    """The audit's sections, in reading order; later steps append their own."""
    totals = sum(result.use_cases.column("monthly_cost_usd").to_pylist()) if result.use_cases.num_rows else 0
    basis = basis_note(result)
    return [
        section(
            "Billed spend per calendar month",
            table_html(
                billed_rows(result),
                BILLED_COLUMNS,
                ["requests", "prompt_tokens", "completion_tokens", "spend"],
                table_id="billed",
            ),
            _paragraphs(billed_notes(result, plan)),
        ),
        section(
            "Run-rate and verdicts per use case",
            paragraph(f"Run-rate {money(totals)} per run-rate month from {result.accepted:,} accepted rows."),
            _paragraphs(run_rate_notes(result)),
            audit_chart(result),
            table_html(use_case_rows(result, plan), USE_CASE_COLUMNS),
        ),
        section(
            "Projections per candidate and hosting strategy (per run-rate month)",
            basis,
            table_html(projection_rows(result), PROJECTION_COLUMNS),
        ),
        section(
            "Total cost of ownership (fixed vs variable, per run-rate month)",
            basis,
            table_html(total_cost_rows(result), TOTAL_COST_COLUMNS),
            paragraph(
                "Self-hosting's fixed costs are the always-on GPUs plus engineering time; one-off migration "
                "work is repaid by the net saving per run-rate month, so the break-even month holds only "
                "while the run-rate does. Frontier use cases are not projected.",
                "muted",
            ),
        ),
        section("Data quality", data_quality_fragment(result)),
    ]


def _markdown_notes(notes: list[tuple[str, str]]) -> str:
    """Paragraphs, a warning ('bad') in bold."""
    return "".join(f"**{text}**\n\n" if css == "bad" else f"{text}\n\n" for text, css in notes)


def audit_markdown(result, plan) -> str:
    """The audit's summary for a Prefect markdown artifact or a PR comment."""
    rows = use_case_rows(result, plan)
    head = (
        f"# Usage audit {result.run_id}\n\nRead {result.read:,} rows, accepted {result.accepted:,}, "
        f"quarantined {result.quarantined:,}.\n\n"
    )
    billed = (
        "## Billed spend per calendar month\n\n"
        + markdown_table(billed_rows(result), BILLED_COLUMNS)
        + "\n"
        + _markdown_notes(billed_notes(result, plan))
    )
    rate = "## Run-rate and projections\n\n" + _markdown_notes(run_rate_notes(result))
    cols = [
        ("use_case", "Use case"),
        ("monthly_cost", "Run-rate/month"),
        ("workload", "Workload"),
        ("latency", "Latency"),
        ("best", "Cheapest fitting option"),
        ("projected", "Projected/run-rate month"),
        ("saving", "Saving/run-rate month"),
    ]
    reasons = "".join(f"- **{r['use_case']}**: {r['workload_reason']}; {r['latency_reason']}\n" for r in rows)
    return head + billed + rate + markdown_table(rows, cols) + "\n## Why\n" + reasons


def write_audit_report(result, plan, path: Path) -> Path:
    subtitle = (
        f"{plan.company or 'Usage'} audit {result.run_id} · "
        f"inputs: {', '.join(Path(p).name for p in result.inputs)}"
    )
    return write_html(
        path,
        "Usage audit: what we spend and what open models would cost",
        subtitle,
        audit_sections(result, plan),
    )


@task(name="write-audit-report")
def write_report(result, plan, path: str) -> str:
    """Write the audit's HTML report; returns its path."""
    return str(write_audit_report(result, plan, Path(path)))
