"""Turn rendered examples into padded tensor batches, and fix the order batches come in.

Batch keys: `input_ids`, `attention_mask` (1 on real tokens), `labels` (-100 on padding and
untrained tokens); for multimodal models the processor's per-token modality ids
(`mm_token_type_ids` / `token_type_ids`, 0 for text) and the media features it builds
(`pixel_values`, `input_features`, ...).
Padding is on the right: training never generates, so left padding buys nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

IGNORE = -100


def collate(examples: Sequence, pad_id: int, type_key: str | None = None, media=None) -> dict:
    """Pad `examples` (RenderedExamples) into one batch.

    `type_key` names the per-token modality ids the model wants (Gemma 4 needs them even for
    text); `media` (a MediaEncoder) adds the pixel/audio features of the batch's media.
    """
    width = max(len(example.input_ids) for example in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    types = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        length = len(example.input_ids)
        input_ids[row, :length] = torch.tensor(example.input_ids)
        labels[row, :length] = torch.tensor(example.labels)
        attention_mask[row, :length] = 1
        if example.token_types is not None:
            types[row, :length] = torch.tensor(example.token_types)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    if type_key:
        batch[type_key] = types
    if media is not None:
        batch.update(media.features([ref for example in examples for ref in example.media]))
    return batch


def epoch_order(num_examples: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The micro-batches of one epoch: a seeded shuffle, cut into `batch_size` pieces.

    A pure function of (seed, epoch), so a resumed run rebuilds exactly the same order and
    skips what it already consumed.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(num_examples, generator=generator).tolist()
    return [order[start : start + batch_size] for start in range(0, num_examples, batch_size)]
