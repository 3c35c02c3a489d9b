"""LoRA matrices stored in fp32, computed in bf16 on a bf16 base.

PEFT keeps the adapter weights in fp32 on a bf16 base (good: the optimizer's small updates
keep their precision) and casts each adapted layer's *input* to fp32 before the adapter
runs. That cast is a new fp32 copy of the activation per adapted layer, and autograd keeps it
for the backward pass, once per adapted layer (q, k and v each cast the same input): over a
third of what a Gemma 3 270M step saves for backward (docs/performance.md).

Here the adapter computes in its input's dtype instead: the fp32 weight is cast to bf16 for
the matmul (a [r x width] copy, differentiable, so the gradient lands in fp32 `.grad`), and
the bf16 input is saved once, shared with every other user of it. This is the usual mixed
precision recipe (fp32 master weights, bf16 compute), applied to the adapters only. Inputs
in fp16 or fp32 keep PEFT's behaviour (computed in fp32): fp16 gradients of a zero-initialised
B could underflow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class MixedPrecisionLinear(torch.nn.Linear):
    """An adapter matrix (PEFT's lora_A / lora_B) that computes in bf16 for bf16 inputs.

    Swapped in by class (`module.__class__`), so parameter names, `state_dict` keys and the
    saved adapter files are exactly PEFT's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.bfloat16:
            return super().forward(x.to(self.weight.dtype))
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


def compute_adapters_in_input_dtype(peft_model) -> int:
    """Make every plain LoRA layer of `peft_model` compute in its input's dtype (bf16 on a
    bf16 base); returns how many layers were changed. DoRA layers keep PEFT's fp32 path
    (their magnitude vector and weight norms are computed from the fp32 adapter weights)."""
    from peft.tuners.lora import LoraLayer

    changed = 0
    for module in peft_model.modules():
        if not isinstance(module, LoraLayer) or any(module.use_dora.values()):
            continue
        for adapters in (module.lora_A, module.lora_B):
            for linear in adapters.values():
                if type(linear) is torch.nn.Linear:
                    linear.__class__ = MixedPrecisionLinear
        # PEFT would otherwise cast the input to the adapter's fp32 before calling it.
        module.cast_input_dtype_enabled = False
        changed += 1
    return changed
