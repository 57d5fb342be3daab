"""The HTML reports in a real browser: headless Chromium lays them out, the charts have size and
shapes, the tables have rows, the console stays clean, and a screenshot is saved beside the test.

Marked `integration`; `make test` installs Chromium first (`make browser`), so a missing browser fails here.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from tests.support.browser import CHROMIUM, render_report

REPO = Path(__file__).resolve().parents[1]
LABELS = ["billing", "technical", "account"]

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def chromium_present():
    if not shutil.which(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: run `make browser` (part of `make test`)")


def leaderboard_line(model: str, variant: str, split: str, score: float, cost: float | None) -> dict:
    return {
        "model": model,
        "hosting": "api" if cost else "self_hosted",
        "prompt_variant": variant,
        "split": split,
        "items": 30,
        "accuracy": score,
        "score": score,
        "macro_f1": score - 0.02,
        "error_rate": 0.0,
        "latency_p50_ms": 120.0,
        "latency_p95_ms": 310.0,
        "cost_per_1k_items": cost,
        "cost_per_correct": cost / (score * 1000) if cost else None,
    }


def synthetic_eval_summary() -> dict:
    """A two-arm classification run as the eval flow summarises it (numbers invented, shape real)."""
    leaderboard = [
        leaderboard_line("gpt-4o-mini", "as-logged", "test", 0.90, 0.085),
        leaderboard_line("hosted_vllm/smollm2-135m-instruct", "constrained", "test", 0.86, None),
        leaderboard_line("deepinfra/Qwen/Qwen3-14B", "zero-shot", "test", 0.88, 0.021),
        leaderboard_line("deepinfra/Qwen/Qwen3-14B", "zero-shot", "dev", 0.87, 0.021),
    ]
    return {
        "use_case": "ticket-routing",
        "task_type": "classification",
        "run_id": "eval-browser-check",
        "verdict": {
            "decision": "migrate",
            "reason": "Qwen3-14B within the 2-point margin at a quarter of the cost",
        },
        "leaderboard": leaderboard,
        "skipped": ["batch hosting: realtime use case"],
        "tokens_per_s": {"hosted_vllm/smollm2-135m-instruct": 341.5},
    }


def synthetic_scores() -> list[dict]:
    pairs = [(ref, pred) for ref in LABELS for pred in LABELS] * 3
    return [
        {"model": model, "prompt_variant": variant, "split": "test", "reference": ref, "prediction": pred}
        for model, variant in [("gpt-4o-mini", "as-logged"), ("deepinfra/Qwen/Qwen3-14B", "zero-shot")]
        for ref, pred in pairs
    ]


@pytest.fixture
def eval_report(tmp_path) -> Path:
    from workhorse.tasks.evaluate.report import write_eval_report

    return write_eval_report(
        tmp_path / "eval-report.html", synthetic_eval_summary(), synthetic_scores(), LABELS
    )


@pytest.fixture
def audit_report(tmp_path, isolated_workspace) -> Path:
    """The audit's real report over a small slice of Acme's generated logs (plain functions, no flow)."""
    from workhorse.config import load_plan
    from workhorse.tasks.audit.assessment import audit_logs
    from workhorse.tasks.common.html import write_audit_report

    spec = importlib.util.spec_from_file_location("acme_generate", REPO / "examples" / "acme" / "generate.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    logs = generator.write_logs(tmp_path / "logs", scale=0.05)
    plan = load_plan(REPO / "examples" / "acme" / "workhorse.yaml")
    # The generator plants a fixed handful of bad rows: at this small scale they exceed the plan's 2 %.
    result = audit_logs(list(logs.values()), plan, workspace_root=isolated_workspace.root, max_bad_ratio=0.1)
    return write_audit_report(result, plan, tmp_path / "audit-report.html")


def assert_non_blank_png(path: Path, size: tuple[int, int]) -> None:
    """A PNG of the window's size with more than a handful of colours (text, bars, borders)."""
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == size
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 20, f"{path} looks blank ({len(colours or [])} colours)"


def test_eval_report_renders_its_chart_and_tables(eval_report, tmp_path):
    page = render_report(eval_report, screenshot=tmp_path / "eval-report.png")

    assert page.errors == []
    scatter = page.svg("quality-vs-cost")
    assert scatter["width"] > 300 and scatter["height"] > 200 and scatter["shapes"] >= 2 + 3  # axes + 3 arms
    leaderboard = page.table("leaderboard")
    assert leaderboard["rows"] == 1 + 4 and leaderboard["height"] > 0
    confusion = [t for t in page.tables if t["id"] is None]
    assert len(confusion) == 2 and all(t["rows"] == 1 + len(LABELS) for t in confusion)
    assert page.title == "Evaluation — ticket-routing"
    assert_non_blank_png(page.screenshot, (1200, 1600))


def test_audit_report_renders_its_charts_and_tables(audit_report, tmp_path):
    page = render_report(audit_report, screenshot=tmp_path / "audit-report.png")

    assert page.errors == []
    assert page.svgs and all(s["width"] > 0 and s["height"] > 0 and s["shapes"] > 0 for s in page.svgs)
    assert page.tables and all(t["rows"] >= 2 and t["height"] > 0 for t in page.tables)
    assert_non_blank_png(page.screenshot, (1200, 1600))


def test_the_check_sees_console_errors_and_empty_charts(tmp_path):
    """The check is not vacuous: a failing script, a missing image and an empty chart are all seen."""
    page_file = tmp_path / "broken.html"
    page_file.write_text(
        "<!doctype html><html><head><title>broken</title></head><body>"
        "<svg id='empty' width='0' height='0'></svg><img src='missing.png'>"
        "<script>console.error('chart data missing'); undefinedFunction();</script></body></html>"
    )
    page = render_report(page_file)

    assert page.svg("empty") == {"id": "empty", "width": 0, "height": 0, "shapes": 0}
    assert any("chart data missing" in e for e in page.errors)
    assert any(e.startswith("exception") for e in page.errors)
    assert any("missing.png" in e for e in page.errors)
