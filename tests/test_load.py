"""Loading: family detection from the config, offline-by-default hub ids, dtype policy."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from gemmaforge.config import ModelConfig
from gemmaforge.errors import UserError
from gemmaforge.models.families import family_of
from gemmaforge.models.load import load_model, resolve_dtype


def test_a_folder_that_is_not_a_gemma_is_refused(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path
    )
    with pytest.raises(UserError) as err:
        load_model(ModelConfig(name_or_path=str(tmp_path)))
    message = str(err.value)
    assert str(tmp_path) in message and "'llama' is not a supported Gemma family" in message


def test_a_folder_without_config_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="not a model folder"):
        load_model(ModelConfig(name_or_path=str(tmp_path)))


def test_hub_ids_need_allow_download():
    with pytest.raises(UserError) as err:
        load_model(ModelConfig(name_or_path="google/gemma-3-270m-it"))
    message = str(err.value)
    assert "downloads are off" in message
    assert "hf download google/gemma-3-270m-it --local-dir models/gemma-3-270m-it" in message
    assert "--allow-download" in message


def test_family_comes_from_model_type_not_the_name(tiny_dir, tmp_path):
    # A Gemma 4 checkpoint in a folder named like Gemma 3 is still Gemma 4.
    folder = tmp_path / "gemma-3-270m"
    folder.mkdir()
    config = json.loads((tiny_dir("gemma4") / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config))
    from transformers import AutoConfig

    assert family_of(AutoConfig.from_pretrained(folder)).name == "gemma4"


def test_tiny_model_loads_frozen_in_policy_dtype(tiny_dir):
    loaded = load_model(ModelConfig(name_or_path=str(tiny_dir("gemma3")), dtype="fp32"))
    assert loaded.family.name == "gemma3" and loaded.dtype == torch.float32
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert len(loaded.source_sha256) == 64


def test_dtype_policy_never_picks_fp16():
    cpu = torch.device("cpu")
    assert resolve_dtype("fp32", cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    assert resolve_dtype("auto", cpu) in (torch.bfloat16, torch.float32)
    with pytest.raises(ValidationError):
        ModelConfig(dtype="fp16")
