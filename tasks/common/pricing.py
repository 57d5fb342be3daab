"""Price catalog and cost projections: what a token costs per model and hosting strategy.

Prices come from LiteLLM's bundled map (the JSON file ``litellm.model_cost`` is loaded from, read
directly: importing litellm takes seconds that an audit has no other use for), with overrides
from the workspace plan. Batch prices are the map's
``*_cost_per_token_batches`` where it has them, else 50 % of list (the discount OpenAI, Anthropic
and most batch providers give). Self-hosted price = GPU $/hour ÷ tokens/hour, measured by the
engine when a measurement exists, else configured. An unknown model is never $0: it is
reported as unpriced with a warning, and its rows are counted apart.

The total-cost view weighs fixed monthly self-hosting costs (GPU servers, engineering time)
against the variable savings and gives the break-even month, as the playbook's FAQ reasons.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pyarrow as pa

import workhorse  # noqa: F401  (offline price map before litellm is imported anywhere)

log = logging.getLogger(__name__)

BATCH_DISCOUNT = 0.5
HOURS_PER_MONTH = 730.0  # 365 * 24 / 12
HOSTINGS = ("api", "batch", "self_hosted")
THROUGHPUT_FILE = "engines/throughput.json"

# Families of open-weight models, and variants that are not drop-in chat workhorses.
OPEN_WEIGHT = re.compile(r"qwen3|llama-?3\.[13]|gemma-?3|mistral-small|phi-4|deepseek-v3", re.I)
NOT_A_WORKHORSE = re.compile(
    r"thinking|vl|coder|embed|rerank|omni|guard|tts|draft|variant|vision|max|405b|235b|480b", re.I
)
SHORTLIST_PROVIDERS = (
    "together_ai",
    "deepinfra",
    "groq",
    "fireworks_ai",
    "nebius",
    "novita",
    "bedrock_converse",
)


@dataclass(frozen=True)
class Price:
    """USD per token for one model under one hosting strategy, and where the figure came from."""

    model: str
    hosting: str
    input_per_token: float
    output_per_token: float
    source: str

    def cost(self, prompt_tokens: float, completion_tokens: float) -> float:
        return prompt_tokens * self.input_per_token + completion_tokens * self.output_per_token

    @property
    def per_1k_output(self) -> float:
        return self.output_per_token * 1000


PRICE_MAP_FILE = "model_prices_and_context_window_backup.json"
# A top-level key of the file that LiteLLM does not serve as a model.
NOT_MODELS = frozenset({"fallback_generalizations"})


def model_cost_map() -> dict[str, dict]:
    """LiteLLM's bundled price map, read once from its JSON file without importing litellm."""
    return _bundled_price_map()


@functools.cache
def _bundled_price_map() -> dict[str, dict]:
    import importlib.util

    found = importlib.util.find_spec("litellm")  # finds the package without running it
    if found is None or found.origin is None:
        raise ImportError("litellm is not installed: pip install litellm (its price map prices every call)")
    raw = json.loads((Path(found.origin).parent / PRICE_MAP_FILE).read_text(encoding="utf-8"))
    return served_names(raw)


def served_names(raw: dict[str, dict]) -> dict[str, dict]:
    """The file's rows under every name LiteLLM serves them by: ``alias_of`` rows become their
    target, an ``aliases`` list adds names, a name already taken keeps its own row (as LiteLLM does)."""
    rows = {k: v for k, v in raw.items() if k not in NOT_MODELS and isinstance(v, dict)}
    pointers = {k: v["alias_of"] for k, v in rows.items() if isinstance(v.get("alias_of"), str)}
    served = {k: {f: x for f, x in v.items() if f != "aliases"} for k, v in rows.items() if k not in pointers}
    claimed: set[str] = set()
    for name, row in rows.items():
        if name in pointers or not isinstance(row.get("aliases"), list):
            continue
        for alias in row["aliases"]:
            if (alias in rows and alias not in pointers) or alias in claimed:
                continue
            claimed.add(alias)
            served[alias] = served[name]
    for alias, target in pointers.items():
        if target in served and target not in pointers and alias not in claimed:
            served[alias] = served[target]
    return served


def lookup_entry(model: str, cost_map: dict[str, dict] | None = None) -> tuple[str, dict] | None:
    """Find a model's price entry as logged: exact key, without the provider prefix, or dated alias."""
    cost_map = cost_map if cost_map is not None else model_cost_map()
    candidates = [model, model.split("/", 1)[-1], re.sub(r"-\d{4}-\d{2}-\d{2}$", "", model.split("/", 1)[-1])]
    for key in candidates:
        entry = cost_map.get(key)
        if (
            entry
            and entry.get("input_cost_per_token") is not None
            and entry.get("output_cost_per_token") is not None
        ):
            return key, entry
    return None


