"""Gemma 3's RMSNorm and MLP with a smaller backward footprint: elementwise work recomputed in
the backward pass instead of kept.

The norm keeps its input in the model's dtype and recomputes the fp32 normalisation.

transformers' Gemma3RMSNorm computes in fp32 (`x.float()`), and autograd keeps that fp32 copy
of the input for the backward pass: four per decoder layer on [tokens x hidden], and the
per-head q/k norms on [tokens x heads x head_dim]. On a bf16 base that is twice the input's
bytes, for every norm of every layer (a Gemma 3 270M DPO step of 2 x 2 x 256 tokens: 270 MiB
of the 706 MiB it saves for backward). This function saves the bf16 input and the [tokens x 1]
reciprocal RMS instead: half the bytes, and an elementwise recomputation. The forward output
is bit-for-bit the module's own; the gradients are the same formula in fp32 (tests compare
them with autograd's to 1e-6).

The Liger-Kernel and Unsloth RMSNorm kernels keep the same two tensors for the same reason.

The MLP, down(gelu(gate(x)) * up(x)), keeps gate(x) and up(x) and recomputes gelu(gate(x))
and the product in the backward pass (torch.utils.checkpoint of that elementwise part only),
so the GELU's output is not kept: one [tokens x intermediate] tensor per layer (72 MiB of the
DPO step above), for one GELU per layer recomputed. Same operations, so the same gradients.
"""

from __future__ import annotations

import torch


class _GemmaRMSNorm(torch.autograd.Function):
    """y = x / rms(x) * (1 + w), computed in fp32 and returned in x's dtype."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        xf = x.float()
        rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        out = (xf * rstd) * (1.0 + weight.float())
        ctx.save_for_backward(x, rstd, weight)
        return out.type_as(x)

    @staticmethod
    def backward(ctx, grad):
        x, rstd, weight = ctx.saved_tensors
        normed = x.float() * rstd
        g = grad.float()
        scaled = g * (1.0 + weight.float())
        # d(x * rstd)/dx applied to `scaled`: rstd * (scaled - normed * mean(scaled * normed)).
        grad_x = rstd * (scaled - normed * (scaled * normed).mean(-1, keepdim=True))
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = (g * normed).reshape(-1, normed.shape[-1]).sum(0).to(weight.dtype)
        return grad_x.to(x.dtype), grad_w, None


def lean_gemma3_norms(model) -> int:
    """Make every Gemma3RMSNorm of `model` keep its input, not its fp32 copy, for backward;
    how many were changed. Swapped by class, so names and state dicts stay transformers'."""
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

    class LeanGemma3RMSNorm(Gemma3RMSNorm):
        def forward(self, x):
            if not torch.is_grad_enabled():
                return super().forward(x)
            return _GemmaRMSNorm.apply(x, self.weight, self.eps)

    return _swap_class(model, Gemma3RMSNorm, LeanGemma3RMSNorm)


def _gated(gate: torch.Tensor, up: torch.Tensor, act) -> torch.Tensor:
    return act(gate) * up


def lean_gemma3_mlps(model) -> int:
    """Make every Gemma3MLP of `model` recompute its GELU and product in the backward pass;
    how many were changed (swapped by class, as the norms)."""
    from torch.utils.checkpoint import checkpoint
    from transformers.models.gemma3.modeling_gemma3 import Gemma3MLP

    class LeanGemma3MLP(Gemma3MLP):
        def forward(self, x):
            gate, up = self.gate_proj(x), self.up_proj(x)
            if not torch.is_grad_enabled():
                return self.down_proj(self.act_fn(gate) * up)
            return self.down_proj(checkpoint(_gated, gate, up, self.act_fn, use_reentrant=False))

    return _swap_class(model, Gemma3MLP, LeanGemma3MLP)


def _swap_class(model, original: type, lean: type) -> int:
    """Give every module of exactly class `original` the class `lean` (a subclass: names,
    parameters and state dicts stay as they are); how many were changed."""
    changed = 0
    for module in model.modules():
        if type(module) is original:
            module.__class__ = lean
            changed += 1
    return changed
