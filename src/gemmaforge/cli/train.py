"""The verbs that make a model: `train`, `config show`, `tiny` and `quickstart`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from gemmaforge.cli.common import (
    ConfigArg,
    OverridesArg,
    require,
    resolve,
    with_config_flags,
)
from gemmaforge.config_load import COMMAND_LINE, dump_config
from gemmaforge.errors import UserError, problem
from gemmaforge.models.families import TINY_FAMILIES
from gemmaforge.runs import RunFolder


@with_config_flags
def train(
    config: ConfigArg = None,
    overrides: OverridesArg = None,
    *,
    offline_proof: Annotated[
        bool,
        typer.Option(
            "--offline-proof",
            help="At the end, print every host the run contacted or was refused (none, for "
            "local data and model); the run record (record.json) holds the same log.",
        ),
    ] = False,
    dashboard: Annotated[
        bool, typer.Option(help="Serve the live dashboard of this run on 127.0.0.1 meanwhile.")
    ] = False,
    flags: dict[str, object],
) -> None:
    """Fine-tune a Gemma model with LoRA on a local dataset."""
    cfg = resolve(config, overrides, flags)
    require(cfg, {"model": "a model folder, .gguf file or hub id", "data": "a JSONL or CSV file"})

    from gemmaforge.train.trainer import train as run_training

    # The run folder holds the data's fingerprints, the config and the adapter: the owner's
    # only (folders 0700, files 0600), whatever library writes them.
    os.umask(0o077)
    # Under `gemmaforge launch` only the main process (RANK 0) serves the page.
    if dashboard and os.environ.get("RANK", "0") == "0":
        from gemmaforge.dashboard.app import start

        typer.echo(f"Dashboard: {start([Path(cfg.train.output_dir)]).url}", err=True)

    try:
        result = run_training(cfg)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(resume_hint(cfg)) from None
    if result.main:
        typer.echo(f"Run folder: {result.run_dir}")
    if result.main and offline_proof:
        from gemmaforge import netguard

        guard = netguard.active()
        if guard is None:
            typer.echo(f"network: the guard is off ({netguard.ENV_SWITCH}=off): nothing to prove")
        for line in netguard.summary(guard.entries()) if guard else []:
            typer.echo(line)


def resume_hint(cfg) -> str:
    """What an interrupted training run kept, and the command that continues it."""
    from gemmaforge.train.checkpoint import list_checkpoints

    folder = RunFolder(Path(cfg.train.output_dir))
    saved = list_checkpoints(folder.checkpoints)
    if saved:
        return (
            f"The last checkpoint is {saved[-1]}: run the same command with --resume to "
            "continue from it."
        )
    return (
        "No checkpoint was saved yet, so there is nothing to resume: pass --save-every N to "
        "save one every N steps (and continue an interrupted run with --resume)."
    )


@with_config_flags
def config_show(
    config: ConfigArg = None, overrides: OverridesArg = None, *, flags: dict[str, object]
) -> None:
    """Print the resolved config as YAML, every default included."""
    typer.echo(dump_config(resolve(config, overrides, flags)), nl=False)


def tiny(
    family: Annotated[
        str, typer.Argument(help=f"Model family: {', '.join(TINY_FAMILIES)}.", show_default=False)
    ],
    out: Annotated[Path, typer.Argument(help="Folder to write the model to.", show_default=False)],
    seed: Annotated[int, typer.Option(help="Seed for the random weights.")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a non-empty folder.")
    ] = False,
) -> None:
    """Write a tiny random model of a Gemma family (for tests and demos; no download)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UserError(
            problem(
                str(out),
                "already exists and is not empty",
                "pass --overwrite to replace it, or another folder",
            )
        )
    if family not in TINY_FAMILIES:
        raise UserError(
            problem(
                COMMAND_LINE,
                f"unknown tiny model family {family!r}",
                f"choose one of {', '.join(TINY_FAMILIES)}",
            )
        )
    from gemmaforge.models.tiny import make_tiny

    if overwrite and out.exists():
        import shutil

        shutil.rmtree(out) if out.is_dir() else out.unlink()
    typer.echo(f"Wrote a tiny {family} model to {make_tiny(family, out, seed)}")


def quickstart(
    output: Annotated[Path, typer.Option(help="Run folder.")] = Path("runs/quickstart"),
    steps: Annotated[
        int | None, typer.Option(min=1, help="Training steps (default: the quickstart's own).")
    ] = None,
) -> None:
    """Run a complete fine-tune on a built-in dataset, offline, end to end."""
    from gemmaforge.quickstart import run_quickstart

    run_quickstart(output=output, steps=steps)
