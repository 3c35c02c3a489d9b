"""The `gemmaforge` command line: one module per verb group, registered here.

Every verb runs guarded (cli/common.py): a `UserError` prints as red lines on stderr (no
traceback, exit 2) and Ctrl-C ends with exit 130. torch and transformers are imported inside
verbs only, so `--help` answers at once.
"""

from __future__ import annotations

import typer

from gemmaforge.cli import (
    dashboard,
    data,
    doctor,
    export,
    hub,
    launch,
    perf,
    record,
    serve_bench,
    train,
    use,
    wizard,
)
from gemmaforge.cli.common import new_app

app = new_app(help="Private, on-device LoRA fine-tuning of Gemma 4, Gemma 3n and Gemma 3.")

app.command()(train.train)
app.command()(train.tiny)
app.command()(train.quickstart)
app.command()(export.export)
app.command("eval")(use.evaluate)
app.command()(use.generate)
app.command()(use.chat)
app.command()(use.serve)
app.command()(launch.launch)
app.command()(perf.plan)
app.command()(dashboard.dashboard)
app.command()(wizard.wizard)
app.command()(doctor.doctor)
app.command()(record.verify)
app.command()(record.sign)
app.command("record")(record.record)

config_app = new_app(help="Inspect the configuration.")
config_app.command("show")(train.config_show)
app.add_typer(config_app, name="config")

data_app = new_app(help=data.HELP)
data_app.command("check")(data.check)
app.add_typer(data_app, name="data")
app.add_typer(hub.app, name="hub")

bench_app = new_app(
    help="Benchmark training: gemmaforge against a transformers Trainer + PEFT LoRA (or TRL), "
    "each in its own process: tokens/s, peak memory, ratios, MFU (the options below). "
    "`bench serve`: serving, continuous batching against one request at a time.",
    no_args_is_help=False,
)
bench_app.default_command(perf.bench)
bench_app.command("serve")(serve_bench.bench_serve)
app.add_typer(bench_app, name="bench")


def _version(value: bool) -> None:
    if value:
        from gemmaforge import __version__

        typer.echo(f"gemmaforge {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_version, is_eager=True
    ),
) -> None:
    """Private, on-device LoRA fine-tuning of Gemma 4, Gemma 3n and Gemma 3."""
