"""A model endpoint as a Prefect Block (configuration only): where a model answers and what it costs."""

from __future__ import annotations

from typing import Optional

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class ModelEndpoint(Block):
    """One model behind one endpoint, with its key, limits and per-token prices."""

    _block_type_name = "Workhorse Model Endpoint"
    _block_type_slug = "workhorse-model-endpoint"
    _description = "A LiteLLM model string with its endpoint, key, concurrency, timeout and prices."

    model: str = Field(description="LiteLLM model string, e.g. hosted_vllm/smollm2-135m-instruct.")
    api_base: Optional[str] = Field(
        None, description="Base URL of an OpenAI-compatible server; None for the provider's."
    )
    api_key: Optional[SecretStr] = Field(None, description="API key of the endpoint (a secret).")
    max_concurrency: int = Field(16, ge=1, description="Requests in flight at once against this endpoint.")
    rpm: Optional[float] = Field(
        None, gt=0, description="Requests per minute the endpoint allows (None: no limit)."
    )
    tpm: Optional[float] = Field(
        None, gt=0, description="Tokens per minute it allows, prompt + expected completion (None: no limit)."
    )
    timeout_s: float = Field(60.0, gt=0, description="Seconds before one request is abandoned.")
    input_cost_per_token: Optional[float] = Field(
        None, ge=0, description="USD per prompt token (self-hosted: set it)."
    )
    output_cost_per_token: Optional[float] = Field(None, ge=0, description="USD per completion token.")
    hosting: str = Field("api", description="api | batch | self_hosted: how the model is served.")
