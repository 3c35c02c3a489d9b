"""Images and audio reach the model: rendering with media, training, and learnable tasks whose
answer is only in the pixels or the sound."""

from __future__ import annotations

import json

import pytest
import torch

from gemmaforge.config import Config
from gemmaforge.data.examples.multimodal import MediaEncoder
from gemmaforge.data.examples.render import IGNORE_INDEX, render
from gemmaforge.models.families import family_by_name
from gemmaforge.train.loss import batch_loss
from gemmaforge.train.trainer import train
from mm_tasks import COLOURS, PITCHES, write_task


def config(model_dir, data, out, **train_settings) -> Config:
    settings = {"max_steps": 40, "batch_size": 8, "lr": 1e-2, "seed": 0, **train_settings}
    return Config.model_validate(
        {
            "model": {"name_or_path": str(model_dir)},
            "data": {"train": str(data), "val_fraction": 0.0},
            "lora": {"r": 8, "alpha": 16},
            "train": {"output_dir": str(out), **settings},
        }
    )


@pytest.mark.parametrize(
    "family,kind",
    [
        ("gemma4", "image"),
        ("gemma4", "audio"),
        ("gemma3n", "image"),
        ("gemma3n", "audio"),
        ("gemma3-vision", "image"),
    ],
)
def test_media_parts_render_to_the_processors_token_runs(family, kind, tiny_dir, tmp_path):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_dir(family))
    data = write_task(tmp_path, kind, rows=1, seed=0)
    messages = json.loads(data.read_text())["messages"]
    messages[0]["content"][0]["ref"] = str(tmp_path / messages[0]["content"][0].pop("path"))
    encoder = MediaEncoder(processor)
    facts = family_by_name(family.removesuffix("-vision"))
    example = render(messages, facts, processor.tokenizer, media=encoder)

    # The soft token (Gemma 3's processor calls <start_of_image> its image token).
    tokenizer = processor.tokenizer
    soft = tokenizer.image_token_id if kind == "image" else tokenizer.audio_token_id
    count = example.input_ids.count(soft)
    assert count > 0 and len(example.media) == 1 and example.media[0].kind == kind
    start = example.input_ids.index(soft)
    # The soft tokens form one run, typed as media, never trained, and end before media_end.
    assert example.input_ids[start : start + count] == [soft] * count
    assert all(t != 0 for t in example.token_types[start : start + count])
    assert set(example.labels[start : start + count]) == {IGNORE_INDEX}
    assert example.media_end >= start + count
    # The batch features cover exactly those tokens: the model accepts them.
    from gemmaforge.data.batches.collate import collate

    batch = collate([[example]], 0, encoder.type_key, encoder)
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_dir(family))
    with torch.no_grad():
        loss, tokens = batch_loss(model, batch)
    assert torch.isfinite(loss) and tokens == example.num_trained


def accuracy(model, loaded, data_file, labels) -> float:
    """Held-out accuracy by scoring each candidate answer: the most likely one wins.

    Candidates are compared by their summed loss (the answer's log-likelihood), not the loss
    per token: labels differ in length ("low" is 1 token of the tiny tokenizer, "middle" 4),
    and per token a long label whose later pieces are easy would win whenever the first token
    is uncertain."""
    from gemmaforge.data.batches.collate import collate
    from gemmaforge.data.examples.formats import to_conversation
    from gemmaforge.data.examples.multimodal import media_encoder
    from gemmaforge.data.read.records import read_records

    cfg = Config().data
    encoder = media_encoder(loaded, cfg)
    correct = 0
    records = read_records(str(data_file)).records
    for record in records:
        messages = to_conversation(record, "messages", cfg).messages
        truth = messages[-1]["content"]
        losses = {}
        for label in labels:
            candidate = [*messages[:-1], {"role": "assistant", "content": label}]
            example = render(candidate, loaded.family, loaded.tokenizer, media=encoder)
            batch = collate([[example]], 0, encoder.type_key, encoder)
            batch = {
                k: v.to(dtype=loaded.dtype) if v.is_floating_point() else v
                for k, v in batch.items()
            }
            with torch.no_grad():
                loss, _ = batch_loss(model, batch)
            losses[label] = loss.item()
        correct += min(losses, key=losses.get) == truth
    return correct / len(records)


# Per case: LoRA towers, steps and learning rate that learn the task on the tiny model. Audio
# needs a gentler rate: at lr 1e-2 (60 steps, towers text or text+audio) the tiny Gemma 4 locks
# onto the label prior and its answer stops depending on the clip (held-out 0.29, the same
# first-token loss for every clip), and audio LoRA at that rate collapses the encoder (every clip
# gives the same soft tokens). At lr 3e-3: 60 steps reach 0.67, 100 steps 1.00. Gemma 3n is not
# here: its clips are 188 soft tokens each, ~17 s per step on two busy cores (12 steps: 3.5 min).
LEARNABLE = {
    ("gemma4", "image"): (["text", "vision"], 60, 1e-2),
    ("gemma4", "audio"): (["text"], 100, 3e-3),
    ("gemma3-vision", "image"): (["text", "vision"], 60, 1e-2),
}


# The audio case takes 110-350 s on two busy cores (two 100-step runs); the image cases 20-140 s
# on a quiet machine, but the Gemma 4 image case took 13-14 min in a busy `make test`: it is
# slow too (run by .ci/run when time allows). Gemma 3 vision keeps one learnability case in the
# default suite.
SLOW_LEARNABLE = {("gemma4", "image"), ("gemma4", "audio")}


@pytest.mark.parametrize(
    "family,kind",
    [
        pytest.param(*case, marks=[pytest.mark.slow] if case in SLOW_LEARNABLE else [])
        for case in LEARNABLE
    ],
)
def test_the_answer_in_the_media_is_learned(family, kind, tiny_dir, tmp_path):
    towers, steps, lr = LEARNABLE[family, kind]
    labels = COLOURS if kind == "image" else PITCHES
    scores = {}
    for blank in (False, True):
        folder = tmp_path / ("blank" if blank else "real")
        data = write_task(folder, kind, rows=48, seed=1, blank=blank)
        test = write_task(folder, kind, rows=24, seed=2, blank=blank)
        cfg = config(tiny_dir(family), data, folder / "run", max_steps=steps, lr=lr)
        cfg.lora.towers = towers
        result = train(cfg)
        scores[blank] = accuracy(result.model, result.loaded, test, list(labels))
    chance = 1 / len(labels)
    # Far above chance, and far above the same run on blank media (24 held-out rows: runs
    # measured 0.75-1.00 across loss implementations and machines).
    assert scores[False] >= 0.7, scores
    assert scores[False] >= scores[True] + 0.3, scores
    assert scores[True] <= chance + 0.25, scores
