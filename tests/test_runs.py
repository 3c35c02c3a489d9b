"""A finished run folder reads back, and refuses a base model it was not trained on."""

from __future__ import annotations

import pytest
import torch

from gemmaforge.errors import UserError
from gemmaforge.infer.load import load_run
from gemmaforge.runs import open_run
from gemmaforge.train.trainer import train
from test_train import run_config, write_task


@pytest.fixture(scope="module")
def finished_run(tiny_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    data = write_task(tmp / "train.jsonl", rows=16)
    return train(run_config(tiny_dir("gemma3"), data, tmp / "run", max_steps=3))


def test_open_and_load_a_run(finished_run):
    run = open_run(finished_run.run_dir)
    assert run.family == "gemma3" and run.config.train.max_steps == 3
    _, model = load_run(run)
    ids = torch.tensor([[2, 20, 21, 22]])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, finished_run.model(input_ids=ids).logits)


def test_another_base_is_refused_with_both_hashes(finished_run, tmp_path):
    from gemmaforge.models.tiny import make_tiny

    other = make_tiny("gemma3", tmp_path / "other", seed=1)
    run = open_run(finished_run.run_dir)
    with pytest.raises(UserError) as err:
        load_run(run, base=str(other))
    assert run.base_sha256 in str(err.value) and "has sha256" in str(err.value)


def test_not_a_run_folder(tmp_path):
    with pytest.raises(UserError, match="no such run folder"):
        open_run(tmp_path / "nope")
    with pytest.raises(UserError, match=r"not a finished run folder \(missing run.json"):
        open_run(tmp_path)
