"""The audit against one hand-written DuckDB GROUP BY over the same 10M-row file, side by side.

Generates N canonical usage rows as Parquet (chunked, in a temp dir), then measures each side in
its own fresh subprocess so peak memory (ru_maxrss) is that side's alone. Time is the measured
call only; imports (litellm's price map takes ~3 s) are paid before the clock starts and shown
apart. CPU seconds (all threads) are printed beside: on shared cores they move far less than
wall time does. Targets from the issue: audit <= 1.5x the baseline's time, <= 2 GB peak.

    python benchmarks/audit.py [--rows 10000000] [--keep DIR] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHUNK = 1_000_000
USE_CASES = ["ticket-routing", "review-sentiment", "invoice-extraction", "call-summaries", "research-agent"]
MODELS = ["gpt-4o-mini", "gpt-4o-mini", "gpt-4o-mini", "gpt-4o", "claude-3-5-haiku-20241022"]

BASELINE_SQL = """
SELECT date_trunc('month', ts) AS month, use_case, model,
       count(*) AS requests, sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens
FROM read_parquet('{path}') GROUP BY ALL
"""


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """Canonical rows in 1M-row chunks (numpy vectors, never Python row objects)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    import workhorse  # noqa: F401
    from workhorse.tasks.audit.usage import USAGE_SCHEMA

    rng = np.random.default_rng(seed)
    start = np.datetime64("2025-04-01T00:00:00", "us").astype("int64")
    with pq.ParquetWriter(path, USAGE_SCHEMA) as writer:
        for offset in range(0, rows, CHUNK):
            n = min(CHUNK, rows - offset)
            ids = np.char.add("req-", np.arange(offset, offset + n).astype(str))
            columns = {
                "request_id": pa.array(ids),
                "ts": pa.array(start + rng.integers(0, 90 * 86400 * 10**6, n), USAGE_SCHEMA.field("ts").type),
                "use_case": pa.array(np.array(USE_CASES)[rng.integers(0, 5, n)]),
                "model": pa.array(np.array(MODELS)[rng.integers(0, 5, n)]),
                "provider": pa.array(["openai"] * n),
                "prompt_tokens": pa.array(rng.integers(20, 2000, n)),
                "completion_tokens": pa.array(rng.integers(1, 500, n)),
                "latency_ms": pa.array(rng.uniform(100, 5000, n)),
                "status": pa.array(np.where(rng.random(n) < 0.01, "error", "ok")),
                "error_type": pa.nulls(n, pa.string()),
                "cost_usd": pa.nulls(n, pa.float64()),
                "request": pa.nulls(n, pa.string()),
                "response": pa.nulls(n, pa.string()),
                "metadata": pa.array(["{}"] * n),
            }
            writer.write_table(pa.table(columns, schema=USAGE_SCHEMA))


def measure_baseline(path: str) -> dict:
    import duckdb

    con = duckdb.connect()
    started, cpu = time.perf_counter(), cpu_seconds()
    groups = con.sql(BASELINE_SQL.format(path=path)).fetchall()
    return {"seconds": time.perf_counter() - started, "cpu_s": cpu_seconds() - cpu, "groups": len(groups)}


def cpu_seconds() -> float:
    """CPU time of this process, all threads: what the work costs, whatever else shares the cores."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_audit(path: str, persist: bool, duplicates: bool = True) -> dict:
    t0 = time.perf_counter()
    import workhorse  # noqa: F401
    from workhorse.config import AuditPlan, Plan
    from workhorse.tasks.audit.assessment import audit_logs
    from workhorse.tasks.common import pricing

    pricing.model_cost_map()  # litellm's import is not the audit's work
    warm_duplicate_check()
    imports = time.perf_counter() - t0
    workspace = Path(tempfile.mkdtemp(prefix="bench-ws-"))
    started, cpu = time.perf_counter(), cpu_seconds()
    plan = Plan(audit=AuditPlan(check_duplicate_ids=duplicates))
    result = audit_logs([path], plan, workspace_root=workspace, persist_rows=persist)
    return {
        "seconds": time.perf_counter() - started,
        "cpu_s": cpu_seconds() - cpu,
        "imports_s": imports,
        "read": result.read,
        "accepted": result.accepted,
        "groups": result.costs.num_rows,
        "unpriced": result.unpriced_models,
    }


def warm_duplicate_check() -> None:
    """numba loads the duplicate check's machine code from its disk cache (the very first run
    compiles it, ~2 s, once per install): import-time work, like litellm's price map."""
    import numpy as np

    from workhorse.tasks.audit.repeats import repeated_hashes

    repeated_hashes(np.zeros(2, np.uint64))


