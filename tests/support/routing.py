"""Two fake endpoints as incumbent and candidate of one use case, at a chosen rollout weight,
for tests of the in-process router and the exported LiteLLM config."""

from __future__ import annotations

from workhorse.tasks.common.runner import ModelSpec
from workhorse.tasks.rollout import state as routing

UC = "ticket-routing"
CANARY = "sk-canary-do-not-log-7f3a"


def specs(incumbent_server, candidate_server):
    """The incumbent and candidate ModelSpecs on two fake servers, both keyed with CANARY."""
    prices = dict(input_cost_per_token=1e-7, output_cost_per_token=4e-7)
    return (
        ModelSpec("openai/fake-incumbent", api_base=incumbent_server.url, api_key=CANARY, **prices),
        ModelSpec(
            "openai/fake-candidate", api_base=candidate_server.url, api_key=CANARY, timeout_s=5, **prices
        ),
    )


def at_weight(ws, percent: int):
    """A rollout of UC started at ``percent`` % on the candidate (0: shadow)."""
    steps = ["shadow", 100] if percent == 0 else sorted({percent, 100})
    routing.start_rollout(ws, UC, "openai/fake-incumbent", "openai/fake-candidate", {"steps": steps})
