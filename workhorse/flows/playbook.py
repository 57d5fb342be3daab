"""The whole migration playbook in order: audit → golden sets → evaluation → rollout → monitoring.

This is what `make demo` runs on the bundled Acme workspace. One embedded vLLM server is
started for the whole run and shared by every use case's evaluation.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from prefect import flow, get_run_logger

from workhorse.config import load_plan
from workhorse.errors import ContractError
from workhorse.flows.audit import usage_audit
from workhorse.flows.evaluate import parallel_eval
from workhorse.flows.golden import golden_dataset_refresh
from workhorse.tasks.engines import VLLMServer, prepare_embedded_model
from workhorse.tasks.eval_run import is_embedded
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
    from workhorse.tasks.golden_versions import versions

    return [name for name, case in plan.use_cases.items()
            if case.workload != "frontier" and versions(workspace, name)]


@flow(name="migration-playbook", log_prints=True)
async def migration_playbook(example_dir: str = "examples/acme", workspace: str | None = None,
                             plan_path: str | None = None) -> dict:
    """Audit the example's logs, build its golden sets and evaluate every workhorse use case."""
    logger = get_run_logger()
    ws = Workspace.resolve(workspace)
    example = Path(example_dir)
    plan_file = plan_path or str(example / "workhorse.yaml")
    plan = load_plan(plan_file, ws.root)
    logs = generate_example_logs(example, ws.subdir("logs"))
    audit = usage_audit(logs=logs, plan=plan_file, workspace=str(ws.root))
    try:
        golden = golden_dataset_refresh(plan=plan_file, workspace=str(ws.root))
    except ContractError as error:  # one refused use case must not stop the others' evaluation
        logger.warning("golden refresh: %s", error)
        golden = []
    evaluations = {}
    server = VLLMServer(prepare_embedded_model(ws.models_dir), cache_root=ws.subdir("vllm"))
    try:
        for use_case in evaluated_use_cases(plan, ws):
            if server.process is None:
                server.start()
                logger.info("embedded model served by vLLM at %s (ready in %.0f s)", server.api_base,
                            server.started_in_s)
            latency = plan.use_cases[use_case].latency if use_case in plan.use_cases else None
            evaluations[use_case] = await parallel_eval(
                use_case=use_case, workspace=str(ws.root), plan_path=plan_file, hostings=hostings_for(latency),
                engine_api_base=server.api_base)
    finally:
        server.stop()
    return {"workspace": str(ws.root), "audit": audit, "golden": golden, "evaluations": evaluations}
