"""Tiny random checkpoints: offline loading, forward passes, tokenizer and determinism."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from gemmaforge.models.families import family_by_name
from gemmaforge.models.tiny import TINY_FAMILIES, make_tiny, tiny_tokenizer

MULTIMODAL = ("gemma3-vision", "gemma3n", "gemma4", "gemma4-moe", "gemma4-dense")
WITH_AUDIO = ("gemma3n", "gemma4")
TOKENIZER_FAMILIES = ("gemma3", "gemma3-vision", "gemma3n", "gemma4")


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test instead of reaching the hub."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def _family(name: str):
    return family_by_name("gemma4" if name.startswith("gemma4") else name.removesuffix("-vision"))


def _load(path, family: str):
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    auto = AutoModelForImageTextToText if family in MULTIMODAL else AutoModelForCausalLM
    return auto.from_pretrained(path).eval()


@pytest.mark.parametrize("family", TOKENIZER_FAMILIES)
def test_tokenizer_special_tokens_are_single_ids(family):
    tok = tiny_tokenizer(family)
    facts = _family(family)
    assert [tok.pad_token, tok.eos_token, tok.bos_token, tok.unk_token] == [
        "<pad>",
        "<eos>",
        "<bos>",
        "<unk>",
    ]
    assert [tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id] == [0, 1, 2, 3]
    names = [facts.turn_start, facts.turn_end, *facts.stop_tokens]
    names += [
        getattr(tok, n) for n in ("image_token", "boi_token", "eoi_token") if family != "gemma3"
    ]
    names += [
        getattr(tok, n) for n in ("audio_token", "boa_token", "eoa_token") if family in WITH_AUDIO
    ]
    for name in names:
        ids = tok(name, add_special_tokens=False).input_ids
        assert ids == [tok.convert_tokens_to_ids(name)], name
        assert tok.decode(ids) == name


@pytest.mark.parametrize("family", TOKENIZER_FAMILIES)
def test_tokenizer_round_trips_any_text(family):
    tok = tiny_tokenizer(family)
    text = "The patient, aged 42, said: «ça va» — 日本語 🙂\n\tdone."
    ids = tok(text).input_ids
    assert ids[0] == tok.bos_token_id and tok.bos_token_id not in ids[1:]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == text
    turn = f"{_family(family).turn_start}user\nHi{_family(family).turn_end}"
    assert tok.decode(tok(turn).input_ids) == "<bos>" + turn


def test_tokenizer_is_deterministic_and_english_aware():
    tok = tiny_tokenizer("gemma4")
    text = "The patient reported a headache."
    assert tok(text).input_ids == tiny_tokenizer("gemma4-moe")(text).input_ids
    # Pinned pieces: a change means the trained vocabulary differs (e.g. a new tokenizers
    # release trains differently), so ids no longer match across machines.
    pieces = ["The", "Ġpatient", "Ġreport", "ed", "Ġa", "Ġhead", "ach", "e", "."]
    assert tok.tokenize(text) == pieces
    held_out = "The doctor will visit the hospital tonight."
    assert len(tok.tokenize(held_out)) <= 3 * len(held_out.split())


def test_unknown_family_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown tiny family"):
        make_tiny("gemma2", tmp_path)
    with pytest.raises(ValueError, match="unknown tiny family"):
        tiny_tokenizer("llama")


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_loads_offline_and_trains_on_text(family, tiny_dir, no_network):
    from transformers import AutoConfig, AutoProcessor, AutoTokenizer

    path = tiny_dir(family)
    config = AutoConfig.from_pretrained(path)
    model = _load(path, family)
    tok = AutoTokenizer.from_pretrained(path)
    facts = _family(family)
    assert config.model_type in facts.model_types
    assert type(model).__name__ == (
        facts.multimodal_class if family in MULTIMODAL else facts.causal_lm_class
    )
    assert config.get_text_config().vocab_size == len(tok)
    sample = "<bos>Hello world, the patient reported a headache."
    assert tok(sample).input_ids == tiny_tokenizer(family)(sample).input_ids
    assert sum(p.numel() for p in model.parameters()) < 20_000_000
    if family in MULTIMODAL:
        processor = AutoProcessor.from_pretrained(path)
        assert type(processor).__name__ == facts.processor_class
        assert config.image_token_id == tok.image_token_id
        if family in WITH_AUDIO:
            assert config.audio_token_id == tok.audio_token_id

    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."}]
    rendered = tok.apply_chat_template(chat, tokenize=False)
    assert rendered.startswith("<bos>" + facts.turn_start) and facts.turn_end in rendered

    batch = tok(
        ["The patient reported a headache and a cough.", "Hello world"],
        padding=True,
        return_tensors="pt",
    )
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    extra = {"mm_token_type_ids": torch.zeros_like(labels)} if facts.needs_mm_token_type_ids else {}
    loss = model(**batch, **extra, labels=labels).loss
    assert math.isfinite(loss.item())
    loss.backward()


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_same_seed_same_weights(family, tiny_dir, tmp_path):
    again = load_file(make_tiny(family, tmp_path / "again", seed=0) / "model.safetensors")
    first = load_file(tiny_dir(family) / "model.safetensors")
    assert again.keys() == first.keys()
    assert all(torch.equal(again[k], first[k]) for k in first)
    other = load_file(make_tiny(family, tmp_path / "other", seed=1) / "model.safetensors")
    assert not all(torch.equal(other[k], first[k]) for k in first)


@pytest.mark.parametrize("family", MULTIMODAL)
def test_multimodal_forward_through_processor(family, tiny_dir):
    from transformers import AutoProcessor

    path = tiny_dir(family)
    processor = AutoProcessor.from_pretrained(path)
    model = _load(path, family)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    content = [{"type": "image"}, {"type": "text", "text": "Describe this."}]
    audio = None
    if family in WITH_AUDIO:
        content.insert(1, {"type": "audio"})
        audio = [(0.1 * rng.standard_normal(16_000)).astype(np.float32)]  # 1 s at 16 kHz
    chat = [{"role": "user", "content": content}, {"role": "assistant", "content": "Noise."}]
    text = processor.apply_chat_template(chat, tokenize=False)
    inputs = processor(text=[text], images=[image], audio=audio, return_tensors="pt")
    ids = inputs["input_ids"]
    assert (ids == model.config.image_token_id).sum() > 0
    if audio is not None:
        assert (ids == model.config.audio_token_id).sum() > 0
    loss = model(**inputs, labels=ids).loss
    assert math.isfinite(loss.item())
