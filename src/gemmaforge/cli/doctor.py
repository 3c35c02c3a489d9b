"""`gemmaforge doctor`: is this machine ready to train (models/doctor.py does the checks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gemmaforge.models.doctor import as_dicts, blocking, run_checks

STYLES = {"ok": "green", "info": "cyan", "warn": "yellow", "fail": "bold red"}


def doctor(
    output: Annotated[
        Path, typer.Option(help="Where runs will be written (its disk space is checked).")
    ] = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
) -> None:
    """Check the device, bf16, memory, library versions, offline state and disk space.

    Exit code 1 when something blocks training (each problem is listed with its fix).
    """
    from rich.console import Console
    from rich.table import Table

    checks = run_checks(output)
    if as_json:
        typer.echo(json.dumps(as_dicts(checks), indent=2))
    else:
        table = Table(show_header=True, header_style="bold")
        for column in ("check", "status", "found", "fix"):
            table.add_column(column)
        for check in checks:
            style = STYLES[check.status]
            table.add_row(check.name, f"[{style}]{check.status}[/]", check.detail, check.fix or "")
        console = Console(highlight=False, width=160)
        console.print(table)
        if blocking(checks):
            console.print("[bold red]Something blocks training: see the fixes above.[/]")
        else:
            console.print("[green]Ready to train.[/]")
    raise typer.Exit(1 if blocking(checks) else 0)
