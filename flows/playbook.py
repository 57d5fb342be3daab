"""Steps 1-3 of the playbook in order for one plan: usage audit → golden sets → evaluation.

The chain a platform team schedules for its own plan: audit the usage logs, refresh every use
case's golden set, then evaluate every workhorse use case that has one. Rollouts and monitoring
run on their own schedules (prefect.yaml). When a candidate is the embedded model and no engine
is given, one vLLM server is started for the run, loading while the audit runs.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from workhorse.config import plan_workspace
from workhorse.errors import ContractError
from workhorse.flows.audit import usage_audit
from workhorse.flows.evaluate import parallel_eval
from workhorse.flows.golden import golden_dataset_refresh
from workhorse.tasks.common.engines import embedded_engines
from workhorse.tasks.evaluate.run import evaluated_use_cases, hostings_for


@flow(name="migration-playbook", log_prints=True)
async def migration_playbook(
    plan: str | dict | None = None,
    logs: list[str] | None = None,
    workspace: str | None = None,
    engine_api_base: str | None = None,
    batch_engine: str | None = None,
) -> dict:
    """Audit ``logs``, refresh the golden sets and evaluate each workhorse use case of the plan.

    ``engine_api_base`` / ``batch_engine``: a running server and offline engine for the embedded
    model (the demo shares its own with the rollouts); else they are started here if needed."""
    logger = get_run_logger()
    ws, loaded = plan_workspace(workspace, plan)
    with embedded_engines(loaded, ws, engine_api_base, batch_engine) as engines:  # loading from here on
        audit = usage_audit(logs=logs, plan=plan, workspace=str(ws.root))
        try:
            golden = golden_dataset_refresh(plan=plan, workspace=str(ws.root))
        except ContractError as error:  # one refused use case must not stop the others' evaluation
            logger.warning("golden refresh: %s", error)
            golden = []
        if ready := engines.wait_ready():  # a failed start raises here, before any evaluation
            logger.info(ready)
        evaluations = {}
        for use_case in evaluated_use_cases(loaded, ws):
            evaluations[use_case] = await parallel_eval(
                use_case=use_case,
                workspace=str(ws.root),
                plan=plan,
                hostings=hostings_for(loaded.use_cases[use_case].latency),
                engine_api_base=engines.api_base,
                batch_engine=engines.batch_folder,
            )
    return {"workspace": str(ws.root), "audit": audit, "golden": golden, "evaluations": evaluations}
