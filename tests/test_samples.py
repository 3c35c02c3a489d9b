"""train.sample_every: greedy replies to held-out prompts written between steps, images
included, and a resume that drops the samples of the steps it redoes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gemmaforge.config import Config
from gemmaforge.train.trainer import train
from mm_tasks import write_task


def samples(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]


def config(model: Path, data: Path, out: Path, steps: int, **train_settings) -> Config:
    return Config.model_validate(
        {
            "model": {"name_or_path": str(model)},
            "data": {"train": str(data), "val_fraction": 0.25, "val_max_rows": 2},
            "lora": {"r": 4},
            "train": {
                "output_dir": str(out),
                "max_steps": steps,
                "batch_size": 2,
                "sample_every": 2,
                "sample_prompts": 2,
                "sample_max_tokens": 4,
                "save_every": 2,
                **train_settings,
            },
        }
    )


@pytest.mark.slow
def test_image_prompts_are_sampled_and_resume_redoes_them(tiny_dir, tmp_path):
    data = write_task(tmp_path / "task", "image", rows=12, seed=0)
    run = tmp_path / "run"
    train(config(tiny_dir("gemma3-vision"), data, run, 2))
    first = samples(run)
    assert [s["step"] for s in first] == [2, 2]
    for sample in first:
        assert sample["reference"] in ("red", "green", "blue")
        assert "What colour is this?" in sample["prompt"]
        assert isinstance(sample["reply"], str)
        (media,) = sample["media"]
        assert media["kind"] == "image" and Path(media["ref"]).is_file()
    # As if killed after sampling step 3 but before its checkpoint: the resume redoes step 3.
    with (run / "samples.jsonl").open("a") as handle:
        handle.write(json.dumps({**first[0], "step": 3}) + "\n")
    train(config(tiny_dir("gemma3-vision"), data, run, 4, resume=True))
    assert [s["step"] for s in samples(run)] == [2, 2, 4, 4]
