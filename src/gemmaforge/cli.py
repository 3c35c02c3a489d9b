"""The `gemmaforge` command line: Typer verbs, each a few lines that call the library.

Heavy libraries (torch, transformers, peft) are imported inside verbs, never at module level,
so `gemmaforge --help` and every `VERB --help` answer instantly. Every verb reports a
`UserError` as red lines on stderr (no traceback, exit 2) and Ctrl-C as exit 130.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, get_args

import typer
from rich.console import Console
from rich.markup import escape

from gemmaforge import cli_data, cli_perf, cli_use
from gemmaforge.config import Config
from gemmaforge.config_load import (
    COMMAND_LINE,
    config_fields,
    dump_config,
    field_help,
    load_config,
)
from gemmaforge.errors import UserError, problem
from gemmaforge.models.tiny_names import TINY_FAMILIES

# Shortcut flags for the most used settings: parameter name -> dotted config key. The flag is
# the name with dashes (`max_steps` -> `--max-steps`); its type and help come from the field.
CONFIG_FLAGS: dict[str, str] = {
    "model": "model.name_or_path",
    "data": "data.train",
    "val_data": "data.validation",
    "output": "train.output_dir",
    "max_steps": "train.max_steps",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "grad_accum": "train.grad_accum",
    "seq_len": "data.max_seq_length",
    "lr": "train.lr",
    "lora_r": "lora.r",
    "save_every": "train.save_every",
    "eval_every": "train.eval_every",
    "seed": "train.seed",
    "resume": "train.resume",
    "allow_download": "model.allow_download",
}

_FLAGS_PANEL = "Shortcuts (each sets one config key; same as section.field=value)"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _value_type(key: str) -> type:
    """The value type of a config key, without its `| None` (`int | None` -> int)."""
    annotation = config_fields()[key].annotation
    return next(t for t in get_args(annotation) or (annotation,) if t is not type(None))


def _guarded(verb: Callable[..., Any]) -> Callable[..., Any]:
    """Run a verb so that user errors and Ctrl-C end it cleanly instead of with a traceback."""

    @functools.wraps(verb)
    def run(*args: Any, **kwargs: Any) -> Any:
        # Built per call: stderr may have been redirected since import (tests, pipes).
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        try:
            return verb(*args, **kwargs)
        except UserError as exc:
            for line in exc.problems:
                err.print(f"error: {line}", style="red", markup=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("Interrupted.", style="red", markup=False)
            raise typer.Exit(130) from None

    return run


class _App(typer.Typer):
    """A Typer app whose every verb runs `_guarded`.

    Guarding each verb rather than the app's `__call__` means the console script
    (`gemmaforge.cli:app`), `python -m gemmaforge` and Typer's CliRunner behave the same.
    """

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
        register = super().command(*args, **kwargs)
        return lambda verb: register(_guarded(verb))


def _new_app(**kwargs: Any) -> _App:
    return _App(
        no_args_is_help=True,
        context_settings={"help_option_names": ["-h", "--help"]},
        # A crash report must not print local variables: they may hold the user's private data.
        pretty_exceptions_show_locals=False,
        **kwargs,
    )


app = _new_app(help="Private, on-device LoRA fine-tuning of Gemma 4, Gemma 3n and Gemma 3.")
config_app = _new_app(help="Inspect the configuration.")
app.add_typer(config_app, name="config")


def _with_config_flags(verb: Callable[..., Any]) -> Callable[..., Any]:
    """Give `verb` one option per CONFIG_FLAGS entry; it receives them as `flags`.

    `flags` maps dotted keys to the values given (None when a flag was not passed), ready
    for `load_config`. Typer reads the options from the rewritten signature.
    """
    signature = inspect.signature(verb, eval_str=True)
    options = []
    for name, key in CONFIG_FLAGS.items():
        kind = _value_type(key)
        decls = f"{_flag(name)}/--no-{_flag(name)[2:]}" if kind is bool else _flag(name)
        help_text = escape(f"{field_help(key)} (sets {key})")
        option = typer.Option(None, decls, help=help_text, rich_help_panel=_FLAGS_PANEL)
        options.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind | None
            )
        )

    @functools.wraps(verb)
    def run(**kwargs: Any) -> Any:
        flags = {key: kwargs.pop(name) for name, key in CONFIG_FLAGS.items()}
        return verb(**kwargs, flags=flags)

    params = [p for p in signature.parameters.values() if p.name != "flags"]
    run.__signature__ = signature.replace(parameters=[*params, *options])  # type: ignore[attr-defined]
    return run


ConfigArg = Annotated[
    str | None,
    typer.Argument(help="YAML config file (optional).", show_default=False),
]
OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="section.field=value settings, e.g. train.lr=1e-4 model.revision=null.",
        show_default=False,
    ),
]


def _resolve(config: str | None, overrides: list[str] | None, flags: dict[str, object]) -> Config:
    """Load the config; a first positional that is `a.b=c` (not a file) is an override."""
    overrides = list(overrides or [])
    if config is not None and "=" in config and not Path(config).exists():
        config, overrides = None, [config, *overrides]
    return load_config(config, overrides, flags)


@config_app.command("show")
@_with_config_flags
def config_show(
    config: ConfigArg = None, overrides: OverridesArg = None, *, flags: dict[str, object]
) -> None:
    """Print the resolved config as YAML, every default included."""
    typer.echo(dump_config(_resolve(config, overrides, flags)), nl=False)


@app.command()
@_with_config_flags
def train(
    config: ConfigArg = None, overrides: OverridesArg = None, *, flags: dict[str, object]
) -> None:
    """Fine-tune a Gemma model with LoRA on a local dataset."""
    cfg = _resolve(config, overrides, flags)
    _require(cfg, {"model": "a model folder, .gguf file or hub id", "data": "a JSONL or CSV file"})
    from gemmaforge.train.run import train as run_training

    typer.echo(f"Run folder: {run_training(cfg).run_dir}")


def _require(cfg: Config, needed: dict[str, str]) -> None:
    """Raise one UserError for every unset flag-backed key in `needed` (flag name -> what)."""
    missing = []
    for name, what in needed.items():
        section, field = CONFIG_FLAGS[name].split(".")
        if getattr(getattr(cfg, section), field) is None:
            missing.append(
                problem(
                    None,
                    f"{CONFIG_FLAGS[name]} is not set",
                    f"pass {_flag(name)} ({what}) or set {CONFIG_FLAGS[name]} in the config",
                )
            )
    if missing:
        raise UserError(missing)


@app.command()
def tiny(
    family: Annotated[
        str, typer.Argument(help=f"Model family: {', '.join(TINY_FAMILIES)}.", show_default=False)
    ],
    out: Annotated[Path, typer.Argument(help="Folder to write the model to.", show_default=False)],
    seed: Annotated[int, typer.Option(help="Seed for the random weights.")] = 0,
) -> None:
    """Write a tiny random model of a Gemma family (for tests and demos; no download)."""
    if family not in TINY_FAMILIES:
        raise UserError(
            problem(
                COMMAND_LINE,
                f"unknown tiny model family {family!r}",
                f"choose one of {', '.join(TINY_FAMILIES)}",
            )
        )
    from gemmaforge.models.tiny import make_tiny

    typer.echo(f"Wrote a tiny {family} model to {make_tiny(family, out, seed)}")


@app.command()
def quickstart(
    output: Annotated[Path, typer.Option(help="Run folder.")] = Path("runs/quickstart"),
    steps: Annotated[
        int | None, typer.Option(min=1, help="Training steps (default: the quickstart's own).")
    ] = None,
) -> None:
    """Run a complete fine-tune on a built-in dataset, offline, end to end."""
    from gemmaforge.quickstart import run_quickstart

    run_quickstart(output=output, steps=steps)


@app.command()
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
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
) -> None:
    """Export a run as a merged model, PEFT adapter, GGUF, Ollama model or MLX adapter
    (docs/export.md)."""
    from gemmaforge.export import export as run_export

    out = run_export(run, fmt, output, overwrite=overwrite, gguf_type=gguf_type, base=base)
    typer.echo(f"Wrote {fmt} export to {out}")


# Verbs that use a trained result (evaluate, generate, chat, serve) live in cli_use.py.
app.command("eval")(cli_use.evaluate)
app.command()(cli_use.generate)
app.command()(cli_use.chat)
app.command()(cli_use.serve)

data_app = _new_app(help=cli_data.HELP)
app.add_typer(data_app, name="data")
data_app.command("check")(cli_data.check)


@app.command()
@_with_config_flags
def plan(
    config: ConfigArg = None, overrides: OverridesArg = None, *, flags: dict[str, object]
) -> None:
    """Predict a training config's peak memory and step time here, and what would fit if it
    does not (docs/performance.md). Exit 1 when it does not fit."""
    cli_perf.plan(_resolve(config, overrides, flags))


# The benchmark verb lives in cli_perf.py with plan's printing.
app.command()(cli_perf.bench)
