"""train.report_to: a tiny run writes TensorBoard event files and a local MLflow store (SQLite) in
its folder, and each tracker's own reader gets back the loss metrics.jsonl has, step by step."""

from __future__ import annotations

import importlib.util
import json

import pytest

from gemmaforge.config import Config
from gemmaforge.errors import UserError
from gemmaforge.train.trackers import check_installed
from gemmaforge.train.trainer import train
from tiny_runs import ANSWERS, write_rows


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


TRACKERS = [
    pytest.param(
        "tensorboard",
        marks=pytest.mark.skipif(not installed("tensorboard"), reason="tensorboard not installed"),
    ),
    pytest.param(
        "mlflow", marks=pytest.mark.skipif(not installed("mlflow"), reason="mlflow not installed")
    ),
]


@pytest.fixture(scope="module")
def tracked_run(tiny_dir, tmp_path_factory):
    """One 6-step run reporting to every installed tracker (validation at step 3 and 6)."""
    folder = tmp_path_factory.mktemp("tracked")
    data = write_rows(folder / "train.jsonl", ANSWERS["plain"])
    report_to = [name for name in ("tensorboard", "mlflow") if installed(name)]
    if not report_to:
        pytest.skip("neither tensorboard nor mlflow is installed")
    cfg = Config.model_validate(
        {
            "model": {"name_or_path": str(tiny_dir("gemma3"))},
            "data": {"train": str(data)},
            "lora": {"r": 4},
            "train": {
                "output_dir": str(folder / "run"),
                "max_steps": 6,
                "batch_size": 2,
                "eval_every": 3,
                "log_every": 2,
                "report_to": report_to,
            },
        }
    )
    run = train(cfg).run_dir
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return run, {line["step"]: line for line in lines}


def read_tensorboard(run) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return {
        tag: {event.step: event.value for event in events.Scalars(tag)}
        for tag in events.Tags()["scalars"]
    }


def read_mlflow(run) -> dict[str, dict[int, float]]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlflow' / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "gemmaforge"]
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.status == "FINISHED"
    assert found.data.params["train.max_steps"] == "6"
    return {
        key: {m.step: m.value for m in client.get_metric_history(found.info.run_id, key)}
        for key in found.data.metrics
    }


@pytest.mark.slow
@pytest.mark.parametrize("tracker", TRACKERS)
def test_tracker_reads_back_the_metrics(tracked_run, tracker):
    run, metrics = tracked_run
    scalars = {"tensorboard": read_tensorboard, "mlflow": read_mlflow}[tracker](run)
    # The same lines as metrics.jsonl (log_every=2 and the evaluations at 3 and 6).
    assert sorted(scalars["loss"]) == sorted(metrics) == [2, 3, 4, 6]
    for step, line in metrics.items():
        assert scalars["loss"][step] == pytest.approx(line["loss"], rel=1e-6)
        assert scalars["grad_norm"][step] == pytest.approx(line["grad_norm"], rel=1e-6)
    assert sorted(scalars["eval_loss"]) == [3, 6]


def test_missing_tracker_package_is_a_user_error(monkeypatch):
    import gemmaforge.train.trackers as trackers

    monkeypatch.setitem(trackers.PACKAGES, "wandb", "no_such_module_for_gemmaforge")
    with pytest.raises(UserError) as caught:
        check_installed(["wandb"])
    assert "pip install 'gemmaforge[trackers]'" in str(caught.value)
