"""What every verb shares: clean failure (UserError -> red lines, exit 2; Ctrl-C -> exit 130),
the shortcut flags that each set one config key, and resolving a config from YAML + overrides.

Heavy libraries (torch, transformers, peft) are imported inside verbs, never at module level,
so `gemmaforge --help` and every `VERB --help` answer instantly.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, get_args

import typer
from rich.console import Console
from rich.markup import escape

from gemmaforge import netguard
from gemmaforge.config import Config
from gemmaforge.config_load import config_fields, field_help, load_config
from gemmaforge.errors import UserError, problem
from gemmaforge.redact import redact_text

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
    "reschedule": "train.reschedule",
    "allow_download": "model.allow_download",
}

_FLAGS_PANEL = "Shortcuts (each sets one config key; same as section.field=value)"


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _value_type(key: str) -> type:
    """The value type of a config key, without its `| None` (`int | None` -> int)."""
    annotation = config_fields()[key].annotation
    return next(t for t in get_args(annotation) or (annotation,) if t is not type(None))


UNGUARDED_MODULES = ("gemmaforge.cli.hub",)
"""Verb modules run without the network guard: the hub's verbs talk to a hub by design."""


def _guarded(verb: Callable[..., Any]) -> Callable[..., Any]:
    """Run a verb so that user errors and Ctrl-C end it cleanly instead of with a traceback."""

    @functools.wraps(verb)
    def run(*args: Any, **kwargs: Any) -> Any:
        # Built per call: stderr may have been redirected since import (tests, pipes).
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        try:
            # Every verb but the hub's (networked by nature) runs with egress refused except
            # to hosts its settings name (netguard.py).
            unguarded = verb.__module__.startswith(UNGUARDED_MODULES)
            with contextlib.nullcontext() if unguarded else netguard.guard():
                try:
                    return verb(*args, **kwargs)
                except (UserError, KeyboardInterrupt, typer.Exit):
                    raise
                except Exception as exc:
                    # A library that wrapped the refusal in its own error: say what happened.
                    refused = netguard.refusals()
                    if not refused:
                        raise
                    raise netguard.NetworkRefused(refused[0]["host"], refused[0]["port"]) from exc
        except UserError as exc:
            for line in exc.problems:
                err.print(f"error: {redact_text(line)}", style="red", markup=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt as exc:
            # A verb may say what is kept and how to continue (train: --resume).
            hint = f" {exc.args[0]}" if exc.args and isinstance(exc.args[0], str) else ""
            err.print(f"Interrupted.{hint}", style="red", markup=False)
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

    def default_command(self, verb: Callable[..., Any]) -> None:
        """Run `verb` (guarded) when the group is called without a sub-command: `gemmaforge
        bench --config X` runs it, `gemmaforge bench serve` runs `serve`. `verb` takes a
        `typer.Context` first and returns at once when a sub-command was invoked."""
        self.callback(invoke_without_command=True)(_guarded(verb))


def _help_width() -> None:
    """Help is laid out for 100 columns when output is not a terminal (a pipe, a file, a
    test): rich's default of 80 cut option names and env vars mid-word (`--allow-media-pa…`).
    TERMINAL_WIDTH, when set, still wins; a terminal uses its own width."""
    import os
    import sys

    import typer.rich_utils

    if not os.environ.get("TERMINAL_WIDTH") and not sys.stdout.isatty():
        typer.rich_utils.MAX_WIDTH = 100


def new_app(**kwargs: Any) -> _App:
    _help_width()
    kwargs.setdefault("no_args_is_help", True)
    return _App(
        context_settings={"help_option_names": ["-h", "--help"]},
        # A crash report must not print local variables: they may hold the user's private data.
        pretty_exceptions_show_locals=False,
        **kwargs,
    )


def with_config_flags(verb: Callable[..., Any]) -> Callable[..., Any]:
    """Give `verb` one option per CONFIG_FLAGS entry; it receives them as `flags`.

    `flags` maps dotted keys to the values given (None when a flag was not passed), ready
    for `load_config`. Typer reads the options from the rewritten signature.
    """
    signature = inspect.signature(verb, eval_str=True)
    options = []
    for name, key in CONFIG_FLAGS.items():
        kind = _value_type(key)
        decls = f"{flag(name)}/--no-{flag(name)[2:]}" if kind is bool else flag(name)
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


def resolve(config: str | None, overrides: list[str] | None, flags: dict[str, object]) -> Config:
    """Load the config; a first positional that is `a.b=c` (not a file) is an override."""
    overrides = list(overrides or [])
    if config is not None and "=" in config and not Path(config).exists():
        config, overrides = None, [config, *overrides]
    return load_config(config, overrides, flags)


def require(cfg: Config, needed: dict[str, str]) -> None:
    """Raise one UserError for every unset flag-backed key in `needed` (flag name -> what)."""
    missing = []
    for name, what in needed.items():
        section, field = CONFIG_FLAGS[name].split(".")
        if getattr(getattr(cfg, section), field) is None:
            missing.append(
                problem(
                    None,
                    f"{CONFIG_FLAGS[name]} is not set",
                    f"pass {flag(name)} ({what}) or set {CONFIG_FLAGS[name]} in the config",
                )
            )
    if missing:
        raise UserError(missing)
