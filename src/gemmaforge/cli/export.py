"""The `export` verb: a finished run as merged weights, PEFT, GGUF, Ollama or MLX."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gemmaforge.export import export as run_export


def export(
    run: Annotated[Path, typer.Argument(help="Finished run folder.", show_default=False)],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="merged, peft, gguf, gguf-lora, ollama or mlx.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write.")],
    gguf_type: Annotated[str, typer.Option(help="GGUF weight type: f16, bf16 or q8_0.")] = "f16",
    base: Annotated[
        str | None, typer.Option(help="Base model path, if it moved since training.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a non-empty output folder.")
    ] = False,
) -> None:
    """Export a run as a merged model, PEFT adapter, GGUF, Ollama model or MLX adapter
    (docs/export.md)."""

    out = run_export(run, fmt, output, overwrite=overwrite, gguf_type=gguf_type, base=base)
    typer.echo(f"Wrote {fmt} export to {out}")
