"""Exporter to the LiteLLM routing layer: a Router/Proxy config with the rollout's weights.

The use case is one model group with two weighted deployments (``litellm_params.weight``,
LiteLLM's simple-shuffle), plus a second group holding the incumbent alone, named as the
group's fallback: a failing candidate call is answered by the incumbent. API keys are written
as ``os.environ/NAME`` references that LiteLLM resolves at load time, never as values.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from workhorse.tasks.common.runner import ModelSpec
from workhorse.tasks.rollout.state import current_state
from workhorse.workspace import Workspace


def key_env_name(spec: ModelSpec) -> str:
    """Conventional variable of a provider's key: ``deepinfra/...`` → ``DEEPINFRA_API_KEY``."""
    provider = spec.model.split("/", 1)[0] if "/" in spec.model else "openai"
    return re.sub(r"[^A-Z0-9]+", "_", provider.upper()) + "_API_KEY"


def _params(spec: ModelSpec, env: str, weight: int | None = None) -> dict:
    params = {
        "model": spec.model,
        "api_key": f"os.environ/{env}",
        "max_retries": 0,
        "timeout": spec.timeout_s,
    }
    if spec.api_base:
        params["api_base"] = spec.api_base
    if weight is not None:
        params["weight"] = weight
    return params


def litellm_config(
    workspace: Workspace | str | None,
    use_case: str,
    incumbent: ModelSpec,
    candidate: ModelSpec,
    key_env: dict[str, str] | None = None,
) -> dict:
    """The config dict for the current weights (shadow is not a LiteLLM concept: 0 % candidate)."""
    state = current_state(workspace, use_case)
    env = {"incumbent": key_env_name(incumbent), "candidate": key_env_name(candidate), **(key_env or {})}
    weights = state.weights
    fallback_group = f"{use_case}/incumbent"
    model_list = [
        {
            "model_name": use_case,
            "litellm_params": _params(spec, env[arm], weights[arm]),
            "model_info": {"id": f"{use_case}/{arm}", "rollout_stage": state.stage},
        }
        for arm, spec in (("incumbent", incumbent), ("candidate", candidate))
        if weights[arm] > 0
    ]
    model_list.append(
        {
            "model_name": fallback_group,
            "litellm_params": _params(incumbent, env["incumbent"]),
            "model_info": {"id": f"{use_case}/incumbent-fallback"},
        }
    )
    return {
        "model_list": model_list,
        "router_settings": {
            "routing_strategy": "simple-shuffle",
            "num_retries": 0,
            "fallbacks": [{use_case: [fallback_group]}],
        },
        "litellm_settings": {"drop_params": True},
    }


def export_litellm_config(
    workspace: Workspace | str | None,
    use_case: str,
    incumbent: ModelSpec,
    candidate: ModelSpec,
    path: str | Path | None = None,
    key_env: dict[str, str] | None = None,
) -> Path:
    """Write the config as YAML (default ``<workspace>/routing/<use_case>.litellm.yaml``)."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    config = litellm_config(ws, use_case, incumbent, candidate, key_env)
    target = Path(path) if path else ws.subdir("routing") / f"{use_case}.litellm.yaml"
    state = current_state(ws, use_case)
    header = (
        f"# LiteLLM config exported by workhorse for {use_case}: stage {state.stage}, "
        f"state version {state.version}. Keys are environment references.\n"
    )
    target.write_text(header + yaml.safe_dump(config, sort_keys=False))
    return target
