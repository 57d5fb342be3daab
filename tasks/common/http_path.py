"""The lean path for OpenAI-compatible endpoints: one pooled aiohttp session per endpoint.

A request to ``openai/…`` or ``hosted_vllm/…`` with an ``api_base`` (a vLLM server, a proxy, any
OpenAI-compatible server) needs no translation: the body is the request's messages and parameters
as they are, encoded once, posted over a kept-alive connection, and the answer's JSON read once.
LiteLLM stays the path for providers that need a translation (and for requests carrying a
parameter this path does not pass through as is). Both paths raise the same ``CallFailed``
classes, so retries, the breaker, the limits, the cache and the cost see no difference.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

# The runner imports this module lazily (at its first lean call): no import cycle.
from workhorse.tasks.common.runner import CallFailed

LEAN_PROVIDERS = frozenset({"openai", "hosted_vllm"})
# Parameters of OpenAI's chat completions that go into the body unchanged; anything else is
# LiteLLM's to translate.
PASSED_AS_IS = frozenset(
    {
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "response_format",
        "tools",
        "tool_choice",
        "user",
        "extra_body",
    }
)


def takes(model: str, api_base: str | None, params: dict) -> bool:
    """Whether a request can go the lean way: an OpenAI-compatible server and plain parameters."""
    return (
        bool(api_base)
        and model.split("/", 1)[0] in LEAN_PROVIDERS
        and "/" in model
        and params.keys() <= PASSED_AS_IS
    )


def request_body(model: str, messages: list[dict], params: dict) -> bytes:
    """The JSON body, encoded once: the model name without its provider, ``extra_body`` merged in."""
    extra = params.get("extra_body") or {}
    plain = {k: v for k, v in params.items() if k != "extra_body"}
    return json.dumps({"model": model.split("/", 1)[1], "messages": messages, **plain, **extra}).encode()


class HttpPool:
    """One aiohttp session per endpoint for the life of a runner (keep-alive, no connection cap:
    the endpoint's limiter decides how many requests are in flight)."""

    def __init__(self):
        self._sessions: dict[str, Any] = {}

    def session(self, api_base: str):
        session = self._sessions.get(api_base)
        if session is None or session.closed:
            import aiohttp

            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
            session = self._sessions[api_base] = aiohttp.ClientSession(
                connector=connector, json_serialize=json.dumps, auto_decompress=True
            )
        return session

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()

    async def complete(
        self,
        model: str,
        api_base: str,
        api_key: str | None,
        messages: list[dict],
        params: dict,
        timeout_s: float,
    ) -> dict:
        """One chat completion: the answer's JSON, or ``CallFailed`` with the class LiteLLM's path gives."""
        import aiohttp

        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        url = api_base.rstrip("/") + "/chat/completions"
        try:
            async with self.session(api_base).post(
                url,
                data=request_body(model, messages, params),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                raw = await response.read()
                status, retry_after = response.status, retry_after_value(response.headers.get("retry-after"))
        except (asyncio.TimeoutError, TimeoutError) as error:
            raise CallFailed("timeout", f"Timeout: no answer from {api_base} in {timeout_s:g} s") from error
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as error:
            raise CallFailed(
                "connection", f"Connection error: {type(error).__name__}: {error}"[:300]
            ) from error
        return parsed_answer(status, raw, retry_after)


def retry_after_value(value: str | None) -> float | None:
    """Seconds of a Retry-After header in seconds form (an HTTP date is rare from LLM APIs: ignored)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def parsed_answer(status: int, raw: bytes, retry_after: float | None) -> dict:
    """The JSON of a 200, or the error class of any other status (as LiteLLM's exceptions map)."""
    if status == 200:
        try:
            return json.loads(raw)
        except ValueError as error:
            raise CallFailed("bad_response", f"JSONDecodeError: {error}") from error
    message = f"HTTP {status}: {raw[:300].decode('utf-8', 'replace')}"
    if status == 429:
        raise CallFailed("rate_limited", message, retry_after)
    if status == 408:
        raise CallFailed("timeout", message)
    if status >= 500:
        raise CallFailed("server_error", message, retry_after)
    raise CallFailed("client_error", message)


def content_and_usage(answer: dict) -> tuple[str, int, int]:
    """The first choice's text and the token counts (0 when the server reports none)."""
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as error:
        raise CallFailed("bad_response", f"response has no message: {error!r}") from error
    if content is None:
        raise CallFailed("bad_response", "response message has no content")
    usage = answer.get("usage") or {}
    return content, usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
