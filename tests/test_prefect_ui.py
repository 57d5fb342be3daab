"""The Prefect UI as the platform team sees it: a server started the way `workhorse ui` starts one
(a free port, not 4200), the audit and an eval flow run against it, and headless Chromium opens
the UI: both flow runs Completed, the audit's table artifact and the eval's markdown verdict
rendered with their rows, no console errors. Screenshots stay in the test's temp folder.

Marked `integration`; `make test` installs Chromium first (`make browser`).
"""

from __future__ import annotations

import importlib
import json
import shutil
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.support.acme import ACME, acme_generator
from tests.support.browser import CHROMIUM
from tests.support.browser_page import BrowserPage, browser_page
from tests.support.eval_kit import evaluate, make_items, plan_file, scripted
from workhorse.tasks.evaluate.progress import watching
from workhorse.tasks.golden.versions import write_version
from workhorse.testing.fake_openai import FakeServerProcess, ServerConfig
from workhorse.ui import LocalServer, local_prefect_server
from workhorse.workspace import Workspace

pytestmark = pytest.mark.integration

UNREACHABLE = "Can't connect to Server API"
# The state badge in a flow run page's heading (its logs say "Completed" too, whatever the state).
HEADING_STATE_JS = "document.querySelector('.page-heading-flow-run__meta .state-badge')?.innerText.trim()"
# Rendered tables inside the artifact's page: their row counts and text.
TABLES_JS = "[...document.querySelectorAll('main table, .p-layout-default table, table')].map(t => \
({rows: t.querySelectorAll('tr').length, height: t.getBoundingClientRect().height, text: t.innerText}))"


