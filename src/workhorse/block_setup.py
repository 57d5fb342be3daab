"""`workhorse blocks register|init`: the Block types on the server, and block documents from the environment.

`register` is `prefect block register -m workhorse.blocks` through the API (no second CLI to
start). `init` turns the environment a team already has (``OPENAI_API_KEY``,
``WORKHORSE_SLACK_WEBHOOK_URL``, …) into saved blocks, so scheduled runs and prefect.yaml's
``{{ prefect.blocks.… }}`` references find them. Secrets are never printed: results carry only
the block's name and a masked value.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import urlsplit

SLACK_BLOCK = "default"


@dataclass(frozen=True)
class EndpointEnv:
    """Which environment variables make up one ModelEndpoint block (it exists when key or base is set)."""

    block: str
    model_env: str
    default_model: str
    key_env: str | None
    base_env: str | None
    hosting: str = "api"


ENDPOINTS = (
    EndpointEnv("openai", "WORKHORSE_OPENAI_MODEL", "gpt-4o-mini", "OPENAI_API_KEY", "OPENAI_API_BASE"),
    EndpointEnv(
        "anthropic",
        "WORKHORSE_ANTHROPIC_MODEL",
        "anthropic/claude-3-5-haiku-latest",
        "ANTHROPIC_API_KEY",
        None,
    ),
    EndpointEnv(
        "deepinfra", "WORKHORSE_DEEPINFRA_MODEL", "deepinfra/Qwen/Qwen3-14B", "DEEPINFRA_API_KEY", None
    ),
    EndpointEnv(
        "vllm",
        "WORKHORSE_VLLM_MODEL",
        "hosted_vllm/smollm2-135m-instruct",
        "HOSTED_VLLM_API_KEY",
        "HOSTED_VLLM_API_BASE",
        hosting="self_hosted",
    ),
)


@dataclass(frozen=True)
class SavedBlock:
    """What `init` reports: safe to print."""

    slug: str
    name: str
    shown: str


def block_classes() -> list[type]:
    """The Block subclasses workhorse ships (what `prefect block register -m workhorse.blocks` finds)."""
    from prefect.blocks.core import Block

    import workhorse.blocks as module

    return [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, Block) and obj.__module__.startswith("workhorse.blocks")
    ]


def register_blocks() -> list[str]:
    """Register (or update) every workhorse Block type and schema on the current Prefect API."""
    slugs = []
    for cls in block_classes():
        cls.register_type_and_schema()
        slugs.append(cls.get_block_type_slug())
    return slugs


def mask(secret: str | None) -> str:
    """A value safe to print: a URL keeps its scheme and host, anything else its first 3 characters."""
    if not secret:
        return "(empty)"
    parts = urlsplit(secret)
    if parts.scheme and parts.netloc:
        return f"{parts.scheme}://{parts.netloc}/…(redacted)"
    return f"{secret[:3]}…(redacted)" if len(secret) > 8 else "…(redacted)"


def init_blocks(env: Mapping[str, str] | None = None, overwrite: bool = True) -> list[SavedBlock]:
    """Register the types, then save a block for every system the environment configures."""
    env = os.environ if env is None else env
    register_blocks()
    saved = [_save_slack(env, overwrite)] + [_save_endpoint(spec, env, overwrite) for spec in ENDPOINTS]
    return [block for block in saved if block is not None]


def _save_slack(env: Mapping[str, str], overwrite: bool) -> SavedBlock | None:
    from workhorse.blocks import SlackAlerts
    from workhorse.tasks.monitor.alerts import WEBHOOK_ENV

    url = env.get(WEBHOOK_ENV)
    if not url:
        return None
    SlackAlerts(
        webhook_url=url,
        channel=env.get("WORKHORSE_SLACK_CHANNEL"),
        mention=env.get("WORKHORSE_SLACK_MENTION"),
    ).save(SLACK_BLOCK, overwrite=overwrite)
    return SavedBlock(SlackAlerts.get_block_type_slug(), SLACK_BLOCK, mask(url))


def _save_endpoint(spec: EndpointEnv, env: Mapping[str, str], overwrite: bool) -> SavedBlock | None:
    from workhorse.blocks import ModelEndpoint

    key = env.get(spec.key_env) if spec.key_env else None
    base = env.get(spec.base_env) if spec.base_env else None
    if not key and not base:
        return None
    model = env.get(spec.model_env) or spec.default_model
    ModelEndpoint(model=model, api_base=base, api_key=key, hosting=spec.hosting).save(
        spec.block, overwrite=overwrite
    )
    shown = f"{model}, key {mask(key) if key else '(none)'}" + (
        f", base {base if '@' not in base else mask(base)}" if base else ""
    )
    return SavedBlock(ModelEndpoint.get_block_type_slug(), spec.block, shown)
