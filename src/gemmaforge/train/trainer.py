"""One training run, end to end: prepare -> loop -> finish.

The run folder (`train.output_dir`, file names in runs.py's RunFolder) is self-describing:
`adapter/` (PEFT weights + config + tokenizer/processor files), `config.yaml`,
`metrics.jsonl`, `data_report.json`, `checkpoints/`, a model card `README.md`, `run.json` and
`manifest.json` with the sha256 of every file.
"""

from __future__ import annotations

import sys

from gemmaforge.config import Config
from gemmaforge.models.load import LoadedModel
from gemmaforge.train.finish import TrainResult


def train(cfg: Config, loaded: LoadedModel | None = None, console=None) -> TrainResult:
    """Train LoRA per `cfg`. Given `loaded`, its model is adapted in place (no second load)."""
    from rich.console import Console

    from gemmaforge.redact import redacting
    from gemmaforge.train.finish import finish
    from gemmaforge.train.loop import run_loop
    from gemmaforge.train.observe import attach
    from gemmaforge.train.prepare import prepare

    console = redacting(console or Console(stderr=True))
    run = prepare(cfg, loaded, console)
    with progress_bar(console) as progress, attach(run, console):
        run_loop(run.training, progress)
    return finish(run, console)


def progress_bar(console):
    """A live bar on a terminal; disabled elsewhere (the loop prints plain lines instead)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not sys.stderr.isatty(),
    )
