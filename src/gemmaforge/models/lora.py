"""Attach LoRA (or rsLoRA / DoRA) adapters to a base model with PEFT, scoped per family.

Targets are matched by a regex on module names that only reaches the language model's
decoder, so the vision/audio towers are never wrapped by accident. A target list that matches
nothing is an error, never a silent no-op.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from gemmaforge.config import LoraConfig
from gemmaforge.errors import UserError, problem
from gemmaforge.models.families import TEXT_LINEARS, lora_target_regex


@dataclass
class LoraReport:
    """What `apply_lora` wrapped: module counts per target name and trainable parameters."""

    wrapped: dict[str, int]
    trainable_params: int
    total_params: int

    def summary(self) -> str:
        names = ", ".join(f"{name} x{count}" for name, count in sorted(self.wrapped.items()))
        share = 100 * self.trainable_params / max(self.total_params, 1)
        return (
            f"LoRA on {sum(self.wrapped.values())} text modules ({names}); "
            f"{self.trainable_params:,} trainable ({share:.3f}% of {self.total_params:,})"
        )


def peft_config(cfg: LoraConfig):
    from peft import LoraConfig as PeftLoraConfig

    targets = tuple(cfg.targets) if cfg.targets else TEXT_LINEARS
    return PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        use_rslora=cfg.rslora,
        use_dora=cfg.dora,
        target_modules=lora_target_regex(targets),
        bias="none",
        task_type="CAUSAL_LM",
    )


def apply_lora(model, cfg: LoraConfig):
    """Wrap `model` with fresh LoRA adapters; returns (peft_model, LoraReport).

    LoRA weights stay in fp32 even on a bf16 base (PEFT's `autocast_adapter_dtype`), so the
    optimizer state and small updates keep full precision.
    """
    import re

    from peft import get_peft_model

    config = peft_config(cfg)
    pattern = re.compile(config.target_modules)
    matched = Counter(
        name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if pattern.fullmatch(name)
    )
    requested = tuple(cfg.targets) if cfg.targets else TEXT_LINEARS
    missing = [name for name in requested if matched[name] == 0]
    if cfg.targets and missing:
        raise UserError(
            problem(
                "lora.targets",
                f"{', '.join(missing)} match no linear layer in the language model",
                f"use names from {', '.join(TEXT_LINEARS)}",
            )
        )
    if not matched:
        raise UserError(problem("lora.targets", "no language-model layer matched"))
    peft_model = get_peft_model(model, config, autocast_adapter_dtype=True)
    trainable, total = peft_model.get_nb_trainable_parameters()
    return peft_model, LoraReport(dict(matched), trainable, total)
