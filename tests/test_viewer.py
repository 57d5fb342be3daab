"""The per-item viewer in headless Chromium: 5,000 items open, the filters and the search show
exactly the items an independent count picks, the rows are laid out (their borders are in the
screenshot where layout says the rows are), and extraction answers show their fields against the
reference. Marked `integration`; `make test` installs Chromium first (`make browser`).
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.browser import CHROMIUM
from tests.support.browser_page import browser_page
from workhorse.tasks.common.runner import EvalResponse
from workhorse.tasks.evaluate.export import write_inspect_logs
from workhorse.tasks.evaluate.matrix import score_rows
from workhorse.tasks.evaluate.viewer import PAGE_SIZE, viewer_data, viewer_html
from workhorse.tasks.golden.sources import GoldenSpec

pytestmark = pytest.mark.integration

LABELS = ["alpha", "beta", "gamma"]
INCUMBENT, CHOSEN, OTHER = "openai/incumbent", "openai/chosen", "openai/other"
ACCURACY = {INCUMBENT: 0.9, CHOSEN: 0.85, OTHER: 0.6}
ERROR_RATE = 0.02  # of OTHER's calls: timeouts, no output
ORIGIN = {"source": "test", "label_origin": "human"}


@pytest.fixture(autouse=True)
def chromium_present():
    if not shutil.which(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: run `make browser` (part of `make test`)")


def classification_items(count: int):
    spec = GoldenSpec("routing", "classification", labels=LABELS)
    return [
        replace(
            spec.item(
                [{"role": "user", "content": f"ticket {i}: where is my order number {i * 7}?"}],
                LABELS[i % 3],
                source="test",
                label_origin="human",
            ),
            split="test",
        )
        for i in range(count)
    ]


def scripted_answers(items, seed: int = 3) -> dict[str, dict[str, str | None]]:
    """model → item id → its answer (None: the call timed out)."""
    rng, answers = random.Random(seed), {}
    for model, accuracy in ACCURACY.items():
        answers[model] = {}
        for item in items:
            wrong = rng.choice([label for label in LABELS if label != item.reference])
            answer = item.reference if rng.random() < accuracy else wrong
            failed = model == OTHER and rng.random() < ERROR_RATE
            answers[model][item.item_id] = None if failed else answer
    return answers


def responses(answers) -> list[EvalResponse]:
    return [
        EvalResponse(
            "run-viewer",
            item_id,
            model,
            "api",
            "zero-shot",
            output,
            100.0,
            10,
            1,
            0.0,
            None if output is not None else "timeout",
            False,
        )  # fmt: skip
        for model, by_item in answers.items()
        for item_id, output in by_item.items()
    ]


def write_viewer(path: Path, items, rows, task_type: str = "classification") -> Path:
    meta = {"use_case": "routing", "run_id": "run-viewer", "task_type": task_type, "note": "test split"}
    data = viewer_data(items, rows, score_rows(items, rows), INCUMBENT, (CHOSEN, "api"), meta)
    path.write_text(viewer_html(data), encoding="utf-8")
    return path


def choose(page, control: str, value: str) -> int:
    page.evaluate(
        f"(() => {{const c = document.getElementById({json.dumps(control)}); c.value = {json.dumps(value)};"
        f"c.dispatchEvent(new Event({json.dumps('change' if control == 'filter' else 'input')}))}})()"
    )
    applied = f"document.body.dataset.{'filter' if control == 'filter' else 'query'} === {json.dumps(value)}"
    return int(page.wait_until(f"{applied} && document.body.dataset.shown", what=f"{control}={value}"))


ROWS_JS = """JSON.stringify([...document.querySelectorAll('#items tbody tr')].map(tr => {
  const r = tr.getBoundingClientRect(); return {id: tr.dataset.item, top: r.top, height: r.height,
  left: r.left, width: r.width}}))"""


def assert_rows_drawn(screenshot: Path, rows: list[dict]) -> None:
    """Each row's top border (#d8dbe0) runs across most of the row in the screenshot, where the
    layout says the row starts: the rows are drawn, not only present in the DOM."""
    from PIL import Image

    with Image.open(screenshot) as image:
        pixels, (width, height) = image.convert("RGB").load(), image.size
        drawn = 0
        for row in [r for r in rows if 0 < r["top"] < height - 2]:
            xs = range(int(row["left"]) + 2, min(width, int(row["left"] + row["width"])) - 2)
            for y in (int(row["top"]), int(row["top"]) + 1, int(row["top"]) - 1):
                border = sum(
                    1 for x in xs if all(abs(a - b) <= 12 for a, b in zip(pixels[x, y], (216, 219, 224)))
                )
                if border > 0.8 * len(xs):
                    drawn += 1
                    break
    assert drawn >= 5, f"only {drawn} rows have their border in {screenshot}"


def test_five_thousand_items_open_filter_and_lay_out(tmp_path):
    items = classification_items(5000)
    answers = scripted_answers(items)
    page_file = write_viewer(tmp_path / "items.html", items, responses(answers))
    by_id = {item.item_id: item for item in items}
    disagree = {i for i in by_id if len({answers[m][i] for m in answers}) > 1}
    chosen_fails = {i for i in by_id if answers[CHOSEN][i] != by_id[i].reference}
    errors = {i for i in by_id if answers[OTHER][i] is None}

    with browser_page(size=(1400, 1000)) as page:
        page.open(page_file.resolve().as_uri())
        ready_ms = page.wait_until("window.viewerReadyMs", what="the first page of rows")
        print(f"5,000 items: first page rendered {ready_ms:.0f} ms after navigation start")
        assert int(page.evaluate("document.body.dataset.shown")) == 5000
        assert page.evaluate("document.querySelectorAll('#items tbody tr').length") == PAGE_SIZE

        assert choose(page, "filter", "disagree") == len(disagree)
        shown = json.loads(page.evaluate(ROWS_JS))
        assert len(shown) == min(PAGE_SIZE, len(disagree)) and {r["id"] for r in shown} <= disagree
        assert all(r["height"] > 0 for r in shown)
        assert all(a["top"] + a["height"] <= b["top"] + 1 for a, b in zip(shown, shown[1:]))
        assert_rows_drawn(page.screenshot(tmp_path / "viewer-disagreements.png"), shown)

        assert choose(page, "filter", "chosen_fails") == len(chosen_fails)
        assert choose(page, "filter", "error") == len(errors) > 0
        assert "timeout" in page.text()
        choose(page, "filter", "all")
        assert choose(page, "search", "order number 34993") == 1  # item 4999 (7 × 4999)
        [row] = json.loads(page.evaluate(ROWS_JS))
        assert row["id"] == items[4999].item_id
        assert page.errors() == []


def test_extraction_answers_show_their_fields_and_long_answers_collapse(tmp_path):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "total": {"type": "number"}}}
    spec = GoldenSpec("invoices", "extraction", json_schema=schema)
    reference = {"city": "Lyon", "total": 12.5}
    items = [
        replace(spec.item([{"role": "user", "content": f"invoice {i}"}], reference, **ORIGIN), split="test")
        for i in range(2)
    ]
    long_text = "\n".join(
        f"line {n} of a rambling answer <!--<script></script><b>not bold</b>" for n in range(12)
    )
    answers = {
        INCUMBENT: {items[0].item_id: json.dumps(reference), items[1].item_id: long_text},
        CHOSEN: {items[0].item_id: json.dumps({"city": "Paris", "total": 12.5}), items[1].item_id: "{}"},
    }
    page_file = write_viewer(tmp_path / "items.html", items, responses(answers), task_type="extraction")

    with browser_page() as page:
        page.open(page_file.resolve().as_uri())
        page.wait_until("window.viewerReadyMs")
        fields = json.loads(
            page.evaluate(
                "JSON.stringify([...document.querySelectorAll('tr[data-item] .field')].map(f => "
                "[f.closest('tr').dataset.item, f.className, f.textContent]))"
            )
        )
        first = [(kind, text) for item, kind, text in fields if item == items[0].item_id]
        assert ("field diff", 'city: "Paris" ≠ "Lyon"') in first and ("field same", "total: 12.5") in first
        assert ("field missing", 'city: (missing) "Lyon"') in [
            (k, t) for i, k, t in fields if i == items[1].item_id
        ]
        collapsed = page.evaluate("document.querySelectorAll('details:not([open])').length")
        assert collapsed == 1 and page.evaluate("document.querySelectorAll('b').length") == 0
        assert page.errors() == []


def test_the_answers_export_as_one_inspect_log_per_contender(tmp_path):
    """Inspect AI's log format (version 2; its read_eval_log loaded these in a check outside CI):
    a sample per item, the accuracy of each contender as the scripted answers give it."""
    items = classification_items(300)
    answers = scripted_answers(items)
    rows = responses(answers)
    meta = {"use_case": "routing", "run_id": "run-viewer", "task_type": "classification"}
    data = viewer_data(items, rows, score_rows(items, rows), INCUMBENT, (CHOSEN, "api"), meta)
    paths = write_inspect_logs(tmp_path, data)
    logs = {log["eval"]["model"]: log for log in (json.loads(path.read_text()) for path in paths)}

    assert set(logs) == {INCUMBENT, CHOSEN, OTHER}
    assert all(
        re.match(r"\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d", path.name) for path in paths
    )  # Inspect lists these
    for model in (INCUMBENT, CHOSEN, OTHER):
        log = logs[model]
        right = sum(answers[model][item.item_id] == item.reference for item in items)
        assert (log["version"], log["status"], log["eval"]["model"]) == (2, "success", model)
        assert len(log["samples"]) == log["results"]["total_samples"] == len(items)
        assert log["results"]["scores"][0]["metrics"]["accuracy"]["value"] == pytest.approx(
            right / len(items)
        )
        failed = {s["id"] for s in log["samples"] if "error" in s}
        assert failed == {item.item_id for item in items if answers[model][item.item_id] is None}
