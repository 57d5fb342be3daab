"""The per-item viewer: every test item of a run, answer by answer, like promptfoo's matrix view.

One row per test item (where the verdict is taken): the input, the reference, the incumbent's and
each candidate's answer with its score and error class. Filters for disagreements, failures of the
chosen candidate and errors; a text search; long answers collapse; for extraction, each answer's
JSON fields are marked against the reference's. One static file, no CDN: the rows are embedded as
JSON and a small script renders one page of them at a time, so 5,000 items open at once.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from prefect import task

VIEWER_NAME = "items.html"
PAGE_SIZE = 50
DIFFERS_FROM = "≠ "  # before a candidate field's value that the reference's differs from


@dataclass(frozen=True)
class Column:
    """One contender's answers on test: the model at one hosting."""

    model: str
    hosting: str
    role: str  # incumbent | candidate
    chosen: bool = False

    def label(self, ambiguous: bool) -> str:
        return f"{self.model} ({self.hosting})" if ambiguous else self.model


def columns_of(scores: Iterable[dict], incumbent: str, chosen: tuple[str, str] | None) -> list[Column]:
    """The incumbent first, then the chosen candidate, then the others in name order."""
    arms = sorted({(row["model"], row["hosting"]) for row in scores})
    columns = [
        Column(model, hosting, "incumbent" if model == incumbent else "candidate", (model, hosting) == chosen)
        for model, hosting in arms
    ]
    return sorted(columns, key=lambda c: (c.role != "incumbent", not c.chosen, c.model, c.hosting))


def answer(score: dict | None, output: str | None) -> dict | None:
    if score is None:
        return None
    return {
        "output": output,
        "prediction": score["prediction"],
        "correct": bool(score["correct"]),
        "value": round(float(score["value"]), 4),
        "error": score["error_type"],
    }


def flags(answers: list[dict | None], columns: list[Column]) -> dict[str, bool]:
    """disagree: the contenders' predictions differ; chosen_fails: the chosen candidate is wrong
    or did not answer; error: any call or scoring failed."""
    given = [a for a in answers if a is not None]
    chosen = next((a for a, c in zip(answers, columns) if c.chosen), None)
    has_chosen = any(c.chosen for c in columns)
    return {
        "disagree": len({json.dumps(a["prediction"]) for a in given}) > 1,
        "chosen_fails": has_chosen and (chosen is None or not chosen["correct"]),
        "error": any(a["error"] for a in given),
    }


def viewer_data(
    items: Sequence,
    rows: Iterable,
    scores: Iterable[dict],
    incumbent: str,
    chosen: tuple[str, str] | None,
    meta: dict,
) -> dict:
    """The viewer's JSON: columns, then one record per test item that any contender answered."""
    scores = [s for s in scores if s["split"] == "test"]
    outputs = {_key(_fields(r)): _fields(r)["output"] for r in rows}
    by_item: dict[str, dict[tuple[str, str], dict]] = {}
    for score in scores:
        by_item.setdefault(score["item_id"], {})[(score["model"], score["hosting"])] = score
    columns = columns_of(scores, incumbent, chosen)
    ambiguous = len({c.model for c in columns}) < len(columns)
    records = []
    for item in items:
        if item.item_id not in by_item:
            continue
        answers = [_answer_of(by_item[item.item_id].get((c.model, c.hosting)), outputs) for c in columns]
        records.append(
            {
                "id": item.item_id,
                "input": item.text,
                "reference": item.reference,
                "answers": answers,
                "flags": flags(answers, columns),
            }
        )
    return {
        **meta,
        "columns": [{"label": c.label(ambiguous), "role": c.role, "chosen": c.chosen} for c in columns],
        "items": records,
    }


def _answer_of(score: dict | None, outputs: dict[tuple, str | None]) -> dict | None:
    return answer(score, outputs.get(_key(score))) if score else None


def _fields(row) -> dict:
    return row if isinstance(row, dict) else row.__dict__


def _key(row: dict) -> tuple:
    return (row["model"], row["hosting"], row["prompt_variant"], row["item_id"])


