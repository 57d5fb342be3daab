"""The embedded model served by vLLM in bfloat16 against float32, on this machine's CPU.

Same model, same prompts, one server per dtype started one after the other in this script:
40 classification requests constrained to 4 labels and 16 JSON-schema extractions, concurrency 8
(what the evaluation sends). Prints items/s of each and the float32/bf16 ratio, which is what
``engines.engine_dtype`` decides on (bf16 only on CPUs with native bf16).

    python benchmarks/engine_dtype.py [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import workhorse  # noqa: F401  (offline price map before litellm is imported)
from workhorse.tasks.common.engines import VLLMServer, cpu_flags, engine_dtype, prepare_embedded_model
from workhorse.workspace import Workspace

LABELS = ["billing", "technical", "account", "shipping"]
SCHEMA = {
    "type": "object",
    "required": ["invoice_number", "vendor", "total"],
    "properties": {
        "invoice_number": {"type": "string"},
        "vendor": {"type": "string"},
        "total": {"type": "number"},
    },
}


def request(index: int, kind: str) -> dict:
    if kind == "choice":
        return {
            "messages": [
                {
                    "role": "user",
                    "content": f"Route ticket {index}: my card was charged twice for "
                    f"order {index}. Answer with one label.",
                }
            ],
            "extra_body": {"structured_outputs": {"choice": LABELS}},
            "max_tokens": 8,
        }
    return {
        "messages": [
            {
                "role": "user",
                "content": f"Extract JSON: invoice INV-{index} from Acme GmbH, total 12{index}.50 EUR.",
            }
        ],
        "response_format": {"type": "json_schema", "json_schema": {"name": "invoice", "schema": SCHEMA}},
        "max_tokens": 64,
    }


async def items_per_s(server: VLLMServer, count: int, kind: str, concurrency: int = 8) -> float:
    import litellm

    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with gate:
            await litellm.acompletion(
                model=server.litellm_model,
                api_base=server.api_base,
                api_key="none",
                temperature=0,
                **request(index, kind),
            )

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return count / (time.perf_counter() - started)


async def measure(model_dir: Path, dtype: str, cache: Path) -> dict[str, float]:
    server = VLLMServer(model_dir, cache_root=cache / dtype, dtype=dtype).start()
    try:
        await items_per_s(server, 2, "choice")  # warm-up: the first grammar of each kind is compiled
        await items_per_s(server, 2, "json")
        return {
            "choice": await items_per_s(server, 40, "choice"),
            "json": await items_per_s(server, 16, "json"),
        }
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="workhorse-bench-dtype-"))
    model_dir = prepare_embedded_model(Workspace.resolve(cache / "ws").root / "models")
    bf16_flags = sorted(cpu_flags() & {"avx512f", "avx512_bf16", "amx_bf16"})
    print(
        f"CPU flags that matter: {' '.join(bf16_flags) or 'none (AVX2 at most)'}; "
        f"engine_dtype() = {engine_dtype()}"
    )
    for _ in range(args.rounds):
        bf16 = asyncio.run(measure(model_dir, "bfloat16", cache))
        fp32 = asyncio.run(measure(model_dir, "float32", cache))
        for kind in ("choice", "json"):
            print(
                f"{kind:>6}: bfloat16 {bf16[kind]:.2f} items/s, float32 {fp32[kind]:.2f} items/s "
                f"-> float32 is {fp32[kind] / bf16[kind]:.1f}x"
            )


if __name__ == "__main__":
    main()
