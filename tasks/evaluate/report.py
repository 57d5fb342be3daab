"""The evaluation's human-readable outputs: a markdown verdict and a self-contained HTML report
with a quality-vs-cost scatter, the leaderboard, and per-use-case detail (a confusion matrix
for classification, the ROUGE-L distribution for summarisation). No JavaScript, no CDN: the
report opens offline and in any mail client that renders HTML."""

from __future__ import annotations

import html
import json
from collections import Counter
from pathlib import Path

from workhorse.tasks.common.html import table_html
from workhorse.tasks.evaluate.viewer import viewer_link

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:1200px;color:#1b1f24}
table{border-collapse:collapse;margin:1rem 0;font-size:13px}\
td,th{border:1px solid #ccd;padding:4px 8px;text-align:right}
th{background:#f0f2f6}td:first-child,th:first-child{text-align:left}
.verdict{padding:1rem;border-radius:6px;background:#f6f8fa;border-left:6px solid #888}
.migrate{border-color:#2da44e}.keep{border-color:#cf222e}.inconclusive{border-color:#bf8700}
"""


def fmt(value, kind: str = "") -> str:
    if value is None:
        return "–"
    if kind == "%":
        return f"{value:.1%}"
    if kind == ".3":
        return f"{value:.3f}"
    if kind == "p":
        return f"{value:.3g}"
    if kind == "$":  # small per-item costs keep two significant digits instead of rounding to $0.0000
        return f"${value:,.4f}" if abs(value) >= 0.01 else f"${value:.2g}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return str(value)  # escaped where it becomes HTML


def fmt_pp(value) -> str:
    return "–" if value is None else f"{value * 100:+.1f} pp"


def ci_text(candidate: dict) -> str:
    if candidate["ci_low"] is None:
        return "–"
    return f"{fmt_pp(candidate['ci_low'])} to {fmt_pp(candidate['ci_high'])}"


def candidates_html(verdict: dict) -> str:
    """Every candidate's own verdict: decision, paired difference, CI, test and sentence."""
    rows = [
        {
            "candidate": c["model"] + (" (chosen)" if c["chosen"] else ""),
            "hosting": c["hosting"],
            "variant": c["prompt_variant"],
            "decision": c["decision"],
            "diff": fmt_pp(c["diff"]),
            "ci": ci_text(c),
            "n": c["n"],
            "p": fmt(c["p_value"], "p"),
            "reason": c["reason"],
        }
        for c in verdict.get("candidates") or []
    ]
    columns = [
        ("candidate", "candidate"),
        ("hosting", "hosting"),
        ("variant", "prompt"),
        ("decision", "decision"),
        ("diff", "Δ vs incumbent"),
        ("ci", "CI"),
        ("n", "n"),
        ("p", "McNemar p"),
        ("reason", "reason"),
    ]
    summary = f"<p class='summary'>{html.escape(verdict.get('summary') or '')}</p>"
    return summary + table_html(rows, columns, ["n"], "candidates")


def verdict_markdown(summary: dict) -> str:
    verdict = summary["verdict"]
    lines = [
        f"# Verdict for `{summary['use_case']}`: **{verdict['decision']}**",
        "",
        verdict["reason"] or "",
        "",
    ]
    if verdict.get("best_candidate"):
        lines.append(
            f"Best candidate: `{verdict['best_candidate']}` ({verdict['hosting']}, "
            f"prompt `{verdict['prompt_variant']}`); projected monthly saving: "
            f"{fmt(verdict['projected_monthly_saving_usd'], '$')}"
        )
    if len(verdict.get("candidates") or []) > 1:
        lines += [
            "",
            verdict.get("summary") or "",
            "",
            "| candidate | hosting | decision | Δ | CI | n | p | reason |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {c['model']} | {c['hosting']} | {c['decision']} | {fmt_pp(c['diff'])} | {ci_text(c)} | "
            f"{c['n']} | {fmt(c['p_value'], 'p')} | {c['reason']} |"
            for c in verdict["candidates"]
        ]
    lines += [
        "",
        "| model | hosting | variant | split | items | accuracy | score | errors | p95 ms | $/1k items |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for line in summary["leaderboard"]:
        lines.append(
            f"| {line['model']} | {line['hosting']} | {line['prompt_variant']} | {line['split']} | "
            f"{line['items']} | {fmt(line['accuracy'], '%')} | {fmt(line['score'], '.3')} | "
            f"{fmt(line['error_rate'], '%')} | {fmt(line['latency_p95_ms'])} | "
            f"{fmt(line['cost_per_1k_items'], '$')} |"
        )
    for reason in summary["skipped"]:
        lines.append(f"\n- skipped: {reason}")
    return "\n".join(lines)


def scatter_svg(points: list[dict], width: int = 640, height: int = 320) -> str:
    """Quality (y) against cost per 1k items (x). Unpriced arms stand in a band of their own past
    the cost axis, hollow and labelled: drawn at $0 they would look free."""
    pad, band = 50, 90
    axis_end = width - band - 10  # the cost axis ends here; the unpriced band lies beyond it
    costs = [p["cost_per_1k_items"] for p in points if p["cost_per_1k_items"] is not None] or [1.0]
    top = max(costs) * 1.1 or 1.0
    marks = [
        f'<line x1="{pad}" y1="{height - pad}" x2="{axis_end}" y2="{height - pad}" stroke="#444"/>',
        f'<line x1="{pad}" y1="10" x2="{pad}" y2="{height - pad}" stroke="#444"/>',
        (
            f'<text x="{(pad + axis_end) / 2}" y="{height - 12}" text-anchor="middle">'
            f"cost per 1k items (USD)</text>"
        ),
        (
            f'<text x="14" y="{height / 2}" transform="rotate(-90 14 {height / 2})" text-anchor="middle">'
            f"score</text>"
        ),
        # End ticks: enough to read the scale without a charting library.
        f'<text x="{pad - 6}" y="{height - pad}" text-anchor="end" font-size="10">0</text>',
        f'<text x="{pad - 6}" y="24" text-anchor="end" font-size="10">1</text>',
        f'<text x="{pad}" y="{height - pad + 14}" text-anchor="middle" font-size="10">$0</text>',
        (
            f'<text x="{axis_end}" y="{height - pad + 14}" text-anchor="middle" font-size="10">'
            f"{fmt(top, '$')}</text>"
        ),
    ]
    if any(p["cost_per_1k_items"] is None for p in points):
        band_x = axis_end + 10
        marks += [
            f'<rect id="unpriced-band" x="{band_x}" y="10" width="{band}" height="{height - pad - 10}" '
            f'fill="#f6f8fa" stroke="#bbb" stroke-dasharray="4 3"/>',
            f'<text x="{band_x + band / 2}" y="{height - pad + 14}" text-anchor="middle" font-size="10">'
            f"unpriced</text>",
        ]
    placed: list[tuple[float, float]] = []
    for point in points:
        cost = point["cost_per_1k_items"]
        x = pad + cost / top * (axis_end - pad) if cost is not None else axis_end + 10 + band / 2
        y = height - pad - point["score"] * (height - pad - 20)
        # Arms at the same spot (one model served and batched) get their labels stacked, not overprinted.
        label_y = y - 8 + 13 * sum(abs(x - px) < 40 and abs(y - py) < 12 for px, py in placed)
        placed.append((x, y))
        label = f"{point['model']} · {point['prompt_variant']}" + ("" if cost is not None else " (unpriced)")
        short = label if len(label) <= 32 else label[:31] + "…"  # the full label is in the tooltip
        # Labels of points on the right half run leftwards so they stay inside the chart.
        anchor, dx = ("end", -8) if x > width * 0.55 else ("start", 8)
        fill = (
            'fill="#0969da" class="point"'
            if cost is not None
            else 'fill="white" stroke="#57606a" class="point unpriced"'
        )
        marks.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" {fill}>'
            f"<title>{html.escape(label)}: score {point['score']:.3f}, "
            f"cost {fmt(cost, '$') if cost is not None else 'unknown (unpriced)'}</title></circle>"
        )
        marks.append(
            f'<text x="{x + dx:.1f}" y="{label_y:.1f}" font-size="11" text-anchor="{anchor}">'
            f"{html.escape(short)}</text>"
        )
    return (
        f'<svg id="quality-vs-cost" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="quality versus cost">{"".join(marks)}</svg>'
    )


def leaderboard_html(rows: list[dict]) -> str:
    """The leaderboard through the reports' shared table (which escapes), values formatted here."""
    formatted = [{key: fmt(row.get(key), kind) for key, _, kind in LEADERBOARD_COLUMNS} for row in rows]
    numeric = [key for key, _, kind in LEADERBOARD_COLUMNS if kind or key == "items"]
    return table_html(
        formatted, [(key, title) for key, title, _ in LEADERBOARD_COLUMNS], numeric, "leaderboard"
    )


LEADERBOARD_COLUMNS = [
    ("model", "model", ""),
    ("hosting", "hosting", ""),
    ("prompt_variant", "prompt", ""),
    ("split", "split", ""),
    ("items", "items", ""),
    ("accuracy", "accuracy", "%"),
    ("score", "score", ""),
    ("macro_f1", "macro F1", ""),
    ("error_rate", "errors", "%"),
    ("latency_p50_ms", "p50 ms", ""),
    ("latency_p95_ms", "p95 ms", ""),
    ("cost_per_1k_items", "$ / 1k items", "$"),
    ("cost_per_correct", "$ / correct", "$"),
]


def confusion_html(scores: list[dict], labels: list[str]) -> str:
    """Reference × prediction counts per arm tested, so a reader sees which labels get confused."""
    parts = []
    for arm in sorted({(s["model"], s["prompt_variant"]) for s in scores if s["split"] == "test"}):
        counts = Counter(
            (s["reference"], s["prediction"])
            for s in scores
            if (s["model"], s["prompt_variant"]) == arm and s["split"] == "test"
        )
        predicted = labels + sorted({p for _, p in counts if p not in labels})
        head = "".join(f"<th>{html.escape(str(p))}</th>" for p in predicted)
        body = "".join(
            f"<tr><td>{html.escape(r)}</td>"
            + "".join(f"<td>{counts[(r, p)]}</td>" for p in predicted)
            + "</tr>"
            for r in labels
        )
        parts.append(
            f"<h3>{html.escape(' · '.join(arm))}</h3><table class='confusion'><tr><th>reference → predicted"
            f"</th>{head}</tr>{body}</table>"
        )
    return "".join(parts)


def distribution_html(scores: list[dict], metric: str = "rougeL") -> str:
    """Histogram (10 bins) of a per-item metric per arm tested, as inline SVG bars."""
    parts = []
    for arm in sorted({(s["model"], s["prompt_variant"]) for s in scores if s["split"] == "test"}):
        values = [
            json.loads(s["details"]).get(metric, 0.0)
            for s in scores
            if (s["model"], s["prompt_variant"]) == arm and s["split"] == "test"
        ]
        bins = Counter(min(int(v * 10), 9) for v in values)
        peak = max(bins.values() or [1])
        bars = "".join(
            f'<rect x="{i * 30}" y="{100 - bins[i] / peak * 100:.0f}" width="26" '
            f'height="{bins[i] / peak * 100:.0f}" fill="#8250df"><title>{i / 10:.1f}–{(i + 1) / 10:.1f}: '
            f"{bins[i]}</title></rect>"
            for i in range(10)
        )
        parts.append(
            f"<h3>{html.escape(' · '.join(arm))}</h3><svg class='distribution' width='300' height='100'>"
            f"{bars}</svg>"
        )
    return "".join(parts)


def write_eval_report(path: Path, summary: dict, scores: list[dict], labels: list[str]) -> Path:
    from workhorse.tasks.evaluate.batch import batches_html
    from workhorse.tasks.evaluate.judge import judge_html

    verdict = summary["verdict"]
    tested = [line for line in summary["leaderboard"] if line["split"] == "test"]
    detail = {
        "classification": lambda: confusion_html(scores, labels),
        "summarization": lambda: distribution_html(scores),
    }.get(summary["task_type"], lambda: "")()
    skipped = "".join(f"<li>{html.escape(reason)}</li>" for reason in summary["skipped"])
    page = f"""<!doctype html><html><head><meta charset="utf-8">\
<title>Evaluation — {html.escape(summary["use_case"])}</title>
<style>{STYLE}</style></head><body>
<h1>Evaluation of <code>{html.escape(summary["use_case"])}</code></h1>
<div class="verdict {html.escape(verdict["decision"])}">\
<strong>{html.escape(verdict["decision"])}</strong>: {html.escape(verdict["reason"] or "")}</div>
<h2>Verdict per candidate</h2>{candidates_html(verdict)}
<h2>Quality against cost (test split)</h2>{scatter_svg([t for t in tested if t["score"] is not None])}
{judge_html(summary.get("judge"))}
<h2>Leaderboard</h2>{leaderboard_html(summary["leaderboard"])}{viewer_link(path)}
{batches_html(summary.get("batches"))}
<h2>Detail</h2>{detail}
<h2>Run</h2><p>Run <code>{html.escape(summary["run_id"])}</code>; generated tokens/s: \
{html.escape(json.dumps({k: round(v, 1) for k, v in summary["tokens_per_s"].items()}))}</p>
<ul>{skipped}</ul></body></html>"""
    path.write_text(page, encoding="utf-8")
    return path
