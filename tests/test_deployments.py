"""prefect.yaml: every deployment resolves to a flow that accepts its parameters, schedules are the
documented ones, secrets only come through block references, `prefect deploy --all` registers it
on a server with a process work pool, and each deployment, served like `workhorse serve` does,
runs once to Completed and leaves its artifacts."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from workhorse.serve import block_reference, build_deployments, load_flow, load_specs, to_schedule

REPO = Path(__file__).resolve().parents[1]
PROJECT_FILE = REPO / "prefect.yaml"
ACME = REPO / "examples" / "acme"
SPECS = load_specs(PROJECT_FILE)
ALLOWED_KEYS = {"name", "entrypoint", "parameters", "schedules", "work_pool", "tags"}


def flow_of(spec):
    return load_flow(spec.entrypoint, REPO)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_entrypoint_resolves_and_the_flow_accepts_every_parameter(spec):
    signature = inspect.signature(flow_of(spec).fn).parameters
    assert set(spec.parameters) <= set(signature), (
        f"{spec.name}: unknown {set(spec.parameters) - set(signature)}"
    )
    required = {name for name, p in signature.items() if p.default is inspect.Parameter.empty}
    assert required <= set(spec.parameters), (
        f"{spec.name}: missing required {required - set(spec.parameters)}"
    )


@pytest.mark.parametrize(
    "flow_name, kind, every",
    [
        ("usage-audit", "cron", "0 6 * * 1"),  # weekly
        ("golden-dataset-refresh", "cron", "0 2 * * *"),  # nightly
        ("parallel-eval", "cron", "0 4 * * 6"),  # weekly
        ("staged-rollout", "interval", 300),  # control loop every 5 minutes
        ("monitoring", "interval", 300),
        ("weekly-reevaluation", "cron", "0 5 * * 0"),
    ],
)
def test_each_flow_has_its_documented_schedule(flow_name, kind, every):
    chosen = [spec for spec in SPECS if flow_of(spec).name == flow_name]
    assert chosen, f"no deployment of {flow_name}"
    for spec in chosen:
        assert [entry[kind] for entry in spec.schedules] == [every], spec.name
        assert all(to_schedule(entry).timezone == "UTC" for entry in spec.schedules)


def test_deployments_list_only_their_own_fields_and_share_the_anchored_pool():
    project = yaml.safe_load(PROJECT_FILE.read_text())
    assert {"work_pools", "schedules", "parameters"} <= set(project["definitions"])
    for deployment in project["deployments"]:
        assert set(deployment) <= ALLOWED_KEYS, deployment["name"]
        assert deployment["work_pool"] == project["definitions"]["work_pools"]["process"]
    assert len({d["name"] for d in project["deployments"]}) == len(project["deployments"])


def test_secrets_come_only_from_block_references():
    text = PROJECT_FILE.read_text()
    assert not re.search(r"hooks\.slack\.com|sk-[A-Za-z0-9]|api_key\s*:", text)
    for spec in SPECS:
        signature = inspect.signature(flow_of(spec).fn).parameters
        for name, value in spec.parameters.items():
            if "SecretStr" in str(signature[name].annotation):
                assert block_reference(value), (
                    f"{spec.name}.{name} must be a {{{{ prefect.blocks… }}}} reference"
                )


def save_slack_block(url: str) -> None:
    from workhorse.blocks import SlackAlerts

    SlackAlerts.register_type_and_schema()
    SlackAlerts(webhook_url=url).save("default", overwrite=True)


def test_prefect_deploy_all_registers_every_deployment_on_a_process_pool(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL

    save_slack_block("http://127.0.0.1:9/never-called")
    with get_client(sync_client=True) as client:
        if not any(pool.name == "workhorse" for pool in client.read_work_pools()):
            client.create_work_pool(WorkPoolCreate(name="workhorse", type="process"))
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PREFECT_CLI_PROMPT": "false",
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    with get_client(sync_client=True) as client:
        deployed = {d.name: d for d in client.read_deployments() if d.work_pool_name == "workhorse"}
        for deployment in deployed.values():  # the served deployments of other tests reuse these names
            client.delete_deployment(deployment.id)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert set(deployed) == {spec.name for spec in SPECS}
    for spec in SPECS:
        assert len(deployed[spec.name].schedules) == len(spec.schedules) and deployed[spec.name].schedules
        assert deployed[spec.name].entrypoint == spec.entrypoint


# --- each deployment runs once ---------------------------------------------------------------


def acme_logs(out: Path) -> list[str]:
    spec = importlib.util.spec_from_file_location("acme_generate", ACME / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [str(p) for p in module.write_logs(out, scale=0.1).values()]


def small_acme_plan(path: Path, candidate_url: str) -> Path:
    """Acme's plan with small golden sets and one fake-server candidate: every flow finishes in seconds."""
    plan = yaml.safe_load((ACME / "workhorse.yaml").read_text())
    for case in plan["use_cases"].values():
        if case.get("workload") != "frontier":
            case["golden"] = {**case.get("golden", {}), "size": 16}
    plan["candidates"] = [{"model": "openai/fake-open-model", "api_base": candidate_url, "hosting": ["api"]}]
    plan["audit"]["max_bad_row_ratio"] = 0.1  # the generator's planted bad rows weigh more at this scale
    plan["quality_policy"]["min_items"] = 4
    path.write_text(yaml.safe_dump(plan))
    return path