def child(kind: str, path: str) -> None:
    """Run one measurement and print it with this process's peak RSS."""
    import resource

    out = (
        measure_baseline(path)
        if kind == "baseline"
        else measure_audit(path, persist=kind == "audit+rows", duplicates=kind != "audit-no-dups")
    )
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def run_child(kind: str, path: Path) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


KINDS = ("baseline", "audit", "audit-no-dups", "audit+rows")


def median_run(runs: list[dict]) -> dict:
    """Each measured figure's median over the rounds (other fields from the first round)."""
    return {
        **runs[0],
        **{key: statistics.median(r[key] for r in runs) for key in ("seconds", "cpu_s", "peak_rss_mb")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--keep", type=Path, help="Reuse/keep the generated file in this folder.")
    parser.add_argument(
        "--rounds", type=int, default=3, help="Rounds of every side, interleaved; medians are shown."
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-audit-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"usage_{args.rows}.parquet"
    if not path.exists():
        started = time.perf_counter()
        generate(path, args.rows)
        print(
            f"generated {args.rows:,} rows ({path.stat().st_size / 1e6:.0f} MB) "
            f"in {time.perf_counter() - started:.1f} s"
        )
    load_before = os.getloadavg()[0]
    # Rounds interleave the sides, so a burst of load on the shared cores hits all of them alike.
    rounds = [{kind: run_child(kind, path) for kind in KINDS} for _ in range(args.rounds)]
    report(args.rows, {kind: median_run([r[kind] for r in rounds]) for kind in KINDS})
    ratios = ", ".join(f"{r['audit']['seconds'] / r['baseline']['seconds']:.2f}" for r in rounds)
    print(f"full audit / baseline, round by round: {ratios}")
    # The 2 cores are shared: a ratio only means something next to the load it was measured under.
    print(f"load average (1 min): {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")


def report(rows: int, runs: dict[str, dict]) -> None:
    base, audit = runs["baseline"], runs["audit"]
    names = {
        "baseline": "DuckDB GROUP BY (baseline)",
        "audit": "audit (full contract)",
        "audit-no-dups": "audit, duplicate-id check off",
        "audit+rows": "audit + canonical rows out",
    }
    print(f"\n{rows:,} canonical usage rows")
    print(f"{'':32}{'time s':>9}{'x base':>9}{'cpu s':>9}{'x base':>9}{'peak MB':>10}{'x base':>9}")
    for kind, m in runs.items():
        print(
            f"{names[kind]:32}{m['seconds']:9.2f}{m['seconds'] / base['seconds']:9.2f}"
            f"{m['cpu_s']:9.2f}{m['cpu_s'] / base['cpu_s']:9.2f}"
            f"{m['peak_rss_mb']:10.0f}{m['peak_rss_mb'] / base['peak_rss_mb']:9.2f}"
        )
    print(
        f"audit read {audit['read']:,}, accepted {audit['accepted']:,}, {audit['groups']} cost groups, "
        f"unpriced models: {audit['unpriced'] or 'none'}; "
        f"imports before the clock: {audit['imports_s']:.1f} s"
    )
    for kind in ("audit", "audit-no-dups"):
        m = runs[kind]
        ok = m["seconds"] <= 1.5 * base["seconds"] and m["peak_rss_mb"] <= 2048
        print(f"target (<= 1.5x time, <= 2 GB) for {names[kind]}: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
