"""One training run, end to end: prepare -> loop -> finish.

The run folder (`train.output_dir`, file names in runs.py's RunFolder) is self-describing:
`adapter/` (PEFT weights + config + tokenizer/processor files), `config.yaml`,
`metrics.jsonl`, `data_report.json`, `checkpoints/`, a model card `README.md`, `run.json` and
`manifest.json` with the sha256 of every file.
"""

from __future__ import annotations

from gemmaforge.config import Config
from gemmaforge.models.load import LoadedModel
from gemmaforge.progress import Tracker, log_console
from gemmaforge.redact import redacting
from gemmaforge.train.finish import TrainResult, finish
from gemmaforge.train.loop import run_loop
from gemmaforge.train.observe import attach
from gemmaforge.train.prepare import prepare


def train(cfg: Config, loaded: LoadedModel | None = None, console=None) -> TrainResult:
    """Train LoRA per `cfg`. Given `loaded`, its model is adapted in place (no second load)."""

    console = redacting(console or log_console())
    run = prepare(cfg, loaded, console)
    t = run.training
    # A live bar on a terminal; in a log, a line every 30 s or 5% of the steps, with an ETA.
    with (
        Tracker("step", t.steps, console=console, completed=t.state.step) as progress,
        attach(run, console),
    ):
        run_loop(t, progress)
    return finish(run, console)