@dataclass
class SelfHosting:
    """What a self-hosted model costs: GPU rent and the throughput one GPU sustains.

    ``tokens_per_hour`` counts generated tokens; unless ``input_tokens_per_hour`` is given,
    prompt tokens are charged at the same rate. That is the conservative reading of the
    playbook's "per 1,000 tokens" (prefill is really faster), so savings are never overstated.
    """

    gpu_hourly_usd: float
    tokens_per_hour: float
    input_tokens_per_hour: float | None = None
    gpus: int = 1
    source: str = "configured"

    def price(self, model: str) -> Price:
        output = self.gpu_hourly_usd / self.tokens_per_hour
        prompt = self.gpu_hourly_usd / (self.input_tokens_per_hour or self.tokens_per_hour)
        return Price(model, "self_hosted", prompt, output, f"self-hosted ({self.source} throughput)")

    @property
    def fixed_monthly_usd(self) -> float:
        """Always-on GPU servers: what the total-cost view charges whatever the volume."""
        return self.gpu_hourly_usd * HOURS_PER_MONTH * self.gpus


@dataclass
class PriceCatalog:
    """Prices per model and hosting; overrides win over the map, unknown models stay unknown."""

    overrides: dict[str, dict] = field(default_factory=dict)
    self_hosting: dict[str, SelfHosting] = field(default_factory=dict)
    batch_discount: float = BATCH_DISCOUNT
    cost_map: dict[str, dict] | None = None
    _warned: set = field(default_factory=set)

    def _entry(self, model: str) -> tuple[str, dict] | None:
        if model in self.overrides:
            return "override", self.overrides[model]
        found = lookup_entry(model, self.cost_map)
        return ("litellm", found[1]) if found else None

    def price(self, model: str, hosting: str = "api") -> Price | None:
        """The price, or None with one warning per model when nobody knows it."""
        if hosting == "self_hosted" or model in self.self_hosting:
            hosted = self.self_hosting.get(model)
            return hosted.price(model) if hosted else self._unknown(model, hosting)
        found = self._entry(model)
        if not found:
            return self._unknown(model, hosting)
        source, entry = found
        return (
            batch_price(model, entry, source, self.batch_discount)
            if hosting == "batch"
            else Price(model, "api", entry["input_cost_per_token"], entry["output_cost_per_token"], source)
        )

    def _unknown(self, model: str, hosting: str) -> None:
        if (model, hosting) not in self._warned:
            self._warned.add((model, hosting))
            log.warning(
                "no %s price for model %r: its rows are counted as unpriced, not as $0 "
                "(add it under pricing.overrides in workhorse.yaml)",
                hosting,
                model,
            )
        return None

    def prices_table(self, models: Iterable[str], hosting: str = "api") -> pa.Table:
        """One row per model with its per-token prices (null when unknown), to join in DuckDB."""
        rows = [(m, self.price(m, hosting)) for m in sorted(set(models))]
        return pa.table(
            {
                "model": [m for m, _ in rows],
                "input_per_token": pa.array(
                    [p.input_per_token if p else None for _, p in rows], pa.float64()
                ),
                "output_per_token": pa.array(
                    [p.output_per_token if p else None for _, p in rows], pa.float64()
                ),
                "price_source": [p.source if p else "unpriced" for _, p in rows],
            }
        )


def plan_catalog(plan, workspace_root: Path | None, also_self_hosted: Iterable[str] = ()) -> PriceCatalog:
    """The one price source of audit, eval and rollout: the plan's overrides over LiteLLM's map,
    and self-hosted models at GPU rent ÷ throughput (measured by an eval run where one was, else
    the plan's). A model served by a local vLLM (``hosted_vllm/``) is always self-hosted."""
    hosting = plan.self_hosting
    models = {
        c.model for c in plan.candidates if "self_hosted" in c.hosting or c.model.startswith("hosted_vllm/")
    }
    hosted = {}
    for model in models | set(also_self_hosted):
        measured = measured_tokens_per_hour(workspace_root, model) if workspace_root else None
        hosted[model] = SelfHosting(
            hosting.gpu_hourly_usd,
            measured or hosting.tokens_per_hour,
            hosting.input_tokens_per_hour,
            hosting.gpus,
            "measured" if measured else "configured",
        )
    return PriceCatalog(dict(plan.pricing.overrides), hosted, plan.pricing.batch_discount)


def batch_price(model: str, entry: dict, source: str, discount: float = BATCH_DISCOUNT) -> Price:
    """The map's batch prices where it has both, else ``discount`` × list price."""
    batch_in, batch_out = (
        entry.get("input_cost_per_token_batches"),
        entry.get("output_cost_per_token_batches"),
    )
    if batch_in is not None and batch_out is not None:
        return Price(model, "batch", batch_in, batch_out, f"{source} batch")
    return Price(
        model,
        "batch",
        entry["input_cost_per_token"] * discount,
        entry["output_cost_per_token"] * discount,
        f"{source} list x {discount:g}",
    )