@pytest.fixture(autouse=True)
def chromium_present():
    if not shutil.which(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: run `make browser` (part of `make test`)")


def api(server, path: str, body: dict | None = None):
    request = urllib.request.Request(
        f"{server.api_url}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


# What the two flows import on first use: imported while the server starts, the flows then take
# seconds instead of ~10 s more on a loaded 2-core machine.
WARM_IMPORTS = (
    "litellm",
    "scipy.stats",
    "sklearn.metrics",
    "rouge_score.rouge_scorer",
    "workhorse.flows.audit",
    "workhorse.flows.evaluate",
    "workhorse.tasks.audit.assessment",
    "workhorse.tasks.evaluate.decision",
    "workhorse.tasks.evaluate.report",
    "workhorse.tasks.evaluate.scoring",
)


def prepare_audit(logs_dir: Path) -> list[str]:
    """Acme's logs at a small scale, with the flows' imports done."""
    for module in WARM_IMPORTS:
        importlib.import_module(module)
    return [str(p) for p in acme_generator().write_logs(logs_dir, scale=0.05).values()]


def run_audit(workspace: Path, logs: list[str]):
    from workhorse.flows.audit import usage_audit

    # The generator plants a fixed handful of bad rows: at this small scale they exceed the plan's 2 %.
    return usage_audit(
        logs=logs,
        plan=str(ACME / "workhorse.yaml"),
        workspace=str(workspace),
        max_bad_row_ratio=0.1,
    )


def run_eval(workspace, folder: Path, monkeypatch, progress: list[dict]) -> dict:
    """A small eval against two fake servers; ``progress`` gets every change the tracker reported."""
    items = make_items(60)
    write_version(workspace, "routing", items, [{"kind": "test"}])
    incumbent = FakeServerProcess(ServerConfig(answers=scripted(items, 0.9, seed=1)))
    candidate = FakeServerProcess(ServerConfig(answers=scripted(items, 0.95, seed=2)))
    try:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-ui")
        monkeypatch.setenv("OPENAI_API_BASE", incumbent.url)
        plan = plan_file(folder, [{"model": "openai/cand", "api_base": candidate.url}], min_items=10)
        with watching(lambda tracker: progress.append(snapshot(tracker))):
            return evaluate(workspace, plan, variants=["zero-shot"])
    finally:
        incumbent.stop()
        candidate.stop()


def snapshot(tracker) -> dict:
    return {(line.phase, line.model): (line.done, line.total, line.errors) for line in tracker.lines.values()}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server as `workhorse ui` starts it, with one audit and one eval run recorded on it."""
    folder = tmp_path_factory.mktemp("prefect-ui")
    home, log = folder / "prefect-home", folder / "prefect-server.log"
    with ThreadPoolExecutor(1) as pool, pytest.MonkeyPatch.context() as monkeypatch:
        logs = pool.submit(prepare_audit, folder / "logs")  # while the server starts (15-30 s)
        with local_prefect_server(home=home, log=log) as server:
            yield Served(server, folder, *_record_runs(server, logs.result(), folder, monkeypatch))


@dataclass
class Served:
    server: LocalServer
    folder: Path  # screenshots land here
    audit: object
    summary: dict
    progress: list[dict]


def _record_runs(server, logs, folder: Path, monkeypatch):
    from prefect.events.clients import PrefectEventsClient
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    assert not server.api_url.startswith("http://127.0.0.1:4200/")
    progress: list[dict] = []
    # Prefect keeps one events worker per process, bound to the first server it met (in a full
    # test run, the session's): task runs are recorded through events, so without this the UI
    # finds this server's flow runs but not their tasks ("Batch lookup failed", 404s).
    EventsWorker.set_client_override(PrefectEventsClient, api_url=server.api_url)
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            audit = run_audit(folder / "audit-workspace", logs)
            summary = run_eval(Workspace.resolve(folder / "eval-workspace"), folder, monkeypatch, progress)
            APILogWorker.drain_all(timeout=5)  # the runs' last log lines reach the server before it stops
            EventsWorker.drain_all(timeout=5)
    finally:
        EventsWorker.set_client_override(None)
    return audit, summary, progress


def artifact(server, key: str) -> dict:
    [found] = api(server, "/artifacts/filter", {"artifacts": {"key": {"any_": [key]}}})
    return found


def open_artifact(page: BrowserPage, server, key: str, screenshot: Path, shows: list[str]) -> list[dict]:
    """The artifact's page once its tables hold every string of ``shows`` (cells fill in after rows)."""
    page.open(f"{server.ui_url}/artifacts/artifact/{artifact(server, key)['id']}")
    filled = " && ".join(f"all.includes({json.dumps(text)})" for text in shows)
    tables = page.wait_until(
        f"(() => {{const t = {TABLES_JS}; const all = t.map(x => x.text).join(' ');"
        f" return {filled} && t}})()",
        what=f"{key} showing {shows}",
    )
    page.screenshot(screenshot)
    return tables


def assert_item_viewer_written(summary: dict) -> None:
    """The eval flow wrote the per-item viewer beside its report, one record per test item answered."""
    run_dir = Path(summary["report"]).parent
    page = (run_dir / "items.html").read_text()
    data = json.loads(page.split('<script id="items-data" type="application/json">')[1].split("</script>")[0])
    test_items = {r["item_id"] for r in pq.read_table(summary["scores"]).to_pylist() if r["split"] == "test"}
    assert {record["id"] for record in data["items"]} == test_items
    assert "href='items.html'" in Path(summary["report"]).read_text()
    logs = [json.loads(path.read_text()) for path in (run_dir / "inspect").glob("*.json")]
    assert sorted(log["eval"]["model"] for log in logs) == sorted(c["label"] for c in data["columns"])
    assert all(len(log["samples"]) == len(test_items) for log in logs)


def runs_by_flow(server) -> dict[str, dict]:
    flows = {f["id"]: f["name"] for f in api(server, "/flows/filter", {})}
    return {flows[run["flow_id"]]: run for run in api(server, "/flow_runs/filter", {})}


def test_both_flow_runs_show_completed(served):
    server, by_flow = served.server, runs_by_flow(served.server)
    assert set(by_flow) >= {"usage-audit", "parallel-eval"}
    with browser_page() as page:
        page.open(f"{server.ui_url}/runs")
        listed = " && ".join(
            f"document.body.innerText.includes({json.dumps(r['name'])})" for r in by_flow.values()
        )
        page.wait_until(listed, what="both flow runs in the runs list")
        page.screenshot(served.folder / "prefect-ui-runs.png")
        assert UNREACHABLE not in page.text()
        for flow_name in ("usage-audit", "parallel-eval"):
            run = by_flow[flow_name]
            page.open(f"{server.ui_url}/runs/flow-run/{run['id']}")
            shown = " && ".join(
                f"document.body.innerText.includes({json.dumps(word)})" for word in (flow_name, run["name"])
            )
            state = page.wait_until(f"{shown} && {HEADING_STATE_JS}", what=f"the {flow_name} run's page")
            assert state == "Completed" and UNREACHABLE not in page.text()
            page.screenshot(served.folder / f"prefect-ui-{flow_name}.png")
        assert page.errors() == []
    assert (served.folder / "prefect-ui-runs.png").stat().st_size > 10_000


def test_the_audit_table_and_the_eval_verdict_render_with_their_rows(served):
    server, summary, folder = served.server, served.summary, served.folder
    with browser_page() as page:
        use_cases = pq.read_table(served.audit.tables["use_cases"]).to_pylist()
        names = [row["use_case"] for row in use_cases]
        [audit_table] = open_artifact(
            page, server, "usage-audit", folder / "prefect-ui-audit-artifact.png", names
        )
        assert audit_table["rows"] == 1 + len(use_cases) and audit_table["height"] > 0

        models = ["openai/cand", "openai/incumbent-model"]
        verdict_tables = open_artifact(
            page, server, "eval-routing-verdict", folder / "prefect-ui-verdict.png", models
        )
        leaderboard = verdict_tables[-1]
        assert leaderboard["rows"] == 1 + len(summary["leaderboard"]) and leaderboard["height"] > 0
        assert "openai/cand" in leaderboard["text"] and "openai/incumbent-model" in leaderboard["text"]
        assert summary["verdict"]["decision"] in page.text()
        assert page.errors() == []


def test_eval_progress_counts_every_stored_answer_as_it_lands(served):
    """What the tracker reported (the CLI's display, the UI's progress artifact) against the rows
    the run stored: per phase and model, all of them, reported one by one, not at the end."""
    scores = pq.read_table(served.summary["scores"]).to_pylist()
    expected = {}
    for row in scores:
        phase = "dev" if row["split"] == "dev" else "test"
        done, total, errors = expected.get((phase, row["model"]), (0, 0, 0))
        expected[(phase, row["model"])] = (done + 1, total + 1, errors + (row["error_type"] is not None))
    assert served.progress[-1] == expected
    partial = [s for s in served.progress if any(0 < done < total for done, total, _ in s.values())]
    assert len(partial) > len(expected)

    [progress] = api(
        served.server, "/artifacts/filter", {"artifacts": {"key": {"any_": ["eval-routing-progress"]}}}
    )
    assert progress["type"] == "progress" and float(progress["data"]) == 100.0
    for (phase, model), (done, total, _) in expected.items():
        assert f"{phase} · {model}: {done}/{total}" in progress["description"]


def test_the_eval_wrote_its_item_viewer(served):
    assert_item_viewer_written(served.summary)
