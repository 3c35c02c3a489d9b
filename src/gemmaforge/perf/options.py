"""Speed and memory options of a training run: activation checkpointing (optionally offloaded
to host memory) and torch.compile of the decoder layers.

Checked before the model loads, so an option that cannot work on this device fails at once.
"""

from __future__ import annotations

from gemmaforge.config import Config
from gemmaforge.errors import UserError, problem


def check_options(cfg: Config) -> None:
    """Refuse option combinations that cannot do what they promise on the chosen device."""
    from gemmaforge.models.load import resolve_device

    problems = []
    if cfg.train.offload_activations:
        device = resolve_device(cfg.model.device)
        if device.type == "cpu":
            problems.append(
                problem(
                    "train.offload_activations",
                    "moves checkpointed activations from the accelerator to host memory, but "
                    "this run trains on the CPU, where they already are",
                    "remove it (train.gradient_checkpointing=true alone saves the memory on CPU)",
                )
            )
        if not cfg.train.gradient_checkpointing:
            problems.append(
                problem(
                    "train.offload_activations",
                    "offloads the activations kept by gradient checkpointing, which is off",
                    "also set train.gradient_checkpointing=true",
                )
            )
    if problems:
        raise UserError(problems)


def apply_options(model, cfg: Config) -> list[str]:
    """Turn on checkpointing/offload and compile on a PEFT-wrapped model; lines to report."""
    lines = []
    base = model.get_base_model()
    if cfg.train.gradient_checkpointing:
        # transformers' own implementation; with offload it wraps each checkpoint in
        # torch.autograd.graph.save_on_cpu, so the saved layer inputs live in pinned host memory.
        base.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False},
            offload=cfg.train.offload_activations,
        )
        where = " (offloaded to host memory)" if cfg.train.offload_activations else ""
        lines.append(f"gradient checkpointing on every decoder layer{where}")
    if cfg.train.compile:
        layers = decoder_layers(base)
        for layer in layers:
            # Module.compile compiles in place: parameter names, and so saving, resuming and
            # the PEFT adapter files, stay exactly as without it. Layers are compiled one by
            # one (same code, shared graph) rather than the whole model, whose Python control
            # flow (masks, per-layer embeddings, towers) would break the graph anyway.
            layer.compile(dynamic=None)
        lines.append(f"torch.compile on {len(layers)} decoder layers (compiles on the first steps)")
    return lines


def decoder_layers(base) -> list:
    """The decoder layers of any Gemma class (text-only or multimodal)."""
    inner = base.model
    language = getattr(inner, "language_model", inner)
    return list(language.layers)
