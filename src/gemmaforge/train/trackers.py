"""Experiment trackers (`train.report_to`), all off by default and all local: nothing leaves
the machine. TensorBoard event files go to OUT/tensorboard, a local MLflow store (SQLite) to
OUT/mlflow (`mlflow ui --backend-store-uri sqlite:///OUT/mlflow/mlflow.db`), W&B's offline
files to OUT/wandb (`wandb sync` uploads them, if ever wanted).

Each tracker gets the same numeric fields of every logged metrics record, keyed by name,
at its step. Packages are optional (`pip install gemmaforge[trackers]`), imported only when
asked for; a missing one is a UserError naming the install command.
"""

from __future__ import annotations

import os
from typing import Any

from gemmaforge.config import Config
from gemmaforge.errors import UserError, problem
from gemmaforge.runs import RunFolder

PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
"""Tracker -> the module it needs."""


def scalars(record: dict) -> dict[str, float]:
    """The numeric fields of a metrics record, the step left out."""
    return {
        key: float(value)
        for key, value in record.items()
        if key != "step" and isinstance(value, int | float) and not isinstance(value, bool)
    }


def flat_config(cfg: Config) -> dict[str, str]:
    """`section.field -> value` strings, the run's parameters for MLflow and W&B."""
    return {
        f"{section}.{key}": str(value)
        for section, fields in cfg.model_dump().items()
        for key, value in fields.items()
    }


class TensorBoard:
    def __init__(self, cfg: Config, folder: RunFolder):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder.tensorboard), flush_secs=10)
        self.writer.add_text(
            "config", "\n".join(f"    {k}: {v}" for k, v in flat_config(cfg).items())
        )

    def log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class MLflow:
    def __init__(self, cfg: Config, folder: RunFolder):
        from mlflow import MlflowClient

        # A SQLite store in the run folder: MLflow 3 refuses its old ./mlruns file store unless
        # MLFLOW_ALLOW_FILE_STORE is set, and SQLite is the local store it now recommends.
        store = folder.mlflow.resolve()
        store.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
        experiment = self.client.get_experiment_by_name("gemmaforge")
        experiment_id = (
            experiment.experiment_id
            if experiment
            else self.client.create_experiment(
                "gemmaforge", artifact_location=(store / "artifacts").as_uri()
            )
        )
        run = self.client.create_run(experiment_id, run_name=folder.root.resolve().name)
        self.run_id = run.info.run_id
        params = flat_config(cfg)
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, v[:500]) for k, v in params.items()])

    def log(self, step: int, values: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class WandB:
    def __init__(self, cfg: Config, folder: RunFolder):
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(
            mode="offline",
            dir=str(folder.root),
            project="gemmaforge",
            name=folder.root.resolve().name,
            config=flat_config(cfg),
        )

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


KINDS = {"tensorboard": TensorBoard, "mlflow": MLflow, "wandb": WandB}


def check_installed(names: list[str]) -> None:
    """One UserError for every asked-for tracker whose package is missing."""
    import importlib.util

    missing = [name for name in names if importlib.util.find_spec(PACKAGES[name]) is None]
    if missing:
        raise UserError(
            [
                problem(
                    "train.report_to",
                    f"{name} is asked for but its package ({PACKAGES[name]}) is not installed",
                    f"pip install 'gemmaforge[trackers]' (or {PACKAGES[name]}), or drop {name}",
                )
                for name in missing
            ]
        )


class Trackers:
    """The run's open trackers; `observe` is a loop observer (train/observe.py)."""

    def __init__(self, open_ones: list[Any]):
        self.open_ones = open_ones

    @classmethod
    def open(cls, cfg: Config, folder: RunFolder) -> Trackers:
        names = list(dict.fromkeys(cfg.train.report_to))
        check_installed(names)
        return cls([KINDS[name](cfg, folder) for name in names])

    def observe(self, t: Any, record: dict) -> None:
        # The same records as metrics.jsonl: every log_every steps, the last, and evaluations.
        step = record["step"]
        if step % t.cfg.log_every and step != t.steps and "eval_loss" not in record:
            return
        values = scalars(record)
        for tracker in self.open_ones:
            tracker.log(step, values)

    def close(self) -> None:
        for tracker in self.open_ones:
            tracker.close()
