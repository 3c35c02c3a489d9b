"""`plan` and `gradient_checkpointing: auto` size activations by the widest batch the data
really makes (its longest example; packed rows up to data.max_seq_length), not by
data.max_seq_length that short rows never reach."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from gemmaforge.cli import app
from gemmaforge.config import Config
from gemmaforge.data.examples.dataset import load_datasets
from gemmaforge.data.examples.skiplog import SkipLog
from gemmaforge.data.read.sources import open_sources
from gemmaforge.models.load import load_tokenizer
from gemmaforge.perf.plan import DataLengths, predict, settings_from_config
from gemmaforge.perf.shapes import model_shape, read_config

GiB = 2**30


def short_rows(path, rows: int = 24):
    """Chat rows of a few dozen tokens each, with a spread of lengths."""
    lines = []
    for i in range(rows):
        question = "What is " + " and ".join(["two"] * (1 + i % 5)) + "?"
        answer = " ".join(["four"] * (2 + i % 7)) + "."
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        lines.append(json.dumps({"messages": messages}))
    path.write_text("\n".join(lines) + "\n")
    return path


def config(tiny_dir, data, **data_fields):
    return Config.model_validate(
        {
            "model": {"name_or_path": str(tiny_dir("gemma3"))},
            "data": {"train": str(data), "max_seq_length": 2048, **data_fields},
            "train": {"batch_size": 8},
        }
    )


def rendered(cfg):
    tok = load_tokenizer(cfg.model)
    sources = open_sources(cfg.data)
    args = (cfg.data, sources, tok.family, tok.tokenizer, 0, None, SkipLog())
    return load_datasets(*args)[0]


def test_short_rows_are_sized_by_their_longest_example(tiny_dir, tmp_path):
    cfg = config(tiny_dir, short_rows(tmp_path / "rows.jsonl"))
    examples = rendered(cfg)
    lengths = DataLengths.of(examples)
    longest = max(len(ex.input_ids) for ex in examples)
    assert lengths.longest == longest < 100
    assert 0 < lengths.trained_fraction < 1
    shape = model_shape(read_config(cfg.model.name_or_path))
    by_data = settings_from_config(cfg, shape, 2, (), 64 * GiB, lengths=lengths)
    by_setting = settings_from_config(cfg, shape, 2, (), 64 * GiB)
    assert (by_data.seq_len, by_setting.seq_len) == (longest, 2048)
    ours, theirs = predict(shape, by_data), predict(shape, by_setting)
    # Activations scale with the batch's tokens: 2048 / longest times fewer.
    ratio = theirs.parts["activations"] / ours.parts["activations"]
    assert abs(ratio - 2048 / longest) < 0.01 * ratio
    # Packed, rows fill up to max_seq_length, or hold the whole (small) data set.
    assert lengths.seq_len(2048, packing=True) == min(2048, lengths.total)
    assert lengths.seq_len(64, packing=True) == 64


def test_auto_and_plan_use_the_data_lengths(tiny_dir, tmp_path):
    from gemmaforge.models.load import load_model
    from gemmaforge.models.lora import apply_lora
    from gemmaforge.train.options import checkpointed_layers

    cfg = config(tiny_dir, short_rows(tmp_path / "rows.jsonl"))
    examples = rendered(cfg)
    longest = max(len(ex.input_ids) for ex in examples)
    model, _ = apply_lora(load_model(cfg.model).model, cfg.lora)
    _, why = checkpointed_layers(model, cfg, torch.device("cpu"), torch.bfloat16, 1, examples)
    assert f"batches of 8 x {longest} tokens" in why
    _, streamed = checkpointed_layers(model, cfg, torch.device("cpu"), torch.bfloat16)
    assert "batches of 8 x 2048 tokens" in streamed

    result = CliRunner().invoke(
        app,
        [
            "plan",
            "--model",
            cfg.model.name_or_path,
            "--data",
            cfg.data.train,
            "--batch-size",
            "8",
            "--seq-len",
            "2048",
        ],
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"seq {longest}" in text and "widest batch" in text


def test_preference_examples_count_each_sequence():
    from gemmaforge.data.examples.preference import PreferenceExample
    from gemmaforge.data.examples.render import RenderedExample

    def seq(n: int, trained: int) -> RenderedExample:
        return RenderedExample(list(range(n)), [-100] * (n - trained) + list(range(trained)))

    pair = PreferenceExample(chosen=seq(10, 4), rejected=seq(30, 20))
    kto = PreferenceExample(chosen=seq(50, 10), desirable=True)  # one reply
    lengths = DataLengths.of([pair, kto])
    assert (lengths.longest, lengths.total, lengths.labelled) == (50, 90, 34)
