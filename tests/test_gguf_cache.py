"""A GGUF base is dequantised once: the second load reads the cached transformers folder, with
the same weights, tokenizer and hash, and the cache stays under its cap."""

from __future__ import annotations

import pytest
import torch

from gemmaforge.config import ModelConfig
from gemmaforge.models.load import load_model


@pytest.fixture(scope="module")
def tiny_gguf(tiny_dir, tmp_path_factory):
    from gemmaforge.export.gguf_model import write_gguf

    source = tiny_dir("gemma3")
    loaded = load_model(ModelConfig(name_or_path=str(source), dtype="fp32", device="cpu"))
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_gguf(
        loaded.model,
        loaded.tokenizer,
        loaded.family,
        source=str(source),
        path=path,
        gguf_type="f16",
        name="tiny",
    )
    return path


def load(path):
    cfg = ModelConfig(name_or_path=str(path), dtype="fp32", device="cpu")
    return load_model(cfg, for_training=False)


def test_second_load_reads_the_cache_with_the_same_model(tiny_gguf, tmp_path, monkeypatch):
    from gemmaforge.models import gguf_cache

    monkeypatch.setenv("GEMMAFORGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GEMMAFORGE_GGUF_CACHE_GB", "1")
    first = load(tiny_gguf)
    entries = list(gguf_cache.folder().iterdir())
    assert len(entries) == 1 and (entries[0] / "config.json").is_file()
    second = load(tiny_gguf)
    assert second.source == str(tiny_gguf) and second.source_sha256 == first.source_sha256
    assert type(second.model) is type(first.model) and second.family == first.family
    for text in ("The patient reported a mild headache.", "  two  spaces\nünïcode 日本語"):
        assert second.tokenizer(text).input_ids == first.tokenizer(text).input_ids
    assert second.tokenizer.chat_template == first.tokenizer.chat_template
    assert len(second.tokenizer) == len(first.tokenizer)
    text = "The patient reported a mild headache."
    ids = torch.tensor([first.tokenizer(text).input_ids])
    with torch.no_grad():
        assert torch.equal(second.model(input_ids=ids).logits, first.model(input_ids=ids).logits)


def test_the_cache_is_capped_and_can_be_off(tiny_gguf, tmp_path, monkeypatch):
    from gemmaforge.models import gguf_cache

    monkeypatch.setenv("GEMMAFORGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GEMMAFORGE_GGUF_CACHE_GB", "0")
    load(tiny_gguf)
    assert not gguf_cache.folder().exists()
    # A cap smaller than two entries: the older one goes when the newer is written.
    monkeypatch.setenv("GEMMAFORGE_GGUF_CACHE_GB", "0.02")
    stale = gguf_cache.folder() / ("0" * 32 + "-float32")
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")
    (stale / "model.safetensors").write_bytes(b"\0" * (20 * 2**20))
    load(tiny_gguf)
    names = [p.name for p in gguf_cache.folder().iterdir()]
    assert stale.name not in names and len(names) == 1
