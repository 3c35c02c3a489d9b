"""`gemmaforge dashboard RUN…`: the live training dashboard for run folders (dashboard/)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gemmaforge.dashboard.app import serve
from gemmaforge.errors import UserError, problem

PortOption = Annotated[
    int,
    typer.Option(help="Port on 127.0.0.1 (if taken, a free one is used; 0: any free port)."),
]


def dashboard(
    runs: Annotated[
        list[Path],
        typer.Argument(
            help="Run folders (train.output_dir); several are shown side by side.",
            show_default=False,
        ),
    ],
    port: PortOption = 8760,
) -> None:
    """Watch runs learn: live loss, learning rate, memory, samples and config, in a browser."""
    missing = [run for run in runs if not run.is_dir()]
    if missing:
        raise UserError(
            [
                problem(str(run), "no such run folder", "pass the --output folder of a run")
                for run in missing
            ]
        )

    serve(runs, port, on_ready=lambda url: typer.echo(f"Dashboard: {url}  (Ctrl-C to stop)"))
