"""Turn rows of rendered examples into padded tensor batches.

Batch keys: `input_ids`, `labels` (-100 on padding and untrained tokens), and either
`attention_mask` (1 on real tokens; one example per row) or, for packed rows, `position_ids`
that restart at 0 for every example. With position ids and no attention mask, transformers
builds a block-diagonal causal mask (`find_packed_sequence_indices` in masking_utils), so
no token attends across examples and each example's loss is what it would be alone. For
multimodal models: the processor's per-token modality ids (`mm_token_type_ids` /
`token_type_ids`, 0 for text) and the media features it builds (`pixel_values`,
`input_features`, ...).
Padding is on the right: training never generates, so left padding buys nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from gemmaforge.data.examples.render import IGNORE_INDEX
from gemmaforge.errors import UserError, problem


def collate(
    rows: Sequence[Sequence],
    pad_id: int,
    type_key: str | None = None,
    media=None,
    packed: bool = False,
) -> dict:
    """Pad `rows` (each a list of RenderedExamples laid end to end) into one batch.

    `type_key` names the per-token modality ids the model wants (Gemma 4 needs them even for
    text); `media` (a MediaEncoder) adds the pixel/audio features of the batch's media;
    `packed` gives position ids per example instead of an attention mask.
    """
    if packed:
        _check_text_only(rows)
    width = max(sum(len(example.input_ids) for example in row) for row in rows)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros(shape, dtype=torch.long)
    positions = torch.zeros(shape, dtype=torch.long)
    types = torch.zeros(shape, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for example in row:
            span = slice(at, at + len(example.input_ids))
            input_ids[r, span] = torch.tensor(example.input_ids)
            labels[r, span] = torch.tensor(example.labels)
            attention_mask[r, span] = 1
            positions[r, span] = torch.arange(len(example.input_ids))
            if example.token_types is not None:
                types[r, span] = torch.tensor(example.token_types)
            at = span.stop
        # Padding is one more "example" of its own, so it starts its own attention block.
        positions[r, at:] = torch.arange(width - at)
    batch = {"input_ids": input_ids, "labels": labels}
    if packed:
        batch["position_ids"] = positions
    else:
        batch["attention_mask"] = attention_mask
    if type_key:
        batch[type_key] = types
    if media is not None:
        batch.update(media.features([ref for row in rows for ex in row for ref in ex.media]))
    return batch


def _check_text_only(rows: Sequence[Sequence]) -> None:
    """Images and audio attend within their own token runs (a mask packing would break)."""
    for row in rows:
        for example in row:
            if example.media:
                raise UserError(
                    problem(
                        example.where,
                        "has images or audio, and data.packing is for text only",
                        "set data.packing=false (data.group_by_length=true also cuts padding)",
                    )
                )


@dataclass
class Collator:
    """Everything batching needs about the model: pad id, modality ids, media features,
    and the dtype floating-point features (pixels, audio) are cast to."""

    pad_id: int
    type_key: str | None = None
    media: object | None = None
    """MediaEncoder, for data with images or audio."""
    dtype: torch.dtype | None = None
    packed: bool = False

    def __call__(self, rows: Sequence[Sequence], device) -> dict:
        tensors = collate(rows, self.pad_id, self.type_key, self.media, self.packed)
        return {key: _to(value, device, self.dtype) for key, value in tensors.items()}

    def examples(self, examples: Sequence, device) -> dict:
        """A batch of one example per row (validation, inference)."""
        tensors = collate([[ex] for ex in examples], self.pad_id, self.type_key, self.media)
        return {key: _to(value, device, self.dtype) for key, value in tensors.items()}


def pad_id(tokenizer) -> int:
    """The id rows are padded with: the tokenizer's pad token, else 0 (padding is masked out of
    attention and labels, so its value never reaches the loss)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def collator_for(loaded, media=None, packed: bool = False) -> Collator:
    """The one way a batcher is built for a loaded model (training, validation, eval, bench)."""
    return Collator(
        pad_id=pad_id(loaded.tokenizer),
        type_key=media.type_key if media else None,
        media=media,
        dtype=loaded.dtype,
        packed=packed,
    )


def _to(value: torch.Tensor, device, dtype) -> torch.Tensor:
    if dtype is not None and value.is_floating_point():
        return value.to(device=device, dtype=dtype)
    return value.to(device)
