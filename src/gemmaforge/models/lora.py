"""Attach LoRA (or rsLoRA / DoRA) adapters to a base model with PEFT, tower by tower.

`lora.towers` picks what is adapted: the language model's decoder (default), and opt-in the
vision and audio encoders. Targets are explicit module names, so nothing is wrapped by
accident (a plain `q_proj` list would also catch Gemma 3n's audio attention). A requested
tower that matches no module is an error, never a silent no-op.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from gemmaforge.config import LoraConfig
from gemmaforge.errors import UserError, problem
from gemmaforge.models.families import TEXT_LINEARS, lora_target_regex
from gemmaforge.models.peft_compat import quiet_checkpointing_probe
from gemmaforge.models.structure import TOWER_MODULES, inner

# Per tower: the submodules of `model.model` that make it up (encoder, then its projection
# into the language model's embedding space).


@dataclass
class LoraReport:
    """What `apply_lora` wrapped: module counts per tower and trainable parameters."""

    wrapped: dict[str, int]
    trainable_params: int
    total_params: int

    def summary(self) -> str:
        towers = ", ".join(f"{tower} {count}" for tower, count in self.wrapped.items())
        share = 100 * self.trainable_params / max(self.total_params, 1)
        return (
            f"LoRA on {sum(self.wrapped.values())} modules ({towers}); "
            f"{self.trainable_params:,} trainable ({share:.3f}% of {self.total_params:,})"
        )


def target_modules(model, cfg: LoraConfig) -> dict[str, list[str]]:
    """Module names to wrap, per requested tower; a UserError for a tower that has none."""
    targets: dict[str, list[str]] = {}
    for tower in cfg.towers:
        names = _text_targets(model, cfg) if tower == "text" else _tower_targets(model, tower)
        if not names:
            raise UserError(
                problem(
                    "lora.towers",
                    f"{tower}: no layer to adapt ({_why_empty(model, tower)})",
                    "remove it from lora.towers",
                )
            )
        targets[tower] = names
    return targets


def _text_targets(model, cfg: LoraConfig) -> list[str]:
    requested = tuple(cfg.targets) if cfg.targets else TEXT_LINEARS
    pattern = re.compile(lora_target_regex(requested))
    names = [name for name, _ in model.named_modules() if pattern.fullmatch(name)]
    found = Counter(name.rsplit(".", 1)[-1] for name in names)
    missing = [name for name in requested if not found[name]]
    if cfg.targets and missing:
        raise UserError(
            problem(
                "lora.targets",
                f"{', '.join(missing)} match no linear layer in the language model",
                f"use names from {', '.join(TEXT_LINEARS)}",
            )
        )
    return names


def _tower_targets(model, tower: str) -> list[str]:
    """Every nn.Linear inside the tower and its projection.

    Gemma 4's towers wrap their linears in `Gemma4ClippableLinear` (input/output clamping),
    which PEFT refuses to adapt; choosing plain `nn.Linear` modules selects the wrapper's
    inner `.linear` instead, so the clamping stays around the adapted layer. Gemma 3n's timm
    vision encoder has attention as 1x1 convolutions and no linear at all: there only the
    projection into the language model is adapted. Gemma 3's projector
    (`multi_modal_projector`) is a bare weight matrix: there only the SigLIP tower is.
    """
    import torch

    body = inner(model)
    names = []
    for attribute in TOWER_MODULES[tower]:
        module = getattr(body, attribute, None)
        if module is None:
            continue
        for name, child in module.named_modules():
            if isinstance(child, torch.nn.Linear):
                names.append(f"model.{attribute}.{name}" if name else f"model.{attribute}")
    return names


def _why_empty(model, tower: str) -> str:
    body = inner(model)
    if tower != "text" and getattr(body, TOWER_MODULES[tower][0], None) is None:
        return f"the model has no {tower} tower"
    return "no linear layer matched"


def peft_config(cfg: LoraConfig, modules: list[str]):
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        use_rslora=cfg.rslora,
        use_dora=cfg.dora,
        # One regex of the exact names, not a list: PEFT saves a long list condensed to its
        # suffixes (q_proj, ...), which on reload also match the towers' Gemma4ClippableLinear.
        target_modules="|".join(re.escape(name) for name in modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def apply_lora(model, cfg: LoraConfig):
    """Wrap `model` with fresh LoRA adapters; returns (peft_model, LoraReport).

    LoRA weights stay in fp32 even on a bf16 base (PEFT's `autocast_adapter_dtype`), so the
    optimizer state and small updates keep full precision; on a bf16 base they compute in bf16
    (`lora_precision.py`), so no fp32 copy of each adapted layer's input is kept.

    On a 4-bit base (model.quantize=4bit) PEFT wraps the bitsandbytes Linear4bit layers
    itself. peft's `prepare_model_for_kbit_training` is deliberately not called: it upcasts
    every unquantised parameter to fp32 (the 262,144-row embedding alone: +1 GB on E2B), which
    bf16 compute does not need; its other steps are done already (`load_model` freezes the
    base, and checkpointing is non-reentrant, so inputs need no `requires_grad`).
    """
    from peft import get_peft_model

    quiet_checkpointing_probe()

    from gemmaforge.models.lora_precision import compute_adapters_in_input_dtype

    targets = target_modules(model, cfg)
    modules = [name for names in targets.values() for name in names]
    peft_model = get_peft_model(model, peft_config(cfg, modules), autocast_adapter_dtype=True)
    compute_adapters_in_input_dtype(peft_model)
    trainable, total = peft_model.get_nb_trainable_parameters()
    wrapped = {tower: len(names) for tower, names in targets.items()}
    return peft_model, LoraReport(wrapped, trainable, total)