class ServedRunner:
    """`prefect.serve` minus the blocking: a Runner polling in a thread, stopped at exit."""

    def __init__(self, deployments):
        from prefect.runner import Runner

        self.runner = Runner(name="workhorse-test", query_seconds=1, limit=2, pause_on_shutdown=False)
        for deployment in deployments:
            self.runner.add_deployment(deployment)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.runner.start()), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.runner.stop()
        self.thread.join(30)


def flow_run_artifacts(flow_run_id) -> set[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {artifact.key for artifact in found}


# In playbook order: the golden refresh reads what the audit stored, the eval reads the golden sets.
EXPECTED_ARTIFACTS = {
    "weekly-audit": {"usage-audit", "usage-audit-summary"},
    "nightly-golden-refresh": {"golden-refresh", "golden-counts"},
    "weekly-eval-ticket-routing": {"eval-ticket-routing-leaderboard", "eval-ticket-routing-verdict"},
    "weekly-eval-invoice-extraction": {
        "eval-invoice-extraction-leaderboard",
        "eval-invoice-extraction-verdict",
    },
    "rollout-ticket-routing": {"rollout-ticket-routing"},
    "rollout-invoice-extraction": {"rollout-invoice-extraction"},
    "monitoring": {"monitoring-window", "monitoring-metrics"},
    "weekly-reevaluation": set(),  # nothing migrated yet: it completes without alerts
    "batch-collector": set(),  # no run is waiting for batch: it completes having resumed none
}


def test_each_deployment_runs_once_to_completed_with_its_artifacts(
    prefect_server, fake_openai_server, isolated_workspace, tmp_path, monkeypatch
):
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL

    # The runner's flow-run processes read the API from the environment, not the test's settings.
    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    assert set(EXPECTED_ARTIFACTS) == {spec.name for spec in SPECS}
    fake = fake_openai_server()
    monkeypatch.setenv("OPENAI_API_BASE", fake.url)  # the incumbent, where replay has no logged answer
    root = str(isolated_workspace.root)
    plan = str(small_acme_plan(tmp_path / "workhorse.yaml", fake.url))
    overrides = {
        "workspace": root,
        "plan": plan,
        "logs": acme_logs(tmp_path / "logs"),
        "slack_webhook_url": "http://127.0.0.1:9/never-called",
    }
    save_slack_block("http://127.0.0.1:9/never-called")
    deployments = build_deployments(PROJECT_FILE, overrides=overrides, with_schedules=False)
    states = {}
    with ServedRunner(deployments):
        for deployment in deployments:
            run = run_deployment(f"{deployment.flow_name}/{deployment.name}", timeout=240)
            states[deployment.name] = run.state
            assert run.state.is_completed(), f"{deployment.name}: {run.state.type} {run.state.message}"
            assert EXPECTED_ARTIFACTS[deployment.name] <= flow_run_artifacts(run.id), deployment.name
    assert (isolated_workspace.root / "audit" / "report.html").is_file()
    assert len(list((isolated_workspace.root / "runs").glob("*/report.html"))) == 2
