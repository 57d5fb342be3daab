"""Golden refresh benchmark: a 10k-row canonical usage log through sampling, PII scrub, dedup,
contract and versioning, with the numbers of the closing note (rows in, duplicates, scrubbed,
quarantined, seconds per stage).

The log is synthetic but shaped like production: BANKING77 questions (so repeats are real
exact duplicates), a share with trailing noise (near duplicates), seeded emails, phones, cards
and IBANs, and an incumbent that answers outside the label set now and then (quarantined).

    .venv/bin/python benchmarks/golden.py [--rows 10000] [--sample 10000] [--workspace DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
PII = [
    "reach me at {first}.{last}@example.com",
    "call me on +44 20 7946 {n:04d}",
    "card 4111 1111 1111 1111",
    "IBAN DE89 3704 0044 0532 0130 00",
    "my number is (415) 555-{n:04d}",
]
NOISE = [" please", " thanks!", "??", " asap"]


def synthetic_log(rows: int, seed: int = 7):
    """Canonical usage_log rows for the use case 'ticket-routing' (an Arrow table)."""
    import pyarrow as pa

    with open(DATASETS / "banking77" / "test.csv", encoding="utf-8") as handle:
        questions = list(csv.DictReader(handle))
    rng, start = random.Random(seed), datetime(2026, 10, 1, tzinfo=timezone.utc)
    out = []
    for i in range(rows):
        row = rng.choice(questions)
        text = row["text"] + (rng.choice(NOISE) if rng.random() < 0.1 else "")
        if rng.random() < 0.05:
            text += " " + rng.choice(PII).format(first="ann", last=f"lee{i}", n=i % 10_000)
        answer = row["category"] if rng.random() > 0.03 else "I think this is about your card."
        out.append(
            {
                "request_id": f"req-{i:06d}",
                "ts": start + timedelta(seconds=260 * i),
                "use_case": "ticket-routing",
                "model": "openai/gpt-4o-mini",
                "provider": "openai",
                "prompt_tokens": 40,
                "completion_tokens": 4,
                "latency_ms": 350.0,
                "status": "ok" if rng.random() > 0.02 else "error",
                "error_type": None,
                "cost_usd": None,
                "request": json.dumps([{"role": "user", "content": text}]),
                "response": answer,
                "metadata": "{}",
            }
        )
    return pa.Table.from_pylist(out)


def run(rows: int, sample: int, workspace: Path) -> dict:
    import pyarrow.parquet as pq

    import workhorse  # noqa: F401
    from workhorse.tasks.golden.refresh import GoldenSpec, RefreshOptions, SourceSpec, refresh_golden
    from workhorse.tasks.golden.sources import SampleOptions

    usage = workspace / "usage" / "usage_log.parquet"
    usage.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(synthetic_log(rows), usage)
    labels = json.loads((DATASETS / "banking77" / "categories.json").read_text())
    spec = GoldenSpec("ticket-routing", "classification", labels=labels)
    started = time.perf_counter()
    report = refresh_golden(
        workspace,
        spec,
        [SourceSpec("usage_log")],
        RefreshOptions(sample=SampleOptions(size=sample), max_bad_ratio=0.2),
    )
    wall = time.perf_counter() - started
    return {
        "log_rows": rows,
        "sample_size": sample,
        "rows_in": sum(report.rows_in.values()),
        "exact_duplicates": report.exact_duplicates,
        "near_duplicates": report.near_duplicates,
        "scrubbed": report.scrubbed,
        "quarantined": report.quarantined,
        "quarantine_reasons": report.quarantine_reasons,
        "items": report.counts["items"],
        "by_split": report.counts["by_split"],
        "silver": report.counts["silver"],
        "stages_s": report.timings,
        "wall_s": round(wall, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--sample", type=int, nargs="+", default=[10_000, 500])
    parser.add_argument("--workspace", type=Path)
    args = parser.parse_args(argv)
    for size in args.sample:
        with tempfile.TemporaryDirectory() as scratch:
            result = run(args.rows, size, args.workspace or Path(scratch))
        print(json.dumps(result, indent=None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
