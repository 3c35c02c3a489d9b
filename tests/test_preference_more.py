"""Preference tuning beyond text on one process: `trained_tokens` of a pair run, `plan` on
preference rows with media, DPO on image and audio pairs through the real tiny Gemma 4 /
Gemma 3n forward, and KTO's reference point over two processes."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from gemmaforge.config import Config
from mm_tasks import colour_image, tone
from test_preference import TRAIN_PROMPTS, pref_config, preference_rows, write_pairs


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").open()]


@pytest.mark.slow
def test_trained_tokens_count_the_labelled_tokens_of_both_replies(tiny_dir, tmp_path):
    """`trained_tokens` of a DPO step is the labelled tokens of its chosen and rejected
    sequences (not its pair count, which the loss is normalised by)."""
    from gemmaforge.data.examples.preference import load_preference_datasets
    from gemmaforge.data.read.sources import open_sources
    from gemmaforge.models.load import load_model
    from gemmaforge.train.trainer import train

    path = write_pairs(tmp_path / "train.jsonl", preference_rows(4, 0, TRAIN_PROMPTS))
    cfg = pref_config(tiny_dir("gemma3"), path, path, tmp_path / "run", objective="dpo")
    cfg = cfg.model_copy(
        update={
            "data": cfg.data.model_copy(update={"validation": None, "val_fraction": 0.0}),
            "train": cfg.train.model_copy(update={"batch_size": 4, "max_steps": 1}),
        }
    )
    loaded = load_model(cfg.model)
    examples, _, _ = load_preference_datasets(
        cfg.data, open_sources(cfg.data), loaded.family, loaded.tokenizer, 0, "dpo"
    )
    expected = sum(ex.num_trained for ex in examples)
    result = train(cfg, loaded)
    (step,) = metrics(result.run_dir)
    assert step["trained_tokens"] == expected
    assert expected > 2 * len(examples)  # replies of several tokens each, both counted


def media_pairs(folder, kind: str, rows: int):
    """Pairs whose prompt holds one image (or clip) given through the row's `images`
    (`audios`) list and a placeholder, as LLaMA-Factory and TRL's vision datasets write them."""
    rng = random.Random(0)
    lines = []
    for i in range(rows):
        if kind == "image":
            name = colour_image(folder / f"p{i}.png", (200, 30, 30), rng).name
        else:
            name = tone(folder / f"p{i}.wav", 440.0, rng).name
        lines.append(
            {
                "prompt": [
                    {
                        "role": "user",
                        "content": [{"type": kind}, {"type": "text", "text": "What is this?"}],
                    }
                ],
                "chosen": [{"role": "assistant", "content": "A red square."}],
                "rejected": [{"role": "assistant", "content": "A dog."}],
                f"{kind}s": [name],  # images / audios
            }
        )
    return write_pairs(folder / "pairs.jsonl", lines)


def test_plan_counts_the_media_of_preference_rows(tiny_dir, tmp_path):
    """`plan` reads a pair's prompt media: the vision tower is kept, its tokens counted."""
    from gemmaforge.data.examples.dataset import media_per_row
    from gemmaforge.perf.plan import make_plan

    path = media_pairs(tmp_path, "image", 2)
    cfg = Config.model_validate(
        {
            "model": {"name_or_path": str(tiny_dir("gemma4"))},
            "data": {"train": str(path), "max_seq_length": 512},
            "train": {"objective": "dpo"},
        }
    )
    rows = media_per_row(cfg.data)
    assert [[kind for kind, _ in parts] for parts in rows] == [["image"], ["image"]]
    plan = make_plan(cfg, rows)
    assert plan.settings.towers_kept == ("vision",)
    text_only = make_plan(cfg, [])
    assert text_only.settings.towers_kept == ()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("family", "kind"),
    [("gemma4", "image"), ("gemma4", "audio"), ("gemma3n", "image")],
)
def test_dpo_on_media_pairs_runs_the_real_forward(family, kind, tiny_dir, tmp_path):
    """Image and audio pairs train through the tiny model's own towers: the data report counts
    the media, the loss is finite, and at the first step (LoRA B = 0) the policy equals the
    reference, so every reward is 0 and the loss is log 2."""
    from gemmaforge.train.trainer import train

    path = media_pairs(tmp_path, kind, 4)
    cfg = Config.model_validate(
        {
            "model": {"name_or_path": str(tiny_dir(family)), "dtype": "fp32"},
            "data": {"train": str(path), "val_fraction": 0.0},
            "lora": {"r": 8, "alpha": 16},
            "train": {
                "output_dir": str(tmp_path / "run"),
                "objective": "dpo",
                "batch_size": 2,
                "max_steps": 2,
                "lr": 1e-2,
                "warmup_steps": 0,
            },
        }
    )
    result = train(cfg)
    report = json.loads((result.run_dir / "data_report.json").read_text())
    assert report["images" if kind == "image" else "audio_clips"] == 4
    first, second = metrics(result.run_dir)
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert first["reward_chosen"] == pytest.approx(0.0, abs=1e-6)
    assert first["reward_rejected"] == pytest.approx(0.0, abs=1e-6)
    assert math.isfinite(second["loss"]) and second["loss"] != first["loss"]


