"""What a model is made of, read from its config without loading any weight.

The model is built on PyTorch's `meta` device (shapes, no storage), so parameter counts per
part are exact for every family and variant without hand-written formulas per architecture:
the language model's decoder layers, its embedding tables (Gemma 3n/4 also have per-layer
embeddings), and the vision/audio towers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from gemmaforge.errors import UserError, problem
from gemmaforge.models.families import TEXT_LINEARS, Family, family_of, text_config

TOWER_PREFIXES = {
    "vision": ("model.vision_tower.", "model.embed_vision.", "model.multi_modal_projector."),
    "audio": ("model.audio_tower.", "model.embed_audio."),
}


@dataclass
class ModelShape:
    """Sizes that decide memory and compute; every count is in parameters (elements)."""

    family: Family
    model_type: str
    multimodal: bool
    vocab: int
    hidden: int
    layers: int
    intermediate: int
    """Mean MLP width over the decoder layers (Gemma 3n may vary it per layer)."""
    attention_width: int
    """Query heads x head dim (the widest attention projection output)."""
    kv_width: int
    sliding_window: int | None
    full_layers: int
    """Decoder layers with full (not sliding-window) attention."""
    layer_params: int
    """All decoder layer weights (attention, MLP, norms, Gemma 3n's AltUp/Laurel)."""
    embedding_params: int
    """Token embedding tables (the LM head is tied to the main one)."""
    other_text_params: int
    """The rest of the language model (final norm, Gemma 3n/4 per-layer projections)."""
    tower_params: dict[str, int] = field(default_factory=dict)
    target_shapes: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    """(in, out) features of the language model's LoRA-targetable linears, by name."""

    @property
    def total_params(self) -> int:
        towers = sum(self.tower_params.values())
        return self.layer_params + self.embedding_params + self.other_text_params + towers

    def lora_params(self, rank: int, targets: list[str] | None = None) -> int:
        names = targets or list(TEXT_LINEARS)
        return sum(rank * (i + o) for n in names for i, o in self.target_shapes.get(n, []))


def read_config(source: str):
    """The transformers config of a local folder or .gguf file (metadata only)."""
    from transformers import AutoConfig

    path = Path(source).expanduser()
    try:
        if path.is_file() and path.suffix == ".gguf":
            return AutoConfig.from_pretrained(
                str(path.parent), gguf_file=path.name, trust_remote_code=False
            )
        if path.is_dir():
            from gemmaforge.models.load import check_family_first

            # Plain JSON first: a folder's own code must never be imported to read it.
            check_family_first(str(path))
            return AutoConfig.from_pretrained(
                str(path), local_files_only=True, trust_remote_code=False
            )
    except (OSError, ValueError, KeyError) as err:
        raise UserError(
            problem(source, f"cannot read the model config ({err})", "pass a Gemma folder or .gguf")
        ) from err
    raise UserError(
        problem(
            source,
            "is not a local model folder or .gguf file",
            "pass a local folder with config.json, or a .gguf file (plan reads no hub ids)",
        )
    )


def model_shape(config, where: str | None = None) -> ModelShape:
    """Exact parameter counts of the model `config` describes, from a meta-device build."""
    import torch
    import transformers

    family = family_of(config, where)
    multimodal = family.is_multimodal(config)
    class_name = family.multimodal_class if multimodal else family.causal_lm_class
    with torch.device("meta"):
        model = getattr(transformers, class_name)._from_config(config)
    text = text_config(config)
    counts = {"layers": 0, "embed": 0, "other": 0, "vision": 0, "audio": 0}
    layer_pattern = re.compile(r"^model\.(?:language_model\.)?layers\.\d+\.")
    for name, param in model.named_parameters():
        tower = next((t for t, ps in TOWER_PREFIXES.items() if name.startswith(ps)), None)
        if tower:
            counts[tower] += param.numel()
        elif layer_pattern.match(name):
            counts["layers"] += param.numel()
        elif "embed_tokens" in name:
            counts["embed"] += param.numel()
        elif not name.startswith("lm_head."):
            counts["other"] += param.numel()
    targets: dict[str, list[tuple[int, int]]] = {}
    for name, module in model.named_modules():
        if layer_pattern.match(name) and isinstance(module, torch.nn.Linear):
            leaf = name.rsplit(".", 1)[-1]
            if leaf in TEXT_LINEARS:
                targets.setdefault(leaf, []).append((module.in_features, module.out_features))
    # Widths from the built layers: Gemma 3n varies the MLP per layer, Gemma 4 the head size.
    mlp = [o for _, o in targets.get("up_proj", [])] or [text.hidden_size]
    layer_types = getattr(text, "layer_types", None) or ["full_attention"] * len(mlp)
    return ModelShape(
        family=family,
        model_type=config.model_type,
        multimodal=multimodal,
        vocab=text.vocab_size,
        hidden=text.hidden_size,
        layers=text.num_hidden_layers,
        intermediate=round(sum(mlp) / len(mlp)),
        attention_width=max(o for _, o in targets["q_proj"]),
        kv_width=max(o for _, o in targets["k_proj"]),
        sliding_window=getattr(text, "sliding_window", None),
        full_layers=sum(t == "full_attention" for t in layer_types),
        layer_params=counts["layers"],
        embedding_params=counts["embed"],
        other_text_params=counts["other"],
        tower_params={t: counts[t] for t in ("vision", "audio") if counts[t]},
        target_shapes=targets,
    )
