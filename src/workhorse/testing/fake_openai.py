"""A real OpenAI-compatible HTTP server with fault injection, for tests and benchmarks.

It runs in its own process (``python -m workhorse.testing.fake_openai``) so that a client
under test or benchmark does not share a GIL with it. Faults are decided by hashing
(seed, request body, attempt number of that body): the same requests get the same faults
whatever order they arrive in. Each reply is recorded; ``GET /_records`` returns them.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field

from workhorse.tasks.common.engines import free_port  # noqa: F401  (one port picker; importers use it from here too)

FAULT_KINDS = ("server_error", "rate_limit", "hang", "malformed", "reset")


@dataclass
class Faults:
    """Probability of each fault per request (they are exclusive; the rest succeed)."""

    server_error: float = 0.0
    rate_limit: float = 0.0
    hang: float = 0.0
    malformed: float = 0.0
    reset: float = 0.0
    retry_after_s: float = 0.2
    hang_s: float = 30.0

    def pick(self, unit: float) -> str:
        edge = 0.0
        for kind in FAULT_KINDS:
            edge += getattr(self, kind)
            if unit < edge:
                return kind
        return "ok"


@dataclass
class ServerConfig:
    latency_s: float = 0.0
    faults: Faults = field(default_factory=Faults)
    seed: int = 0
    # Hold every request after this many successes until /_release (crash tests need a quiet point).
    pause_after_successes: int | None = None
    # Fail every request with 503 (a provider outage) until /_control says otherwise.
    down: bool = False
    # Scripted answers by the text of the last message: a model whose quality a test chooses.
    answers: dict[str, str] = field(default_factory=dict)
    # Forward healthy requests to this OpenAI-compatible base URL (a real engine) and inject the
    # faults in front of it: how a demo breaks a real model's endpoint on purpose.
    upstream: str | None = None
    # Each answer's latency varies by up to ± this share of latency_s (decided by hash, like faults).
    latency_spread: float = 0.0
    # Serve like an engine with this many parallel slots (a CPU LLM server): a request that arrives
    # while more requests than slots are in flight waits its turn, so its latency grows with the
    # load: latency_s × max(1, in flight / slots), itself counted. None: latency ignores the load.
    slots: int | None = None
    # Answer judge prompts (tasks/evaluate/judge_prompts) as a scripted judge would: see JUDGES.
    judge: str | None = None


def request_key(body: dict) -> str:
    """Identity of a request for fault decisions and duplicate detection."""
    stable = {"model": body.get("model"), "messages": body.get("messages")}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:16]


def unit_interval(*parts: object) -> float:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def default_answer(body: dict, answers: dict[str, str] | None = None) -> str:
    """A scripted answer for this last message, else one of the labels offered by a `choice`
    constraint (picked by hash), else an echo."""
    choices = (body.get("structured_outputs") or {}).get("choice")
    last = body["messages"][-1]["content"] if body.get("messages") else ""
    if answers and last in answers:
        return answers[last]
    if choices:
        return choices[int(unit_interval(last) * len(choices))]
    return f"echo: {str(last)[:64]}"


# Scripted judges: position_a always prefers the first answer shown; longer prefers the longer
# answer; correct prefers (or grades by) token overlap with the reference, as a fair judge would;
# garbage answers something no judgement parser accepts.
JUDGES = ("position_a", "longer", "correct", "garbage")


def _section(text: str, name: str) -> str | None:
    """The text between ``[<name>]`` and ``[End of <name>]`` of a judge prompt."""
    start, end = f"[{name}]\n", f"\n[End of {name[0].lower()}{name[1:]}]"
    if start not in text or end not in text:
        return None
    return text.split(start, 1)[1].split(end, 1)[0]


def _overlap(answer: str, reference: str) -> float:
    said, expected = Counter(answer.lower().split()), Counter(reference.lower().split())
    common = sum((said & expected).values())
    return 0.0 if not common else 2 * common / (sum(said.values()) + sum(expected.values()))


def judge_answer(body: dict, judge: str | None) -> str | None:
    """A scripted judge's answer to a judge prompt (None for any other request): the bare choice
    under a ``choice`` constraint, else the JSON object the judge's schema asks for."""
    last = str(body["messages"][-1].get("content", "")) if judge and body.get("messages") else ""
    a, b, answer = _section(last, "Answer A"), _section(last, "Answer B"), _section(last, "Answer")
    if judge is None or (answer is None and (a is None or b is None)):
        return None
    if judge == "garbage":
        return "I would rather not say."
    reference = _section(last, "Reference answer") or ""
    if answer is not None:
        scale = int(last.rsplit("from 1 to ", 1)[-1].split(".")[0])
        verdict, key = 1 + round(_overlap(answer, reference) * (scale - 1)), "score"
    else:
        verdict, key = _preference(judge, a, b, reference), "winner"
    constrained = (body.get("structured_outputs") or {}).get("choice")
    return str(verdict) if constrained else json.dumps({key: verdict})


def _preference(judge: str, a: str, b: str, reference: str) -> str:
    if judge == "position_a":
        return "A"
    first, second = (
        (len(a), len(b)) if judge == "longer" else (_overlap(a, reference), _overlap(b, reference))
    )
    return "A" if first > second else "B" if second > first else "tie"