def test_the_media_change_the_pair_log_probabilities(tiny_dir, tmp_path):
    """The image really is in the forward: the same pair with another image scores other
    log-probabilities."""
    from gemmaforge.data.batches.collate import collator_for
    from gemmaforge.data.batches.pairs import PairCollator
    from gemmaforge.data.examples.multimodal import media_encoder
    from gemmaforge.data.examples.preference import load_preference_datasets
    from gemmaforge.data.read.sources import open_sources
    from gemmaforge.models.load import load_model
    from gemmaforge.train.loss import row_log_probs
    from gemmaforge.train.preference import EXTRA_KEYS

    path = media_pairs(tmp_path, "image", 1)
    colour_image(tmp_path / "p1.png", (30, 30, 220), random.Random(5))
    other = json.loads(path.read_text())
    other["images"] = ["p1.png"]
    path.write_text(path.read_text() + json.dumps(other) + "\n")
    cfg = Config.model_validate(
        {
            "model": {"name_or_path": str(tiny_dir("gemma4")), "dtype": "fp32"},
            "data": {"train": str(path), "val_fraction": 0.0},
        }
    )
    loaded = load_model(cfg.model)
    media = media_encoder(loaded, cfg.data)
    examples, _, _ = load_preference_datasets(
        cfg.data, open_sources(cfg.data), loaded.family, loaded.tokenizer, 0, "dpo", media
    )
    collate = PairCollator(collator_for(loaded, media))
    scores = []
    for ex in sorted(examples, key=lambda ex: ex.where):
        batch = collate([[ex]], loaded.device)
        inputs = {k: v for k, v in batch.items() if k not in EXTRA_KEYS}
        with torch.no_grad():
            scores.append(row_log_probs(loaded.model, inputs)[0])
    assert not torch.allclose(scores[0], scores[1], atol=1e-4)


@pytest.mark.slow
def test_kto_on_two_processes_trains_what_one_trains(tiny_dir, tmp_path):
    """KTO's reference point is the mean log-ratio of the whole micro-batch, gathered over the
    processes: two processes, each with half of every batch, log the losses of one."""
    import yaml

    from test_distributed import finish, launch

    rows = []
    for row in preference_rows(32, 0, TRAIN_PROMPTS):
        rows.append({"prompt": row["prompt"], "completion": row["chosen"], "label": True})
        rows.append({"prompt": row["prompt"], "completion": row["rejected"], "label": False})
    random.Random(1).shuffle(rows)
    data = write_pairs(tmp_path / "train.jsonl", rows)
    config = tmp_path / "run.yaml"
    settings = {
        "model": {"name_or_path": str(tiny_dir("gemma3")), "dtype": "fp32"},
        "data": {"train": str(data), "val_fraction": 0.0},
        "lora": {"r": 8, "alpha": 16},
        "train": {
            "objective": "kto",
            "beta": 0.5,
            "max_steps": 6,
            "batch_size": 6,
            "lr": 2e-2,
            "warmup_steps": 0,
            "seed": 0,
        },
    }
    config.write_text(yaml.safe_dump(settings))
    one, two = tmp_path / "one", tmp_path / "two"
    finish(launch(str(config), one, 1))
    finish(launch(str(config), two, 2))
    a, b = metrics(one), metrics(two)
    # The run has moved off the reference (z > 0 needs policy and reference to differ).
    assert abs(a[-1]["reward_margin"]) > 1e-3
    torch.testing.assert_close([m["loss"] for m in b], [m["loss"] for m in a], rtol=1e-4, atol=1e-5)
