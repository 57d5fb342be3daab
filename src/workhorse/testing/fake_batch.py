"""A real OpenAI-compatible batch provider (files + batches endpoints) with fault injection.

It runs in its own process (``python -m workhorse.testing.fake_batch``) like the fake chat server,
and answers every batch line exactly as that server answers the same chat request, so a batch and
synchronous calls give identical answers. A batch moves ``validating → in_progress →
completed | expired | failed | cancelled`` on the clock (``validate_s``, ``complete_s``) or, with
``hold``, only when ``/_control`` releases it. ``GET /_log`` returns every line ever submitted
in a batch (custom id, request key, batch id) and the count of calls per endpoint; its
``/v1/chat/completions`` answers synchronously the same way, counted as ``chat``.

Faults, all decided by hashing (seed, …) so a seeded run repeats:

- ``endpoint_faults``: per endpoint name (``upload``, ``content``, ``create``, ``retrieve``,
  ``list``, ``cancel``), the share of calls answered 503 or 429 (+ Retry-After);
- ``lost_create_reply``: share of batch creations that succeed but answer 500 (the client must
  find the batch again by listing, not create a second one);
- ``expire_first``: that many batches expire, with ``expire_output_share`` of their lines answered;
- ``failed_line_share``: share of line attempts that land in the error file (hashed per request
  key and attempt, so a resubmitted line can succeed);
- ``complete_s``: slow completion.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field

from workhorse.tasks.common.engines import free_port
from workhorse.testing.fake_openai import completion_body, default_answer, request_key, unit_interval

ENDPOINTS = ("upload", "content", "create", "retrieve", "list", "cancel")
TERMINAL = ("completed", "expired", "failed", "cancelled")
LINE_ERRORS = ((500, "server_error"), (429, "rate_limit_exceeded"), (400, "invalid_request_error"))


@dataclass
class BatchProviderConfig:
    seed: int = 0
    validate_s: float = 0.0
    complete_s: float = 0.0
    hold: bool = False  # batches stay in_progress until /_control {"release": true}
    endpoint_faults: dict[str, dict[str, float]] = field(default_factory=dict)
    retry_after_s: float = 0.1
    lost_create_reply: float = 0.0
    expire_first: int = 0
    expire_output_share: float = 0.5
    failed_line_share: float = 0.0
    max_lines_per_batch: int = 50_000
    answers: dict[str, str] = field(default_factory=dict)


class FakeBatchProvider:
    """The aiohttp application and its in-memory files, batches and log."""

    def __init__(self, config: BatchProviderConfig):
        self.config = config
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.lines: dict[str, list[dict]] = {}  # batch id -> its parsed input lines
        self.log: list[dict] = []
        self.calls: Counter[str] = Counter()
        self.line_attempts: Counter[str] = Counter()
        self.expired = 0

    def _next_id(self, prefix: str, table: dict) -> str:
        return f"{prefix}-{len(table) + 1:06d}"

    def _fault(self, endpoint: str):
        """A 503/429 answer for this call of ``endpoint``, or None (decided by hash of its count)."""
        from aiohttp import web

        nth = self.calls[endpoint]
        self.calls[endpoint] += 1
        shares = self.config.endpoint_faults.get(endpoint, {})
        unit = unit_interval(self.config.seed, endpoint, nth)
        if unit < shares.get("server_error", 0.0):
            return web.json_response(
                {"error": {"message": "injected 503", "type": "server_error"}}, status=503
            )
        if unit < shares.get("server_error", 0.0) + shares.get("rate_limit", 0.0):
            return web.json_response(
                {"error": {"message": "injected 429", "type": "rate_limit_error"}},
                status=429,
                headers={"Retry-After": f"{self.config.retry_after_s:g}"},
            )
        return None

    # ------------------------------------------------------------------ files

    async def upload(self, request):
        from aiohttp import web

        reader = await request.multipart()
        purpose, content, filename = "batch", b"", "upload.jsonl"
        async for part in reader:
            if part.name == "purpose":
                purpose = (await part.text()).strip()
            elif part.name == "file":
                filename = part.filename or filename
                content = bytes(await part.read())
        if (fault := self._fault("upload")) is not None:
            return fault
        file_id = self._next_id("file", self.files)
        self.files[file_id] = {"content": content, "purpose": purpose, "filename": filename}
        return web.json_response(self._file_object(file_id))

    def _file_object(self, file_id: str) -> dict:
        held = self.files[file_id]
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(held["content"]),
            "created_at": int(time.time()),
            "filename": held["filename"],
            "purpose": held["purpose"],
            "status": "processed",
        }

    async def file_content(self, request):
        from aiohttp import web

        if (fault := self._fault("content")) is not None:
            return fault
        held = self.files.get(request.match_info["file_id"])
        if held is None:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        return web.Response(body=held["content"], content_type="application/octet-stream")

    async def file_meta(self, request):
        from aiohttp import web

        file_id = request.match_info["file_id"]
        if file_id not in self.files:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        return web.json_response(self._file_object(file_id))

    # ------------------------------------------------------------------ batches

    async def create(self, request):
        from aiohttp import web

        body = await request.json()
        if (fault := self._fault("create")) is not None:
            return fault
        held = self.files.get(body.get("input_file_id"))
        if held is None:
            return web.json_response({"error": {"message": "input file not found"}}, status=400)
        batch_id = self._next_id("batch", self.batches)
        now = time.time()
        batch = {
            "id": batch_id,
            "object": "batch",
            "endpoint": body.get("endpoint", "/v1/chat/completions"),
            "errors": None,
            "input_file_id": body["input_file_id"],
            "completion_window": body.get("completion_window", "24h"),
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": int(now),
            "in_progress_at": None,
            "expires_at": int(now) + 86400,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": body.get("metadata") or {},
            "_t0": now,
        }
        self.batches[batch_id] = batch
        self._accept(batch, held["content"])
        if self.config.lost_create_reply and unit_interval(self.config.seed, "lost", batch_id) < (
            self.config.lost_create_reply
        ):
            return web.json_response({"error": {"message": "injected 500 after create"}}, status=500)
        return web.json_response(self._public(batch))

    def _accept(self, batch: dict, content: bytes) -> None:
        """Parse and log the input lines; a malformed file or one over the line limit fails the batch."""
        lines = []
        try:
            for raw in io.BytesIO(content):
                if raw.strip():
                    lines.append(json.loads(raw))
        except json.JSONDecodeError as error:
            return self._fail(batch, f"invalid JSON line: {error}")
        if len(lines) > self.config.max_lines_per_batch:
            return self._fail(
                batch, f"{len(lines)} lines, over the limit of {self.config.max_lines_per_batch}"
            )
        self.lines[batch["id"]] = lines
        batch["request_counts"]["total"] = len(lines)
        for line in lines:
            self.log.append(
                {"batch_id": batch["id"], "custom_id": line["custom_id"], "key": request_key(line["body"])}
            )

    def _fail(self, batch: dict, message: str) -> None:
        batch.update(status="failed", failed_at=int(time.time()))
        batch["errors"] = {"object": "list", "data": [{"code": "invalid_file", "message": message}]}

    async def retrieve(self, request):
        from aiohttp import web

        if (fault := self._fault("retrieve")) is not None:
            return fault
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        self._advance(batch)
        return web.json_response(self._public(batch))

    async def list_batches(self, request):
        from aiohttp import web

        if (fault := self._fault("list")) is not None:
            return fault
        limit = int(request.query.get("limit", 20))
        after = request.query.get("after")
        newest_first = sorted(self.batches, reverse=True)
        if after in self.batches:
            newest_first = newest_first[newest_first.index(after) + 1 :]
        page = newest_first[:limit]
        for batch_id in page:
            self._advance(self.batches[batch_id])
        return web.json_response(
            {
                "object": "list",
                "data": [self._public(self.batches[b]) for b in page],
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
                "has_more": len(newest_first) > limit,
            }
        )

    async def cancel(self, request):
        from aiohttp import web

        if (fault := self._fault("cancel")) is not None:
            return fault
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        self._advance(batch)
        if batch["status"] not in TERMINAL:
            self._finish(batch, "cancelled", share=self._elapsed_share(batch))
        return web.json_response(self._public(batch))

    def _elapsed_share(self, batch: dict) -> float:
        total = self.config.validate_s + self.config.complete_s
        return 0.0 if self.config.hold or not total else min(1.0, (time.time() - batch["_t0"]) / total)

    def _advance(self, batch: dict) -> None:
        """Move a live batch along the clock (or hold it in progress until released)."""
        if batch["status"] in TERMINAL:
            return
        elapsed = time.time() - batch["_t0"]
        if elapsed < self.config.validate_s:
            return
        if batch["status"] == "validating":
            batch.update(status="in_progress", in_progress_at=int(time.time()))
        if self.config.hold or elapsed < self.config.validate_s + self.config.complete_s:
            return
        if self.expired < self.config.expire_first:
            self.expired += 1
            self._finish(batch, "expired", share=self.config.expire_output_share)
        else:
            self._finish(batch, "completed", share=1.0)

    def _finish(self, batch: dict, status: str, share: float) -> None:
        """Answer the first ``share`` of the lines (the rest stay unanswered); write output and errors."""
        lines = self.lines.get(batch["id"], [])
        answered = lines[: round(len(lines) * share)]
        output, errors = [], []
        for number, line in enumerate(answered):
            record = self._answer(batch["id"], number, line)
            (output if record["response"]["status_code"] == 200 else errors).append(record)
        batch["output_file_id"] = self._store_lines(output, f"{batch['id']}_output.jsonl")
        batch["error_file_id"] = self._store_lines(errors, f"{batch['id']}_errors.jsonl")
        batch["request_counts"].update(completed=len(output), failed=len(errors))
        batch.update(status=status, **{f"{status}_at": int(time.time())})

    def _answer(self, batch_id: str, number: int, line: dict) -> dict:
        """One output (or error) record: the fake chat server's answer to the same body."""
        body = line["body"]
        key = request_key(body)
        attempt = self.line_attempts[key]
        self.line_attempts[key] += 1
        if unit_interval(self.config.seed, "line", key, attempt) < self.config.failed_line_share:
            status, kind = LINE_ERRORS[int(unit_interval(self.config.seed, "kind", key, attempt) * 3)]
            response = {
                "status_code": status,
                "body": {"error": {"message": f"injected {status}", "type": kind}},
            }
        else:
            response = {
                "status_code": 200,
                "body": completion_body(body, default_answer(body, self.config.answers)),
            }
        response["request_id"] = f"req-{batch_id}-{number}"
        return {"id": f"batch_req-{batch_id}-{number}", "custom_id": line["custom_id"], "response": response}

    def _store_lines(self, records: list[dict], filename: str) -> str | None:
        if not records:
            return None
        file_id = self._next_id("file", self.files)
        content = "".join(json.dumps(r) + "\n" for r in records).encode()
        self.files[file_id] = {"content": content, "purpose": "batch_output", "filename": filename}
        return file_id

    def _public(self, batch: dict) -> dict:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    async def chat(self, request):
        """A synchronous chat completion, answered like a batch line (a provider serves both):
        counted as ``chat`` in the log, so a test sees every synchronous call."""
        from aiohttp import web

        body = await request.json()
        self.calls["chat"] += 1
        return web.json_response(completion_body(body, default_answer(body, self.config.answers)))

    # ------------------------------------------------------------------ test hooks

    async def get_log(self, request):
        from aiohttp import web

        return web.json_response({"lines": self.log, "calls": dict(self.calls)})

    async def control(self, request):
        from aiohttp import web

        change = await request.json()
        if change.pop("release", False):
            self.config.hold = False
        for name, value in change.items():
            setattr(self.config, name, value)
        return web.json_response({"ok": True})

    def app(self):
        from aiohttp import web

        app = web.Application(client_max_size=512 * 1024 * 1024)
        for prefix in ("/v1", ""):
            app.router.add_post(f"{prefix}/files", self.upload)
            app.router.add_get(f"{prefix}/files/{{file_id}}", self.file_meta)
            app.router.add_get(f"{prefix}/files/{{file_id}}/content", self.file_content)
            app.router.add_post(f"{prefix}/batches", self.create)
            app.router.add_get(f"{prefix}/batches", self.list_batches)
            app.router.add_get(f"{prefix}/batches/{{batch_id}}", self.retrieve)
            app.router.add_post(f"{prefix}/batches/{{batch_id}}/cancel", self.cancel)
            app.router.add_post(f"{prefix}/chat/completions", self.chat)
        app.router.add_get("/_log", self.get_log)
        app.router.add_post("/_control", self.control)
        app.router.add_get("/health", lambda request: web.json_response({"ok": True}))
        return app


