"""Hostile inputs for every reader, generated at test time (no binary files in git).

Each entry is a file name and its bytes. The name's suffix is what a careless user would give
(a parquet named ``.jsonl``, a YAML named ``.csv``), because readers that trust suffixes are the
ones such files break. ``write_corpus`` writes them all into one folder.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

INJECTIONS = [
    "=cmd|' /C calc'!A0",
    "+SUM(1+1)*cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)",
    "<script>alert('xss')</script>",
]
CONTROL = "before\x00null \x1b[31mred\x1b[0m \u202egnp.exe\u202c \r\x07 after"
SCRIPT = "<script>alert('pwned')</script>"
HUGE_BYTES = 20 * 1024 * 1024
DEEP = 10_000


def canonical_row(i: int, prompt: str = "Where is my parcel?", use_case: str = "ticket-routing") -> dict:
    """A valid canonical usage row whose prompt and use case can carry hostile text."""
    return {
        "request_id": f"r{i}",
        "ts": "2025-06-01T10:00:00Z",
        "use_case": use_case,
        "model": "gpt-4o-mini",
        "provider": "openai",
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "latency_ms": 250.0,
        "status": "ok",
        "error_type": None,
        "cost_usd": None,
        "request": json.dumps([{"role": "user", "content": prompt}]),
        "response": "shipping",
        "metadata": "{}",
    }


def _csv(rows: list[dict]) -> bytes:
    import csv

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def _rows(prompts: list[str], use_cases: list[str] | None = None) -> list[dict]:
    use_cases = use_cases or ["ticket-routing"] * len(prompts)
    return [canonical_row(i, p, u) for i, (p, u) in enumerate(zip(prompts, use_cases))]


def _parquet() -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(_rows(["hi", "there"])), sink)
    return sink.getvalue()


def _huge_line() -> bytes:
    row = canonical_row(0, "x" * HUGE_BYTES)
    return (json.dumps(row) + "\n").encode()


def _deep() -> bytes:
    return ("[" * DEEP + "]" * DEEP).encode()


def _deep_row() -> bytes:
    return ('{"request_id": "r0", "metadata": ' + "[" * DEEP + "]" * DEEP + "}\n").encode()


GOOD = ["Where is my parcel?", "Refund me please", "App crashes"]
LATIN = ["Café crème, où est ma commande ?"]
YAML_PLAN = b"use_cases:\n  ticket-routing:\n    task_type: classification\n"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4

# name -> how to build its bytes; built lazily so parametrising by name costs nothing.
BUILDERS = {
    "truncated.csv": lambda: _csv(_rows(GOOD))[:-25],
    "truncated.jsonl": lambda: _jsonl(_rows(GOOD))[:-40],
    "truncated.json": lambda: json.dumps(_rows(GOOD)).encode()[:-30],
    "latin1.csv": lambda: _csv(_rows(LATIN)).decode().encode("latin-1"),
    "latin1.jsonl": lambda: _jsonl(_rows(LATIN)).decode().encode("latin-1"),
    "utf16_bom.csv": lambda: _csv(_rows(GOOD)).decode().encode("utf-16"),
    "utf16_bom.jsonl": lambda: _jsonl(_rows(GOOD)).decode().encode("utf-16"),
    "huge_line.jsonl": _huge_line,
    "deep.json": _deep,
    "deep.jsonl": lambda: _deep() + b"\n",
    "deep_field.jsonl": _deep_row,
    "injection.csv": lambda: _csv(_rows(INJECTIONS, INJECTIONS)),
    "injection.jsonl": lambda: _jsonl(_rows(INJECTIONS, INJECTIONS)),
    "control_chars.jsonl": lambda: _jsonl(_rows([CONTROL, SCRIPT], ["ctl\x1b[31m", SCRIPT])),
    "control_chars.csv": lambda: _csv(_rows([CONTROL, SCRIPT])),
    "empty.csv": lambda: b"",
    "empty.jsonl": lambda: b"",
    "empty.yaml": lambda: b"",
    "png.csv": lambda: PNG,
    "png.yaml": lambda: PNG,
    "gzip.jsonl": lambda: gzip.compress(_jsonl(_rows(GOOD))),
    "parquet.jsonl": _parquet,
    "parquet.csv": _parquet,
    "yaml.csv": lambda: YAML_PLAN,
    "yaml.jsonl": lambda: YAML_PLAN,
    "header_only.csv": lambda: b"request_id,ts,use_case\n",
    "scalar.jsonl": lambda: b'42\n"text"\nnull\n[1, 2]\n',
    "deep.yaml": lambda: ("a: " + "[" * DEEP + "]" * DEEP + "\n").encode(),
    "not_a_mapping.yaml": lambda: b"- just\n- a list\n",
}
NAMES = tuple(sorted(BUILDERS))


def write_corpus(folder: Path) -> dict[str, Path]:
    """Write every hostile file into ``folder``; returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, build in BUILDERS.items():
        paths[name] = folder / name
        paths[name].write_bytes(build())
    return paths