def monthly_cost(price: Price, prompt_tokens: float, completion_tokens: float) -> float:
    """USD for a month's tokens at ``price`` (rounded to the cent only for display)."""
    return price.cost(prompt_tokens, completion_tokens)


# --------------------------------------------------------------------------- throughput


def measured_tokens_per_hour(workspace_root: Path, model: str) -> float | None:
    """Throughput the engine recorded for ``model`` (tokens/hour), if a run measured one."""
    path = Path(workspace_root) / THROUGHPUT_FILE
    if not path.exists():
        return None
    value = json.loads(path.read_text()).get(model)
    return float(value) if value else None


def record_throughput(workspace_root: Path, model: str, tokens_per_s: float) -> Path:
    """Store a measured throughput so the next audit prices self-hosting from it."""
    path = Path(workspace_root) / THROUGHPUT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {}
    data[model] = tokens_per_s * 3600
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
    return path


# --------------------------------------------------------------------------- shortlist


def shortlist_candidates(
    prompt_tokens: float, completion_tokens: float, *, limit: int = 3, cost_map: dict[str, dict] | None = None
) -> list[Price]:
    """2-3 open-weight chat models from the price map, cheapest first, one per family.

    For a workhorse use case whose plan names no candidates: a proposal for the team to
    confirm on the golden set, not a verdict (the playbook's "shortlist replacements").
    """
    prices = _open_weight_prices(cost_map) if cost_map is not None else _bundled_open_weight_prices()
    best: dict[str, Price] = {}
    for family, price in prices:
        if family not in best or price.cost(prompt_tokens, completion_tokens) < best[family].cost(
            prompt_tokens, completion_tokens
        ):
            best[family] = price
    ranked = sorted(best.values(), key=lambda p: (p.cost(prompt_tokens, completion_tokens), p.model))
    return ranked[:limit]


@functools.cache
def _bundled_open_weight_prices() -> list[tuple[str, Price]]:
    # LiteLLM's map is fixed for the process: filter its ~2,500 entries once, not per use case.
    return _open_weight_prices(model_cost_map())


def _open_weight_prices(cost_map: dict[str, dict]) -> list[tuple[str, Price]]:
    """(family, price) of every open-weight chat model in the map."""
    prices = []
    for key, entry in cost_map.items():
        price = _shortlist_price(key, entry)
        if price is not None:
            prices.append((OPEN_WEIGHT.search(key).group(0).lower().replace("-", ""), price))
    return prices


def _shortlist_price(key: str, entry: dict) -> Price | None:
    inp, out = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
    if entry.get("mode") != "chat" or not inp or not out:  # 0 means "free tier" or unknown, not cheap
        return None
    if entry.get("litellm_provider") not in SHORTLIST_PROVIDERS or not OPEN_WEIGHT.search(key):
        return None
    if NOT_A_WORKHORSE.search(key) or not key.startswith(f"{entry['litellm_provider']}/"):
        return None
    return Price(key, "api", inp, out, "litellm")


# --------------------------------------------------------------------------- total cost


@dataclass(frozen=True)
class TotalCostView:
    """Fixed self-hosting costs against variable savings, month by month."""

    current_monthly_usd: float
    variable_monthly_usd: float
    fixed_monthly_usd: float
    one_off_usd: float
    net_monthly_saving_usd: float
    break_even_month: int | None
    reason: str


def total_cost_view(
    current_monthly_usd: float,
    variable_monthly_usd: float,
    *,
    fixed_monthly_usd: float,
    one_off_usd: float = 0.0,
) -> TotalCostView:
    """When the migration pays back: first month whose cumulative net saving covers the one-off cost.

    Net monthly saving = current spend − (variable cost + fixed cost). If it is not positive,
    the migration never pays back at this volume, and the reason says so.
    """
    net = current_monthly_usd - variable_monthly_usd - fixed_monthly_usd
    if net <= 0:
        month, reason = (
            None,
            (
                f"never at this volume: fixed costs ${fixed_monthly_usd:,.0f}/month exceed the "
                f"variable saving ${current_monthly_usd - variable_monthly_usd:,.2f}/month"
            ),
        )
    else:
        month = max(1, math.ceil(one_off_usd / net)) if one_off_usd else 1
        reason = f"net saving ${net:,.2f}/month repays ${one_off_usd:,.0f} one-off in month {month}"
    return TotalCostView(
        current_monthly_usd, variable_monthly_usd, fixed_monthly_usd, one_off_usd, net, month, reason
    )


def volume_for_break_even(
    current_per_token: float, candidate_per_token: float, fixed_monthly_usd: float
) -> float | None:
    """Tokens per month above which self-hosting's fixed costs are covered (None: never)."""
    margin = current_per_token - candidate_per_token
    return fixed_monthly_usd / margin if margin > 0 else None