class FakeBatchProcess:
    """Handle on a fake batch provider running in a child process (``url`` is its /v1 base)."""

    def __init__(self, config: BatchProviderConfig | None = None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/v1"
        arguments = [
            sys.executable,
            "-m",
            "workhorse.testing.fake_batch",
            "--port",
            str(self.port),
            "--config",
            json.dumps(asdict(config or BatchProviderConfig())),
        ]
        self.process = subprocess.Popen(arguments)
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fake batch provider exited with {self.process.returncode}")
            try:
                urllib.request.urlopen(f"{self.base}/health", timeout=1).read()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("fake batch provider did not start")

    def log(self) -> dict:
        """``{"lines": [{batch_id, custom_id, key}, …], "calls": {endpoint: count}}``."""
        return json.loads(urllib.request.urlopen(f"{self.base}/_log", timeout=30).read())

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

    def __enter__(self) -> "FakeBatchProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    from aiohttp import web

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", default="{}")
    arguments = parser.parse_args()
    provider = FakeBatchProvider(BatchProviderConfig(**json.loads(arguments.config)))
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    web.run_app(
        provider.app(),
        host="127.0.0.1",
        port=arguments.port,
        print=None,
        access_log=None,
        handle_signals=False,
    )


if __name__ == "__main__":
    main()
