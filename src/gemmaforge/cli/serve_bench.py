"""`gemmaforge bench serve`: serving throughput of continuous batching against one request
at a time, on real loopback servers (bench/serving.py; docs/performance.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from gemmaforge.files import write_json_atomic


def bench_serve(
    model: Annotated[
        Literal["gemma3-270m", "tiny"],
        typer.Option(help="gemma3-270m: the real 270M GGUF from PyPI; tiny: a quick run."),
    ] = "gemma3-270m",
    clients: Annotated[
        list[int] | None,
        typer.Option("--clients", min=1, help="Concurrent clients (repeatable). Default 1, 4, 16."),
    ] = None,
    adapters: Annotated[int, typer.Option(min=0, help="Random LoRA adapters served.")] = 3,
    requests: Annotated[int, typer.Option(min=1, help="Requests per client per repeat.")] = 2,
    max_tokens: Annotated[int, typer.Option(min=2, help="max_tokens of each request.")] = 48,
    repeats: Annotated[int, typer.Option(min=1, help="Interleaved repeats of both sides.")] = 2,
    max_batch: Annotated[int, typer.Option(min=1, help="The batched server's max batch.")] = 16,
    device: Annotated[
        Literal["auto", "cpu", "cuda", "mps"], typer.Option(help="Device to run on.")
    ] = "auto",
    output: Annotated[Path | None, typer.Option(help="Also write the figures here (JSON).")] = None,
) -> None:
    """Benchmark `serve`: N concurrent clients over a mix of adapters, continuous batching vs
    one request at a time, in one run: tokens/s, time to first token, time per token."""
    from gemmaforge.bench.serving import run_serve_bench

    err = Console(stderr=True, highlight=False)
    counts = tuple(clients or (1, 4, 16))
    result = run_serve_bench(
        model, counts, adapters, requests, max_tokens, repeats, max_batch, device, log=err.print
    )
    table = Table(
        "clients",
        "side",
        "tokens/s",
        "TTFT p50 / p95 (s)",
        "per token p50 / p95 (ms)",
        "peak batch",
        title=(
            f"serve: batched vs one at a time ({result.model}, {result.device}, {result.dtype}, "
            f"base + {result.adapters} adapters, max_tokens {result.max_tokens})"
        ),
    )
    for n in counts:
        for side in ("batched", "one-at-a-time"):
            s = result.sides[(side, n)]
            table.add_row(
                str(n),
                side,
                f"{s.tokens_per_second:.1f}",
                f"{s.quantile('first_token_s', 0.5):.2f} / {s.quantile('first_token_s', 0.95):.2f}",
                f"{1000 * s.quantile('per_token_s', 0.5):.0f} / "
                f"{1000 * s.quantile('per_token_s', 0.95):.0f}",
                str(s.peak_batch),
            )
        table.add_row(
            "", "[bold]ratio", f"[bold]{result.ratio(n):.2f}x", "", "", "", end_section=True
        )
    Console(highlight=False).print(table)
    if output is not None:
        write_json_atomic(output, result.summary())
    if result.llama_cpp_per_token_s is not None:
        ours = result.sides[("one-at-a-time", counts[0])].quantile("per_token_s", 0.5)
        err.print(
            f"single stream per token: gemmaforge {1000 * ours:.0f} ms, "
            f"{result.llama_cpp_note}: {1000 * result.llama_cpp_per_token_s:.0f} ms"
        )
    else:
        err.print(result.llama_cpp_note)
