"""The run record verbs: `verify` (re-hash a run against its record), `sign` (model-signing,
EC keys, offline; the same signature the hub checks) and `record` (exports for auditors)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gemmaforge import signing
from gemmaforge.record.export import write_export
from gemmaforge.record.verify import load_record, verify_run

RunArg = Annotated[
    Path, typer.Argument(help="Run folder (the --output of train).", show_default=False)
]


def verify(
    run: RunArg,
    data: Annotated[
        list[Path] | None,
        typer.Option(
            "--data",
            help="An original data file to check against the record (repeatable).",
            show_default=False,
        ),
    ] = None,
    public_key: Annotated[
        Path | None,
        typer.Option(
            help="Check the run's signature (model.sig) with this public key.", show_default=False
        ),
    ] = None,
) -> None:
    """Re-hash a run folder (outputs, record, base model, data) and report each drift.

    Exit code: 0 when everything is as recorded, 1 on any drift, 2 if it cannot run.
    """

    result = verify_run(run, data, public_key)
    for line in result.checked:
        typer.echo(f"ok: {line}")
    for line in result.drift:
        typer.echo(f"DRIFT: {line}", err=True)
    if not result.ok:
        typer.echo(f"{run}: {len(result.drift)} differences from its record", err=True)
        raise typer.Exit(1)
    typer.echo(f"{run}: verified")


def sign(
    run: RunArg,
    key: Annotated[
        Path, typer.Option(help="EC private key (PEM), e.g. from `gemmaforge hub keygen`.")
    ],
) -> None:
    """Sign a finished run folder (every file, the record included) with model-signing."""

    load_record(run)  # only finished runs with a record are signed
    signature = signing.sign(run, key)
    typer.echo(f"Signed {run}: {signature}")


def record(
    run: RunArg,
    fmt: Annotated[
        str,
        typer.Option("--format", "-f", help="model-card, spdx (SPDX 3.0.1 JSON-LD) or cyclonedx."),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")],
) -> None:
    """Export a run's record for auditors: a model card, SPDX 3.0 or a CycloneDX ML-BOM."""

    typer.echo(f"Wrote {write_export(load_record(run), fmt, output)}")