def completion_body(body: dict, content: str) -> dict:
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    completion_tokens = max(1, len(content.split()))
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class FakeOpenAI:
    """The aiohttp application and its bookkeeping."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.attempts: Counter[str] = Counter()
        self.records: list[dict] = []
        self.successes = 0
        self.in_flight = 0
        self.released = asyncio.Event()

    async def chat(self, request):
        """One chat completion; ``in_flight`` counts the requests being handled, this one included."""
        self.in_flight += 1
        try:
            return await self._chat(request, self.in_flight)
        finally:
            self.in_flight -= 1

    async def _chat(self, request, in_flight: int):
        from aiohttp import web

        body = await request.json()
        key = request_key(body)
        attempt = self.attempts[key]
        self.attempts[key] += 1
        if self.config.latency_s:
            await asyncio.sleep(self.answer_time(key, attempt, in_flight))
        await self._wait_if_paused()  # after the latency, so nothing is mid-answer when paused
        outcome = (
            "down"
            if self.config.down
            else self.config.faults.pick(unit_interval(self.config.seed, key, attempt))
        )
        record = {
            "key": key,
            "attempt": attempt,
            "outcome": outcome,
            "t": time.time(),
            "auth": request.headers.get("Authorization", ""),
            "in_flight": in_flight,
        }
        if outcome == "ok" and self.config.upstream:
            self.records.append(record)
            return await self._forward(body)
        if outcome == "ok":
            # Counted before the write, so the pause check sees it at once; a write that fails
            # (client gone) is recorded as such, not as a success.
            self.successes += 1
            content = judge_answer(body, self.config.judge) or default_answer(body, self.config.answers)
            response = web.json_response(completion_body(body, content))
            try:
                await response.prepare(request)
                await response.write_eof()
            except ConnectionError:
                self.successes -= 1
                record["outcome"] = "client_gone"
                raise
            finally:
                self.records.append(record)
            return response
        self.records.append(record)
        return await self._fault(request, outcome)

    def answer_time(self, key: str, attempt: int, in_flight: int) -> float:
        """This request's latency: spread by hash, stretched by the load on arrival when slots are set."""
        config = self.config
        spread = 1 + config.latency_spread * (2 * unit_interval(config.seed, "latency", key, attempt) - 1)
        load = max(1.0, in_flight / config.slots) if config.slots else 1.0
        return config.latency_s * spread * load

    async def _forward(self, body: dict):
        import aiohttp
        from aiohttp import web

        async with aiohttp.ClientSession() as session:
            async with session.post(f"{self.config.upstream}/chat/completions", json=body) as upstream:
                return web.Response(
                    body=await upstream.read(), status=upstream.status, content_type="application/json"
                )

    async def _wait_if_paused(self) -> None:
        limit = self.config.pause_after_successes
        if limit is not None and self.successes >= limit:
            await self.released.wait()

    async def _fault(self, request, outcome: str):
        from aiohttp import web

        faults = self.config.faults
        if outcome in ("server_error", "down"):
            return web.json_response(
                {"error": {"message": "injected 503", "type": "server_error"}}, status=503
            )
        if outcome == "rate_limit":
            return web.json_response(
                {"error": {"message": "injected 429", "type": "rate_limit_error"}},
                status=429,
                headers={"Retry-After": f"{faults.retry_after_s:g}"},
            )
        if outcome == "malformed":
            return web.Response(
                text='{"id": "chatcmpl-broken", "choices": [{"mess', content_type="application/json"
            )
        if outcome == "hang":
            await asyncio.sleep(faults.hang_s)
        request.transport.abort()  # reset: no response at all
        raise asyncio.CancelledError

    async def get_records(self, request):
        from aiohttp import web

        return web.json_response({"records": self.records, "successes": self.successes})

    async def control(self, request):
        from aiohttp import web

        change = await request.json()
        if change.pop("release", False):
            self.config.pause_after_successes = None
            self.released.set()
        for name, value in change.items():
            setattr(self.config, name, value)
        return web.json_response({"ok": True})

    def app(self):
        from aiohttp import web

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/chat/completions", self.chat)
        app.router.add_get("/_records", self.get_records)
        app.router.add_post("/_control", self.control)
        app.router.add_get("/health", lambda request: web.json_response({"ok": True}))
        return app


class FakeServerProcess:
    """Handle on a fake server running in a child process."""

    def __init__(self, config: ServerConfig):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/v1"
        arguments = [
            sys.executable,
            "-m",
            "workhorse.testing.fake_openai",
            "--port",
            str(self.port),
            "--config",
            json.dumps(asdict(config)),
        ]
        self.process = subprocess.Popen(arguments)
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fake server exited with {self.process.returncode}")
            try:
                urllib.request.urlopen(f"{self.base}/health", timeout=1).read()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("fake server did not start")

    def records(self) -> list[dict]:
        return json.loads(urllib.request.urlopen(f"{self.base}/_records", timeout=30).read())["records"]

    def control(self, **change) -> None:
        data = json.dumps(change).encode()
        request = urllib.request.Request(
            f"{self.base}/_control", data=data, method="POST", headers={"Content-Type": "application/json"}
        )
        urllib.request.urlopen(request, timeout=10).read()

    def release(self) -> None:
        self.control(release=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> "FakeServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    from aiohttp import web

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", default="{}")
    arguments = parser.parse_args()
    raw = json.loads(arguments.config)
    config = ServerConfig(**{**raw, "faults": Faults(**raw.get("faults", {}))})
    server = FakeOpenAI(config)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    web.run_app(
        server.app(), host="127.0.0.1", port=arguments.port, print=None, access_log=None, handle_signals=False
    )


if __name__ == "__main__":
    main()
