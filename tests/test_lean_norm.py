"""Gemma 3's lean RMSNorm and MLP (models/lean_norm.py): the module's own output, autograd's
gradients, and the same DPO loss and LoRA gradients through a whole tiny model."""

from __future__ import annotations

import pytest
import torch

from gemmaforge.models.lean_norm import lean_gemma3_mlps, lean_gemma3_norms


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lean_norm_matches_the_module(dtype):
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

    torch.manual_seed(0)
    plain = Gemma3RMSNorm(64).to(dtype)
    with torch.no_grad():
        plain.weight.normal_()
    lean = Gemma3RMSNorm(64).to(dtype)
    lean.load_state_dict(plain.state_dict())
    assert lean_gemma3_norms(lean) == 1
    x = torch.randn(3, 5, 64, dtype=dtype, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    grad = torch.randn(3, 5, 64, dtype=dtype)
    a, b = plain(x), lean(x2)
    assert torch.equal(a, b)  # bit for bit
    a.backward(grad)
    b.backward(grad)
    scale = x.grad.float().abs().max()
    assert (x.grad.float() - x2.grad.float()).abs().max() <= 1e-6 * scale
    torch.testing.assert_close(plain.weight.grad, lean.weight.grad, rtol=1e-5, atol=1e-6)
    # Saved for backward: the input in its own dtype, not an fp32 copy.
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        lean(x2)
    assert all(t.dtype == dtype for t in saved if t.shape == x2.shape)


def test_dpo_loss_and_gradients_unchanged_through_the_model(tiny_dir):
    """The tiny Gemma 3 with LoRA: PreferenceLoss and its LoRA gradients with the lean norms
    and MLPs equal those with transformers' own, to fp32 summation order."""
    from transformers import AutoModelForCausalLM

    from gemmaforge.config import LoraConfig, TrainConfig
    from gemmaforge.models.lora import apply_lora
    from gemmaforge.train.preference import PreferenceLoss

    def run(lean: bool):
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(tiny_dir("gemma3"), dtype=torch.float32)
        model, _ = apply_lora(base, LoraConfig(r=4, alpha=8))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
        if lean:
            assert lean_gemma3_norms(model) > 0
            assert lean_gemma3_mlps(model) > 0
        model.train()
        ids = torch.randint(3, 200, (4, 24), generator=torch.Generator().manual_seed(1))
        labels = ids.clone()
        labels[:, :10] = -100
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
        batch["pairs"] = torch.tensor(2)
        loss = PreferenceLoss(model, TrainConfig(objective="dpo", beta=0.1))(batch)
        params = [p for p in model.parameters() if p.requires_grad]
        return loss, torch.autograd.grad(loss, params)

    (plain_loss, plain_grads), (lean_loss, lean_grads) = run(False), run(True)
    assert abs(lean_loss.item() - plain_loss.item()) < 1e-6
    assert abs(plain_loss.item() - 2 * 0.6931) > 1e-3  # a real margin
    for a, b in zip(lean_grads, plain_grads, strict=True):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()
