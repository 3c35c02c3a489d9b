"""The `mlx` export: mlx-lm's key names, transposed shapes and config, and (when mlx-lm is
installed) the logits mlx-lm computes with it, which must be those of transformers + PEFT."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from gemmaforge.errors import UserError
from gemmaforge.export import export
from test_train import run_config, write_task

IDS = [2, 10, 11, 12, 13, 14, 15, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52]
PEFT_Q = "base_model.model.model.layers.{}.self_attn.q_proj.lora_{}.weight"


def test_keys_shapes_and_config_follow_mlx_lm(tiny_run, tmp_path):
    from safetensors.torch import load_file as load_torch

    run = tiny_run("plain")
    out = export(run, "mlx", tmp_path / "mlx")
    weights = load_file(out / "adapters.safetensors")
    peft = load_torch(run / "adapter" / "adapter_model.safetensors")
    assert len(weights) == len(peft)
    a, b = (
        weights["model.layers.3.self_attn.q_proj.lora_a"],
        weights["model.layers.3.self_attn.q_proj.lora_b"],
    )
    np.testing.assert_array_equal(a, peft[PEFT_Q.format(3, "A")].numpy().T)  # [in, r]
    np.testing.assert_array_equal(b, peft[PEFT_Q.format(3, "B")].numpy().T)  # [r, out]
    assert a.shape == (64, 8) and b.shape == (8, 64)

    config = json.loads((out / "adapter_config.json").read_text())
    assert config["fine_tune_type"] == "lora" and config["num_layers"] == 4
    params = config["lora_parameters"]
    assert params["rank"] == 8 and params["scale"] == 16 / 8 and params["dropout"] == 0.0
    assert set(params["keys"]) == {
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    }


def test_rslora_scale_and_multimodal_layer_path(tiny_dir, tmp_path):
    from gemmaforge.train.trainer import train

    data = write_task(tmp_path / "train.jsonl", rows=8)
    cfg = run_config(tiny_dir("gemma4"), data, tmp_path / "run", max_steps=1)
    cfg.lora.rslora = True
    out = export(train(cfg).run_dir, "mlx", tmp_path / "mlx")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["lora_parameters"]["scale"] == pytest.approx(16 / 8**0.5)
    keys = load_file(out / "adapters.safetensors")
    # mlx-lm's Gemma 4 keeps its decoder under language_model.model.layers.
    assert "language_model.model.layers.0.self_attn.q_proj.lora_a" in keys


def test_unsupported_model_type_is_refused(tiny_run, tmp_path):
    import shutil

    # A run whose base mlx-lm has no model for (Gemma 3n's text-only class).
    run = shutil.copytree(tiny_run("plain"), tmp_path / "run")
    record = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**record, "model_type": "gemma3n_text"}))
    with pytest.raises(UserError, match="mlx export supports bases of model_type gemma3_text"):
        export(run, "mlx", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_tower_adapters_are_refused(tiny_run, tmp_path):
    import shutil

    import yaml

    # A run that also adapted the vision tower: mlx-lm runs the language model only.
    run = shutil.copytree(tiny_run("plain"), tmp_path / "run")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["lora"]["towers"] = ["text", "vision"]
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(UserError, match="also adapts the vision tower"):
        export(run, "mlx", tmp_path / "out")


def gemma3_shaped_base(folder):
    """A tiny Gemma 3 laid out like the released ones (six layers, every sixth global, no final
    soft-capping), which is what mlx-lm's gemma3_text assumes."""
    import transformers

    from gemmaforge.models.tiny import tiny_tokenizer

    tok = tiny_tokenizer("gemma3")
    config = transformers.Gemma3TextConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=6,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        query_pre_attn_scalar=32,
        sliding_window=8,
        vocab_size=len(tok),
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = transformers.Gemma3ForCausalLM(config)
        model.get_input_embeddings().weight.data.mul_(8)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.skipif(not importlib.util.find_spec("mlx_lm"), reason="mlx-lm is not installed")
@pytest.mark.parametrize("method", ["lora", "rslora", "dora"])
def test_mlx_lm_computes_what_transformers_and_peft_compute(tmp_path, method):
    import mlx.core as mx
    from mlx_lm.utils import load

    from gemmaforge.infer.load import load_run
    from gemmaforge.runs import open_run
    from gemmaforge.train.trainer import train

    base = gemma3_shaped_base(tmp_path / "base")
    data = write_task(tmp_path / "train.jsonl", rows=16)
    cfg = run_config(base, data, tmp_path / "run", max_steps=3)
    cfg.lora.rslora, cfg.lora.dora = method == "rslora", method == "dora"
    out = export(train(cfg).run_dir, "mlx", tmp_path / "mlx")
    assert json.loads((out / "adapter_config.json").read_text())["fine_tune_type"] == (
        "dora" if method == "dora" else "lora"
    )

    _, reference = load_run(open_run(tmp_path / "run"), device="cpu", dtype="fp32")
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor([IDS])).logits[0].numpy()
        with reference.disable_adapter():
            bare = reference(input_ids=torch.tensor([IDS])).logits[0].numpy()
    model, _ = load(str(base), adapter_path=str(out))
    got = np.array(model(mx.array([IDS]))[0].astype(mx.float32))
    assert np.abs(bare - expected).max() > 0.5  # the adapter changes the logits...
    assert np.abs(got - expected).max() < 1e-4  # ...and mlx-lm applies it the same way
