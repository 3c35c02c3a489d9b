"""`gemmaforge plan`: predictions from a config alone, suggestions when a run does not fit,
and clear errors for runs that cannot work (exit code 2); the refusal paths of QLoRA and
activation offload on this CPU machine; attention implementation of loaded models."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from gemmaforge.cli import app
from gemmaforge.config import Config, ModelConfig
from gemmaforge.errors import UserError
from gemmaforge.models.load import check_quantize, load_model
from gemmaforge.perf.plan import (
    AUTO_SHARE,
    FULL_LOGITS_BYTES,
    Settings,
    auto_checkpointed_layers,
    predict,
)
from gemmaforge.perf.shapes import model_shape, read_config

runner = CliRunner()


def gemma3_config_folder(folder, hidden: int, layers: int):
    """A Gemma 3 text config.json with no weights: plan needs nothing else."""
    folder.mkdir()
    config = {
        "model_type": "gemma3_text",
        "architectures": ["Gemma3ForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": 4 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": hidden // 8,
        "vocab_size": 262144,
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_plan_prints_a_prediction_for_a_tiny_model(tiny_dir):
    result = runner.invoke(app, ["plan", "--model", str(tiny_dir("gemma3")), "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "predicted peak" in result.output
    assert "step time" in result.output
    assert "fits" in result.output
    # The tiny run fits many times over: auto checkpoints nothing.
    assert "no checkpointing" in result.output
    assert "auto checkpoints 0 of" in " ".join(result.output.split())


def test_prediction_parts_follow_the_model_sizes(tiny_dir):
    shape = model_shape(read_config(str(tiny_dir("gemma3"))))
    base = Settings(batch_size=2, seq_len=64, loss_chunk_size=16)
    ours, theirs = (
        predict(shape, base),
        predict(shape, Settings(**{**base.__dict__, "plain_trainer": True})),
    )
    assert ours.peak_bytes == sum(ours.parts.values())
    # bf16 weights: 2 bytes for every parameter of the text model (tiny gemma3 has no towers).
    assert ours.parts["weights"] == 2 * shape.total_params
    # LoRA r=16 on all seven projections of 4 layers, fp32 weight + grad + 2 Adam moments.
    assert ours.parts["lora + optimizer"] == 16 * shape.lora_params(16)
    assert theirs.parts["loss"] == 2 * 64 * shape.vocab * FULL_LOGITS_BYTES
    every = shape.layers
    half = predict(shape, replace(base, checkpointed_layers=every // 2))
    checkpointed = predict(shape, replace(base, checkpointed_layers=every))
    assert checkpointed.parts["activations"] < half.parts["activations"]
    assert half.parts["activations"] < ours.parts["activations"]
    # The checkpointed layers' forward runs twice.
    assert checkpointed.step_flops > half.step_flops > ours.step_flops


def test_auto_checkpoints_the_fewest_layers_that_fit(tmp_path):
    shape = model_shape(read_config(str(gemma3_config_folder(tmp_path / "m", 640, 18))))
    settings = Settings(batch_size=4, seq_len=1024)

    def need(layers: int) -> int:
        prediction = predict(shape, replace(settings, checkpointed_layers=layers))
        return prediction.peak_bytes - prediction.parts["weights"]

    assert auto_checkpointed_layers(shape, settings, room=100 * need(0)) == 0
    assert auto_checkpointed_layers(shape, settings, room=need(18)) == 18  # nothing fits
    # Room for about half the activations: some layers, and the fewest that fit.
    room = int((need(0) + need(18)) / 2 / AUTO_SHARE)
    layers = auto_checkpointed_layers(shape, settings, room)
    assert 0 < layers < 18
    assert need(layers) <= AUTO_SHARE * room < need(layers - 1)


def test_partial_checkpointing_keeps_the_gradients_and_saves_memory(tiny_dir):
    """Checkpointing some decoder layers (auto's choice on a tight machine) computes the same
    gradients as none or all, and keeps less for the backward pass the more layers it
    recomputes."""
    from gemmaforge.config import LoraConfig
    from gemmaforge.models.lora import apply_lora
    from gemmaforge.models.structure import decoder_layers
    from gemmaforge.train.loss import batch_loss
    from gemmaforge.train.options import apply_options, checkpointed_layers

    cfg = Config.model_validate({"model": {"name_or_path": str(tiny_dir("gemma3"))}})
    torch.manual_seed(1)
    ids = torch.randint(3, 200, (2, 64))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    results = {}
    for count in (0, 2, 4):
        torch.manual_seed(0)
        model, _ = apply_lora(load_model(cfg.model).model, LoraConfig(r=4))
        if count == 0:
            # The default (auto) on this machine: the tiny run fits many times over.
            assert checkpointed_layers(model, cfg, torch.device("cpu"), torch.bfloat16)[0] == 0
        lines = apply_options(model, cfg, (count, "test"))
        layers = decoder_layers(model.get_base_model())
        assert sum(layer.gradient_checkpointing for layer in layers) == count, lines
        model.train()
        saved: dict[int, int] = {}

        def keep(tensor, saved=saved):
            saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
            total, tokens = batch_loss(model, batch, 64)
        (total / tokens).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[count] = (grads, sum(saved.values()))
    for count in (2, 4):
        assert all(torch.allclose(results[count][0][n], g) for n, g in results[0][0].items())
    assert results[0][1] > results[2][1] > results[4][1]


def test_plan_suggests_settings_that_fit(tiny_dir):
    # A batch of 100,000 x 2,048 tokens needs terabytes of activations; batch 1 does not.
    args = [
        "plan",
        "--model",
        str(tiny_dir("gemma3")),
        "--batch-size",
        "100000",
        "--seq-len",
        "2048",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "does not fit" in result.output
    assert "train.batch_size=" in result.output and "train.grad_accum=" in result.output


def test_plan_refuses_a_model_that_cannot_fit(tmp_path):
    # ~1.3 trillion parameters: no machine running this test holds its bf16 weights.
    folder = gemma3_config_folder(tmp_path / "huge", hidden=16384, layers=400)
    result = runner.invoke(app, ["plan", "--model", str(folder)])
    assert result.exit_code == 2, result.output
    assert "does not fit: even batch 1" in result.output
    assert "checkpointing" in result.output


def test_plan_refuses_an_image_budget_on_gemma3(tiny_dir):
    result = runner.invoke(
        app, ["plan", "--model", str(tiny_dir("gemma3")), "data.image_budget=280"]
    )
    assert result.exit_code == 2
    assert "data.image_budget" in result.output and "Gemma 4" in result.output


def test_plan_refuses_a_sequence_shorter_than_an_image(tiny_dir, tmp_path):
    import random

    from gemmaforge.bench.synthetic import colour_image

    colour_image(tmp_path / "red.png", (200, 0, 0), random.Random(0))
    row = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "path": "red.png"},
                    {"type": "text", "text": "Colour?"},
                ],
            },
            {"role": "assistant", "content": "red"},
        ]
    }
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps(row) + "\n")
    args = ["plan", "--model", str(tiny_dir("gemma4")), "--data", str(data), "--seq-len", "32"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    # The tiny Gemma 4 processor's budget is 70 soft tokens, plus the begin/end markers.
    assert "less than the 72" in result.output and "data.max_seq_length" in result.output


def test_qlora_is_refused_on_cpu_with_the_device_named(tiny_dir):
    with pytest.raises(UserError) as err:
        load_model(ModelConfig(name_or_path=str(tiny_dir("gemma3")), quantize="4bit"))
    assert "this run is on cpu" in str(err.value) and "model.quantize=none" in str(err.value)
    result = runner.invoke(app, ["plan", "--model", str(tiny_dir("gemma3")), "model.quantize=4bit"])
    assert result.exit_code == 2 and "this run is on cpu" in result.output


def test_qlora_checks_before_loading_on_cuda(tmp_path):
    """The CUDA-side refusals, checked without a GPU (the device is only named)."""
    cuda = torch.device("cuda")
    with pytest.raises(UserError, match="GGUF file"):
        check_quantize(ModelConfig(name_or_path=str(tmp_path / "m.gguf"), quantize="4bit"), cuda)
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match=r"gemmaforge\[cuda\]"):
            check_quantize(ModelConfig(name_or_path=str(tmp_path), quantize="4bit"), cuda)


def test_offload_is_refused_on_cpu(tiny_dir, tmp_path):
    from gemmaforge.train.trainer import train

    cfg = Config.model_validate(
        {
            "model": {"name_or_path": str(tiny_dir("gemma3"))},
            "data": {"train": str(tmp_path / "none.jsonl")},
            "train": {
                "output_dir": str(tmp_path / "run"),
                "offload_activations": True,
                "gradient_checkpointing": False,
            },
        }
    )
    with pytest.raises(UserError) as err:
        train(cfg)
    assert "this run trains on the CPU" in str(err.value)
    assert "also set train.gradient_checkpointing=true" in str(err.value)


@pytest.mark.parametrize("family", ["gemma3", "gemma3n", "gemma4"])
def test_models_load_with_sdpa_attention(tiny_dir, family):
    model = load_model(ModelConfig(name_or_path=str(tiny_dir(family)))).model
    text = model.config.get_text_config()
    assert text._attn_implementation == "sdpa"


@pytest.mark.slow
def test_compile_trains_saves_and_resumes(tiny_dir, tmp_path):
    """train.compile keeps parameter names: the run trains, saves its adapter and resumes.
    Slow: inductor compiles the layers for minutes on two CPU cores."""
    from gemmaforge.train.trainer import train
    from test_train import run_config, write_task

    data = write_task(tmp_path / "task.jsonl")
    cfg = run_config(tiny_dir("gemma3"), data, tmp_path / "run", max_steps=4, compile=True)
    first = train(cfg)
    assert first.final["loss"] < 8 and (tmp_path / "run" / "adapter").is_dir()
    longer = cfg.model_copy(deep=True)
    longer.train.max_steps, longer.train.resume, longer.train.reschedule = 6, True, True
    assert train(longer).final["step"] == 6


def test_suggestions_are_never_the_same_settings_twice(tiny_dir):
    """With checkpointing already on, "batch 2" and "batch 2 + checkpointing" are the same
    settings: one suggestion, not two."""
    from gemmaforge.perf.plan import fitting_settings

    shape = model_shape(read_config(tiny_dir("gemma3")))
    settings = Settings(batch_size=16, seq_len=256, checkpointed_layers=shape.layers)
    found = fitting_settings(shape, settings, available=1 << 40, need=8)
    kept = [s for _, s, _ in found]
    assert len(kept) == len(set(map(repr, kept))) and found
    assert not any("gradient_checkpointing=true" in change for change, _, _ in found)
