"""State store benchmark: the traffic log and rollout transitions on SQLite and on PostgreSQL.

For each backend, side by side in one process:
- the traffic log: N rows through ``TrafficLogger`` (queue + writer thread, batches of 500)
  against a bare ``executemany`` of the same records in batches of 500 (the baseline);
- rollout transitions: ``advance`` (lock, read, compare-and-set, history row, commit) per second,
  and ``current_weights`` reads per second (what each router replica does once per refresh).

PostgreSQL is a throw-away local server (Debian's package, see tests/support/postgres.py).

    .venv/bin/python benchmarks/state_store.py [--rows 20000] [--transitions 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # run as a script: tests.support is not installed


def traffic_rows(count: int) -> list[dict]:
    from workhorse.tasks.common.traffic_log import make_row

    return [
        make_row(
            use_case="bench",
            model="openai/m",
            provider="openai",
            prompt_tokens=40,
            completion_tokens=4,
            latency_ms=120.0,
            status="ok",
            cost_usd=1e-5,
            request='[{"role":"user","content":"hi"}]',
            response="billing",
            rollout_stage="25",
            arm="candidate" if i % 4 == 0 else "incumbent",
            metadata={"bucket": i % 100},
        )
        for i in range(count)
    ]


def time_logger(ws, rows: list[dict]) -> float:
    from workhorse.tasks.common.traffic_log import TrafficLogger

    started = time.perf_counter()
    with TrafficLogger(ws) as logger:
        logger.log_many(rows)
    return time.perf_counter() - started


def time_bare_inserts(ws, rows: list[dict]) -> float:
    from workhorse import store
    from workhorse.tasks.common.traffic_log import COLUMNS, SCHEMA, _as_record

    with store.connect(ws) as connection:
        connection.ensure(SCHEMA)
        sql = f"INSERT INTO traffic_log ({','.join(COLUMNS)}) VALUES ({','.join('?' * len(COLUMNS))})"
        started = time.perf_counter()
        records = [_as_record(r) for r in rows]
        for start in range(0, len(records), 500):
            with connection.transaction():
                connection.executemany(sql, records[start : start + 500])
        return time.perf_counter() - started


def per_second(call, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        call()
    return count / (time.perf_counter() - started)


def bench_backend(name: str, ws, rows: int, transitions: int) -> dict:
    from types import SimpleNamespace

    from workhorse.tasks.rollout import state as routing

    data = traffic_rows(rows)
    bare = time_bare_inserts(ws, data)
    logged = time_logger(ws, data)
    steps = ["shadow"] + list(range(1, 100)) + [100]
    routing.start_rollout(ws, "bench", "inc", "cand", {"steps": steps})

    def one_advance():
        state = routing.current_state(ws, "bench")
        if state.stage == "promoted":
            routing.revert(ws, "bench", "bench", notify=lambda payload: None)
            routing.start_rollout(ws, "bench", "inc", "cand", {"steps": steps})
            return
        routing.advance(ws, "bench", SimpleNamespace(outcome="pass", version=state.version, reason="bench"))

    return {
        "backend": name,
        "rows": rows,
        "logger_s": logged,
        "bare_s": bare,
        "advance_per_s": per_second(one_advance, transitions),
        "weight_reads_per_s": per_second(lambda: routing.current_weights(ws, "bench"), transitions),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--transitions", type=int, default=200)
    args = parser.parse_args()

    import workhorse  # noqa: F401
    from tests.support.postgres import PostgresServer
    from workhorse.workspace import Workspace

    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="workhorse-bench-")))
        server = stack.enter_context(PostgresServer())
        results = [bench_backend("sqlite", Workspace.resolve(root / "sqlite"), args.rows, args.transitions)]
        os.environ["WORKHORSE_STATE_URL"] = server.url
        results.append(
            bench_backend("postgresql", Workspace.resolve(root / "pg"), args.rows, args.transitions)
        )
        del os.environ["WORKHORSE_STATE_URL"]

    print(
        f"{'backend':<11} {'rows':>7} {'logger s':>9} {'bare s':>7} "
        f"{'ratio':>6} {'advance/s':>10} {'reads/s':>8}"
    )
    for r in results:
        print(
            f"{r['backend']:<11} {r['rows']:>7} {r['logger_s']:>9.2f} {r['bare_s']:>7.2f} "
            f"{r['logger_s'] / r['bare_s']:>5.2f}x {r['advance_per_s']:>10.0f} "
            f"{r['weight_reads_per_s']:>8.0f}"
        )
    print(f"load average: {os.getloadavg()[0]:.1f} (2 cores)")


if __name__ == "__main__":
    main()