def viewer_html(data: dict) -> str:
    """The page: the data as embedded JSON, every ``<`` escaped so no answer can close the script
    (``</script>``) or switch the parser's state (``<!--``)."""
    payload = json.dumps(data, ensure_ascii=False, default=str).replace("<", "\\u003c")
    title = f"Items — {data.get('use_case', '')}"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{VIEWER_STYLE}</style></head><body>
<h1>Every test item of <code>{html.escape(str(data.get("use_case", "")))}</code>, answer by answer</h1>
<p class="muted">Run <code>{html.escape(str(data.get("run_id", "")))}</code> · \
{html.escape(data.get("note", ""))}</p>
<div class="controls">
<select id="filter" aria-label="filter">
<option value="all">all items</option>
<option value="disagree">disagreements</option>
<option value="chosen_fails">failures of the chosen candidate</option>
<option value="error">errors</option></select>
<input id="search" type="search" placeholder="search input, reference and answers" size="40">
<button id="prev">‹ previous</button><span id="page"></span><button id="next">next ›</button>
<span id="count"></span></div>
<table id="items"><thead></thead><tbody></tbody></table>
<script id="items-data" type="application/json">{payload}</script>
<script>const PAGE_SIZE = {PAGE_SIZE}, DIFFERS_FROM = {json.dumps(DIFFERS_FROM)};
{VIEWER_SCRIPT}</script></body></html>"""


@task(name="write-item-viewer")
def write_item_viewer(
    run_dir: Path,
    items: Sequence,
    rows: Iterable,
    scores: Iterable[dict],
    incumbent: str,
    verdict,
    meta: dict,
) -> str:
    """runs/<id>/items.html, which the report links when it is there, and the same answers as
    Inspect AI logs in runs/<id>/inspect/ (``inspect view`` opens them)."""
    from workhorse.tasks.evaluate.export import write_inspect_logs

    chosen = (verdict.best_candidate, verdict.hosting) if getattr(verdict, "best_candidate", None) else None
    data = viewer_data(items, rows, scores, incumbent, chosen, meta)
    path = Path(run_dir) / VIEWER_NAME
    path.write_text(viewer_html(data), encoding="utf-8")
    write_inspect_logs(Path(run_dir) / "inspect", data)
    return str(path)


VIEWER_STYLE = """
body{font:13px/1.4 system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5rem;color:#1b1f24}
h1{font-size:1.3rem}.muted{color:#777}.controls{display:flex;gap:.6rem;align-items:center;margin:.8rem 0}
table{border-collapse:collapse;table-layout:fixed;width:100%}
th,td{border:1px solid #d8dbe0;padding:4px 6px;vertical-align:top;text-align:left;overflow-wrap:anywhere}
th{background:#f0f2f6;position:sticky;top:0}th.chosen{background:#e3f1e7}
pre{white-space:pre-wrap;margin:0;font:12px/1.35 ui-monospace,monospace}
.ok{color:#2d7a46}.bad{color:#b5485d}.err{background:#fbe9ec;color:#8a1f33;padding:0 4px;border-radius:3px}
.score{display:block;margin-top:3px;font-size:11px}.field{display:block;font:12px ui-monospace,monospace}
.field.same{color:#2d7a46}.field.diff,.field.extra{color:#b5485d}.field.missing{color:#8c8c8c}
summary{cursor:pointer;color:#3b6ea8}
"""

# The script builds every cell with textContent: answers are untrusted model output.
VIEWER_SCRIPT = r"""
const data = JSON.parse(document.getElementById('items-data').textContent);
const tbody = document.querySelector('#items tbody'), state = {filter: 'all', query: '', page: 0};
const haystack = data.items.map(it => [it.input, it.reference,
  ...it.answers.map(a => a ? (a.output || '') : '')].join('\n').toLowerCase());

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function textBlock(text) {
  text = text === null || text === undefined ? '' : String(text);
  if (text.length <= 240 && text.split('\n').length <= 4) return el('pre', '', text);
  const details = el('details'), summary = el('summary', '', text.slice(0, 160).replace(/\s+/g, ' ') + '…');
  details.append(summary, el('pre', '', text));
  return details;
}

function parsed(text) {
  if (typeof text !== 'string') return null;
  try { const v = JSON.parse(text); return v && typeof v === 'object' && !Array.isArray(v) ? v : null; }
  catch (e) { return null; }
}

function jsonDiff(answerText, referenceText) {
  const got = parsed(answerText), want = parsed(referenceText);
  if (!got || !want) return null;
  const box = el('div');
  for (const key of [...new Set([...Object.keys(want), ...Object.keys(got)])].sort()) {
    const a = JSON.stringify(got[key]), b = JSON.stringify(want[key]);
    const kind = !(key in got) ? 'missing' : !(key in want) ? 'extra' : a === b ? 'same' : 'diff';
    const shown = kind === 'missing' ? `${key}: (missing) ${b}` :
      kind === 'diff' ? `${key}: ${a} ${DIFFERS_FROM}${b}` : `${key}: ${a}`;
    box.append(el('span', `field ${kind}`, shown));
  }
  return box;
}

function answerCell(ans, reference) {
  const td = el('td');
  if (!ans) { td.append(el('span', 'muted', 'no answer')); return td; }
  const diff = data.task_type === 'extraction' ? jsonDiff(ans.prediction ?? ans.output, reference) : null;
  td.append(diff || textBlock(ans.output));
  const score = el('span', 'score ' + (ans.correct ? 'ok' : 'bad'),
    `${ans.correct ? '✓' : '✗'} ${ans.value.toFixed(2)}`);
  td.append(score);
  if (ans.error) td.append(el('span', 'err', ans.error));
  return td;
}

function visible() {
  const q = state.query.toLowerCase();
  const out = [];
  data.items.forEach((it, i) => {
    if (state.filter !== 'all' && !it.flags[state.filter]) return;
    if (q && !haystack[i].includes(q)) return;
    out.push(it);
  });
  return out;
}

function header() {
  const tr = el('tr');
  tr.append(el('th', '', 'input'), el('th', '', 'reference'));
  for (const c of data.columns)
    tr.append(el('th', c.chosen ? 'chosen' : '', `${c.label}${c.role === 'incumbent' ? ' (incumbent)' : ''}` +
      `${c.chosen ? ' (chosen)' : ''}`));
  document.querySelector('#items thead').append(tr);
}

function render() {
  const rows = visible(), pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE));
  state.page = Math.min(state.page, pages - 1);
  const slice = rows.slice(state.page * PAGE_SIZE, (state.page + 1) * PAGE_SIZE);
  const fragment = document.createDocumentFragment();
  for (const it of slice) {
    const tr = el('tr');
    tr.dataset.item = it.id;
    const input = el('td'); input.append(textBlock(it.input));
    const reference = el('td'); reference.append(textBlock(it.reference));
    tr.append(input, reference, ...it.answers.map(a => answerCell(a, it.reference)));
    fragment.append(tr);
  }
  tbody.replaceChildren(fragment);
  document.getElementById('page').textContent = ` page ${state.page + 1} of ${pages} `;
  document.getElementById('count').textContent = `${rows.length} of ${data.items.length} items`;
  Object.assign(document.body.dataset, {shown: rows.length, filter: state.filter, query: state.query});
}

let typing;
document.getElementById('filter').addEventListener('change', e => { state.filter = e.target.value;
  state.page = 0; render(); });
document.getElementById('search').addEventListener('input', e => { clearTimeout(typing);
  typing = setTimeout(() => { state.query = e.target.value; state.page = 0; render(); }, 120); });
document.getElementById('prev').addEventListener('click', () => { state.page = Math.max(0, state.page - 1);
  render(); });
document.getElementById('next').addEventListener('click', () => { state.page += 1; render(); });
header();
render();
window.viewerReadyMs = performance.now();
"""


def viewer_link(report: Path) -> str:
    """The report's link to the viewer beside it, when the run wrote one."""
    if not (Path(report).parent / VIEWER_NAME).exists():
        return ""
    return f"<p><a id='item-viewer' href='{VIEWER_NAME}'>Every test item, answer by answer</a></p>"
