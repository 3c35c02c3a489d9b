"""Turn rendered examples into padded tensor batches, and fix the order batches come in.

Batch keys: `input_ids`, `attention_mask` (1 on real tokens), `labels` (-100 on padding and
untrained tokens) and, for families that need it, `mm_token_type_ids` (0 for text tokens).
Padding is on the right: training never generates, so left padding buys nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

IGNORE = -100


def collate(examples: Sequence, pad_id: int, mm_token_type_ids: bool = False) -> dict:
    """Pad `examples` (objects with `input_ids` and `labels` lists) into one batch."""
    width = max(len(example.input_ids) for example in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        length = len(example.input_ids)
        input_ids[row, :length] = torch.tensor(example.input_ids)
        labels[row, :length] = torch.tensor(example.labels)
        attention_mask[row, :length] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    if mm_token_type_ids:
        batch["mm_token_type_ids"] = torch.zeros_like(input_ids)
    return batch


def epoch_order(num_examples: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The micro-batches of one epoch: a seeded shuffle, cut into `batch_size` pieces.

    A pure function of (seed, epoch), so a resumed run rebuilds exactly the same order and
    skips what it already consumed.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(num_examples, generator=generator).tolist()
    return [order[start : start + batch_size] for start in range(0, num_examples, batch_size)]
