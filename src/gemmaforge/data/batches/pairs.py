"""Batches of preference examples: chosen replies in the first rows, rejected in the next.

One forward then scores both replies of every pair (`pairs` says where the rejected ones
start); KTO batches hold one reply per row with its `desirable` label. Precomputed reference
log-probabilities, when every example has them, travel as `ref_logps` in the same row order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from gemmaforge.data.batches.collate import Collator


@dataclass
class PairCollator:
    """Wraps the model's Collator for preference examples (one per row; no packing)."""

    inner: Collator

    def __call__(self, rows: Sequence[Sequence], device) -> dict:
        examples = [ex for row in rows for ex in row]
        chosen = [ex.chosen for ex in examples]
        rejected = [ex.rejected for ex in examples if ex.rejected is not None]
        batch = self.inner.examples(chosen + rejected, device)
        if rejected:
            batch["pairs"] = torch.tensor(len(examples))
        else:
            batch["desirable"] = torch.tensor(
                [bool(ex.desirable) for ex in examples], device=device
            )
        if all(ex.ref_logps is not None for ex in examples):
            values = [ex.ref_logps[0] for ex in examples]
            values += [ex.ref_logps[1] for ex in examples if ex.rejected is not None]
            batch["ref_logps"] = torch.tensor(values, dtype=torch.float32, device=device)
        return batch

    def examples(self, examples: Sequence, device) -> dict:
        return self([[ex] for ex in examples], device)
