"""`gguf`: the merged model as one GGUF file for llama.cpp (and Ollama). Gemma 3 text only.

The file holds llama.cpp's `gemma3` architecture: hyperparameters under `gemma3.*` (including
the per-layer sliding-window pattern and both RoPE bases, written explicitly rather than left
to llama.cpp's defaults), the tokenizer section (`gguf_vocab.py`), and the weights renamed to
llama.cpp's tensor names by the `gguf` package's own table. Two conversions matter:

- Gemma's RMSNorm scales by `1 + weight`, llama.cpp's by `weight`: norm weights get +1.
- Tied embeddings: `token_embd` doubles as the output head, so `lm_head` is not written.

Weight matrices are stored as f16, bf16 or q8_0 (`--gguf-type`); norms stay f32, as
llama.cpp's own converter does. Multimodal checkpoints (Gemma 3 4B+, Gemma 3n, Gemma 4) are
refused: their vision/audio towers need llama.cpp's separate projector files, not written here.
"""

from __future__ import annotations

from pathlib import Path

from gemmaforge.errors import UserError, problem
from gemmaforge.export.common import Job, chat_template, run_model_type
from gemmaforge.export.gguf_vocab import read_vocab, write_vocab
from gemmaforge.runs import Run

FILE_NAME = "model.gguf"
LOADS_BASE = True
SUPPORTED_MODEL_TYPES = ("gemma3_text",)
_F16_MAX = 65504.0


def problems(run: Run, fmt: str = "gguf") -> list[str]:
    """Why this run's base cannot become a GGUF here (empty if it can). `fmt` is the format
    asked for (ollama exports a GGUF too), so the refusal names it."""
    model_type = run_model_type(run)
    if model_type in SUPPORTED_MODEL_TYPES:
        return []
    what = "GGUF export" if fmt == "gguf" else f"--format {fmt} (a GGUF inside)"
    return [
        problem(
            str(run.dir),
            f"{what} supports Gemma 3 text checkpoints (model_type gemma3_text: Gemma 3 "
            f"270M and 1B); this run's base is {model_type} ({run.family}), whose vision/audio "
            "towers and per-family text layers are not written to GGUF here",
            "export --format merged (transformers) or --format peft (the adapter) instead",
        )
    ]


def write(job: Job, out: Path) -> None:
    merged = job.merged()
    loaded = merged.loaded
    write_gguf(
        merged.model,
        loaded.tokenizer,
        loaded.family,
        source=loaded.source,
        path=out / FILE_NAME,
        gguf_type=job.gguf_type,
        name=job.run.dir.name,
    )


def write_gguf(model, tokenizer, family, *, source: str, path: Path, gguf_type: str, name: str):
    """Write `model` (a Gemma 3 text model, no PEFT wrappers) to the GGUF file `path`.

    `source` is the base checkpoint the vocabulary is read from (see `gguf_vocab`).
    """
    import gguf

    config = model.config
    _raise(source, config_problems(config))
    vocab = read_vocab(source, tokenizer)
    if len(vocab.tokens) > config.vocab_size:
        too_many = f"{len(vocab.tokens)} tokens for {config.vocab_size} embedding rows"
        _raise(source, [f"the tokenizer has {too_many}"])
    vocab.pad_to(config.vocab_size)

    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GEMMA3])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    _write_hparams(writer, config)
    file_type, tensors = _tensors(model, gguf_type)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    write_vocab(writer, vocab, tokenizer, family, chat_template(tokenizer, family))
    for tensor_name, data, raw_dtype in tensors:
        writer.add_tensor(tensor_name, data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def config_problems(config) -> list[str]:
    """Settings of a Gemma 3 text config that llama.cpp's gemma3 graph would compute
    differently from transformers (empty for the released 270M and 1B)."""
    found = []
    if getattr(config, "attn_logit_softcapping", None):
        found.append("attention logit soft-capping is set; llama.cpp's gemma3 has none")
    if getattr(config, "use_bidirectional_attention", False):
        found.append("bidirectional attention (EmbeddingGemma) is not a causal LM")
    if config.hidden_activation != "gelu_pytorch_tanh":
        found.append(f"activation {config.hidden_activation} (llama.cpp uses tanh-GELU)")
    # llama.cpp derives the query scale from the shape (head_dim; hidden/heads for 27B).
    expected = (
        config.hidden_size / config.num_attention_heads
        if config.num_hidden_layers == 62
        else config.head_dim
    )
    if config.query_pre_attn_scalar != expected:
        found.append(
            f"query_pre_attn_scalar {config.query_pre_attn_scalar} differs from the {expected} "
            "llama.cpp assumes for this shape"
        )
    for layer_type, rope in config.rope_parameters.items():
        if rope.get("rope_type", "default") != "default":
            found.append(f"RoPE scaling {rope['rope_type']} on {layer_type} layers")
    return found


def _write_hparams(writer, config) -> None:
    rope = config.rope_parameters
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(rope["full_attention"]["rope_theta"])
    # llama.cpp assumes "5 sliding, 1 full" and one RoPE base unless told otherwise.
    writer.add_sliding_window(config.sliding_window)
    writer.add_sliding_window_pattern([t == "sliding_attention" for t in config.layer_types])
    if "sliding_attention" in rope:
        writer.add_rope_freq_base_swa(rope["sliding_attention"]["rope_theta"])
    if config.final_logit_softcapping:
        writer.add_final_logit_softcapping(config.final_logit_softcapping)


def _tensors(model, gguf_type: str):
    """(file type, [(gguf name, numpy data, raw dtype or None)]) of the model's weights."""
    import gguf
    import numpy as np

    qtype, file_type = {
        "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
        "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
        "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    }[gguf_type]
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.GEMMA3, model.config.num_hidden_layers)
    out = []
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight",))
        if name is None:
            raise UserError(problem(hf_name, "has no llama.cpp gemma3 tensor name"))
        data = tensor.detach().float().cpu().numpy()
        if hf_name.endswith("norm.weight"):
            out.append((name, (data + 1.0).astype(np.float32), None))
            continue
        if gguf_type == "f16" and float(np.abs(data).max()) > _F16_MAX:
            raise UserError(
                problem(hf_name, "has values beyond the f16 range", "use --gguf-type bf16")
            )
        if qtype == gguf.GGMLQuantizationType.F16:
            out.append((name, data.astype(np.float16), None))
        else:
            out.append((name, gguf.quants.quantize(data, qtype), qtype))
    return file_type, out


def _raise(source: str, found: list[str]) -> None:
    if found:
        raise UserError([problem(source, f"cannot be written to GGUF: {p}") for p in found])
