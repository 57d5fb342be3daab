"""The whole migration playbook in order: audit → golden sets → evaluation → rollout → monitoring.

This is what `make demo` runs on the bundled Acme workspace. One embedded vLLM server is
started for the whole run and shared by every use case's evaluation.
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from workhorse.config import plan_workspace
from workhorse.errors import ContractError
from workhorse.flows.audit import usage_audit
from workhorse.flows.evaluate import parallel_eval
from workhorse.flows.golden import golden_dataset_refresh
from workhorse.flows.rollout import staged_rollout
from workhorse.tasks.common.engines import OfflineEngine, VLLMServer, prepare_embedded_model
from workhorse.tasks.rollout.demo_traffic import Scenario, run_scenario
from workhorse.workspace import Workspace


def generate_example_logs(example_dir: Path, out_dir: Path) -> list[str]:
    """Run the example's own log generator (a script, not a package module) into the workspace."""
    spec = importlib.util.spec_from_file_location("example_generate", example_dir / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [str(path) for path in module.write_logs(out_dir).values()]


def hostings_for(latency: str | None) -> list[str]:
    """A realtime use case cannot wait for a batch: evaluate batch hosting only where it could serve."""
    return ["api", "self_hosted"] if latency == "realtime" else ["api", "self_hosted", "batch"]


def evaluated_use_cases(plan, workspace: Workspace) -> list[str]:
    """Workhorse use cases that have a golden set (a refused refresh leaves the last good version)."""
    from workhorse.tasks.golden.versions import versions

    return [name for name, case in plan.use_cases.items()
            if case.workload != "frontier" and versions(workspace, name)]


def needs_batch_engine(plan) -> bool:
    """Whether some use case will batch the embedded model without also serving it: a model served
    and batched answers both arms from the server (see ``generate``), so no offline engine is needed."""
    batch_only = any(c.model.startswith("hosted_vllm/") and "batch" in c.hosting and "self_hosted" not in c.hosting
                     for c in plan.candidates)
    return batch_only and any(case.workload != "frontier" and "batch" in hostings_for(case.latency)
                              for case in plan.use_cases.values())


@flow(name="migration-playbook", log_prints=True)
async def migration_playbook(example_dir: str = "examples/acme", workspace: str | None = None,
                             plan_path: str | None = None) -> dict:
    """Audit the example's logs, build golden sets, evaluate every workhorse use case, roll the
    embedded model out on live (replayed) traffic and watch that traffic."""
    logger = get_run_logger()
    ws = Workspace.resolve(workspace)
    example = Path(example_dir)
    plan_file = plan_path or str(example / "workhorse.yaml")
    ws, plan = plan_workspace(ws.root, plan_file)
    model_dir = prepare_embedded_model(ws.models_dir)
    server = VLLMServer(model_dir, cache_root=ws.subdir("vllm"))
    # One offline engine for every use case's batch arm, if one is needed: each start costs 30-60 s on a CPU.
    batch_engine = OfflineEngine(model_dir, ws.subdir("vllm")) if needs_batch_engine(plan) else None
    # The engines load (a minute each on a 2-core CPU) side by side, while the audit and the
    # golden refresh run: nothing before the evaluation needs them. Launched from this thread,
    # which outlives them (a child started from a short-lived thread is killed when it ends).
    engines = [engine.launch() for engine in (server, batch_engine) if engine is not None]
    try:
        logs = generate_example_logs(example, ws.subdir("logs"))
        audit = usage_audit(logs=logs, plan=plan_file, workspace=str(ws.root))
        try:
            golden = golden_dataset_refresh(plan=plan_file, workspace=str(ws.root))
        except ContractError as error:  # one refused use case must not stop the others' evaluation
            logger.warning("golden refresh: %s", error)
            golden = []
        for engine in engines:
            engine.wait_ready()  # a failed start raises here, before any evaluation
        logger.info("vLLM server ready in %.0f s%s", server.started_in_s,
                    f", offline engine in {batch_engine.started_in_s:.0f} s" if batch_engine else "")
        evaluations = {}
        for use_case in evaluated_use_cases(plan, ws):
            hostings = hostings_for(plan.use_cases[use_case].latency if use_case in plan.use_cases else None)
            evaluations[use_case] = await parallel_eval(
                use_case=use_case, workspace=str(ws.root), plan_path=plan_file, hostings=hostings,
                engine_api_base=server.api_base, batch_engine=str(batch_engine.folder) if batch_engine else None)
        # These drive their own event loops (traffic, control loop): run them off the flow's loop.
        rollouts = [await asyncio.to_thread(rollout_with_live_traffic, ws, plan, scenario, server.api_base)
                    for scenario in ROLLOUT_SCENARIOS if scenario.use_case in evaluations]
    finally:
        for engine in engines:
            engine.stop()
    monitoring = await asyncio.to_thread(watch_demo_traffic, ws, plan_file)
    return {"workspace": str(ws.root), "audit": audit, "golden": golden, "evaluations": evaluations,
            "rollouts": rollouts, "monitoring": monitoring}


# One rollout that should go all the way, one whose candidate endpoint breaks at 25 %.
ROLLOUT_SCENARIOS = [Scenario("review-sentiment", fault_at_stage=None), Scenario("ticket-routing", fault_at_stage="25")]


@task(name="rollout-with-live-traffic", cache_policy=NO_CACHE)
def rollout_with_live_traffic(ws: Workspace, plan, scenario: Scenario, engine_api_base: str) -> dict:
    """Staged rollout of the embedded model on replayed Acme traffic, each control-loop run a flow run."""
    from workhorse.tasks.golden.versions import load_golden

    return run_scenario(ws, plan, scenario, load_golden(ws, scenario.use_case), engine_api_base,
                        control=lambda use_case, workspace: staged_rollout(use_case, workspace=workspace))


@task(name="watch-demo-traffic", cache_policy=NO_CACHE)
def watch_demo_traffic(ws: Workspace, plan_file: str) -> dict:
    """Monitoring over the rollouts' traffic log, Slack messages to a local receiver."""
    from workhorse.tasks.common.traffic_log import read_traffic
    from workhorse.tasks.monitor.window import run_demo_monitoring

    traffic = read_traffic(ws)
    return run_demo_monitoring(str(ws.root), plan_file, traffic if traffic.num_rows else None)
