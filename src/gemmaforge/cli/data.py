"""The `data` verbs: `gemmaforge data check CONFIG|PATH`, the dataset checker.

`cli/__init__.py` registers them on its `data` sub-app (so they run guarded like every verb); the
work is in `data/check/scan.py`. The tokenizer and transformers are imported inside the verb.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gemmaforge.config_load import load_config

HELP = "Check a dataset before training on it."

CONFIG_SUFFIXES = (".yaml", ".yml")


def check(
    target: Annotated[
        str,
        typer.Argument(
            help="A YAML config (checks its data with its model), or a data file or folder.",
            show_default=False,
        ),
    ],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="section.field=value settings, e.g. data.max_seq_length=2048.",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Model whose tokenizer/processor counts tokens (folder or .gguf; weights are "
            "not loaded). Default: the config's model, else the bundled Gemma 3 270M tokenizer.",
            show_default=False,
        ),
    ] = None,
    val_data: Annotated[
        str | None,
        typer.Option(
            help="Validation data file or folder (sets data.validation).", show_default=False
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout instead of the report.")
    ] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit with code 1 on warnings too.")
    ] = False,
    show: Annotated[
        int, typer.Option(min=0, help="Findings listed per kind in the report (--json: all).")
    ] = 10,
    pii: Annotated[
        bool,
        typer.Option(
            "--pii",
            help="Also look for personal data (e-mail, phone, card, IBAN, national ids, IPs): "
            "counts per file and column with masked file:row examples. A heuristic "
            "(docs/privacy.md); with --strict, findings make the exit code 1.",
        ),
    ] = False,
) -> None:
    """Find what is wrong with a dataset (file:row and the fix) before training on it.

    Exit code: 1 when errors are found (--strict: or warnings), else 0; 2 if it cannot run.
    """
    from rich.console import Console

    from gemmaforge.data.check.report import print_report
    from gemmaforge.data.check.scan import check_dataset, check_tokenizer, open_data

    is_config = Path(target).suffix.lower() in CONFIG_SUFFIXES
    flags = {
        "data.train": None if is_config else target,
        "data.validation": val_data,
        "model.name_or_path": model,
    }
    cfg = load_config(target if is_config else None, overrides or [], flags)
    # Missing files, empty globs and unknown splits are refused before the tokenizer loads
    # (seconds to minutes), with one error and no empty report.
    sources = open_data(cfg)
    status = Console(stderr=True)
    with status.status("loading the tokenizer") as spinner:
        tok, default = check_tokenizer(cfg)
        spinner.update("checking rows")
        report = check_dataset(
            cfg, tok, default, lambda rows: spinner.update(f"checked {rows} rows"), sources
        )
    personal = None
    if pii:
        from gemmaforge.data.check.pii import scan_pii

        personal = scan_pii(cfg)
    if as_json:
        out = report.to_dict() | ({"pii": personal.to_dict()} if personal else {})
        typer.echo(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        print_report(report, Console(highlight=False), show)
        for line in personal.lines() if personal else []:
            typer.echo(line)
    code = report.exit_code(strict)
    raise typer.Exit(1 if strict and personal and personal.total else code)
