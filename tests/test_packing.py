"""Padding-free packing is exact: each example's loss inside a packed row equals its loss
alone (no attention across examples, positions restart), on every text family; a packed
run trains and reports its padding."""

from __future__ import annotations

import json

import pytest
import torch

from gemmaforge.config import DataConfig, ModelConfig
from gemmaforge.data.batches.collate import collate
from gemmaforge.data.examples.render import render
from gemmaforge.train.loss import batch_loss
from test_train import run_config

CONVERSATIONS = [
    ("What colour is the sky?", "The sky is blue, mostly, on a clear day."),
    ("Name a prime.", "Seven."),
    ("Which way is up, and how do you know?", "Away from the ground; gravity pulls down."),
]


def only(example, keep: bool):
    """The example with its labels kept or all ignored."""
    from dataclasses import replace

    return example if keep else replace(example, labels=[-100] * len(example.labels))


@pytest.mark.parametrize("family", ["gemma3", "gemma3n", "gemma4"])
def test_packed_losses_equal_unpacked(family, tiny_dir):
    from gemmaforge.data.examples.multimodal import media_encoder
    from gemmaforge.models.load import load_model

    loaded = load_model(ModelConfig(name_or_path=str(tiny_dir(family)), dtype="fp32"))
    model = loaded.model.eval()
    media = media_encoder(loaded, DataConfig())
    type_key = media.type_key if media else None
    examples = [
        render(
            [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
            loaded.family,
            loaded.tokenizer,
            "all",
            f"row {i}",
            media,
        )
        for i, (q, a) in enumerate(CONVERSATIONS)
    ]
    with torch.no_grad():
        alone = [batch_loss(model, collate([[ex]], 0, type_key))[0] for ex in examples]
        packed = []
        for target in range(len(examples)):
            row = [only(ex, i == target) for i, ex in enumerate(examples)]
            packed.append(batch_loss(model, collate([row], 0, type_key, packed=True))[0])
        # Without restarting positions and blocking attention, the 2nd and 3rd would differ.
        leaky = batch_loss(model, collate([[only(examples[0], False), examples[1]]], 0, type_key))
    for a, p in zip(alone, packed, strict=True):
        assert torch.allclose(a, p, rtol=1e-5, atol=1e-5), (a, p)
    assert not torch.allclose(leaky[0], alone[1], rtol=1e-3, atol=1e-3)


def test_packed_run_trains_and_reports_padding(tiny_dir, tmp_path):
    from gemmaforge.train.trainer import train

    data = tmp_path / "train.jsonl"
    with data.open("w") as handle:  # replies of 1 to 12 sentences: lengths vary a lot
        for i in range(96):
            reply = " ".join(["Seven is prime."] * (1 + i % 12))
            messages = [{"role": "user", "content": "Name a prime."}]
            messages.append({"role": "assistant", "content": reply})
            handle.write(json.dumps({"messages": messages}) + "\n")
    plain = train(run_config(tiny_dir("gemma3"), data, tmp_path / "plain", max_steps=6))
    cfg = run_config(tiny_dir("gemma3"), data, tmp_path / "packed", max_steps=20)
    cfg.data.packing = True
    cfg.data.max_seq_length = 256
    result = train(cfg)
    metrics = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").open()]
    first, last = metrics[0]["loss"], sum(m["loss"] for m in metrics[-3:]) / 3
    assert last < 0.5 * first, (first, last)
    plain_metrics = [json.loads(line) for line in (plain.run_dir / "metrics.jsonl").open()]
    plain_padding = sum(m["padding"] for m in plain_metrics) / len(plain_metrics)
    packed_padding = sum(m["padding"] for m in metrics) / len(metrics)
    assert packed_padding < plain_padding / 2, (packed_padding, plain_padding)
    # A packed row holds several examples: more trained tokens per step than unpacked.
    assert metrics[0]["trained_tokens"] > plain.final["trained_tokens"]
