"""LoRA adapters in fp32 compute in bf16 on a bf16 base: same loss and gradients as PEFT's
fp32 path within bf16 rounding, far fewer bytes saved for the backward pass, the same
adapter files; and on an fp32 base, exactly PEFT's numbers."""

from __future__ import annotations

import pytest
import torch

from gemmaforge.config import LoraConfig, ModelConfig
from gemmaforge.models.load import load_model
from gemmaforge.perf.shapes import model_shape
from gemmaforge.train.loss import batch_loss


def adapted(model_dir, dtype: str, mixed: bool):
    """The tiny model with LoRA (seeded init, B randomised so every adapter matters)."""
    from peft import get_peft_model

    from gemmaforge.models.lora import apply_lora, peft_config, target_modules

    model = load_model(ModelConfig(name_or_path=str(model_dir), dtype=dtype)).model
    torch.manual_seed(0)
    cfg = LoraConfig(r=8, alpha=16)
    if mixed:
        peft_model, _ = apply_lora(model, cfg)
    else:
        # PEFT's own path: the input cast to the adapters' fp32 before they run.
        modules = [n for names in target_modules(model, cfg).values() for n in names]
        peft_model = get_peft_model(model, peft_config(cfg, modules), autocast_adapter_dtype=True)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.05)
    peft_model.train()
    return peft_model


def batch():
    torch.manual_seed(1)
    ids = torch.randint(3, 200, (2, 48))
    labels = ids.clone()
    labels[:, :16] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def loss_grads_saved(model):
    """Mean loss, LoRA gradients (fp32), and the bytes autograd kept for the backward pass."""
    storages: dict[int, int] = {}

    def keep(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        total, count = batch_loss(model, batch(), 64)
    (total / count).backward()
    grads = {n: p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None}
    return (total / count).item(), grads, sum(storages.values())


def test_bf16_adapters_match_peft_and_save_less(tiny_dir):
    model_dir = tiny_dir("gemma3")
    reference = adapted(model_dir, "bf16", mixed=False)
    mixed = adapted(model_dir, "bf16", mixed=True)
    ref_loss, ref_grads, ref_saved = loss_grads_saved(reference)
    loss, grads, saved = loss_grads_saved(mixed)

    # The weights and the optimizer's view of them are unchanged: fp32, PEFT's names.
    assert mixed.state_dict().keys() == reference.state_dict().keys()
    assert all(p.dtype == torch.float32 for p in mixed.parameters() if p.requires_grad)
    assert grads.keys() == ref_grads.keys() and grads

    assert loss == pytest.approx(ref_loss, rel=1e-2)
    for name, ref in ref_grads.items():
        cosine = torch.nn.functional.cosine_similarity(grads[name].flatten(), ref.flatten(), dim=0)
        assert cosine > 0.995, f"{name}: gradient direction differs ({cosine:.4f})"
        assert (grads[name].norm() / ref.norm()).item() == pytest.approx(1.0, abs=0.02), name

    # PEFT's path keeps an fp32 copy of each adapted layer's input (q, k, v, o, gate, up, down);
    # the mixed path keeps none. At least half of those copies' bytes must be gone.
    shape = model_shape(reference.get_base_model().config)
    h, q, i = shape.hidden, shape.attention_width, shape.intermediate
    tokens = batch()["input_ids"].numel()
    copies = tokens * shape.layers * 4 * (5 * h + q + i)
    assert ref_saved - saved > 0.5 * copies, (ref_saved, saved, copies)


def test_fp32_base_is_exactly_peft(tiny_dir):
    model_dir = tiny_dir("gemma3")
    ref_loss, ref_grads, _ = loss_grads_saved(adapted(model_dir, "fp32", mixed=False))
    loss, grads, _ = loss_grads_saved(adapted(model_dir, "fp32", mixed=True))
    assert loss == ref_loss
    assert all(torch.equal(grads[name], ref) for name, ref in ref_grads.items())
