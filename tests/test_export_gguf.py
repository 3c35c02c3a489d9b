"""`gguf` and `gguf-lora` exports: what the files hold, read back with the `gguf` package, and
what llama.cpp computes from them (when llama-cpp-python is installed)."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gemmaforge.errors import UserError
from gemmaforge.export import export
from gemmaforge.infer.load import load_run
from gemmaforge.runs import open_run
from test_train import run_config, write_task

needs_llama_cpp = pytest.mark.skipif(
    not importlib.util.find_spec("llama_cpp"), reason="llama-cpp-python is not installed"
)
# Longer than the tiny model's 16-token sliding window, so both attention kinds are exercised.
TEXT = "The patient reported a mild headache and a cough for three days; no fever was measured."


@pytest.fixture(scope="module")
def tiny(tiny_run, tmp_path_factory):
    """The plain tiny Gemma 3 run, its gguf (f16) export, and its fp32 base + adapter."""
    run = tiny_run("plain")
    path = export(run, "gguf", tmp_path_factory.mktemp("gguf") / "out") / "model.gguf"
    loaded, model = load_run(open_run(run), device="cpu", dtype="fp32")
    return SimpleNamespace(run=run, path=path, loaded=loaded, model=model)


def hf_logits(model, ids) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float().numpy()


def llama_logits(llm, ids) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)])


def test_gguf_holds_every_weight_with_llama_cpp_names_and_shapes(tiny):
    import gguf

    reader = gguf.GGUFReader(tiny.path)
    config = tiny.loaded.model.config
    per_layer = 13  # q, k, v, o, q-norm, k-norm, gate, up, down, four block norms
    assert len(reader.tensors) == 2 + per_layer * config.num_hidden_layers  # + embed, final norm
    tensors = {t.name: t for t in reader.tensors}
    assert "output.weight" not in tensors  # tied: token_embd is the output head
    q = tensors["blk.0.attn_q.weight"]
    assert list(q.shape) == [config.hidden_size, config.num_attention_heads * config.head_dim]
    assert q.tensor_type == gguf.GGMLQuantizationType.F16
    assert list(tensors["token_embd.weight"].shape) == [config.hidden_size, config.vocab_size]
    # Gemma's RMSNorm scales by 1 + weight; llama.cpp's by weight.
    norm = tensors["blk.0.attn_norm.weight"]
    assert norm.tensor_type == gguf.GGMLQuantizationType.F32
    hf_norm = tiny.model.get_base_model().model.layers[0].input_layernorm.weight.detach().numpy()
    np.testing.assert_allclose(np.array(norm.data), hf_norm + 1, rtol=1e-6)


def test_gguf_metadata_describes_the_model_and_tokenizer(tiny):
    import gguf

    fields = {k: f.contents() for k, f in gguf.GGUFReader(tiny.path).fields.items()}
    config, tok = tiny.loaded.model.config, tiny.loaded.tokenizer
    assert fields["general.architecture"] == "gemma3"
    assert fields["gemma3.block_count"] == config.num_hidden_layers
    assert fields["gemma3.attention.head_count_kv"] == config.num_key_value_heads
    assert fields["gemma3.attention.sliding_window"] == config.sliding_window
    swa = [t == "sliding_attention" for t in config.layer_types]
    assert fields["gemma3.attention.sliding_window_pattern"] == swa
    assert fields["gemma3.rope.freq_base_swa"] == 10000.0
    assert fields["gemma3.final_logit_softcapping"] == config.final_logit_softcapping
    assert fields["tokenizer.ggml.model"] == "gpt2"
    assert len(fields["tokenizer.ggml.tokens"]) == config.vocab_size
    assert fields["tokenizer.ggml.bos_token_id"] == tok.bos_token_id == 2
    assert fields["tokenizer.ggml.eot_token_id"] == tok.convert_tokens_to_ids("<end_of_turn>")
    assert fields["tokenizer.ggml.add_bos_token"] is True
    assert "<start_of_turn>" in fields["tokenizer.chat_template"]


@pytest.mark.parametrize("kind", ["bf16", "q8_0"])
def test_gguf_weight_types(tiny_run, tmp_path, kind):
    import gguf

    path = export(tiny_run("plain"), "gguf", tmp_path / kind, gguf_type=kind) / "model.gguf"
    tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}
    assert tensors["blk.1.ffn_up.weight"].tensor_type.name == kind.upper()
    assert tensors["blk.1.ffn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32


def test_gguf_lora_holds_the_adapter_in_peft_layout(tiny, tmp_path):
    import gguf
    from safetensors.torch import load_file

    path = export(tiny.run, "gguf-lora", tmp_path / "lora") / "adapter.gguf"
    reader = gguf.GGUFReader(path)
    fields = {k: f.contents() for k, f in reader.fields.items()}
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["adapter.lora.alpha"] == 16.0  # the run's alpha (rank 8, no rsLoRA)
    peft = load_file(tiny.run / "adapter" / "adapter_model.safetensors")
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == len(peft)
    a = peft["base_model.model.model.layers.2.self_attn.q_proj.lora_A.weight"]
    got = np.array(tensors["blk.2.attn_q.weight.lora_a"].data)
    np.testing.assert_array_equal(got, a.numpy())


def test_multimodal_families_are_refused_with_what_is_supported(tiny_dir, tmp_path):
    from gemmaforge.train.trainer import train

    data = write_task(tmp_path / "train.jsonl", rows=8)
    run = train(run_config(tiny_dir("gemma3n"), data, tmp_path / "run", max_steps=1)).run_dir
    for fmt in ("gguf", "ollama", "gguf-lora"):
        with pytest.raises(UserError) as err:
            export(run, fmt, tmp_path / fmt)
        assert "supports Gemma 3 text checkpoints" in str(err.value)
        # It names the format asked for, not another one.
        assert ("GGUF export supports" if fmt == "gguf" else f"--format {fmt} (a GGUF") in str(
            err.value
        )
        assert "gemma3n" in str(err.value) and "--format merged" in str(err.value)
        assert not (tmp_path / fmt).exists()


@needs_llama_cpp
def test_llama_cpp_computes_what_transformers_computes(tiny):
    from llama_cpp import Llama

    llm = Llama(model_path=str(tiny.path), logits_all=True, verbose=False, n_ctx=128)
    ids = tiny.loaded.tokenizer(TEXT).input_ids
    assert llm.tokenize(TEXT.encode(), add_bos=True) == ids
    assert len(ids) > tiny.loaded.model.config.sliding_window
    got, expected = llama_logits(llm, ids), hf_logits(tiny.model, ids)
    assert np.abs(got - expected).max() < 0.05  # f16 weights
    assert (got.argmax(-1) == expected.argmax(-1)).all()


@needs_llama_cpp
def test_llama_cpp_applies_the_lora_gguf_to_a_base_gguf(tiny, tmp_path):
    from llama_cpp import Llama

    from gemmaforge.config import ModelConfig
    from gemmaforge.export.gguf_model import write_gguf
    from gemmaforge.models.load import load_model

    run = open_run(tiny.run)
    base = load_model(ModelConfig(name_or_path=run.base_model, dtype="fp32", device="cpu"))
    write_gguf(
        base.model,
        base.tokenizer,
        base.family,
        source=run.base_model,
        path=tmp_path / "base.gguf",
        gguf_type="f16",
        name="base",
    )
    adapter = export(tiny.run, "gguf-lora", tmp_path / "lora") / "adapter.gguf"
    ids = tiny.loaded.tokenizer(TEXT).input_ids
    expected = hf_logits(tiny.model, ids)

    def logits_with(lora: str | None) -> np.ndarray:
        llm = Llama(
            model_path=str(tmp_path / "base.gguf"),
            lora_path=lora,
            logits_all=True,
            verbose=False,
            n_ctx=128,
        )
        return llama_logits(llm, ids)

    assert np.abs(logits_with(None) - expected).max() > 0.5  # the bare base is not the run
    assert np.abs(logits_with(str(adapter)) - expected).max() < 0.05
