"""Step 3 — parallel evaluation: incumbent and candidates on the same golden items.

Phase 1 runs every candidate's prompt variants on dev and keeps the best; phase 2 runs the
incumbent and each candidate's best variant on test, where the verdict is taken. Shards run in
the flow's event loop, or on a Dask cluster when the client's CPU is the bottleneck.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from prefect import flow, get_run_logger

# quote(): Prefect otherwise walks every element of a task's arguments looking for futures, about
# a second per task for thousands of rows; these lists never hold any.
from prefect.utilities.annotations import quote

from workhorse.config import plan_workspace
from workhorse.tasks.evaluate.batch import waits_for_batch
from workhorse.tasks.evaluate.judge import judge_test_answers, judge_verdict
from workhorse.tasks.evaluate.matrix import (
    PromptPlan,
    choose_variants,
    confirmation_requests,
    tuning_requests,
)
from workhorse.tasks.evaluate.progress import artifact_key, tracking
from workhorse.tasks.evaluate.run import (
    EvalContext,
    batch_setup,
    contenders_from_plan,
    decide,
    execution_from,
    generate,
    key_blocks_for,
    publish_results,
    record_self_hosted_throughput,
    replay_for,
    score_responses,
    scorer_options,
    store_responses,
)
from workhorse.tasks.evaluate.viewer import write_item_viewer
from workhorse.tasks.golden.versions import load_golden


@flow(name="parallel-eval", log_prints=True)
@waits_for_batch  # batches still running after the plan's wait: the run ends "waiting for batch"
async def parallel_eval(
    use_case: str,
    workspace: str | None = None,
    plan: str | dict | None = None,
    models: list[str] | None = None,
    hostings: list[str] | None = None,
    variants: list[str] | None = None,
    shard_size: int = 200,
    replay: bool = True,
    run_id: str | None = None,
    engine_api_base: str | None = None,
    task_runner: Literal["threads", "dask"] | None = None,
    dask_address: str | None = None,
    dask_workers: int | None = None,
    batch_engine: str | None = None,
) -> dict:
    """Evaluate the plan's incumbent and candidates for one use case and give a verdict.

    ``engine_api_base``: an embedded-model vLLM server already running (the playbook shares
    one across use cases); without it the flow starts one if a candidate needs it.
    ``batch_engine``: the job folder of a running vLLM offline engine (``OfflineEngine``), likewise
    shared; without it each batch starts an engine of its own.
    ``task_runner``: ``threads`` (default) or ``dask`` — shards on the Dask scheduler at
    ``dask_address``, else on a LocalCluster of ``dask_workers`` processes; the plan's ``eval``
    section sets them too. Same responses and scores either way."""
    logger = get_run_logger()
    ws, plan = plan_workspace(workspace, plan)
    items = load_golden(ws, use_case)
    dev, test = [i for i in items if i.split == "dev"], [i for i in items if i.split == "test"]
    run_id = run_id or f"eval-{use_case}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    incumbent, candidates, skipped = contenders_from_plan(
        plan, use_case, models, hostings, variants or plan.eval.variants, ws.root
    )
    for reason in skipped:
        logger.warning(reason)
    execution = execution_from(plan, task_runner, dask_address, dask_workers)
    key_blocks = key_blocks_for(plan, use_case)
    with (
        tracking(run_id, artifact_key(use_case)),
        EvalContext(ws, run_id, shard_size, engine_api_base, execution, key_blocks, batch_engine) as context,
    ):
        context.batch, context.sync_specs = batch_setup(plan, ws.root, candidates)
        prompts = PromptPlan.from_dev(dev, plan.eval.tuning_items)
        dev_rows = await generate(context, tuning_requests(candidates, prompts), phase="dev")
        store_responses(ws, run_id, quote(dev_rows))  # paid answers on disk before anything can fail
        dev_scores = score_responses(quote(items), quote(dev_rows), scorer_options(plan, use_case))
        chosen = choose_variants(dev_scores, candidates)
        replayed, to_call = replay_for(incumbent, test, run_id, ws) if replay else ([], test)
        confirm = confirmation_requests(incumbent, candidates, chosen, to_call, test, prompts)
        test_rows = replayed + await generate(context, confirm, phase="test")
        judged = await judge_test_answers(
            context, plan, use_case, items, incumbent, candidates, chosen, test_rows
        )
        throughput = context.throughput()
    store_responses(ws, run_id, quote(dev_rows + test_rows))
    record_self_hosted_throughput(ws, candidates, throughput)
    test_scores = score_responses(quote(items), quote(test_rows), scorer_options(plan, use_case))
    verdict = decide(plan, use_case, incumbent, candidates, chosen, quote(test_scores), quote(test_rows), ws)
    verdict, judge = judge_verdict(plan, use_case, judged, verdict, test_scores)
    task_type, labels = items[0].task_type, list(items[0].labels or [])
    meta = {"use_case": use_case, "run_id": run_id, "task_type": task_type, "note": "test split"}
    write_item_viewer(
        ws.run_dir(run_id),
        quote(test),
        quote(test_rows),
        quote(test_scores),
        incumbent.spec.model,
        verdict,
        meta,
    )
    return publish_results(
        ws,
        run_id,
        use_case,
        task_type,
        labels,
        quote(dev_rows + test_rows),
        quote(dev_scores + test_scores),
        chosen,
        verdict,
        skipped,
        throughput,
        quote(judged),  # its rows: Prefect would walk them looking for futures
        judge,
    )
