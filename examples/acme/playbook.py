"""`make demo`'s flow: Acme's logs → the product's migration playbook → rollouts → monitoring.

It generates Acme's logs, starts the embedded model's engines once (loading while the logs are
written), runs the product's ``migration_playbook`` (audit → golden sets → evaluation) on them
with those engines, then rolls SmolLM2 out on replayed traffic with the same server and watches
that traffic. Everything Acme-specific lives here; the product never imports it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from examples.acme.demo_monitoring import run_demo_monitoring
from examples.acme.demo_traffic import Scenario, run_scenario
from examples.acme.generate import write_logs
from workhorse.config import plan_workspace
from workhorse.flows.playbook import migration_playbook
from workhorse.flows.rollout import staged_rollout
from workhorse.tasks.common.engines import embedded_engines
from workhorse.tasks.common.traffic_log import read_traffic
from workhorse.tasks.golden.versions import load_golden
from workhorse.workspace import Workspace

# One rollout that should go all the way, one whose candidate endpoint breaks at 25 %.
ROLLOUT_SCENARIOS = [
    Scenario("review-sentiment", fault_at_stage=None),
    Scenario("ticket-routing", fault_at_stage="25"),
]


def generate_example_logs(out_dir: Path) -> list[str]:
    """Acme's usage logs (app JSONL and LiteLLM spend CSV), written into the workspace."""
    return [str(path) for path in write_logs(out_dir).values()]


@flow(name="acme-demo", log_prints=True)
async def acme_demo(example_dir: str = "examples/acme", workspace: str | None = None) -> dict:
    """The playbook on Acme's generated logs, then rollouts on live (replayed) traffic and monitoring."""
    plan_file = str(Path(example_dir) / "workhorse.yaml")
    ws, plan = plan_workspace(Workspace.resolve(workspace).root, plan_file)
    with embedded_engines(plan, ws) as engines:  # loading while the logs are written and audited
        logs = generate_example_logs(ws.subdir("logs"))
        summary = await migration_playbook(
            plan=plan_file,
            logs=logs,
            workspace=str(ws.root),
            engine_api_base=engines.api_base,
            batch_engine=engines.batch_folder,
        )
        # These drive their own event loops (traffic, control loop): run them off the flow's loop.
        rollouts = [
            await asyncio.to_thread(rollout_with_live_traffic, ws, plan, scenario, engines.api_base)
            for scenario in ROLLOUT_SCENARIOS
            if scenario.use_case in summary["evaluations"]
        ]
    monitoring = await asyncio.to_thread(watch_demo_traffic, ws, plan_file)
    return summary | {"rollouts": rollouts, "monitoring": monitoring}


def control_loop_run(use_case: str, workspace: str) -> dict:
    """One run of the rollout control loop: the staged_rollout flow, as its schedule would run it."""
    return staged_rollout(use_case, workspace=workspace)


@task(name="rollout-with-live-traffic", cache_policy=NO_CACHE)
def rollout_with_live_traffic(ws: Workspace, plan, scenario: Scenario, engine_api_base: str) -> dict:
    """Staged rollout of the embedded model on replayed Acme traffic, each control-loop run a flow run."""
    return run_scenario(
        ws, plan, scenario, load_golden(ws, scenario.use_case), engine_api_base, control=control_loop_run
    )


@task(name="watch-demo-traffic", cache_policy=NO_CACHE)
def watch_demo_traffic(ws: Workspace, plan_file: str) -> dict:
    """Monitoring over the rollouts' traffic log, Slack messages to a local receiver."""
    traffic = read_traffic(ws)
    return run_demo_monitoring(str(ws.root), plan_file, traffic if traffic.num_rows else None)
