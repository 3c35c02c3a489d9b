"""The performance verbs: `plan` (predict memory and time before training) and `bench`
(gemmaforge against a plain transformers Trainer). Registered in cli/__init__.py; torch is imported
inside the verbs only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gemmaforge.bench.compare import CONFIGS, DEFAULT_CONFIGS, run_bench
from gemmaforge.cli.common import ConfigArg, OverridesArg, resolve, with_config_flags
from gemmaforge.files import write_json_atomic
from gemmaforge.perf.plan import make_plan

GiB = 2**30


@with_config_flags
def plan(
    config: ConfigArg = None,
    overrides: OverridesArg = None,
    nproc: Annotated[
        int, typer.Option(min=1, help="Processes training it together (gemmaforge launch).")
    ] = 1,
    *,
    flags: dict[str, object],
) -> None:
    """Predict a training config's peak memory and step time here, and what would fit if it
    does not (docs/performance.md). Exit 1 when it does not fit."""
    print_plan(resolve(config, overrides, flags), nproc)


def print_plan(cfg, processes: int = 1) -> None:
    """Print the prediction for `cfg` (a Config); exit 1 when it does not fit."""
    from gemmaforge.data.examples.dataset import media_per_row

    media = media_per_row(cfg.data) if cfg.data.train else None
    result = make_plan(cfg, media, processes, data_lengths(cfg))
    out = Console(highlight=False)
    shape, p = result.shape, result.prediction
    out.print(
        f"model: {result.model} ({shape.family.name}, {shape.total_params / 1e6:.0f}M parameters, "
        f"vocabulary {shape.vocab:,})"
    )
    out.print(
        f"settings: {result.settings.describe()}, loss chunk {result.settings.loss_chunk_size}"
    )
    table = Table("memory", "GiB", box=None)
    for name, size in p.parts.items():
        table.add_row(name, f"{size / GiB:.2f}")
    table.add_row("[bold]predicted peak", f"[bold]{p.peak_bytes / GiB:.2f}")
    table.add_row(f"available on {result.device}", f"{result.available_bytes / GiB:.2f}")
    out.print(table)
    out.print(
        f"step time: ~{result.seconds_per_step:.2f} s per optimizer step "
        f"({p.step_flops / 1e12:.2f} TFLOP at {result.matmul_flops / 1e9:.0f} GFLOP/s measured)"
    )
    for note in result.notes:
        out.print(f"note: {note}")
    if result.fits:
        out.print("[green]fits")
        return
    out.print(
        f"[red]does not fit[/red]: {p.peak_bytes / GiB:.2f} GiB > "
        f"{result.available_bytes / GiB:.2f} GiB. These would:"
    )
    for change, _, prediction in result.suggestions:
        out.print(f"  {change}  ->  {prediction.peak_bytes / GiB:.2f} GiB")
    raise typer.Exit(1)


def data_lengths(cfg):
    """The local training data's lengths as training renders them (the model's tokenizer, no
    weights), so the plan sizes activations by the widest batch the data makes; None without
    data, for remote or streamed data (a prediction must not download), or when the data has
    problems (`data check` and `train` report those)."""
    from gemmaforge.data.examples.dataset import load_datasets
    from gemmaforge.data.examples.multimodal import media_encoder
    from gemmaforge.data.examples.preference import load_preference_datasets
    from gemmaforge.data.examples.skiplog import SkipLog
    from gemmaforge.data.read.sources import open_sources
    from gemmaforge.errors import UserError
    from gemmaforge.models.load import load_tokenizer
    from gemmaforge.perf.plan import DataLengths

    if not cfg.data.train or not cfg.model.name_or_path:
        return None
    try:
        sources = open_sources(cfg.data)
        if sources.remote or sources.streaming:
            return None
        tok = load_tokenizer(cfg.model)
        media = media_encoder(tok, cfg.data)
        args = (cfg.data, sources, tok.family, tok.tokenizer, cfg.train.seed)
        if cfg.train.objective == "sft":
            train, _, _ = load_datasets(*args, media, SkipLog())
        else:
            train, _, _ = load_preference_datasets(*args, cfg.train.objective, media, SkipLog())
    except UserError:
        return None
    return DataLengths.of(train)


def bench(
    ctx: typer.Context,
    config: Annotated[
        list[str] | None,
        typer.Option(
            "--config",
            help=f"Benchmark config(s): {', '.join(CONFIGS)}. Default: all but tiny-text.",
        ),
    ] = None,
    steps: Annotated[int, typer.Option(min=2, help="Optimizer steps per side.")] = 6,
    warmup: Annotated[int, typer.Option(min=0, help="First steps left out of the timing.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    output: Annotated[Path | None, typer.Option(help="Also write the JSON results here.")] = None,
    gradient_checkpointing: Annotated[
        bool | None,
        typer.Option(
            help="Checkpointing on (or off) on both sides. Default: each side's own default "
            "(gemmaforge: auto; the Trainer: off)."
        ),
    ] = None,
    loss_chunk_size: Annotated[
        int | None, typer.Option(help="gemmaforge's loss chunk size.")
    ] = None,
    quantize: Annotated[
        str,
        typer.Option(help="model.quantize on both sides: none, or 4bit (QLoRA; CUDA only)."),
    ] = "none",
) -> None:
    """Benchmark gemmaforge's trainer against a transformers Trainer + PEFT LoRA, each in its
    own process: tokens/s, peak memory, ratios, MFU (docs/performance.md). `bench serve`
    benchmarks serving instead."""
    if ctx.invoked_subcommand is not None:
        return
    from dataclasses import asdict

    err = Console(stderr=True, highlight=False)
    train: dict = {}
    if gradient_checkpointing is not None:
        train["gradient_checkpointing"] = gradient_checkpointing
    if loss_chunk_size:
        train["loss_chunk_size"] = loss_chunk_size
    if quantize not in ("none", "4bit"):
        raise typer.BadParameter("none or 4bit", param_hint="--quantize")
    results = run_bench(
        list(config or DEFAULT_CONFIGS),
        steps,
        warmup,
        log=lambda text: None,
        train=train,
        quantize=quantize,
    )
    payload = [
        {
            **asdict(r),
            "speedup": r.speedup,
            "memory_ratio": r.memory_ratio,
            "process_memory_ratio": r.process_memory_ratio,
        }
        for r in results
    ]
    if output:
        write_json_atomic(output, payload)
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
        return
    table = Table(
        "config",
        "side",
        "tokens/s",
        "padding",
        "peak MiB",
        "predicted MiB",
        "process MiB",
        "MFU",
        "loss first→last",
        title=f"gemmaforge vs a Trainer / TRL SFTTrainer + PEFT "
        f"({results[0].device}, {results[0].dtype})",
    )
    for r in results:
        for side in r.sides.values():
            table.add_row(
                f"{r.config} ({r.batch_size}x{r.seq_len})",
                side.side,
                f"{side.tokens_per_second:.0f}",
                f"{side.padding:.0%}",
                f"{side.peak_bytes / 2**20:.0f}",
                f"{side.predicted_bytes / 2**20:.0f}",
                f"{side.process_peak_bytes / 2**20:.0f}",
                f"{100 * side.mfu:.1f}%",
                f"{side.losses[0]:.3f}→{side.losses[-1]:.3f}",
            )
        table.add_row(
            "",
            "[bold]ratio",
            f"[bold]{r.speedup:.2f}x",
            "",
            f"[bold]{r.memory_ratio:.2f}x",
            "",
            f"[bold]{r.process_memory_ratio:.2f}x",
            "",
            "",
            end_section=True,
        )
    Console(highlight=False).print(table)
    err.print(
        f"matmul peak ({results[0].dtype}, 2048^2): {results[0].matmul_flops / 1e9:.0f} GFLOP/s"
    )
