"""Where things are inside a loaded Gemma model: its decoder layers, the decoder and head the
fused loss needs, the vision/audio towers. All knowledge of transformers' module tree lives
here (and in families.py), so training, benchmarks and the hub never walk it themselves.

Every Gemma class (Gemma3ForCausalLM, Gemma3n/Gemma4ForConditionalGeneration) keeps the
towers and the decoder under `.model` and the LM head beside it; multimodal classes nest the
decoder as `.model.language_model`.
"""

from __future__ import annotations

from typing import Any

from gemmaforge.models.families import text_config

TOWER_MODULES = {
    "vision": ("vision_tower", "embed_vision"),
    "audio": ("audio_tower", "embed_audio"),
}
"""Per tower: the encoder's attribute on `.model`, then its embedder into the language model."""

MEDIA_TOWER = {"image": "vision", "audio": "audio", "video": "vision"}
"""Which tower encodes each kind of media part."""


def base_of(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def inner(model: Any) -> Any:
    """The `.model` that holds the towers and the decoder (the model itself if it has none)."""
    return getattr(model, "model", model)


def decoder_layers(base: Any) -> list:
    """The decoder layers of any Gemma class (text-only or multimodal)."""
    body = base.model
    language = getattr(body, "language_model", body)
    return list(language.layers)


def model_parts(model: Any) -> tuple[Any, Any, float | None]:
    """(decoder, lm_head, softcap) of a Gemma model, bare or PEFT-wrapped.

    `model.model` runs the towers and the decoder and stops before the head for every Gemma
    class, so the fused loss can take the hidden states and apply the head itself.
    """
    base = base_of(model)
    softcap = getattr(text_config(base.config), "final_logit_softcapping", None)
    return base.model, base.lm_head, softcap


def release_unused_towers(model: Any, used_kinds: set[str], towers: list[str]) -> list[str]:
    """Drop the vision/audio encoders that no example uses (`used_kinds`: image, audio) and
    that get no LoRA (`towers`), and say so.

    A text-only run on Gemma 3n or Gemma 4 would otherwise keep every encoder's weights in
    memory for nothing (hundreds of MB on E2B/E4B). The forward pass only calls an encoder
    when pixels or audio features are given; the small token embedders (`embed_vision`,
    `embed_audio`) are used for every batch and stay. The adapter saved is unaffected.
    """
    used = {MEDIA_TOWER[kind] for kind in used_kinds}
    body = inner(model)
    lines = []
    for tower, (encoder, _) in TOWER_MODULES.items():
        module = getattr(body, encoder, None)
        if module is None or tower in used or tower in towers:
            continue
        size = sum(p.numel() * p.element_size() for p in module.parameters())
        setattr(body, encoder, None)
        lines.append(f"{tower} encoder unused by this data: released {size / 2**20:.1f} MiB")
    return lines
