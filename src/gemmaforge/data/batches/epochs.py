"""The order examples are trained in: epoch after epoch, a seeded shuffle, batched.

An example source gives, for an epoch and a start ordinal, the epoch's examples in order
(`items(epoch, start)`). Examples held in memory are shuffled with a seeded permutation;
streamed ones pass through a seeded shuffle buffer (data/batches/streaming.py). Either way the order
is a pure function of (seed, epoch), so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch

from gemmaforge.data.batches.batching import Batch, Batching, Item, Position, batches
from gemmaforge.errors import UserError, problem


class ExampleSource(Protocol):
    size: int | None
    """Examples per epoch, when known before reading them all."""

    def items(self, epoch: int, start: int) -> Iterator[Item]: ...


class MemoryExamples:
    """Rendered examples held in memory, in a seeded permutation per epoch."""

    def __init__(self, examples: list, seed: int):
        self.examples = examples
        self.seed = seed
        self.size = len(examples)

    def items(self, epoch: int, start: int) -> Iterator[Item]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.examples), generator=generator).tolist()
        for n in range(start, len(order)):
            yield Item(n, self.examples[order[n]])


def batch_stream(source: ExampleSource, spec: Batching, position: Position) -> Iterator[Batch]:
    """Endless micro-batches from `position` on, epoch after epoch."""
    epoch, start, skip = position.epoch, position.start, position.skip
    while True:
        produced = False
        for batch in batches(source.items(epoch, start), epoch, spec):
            produced = True
            if skip:
                skip -= 1
                continue
            yield batch
        if not produced and start == 0:
            raise UserError(
                problem(
                    None,
                    f"epoch {epoch} has no training example left (every row was skipped)",
                    "see skipped.jsonl in the run folder for the reasons",
                )
            )
        epoch, start, skip = epoch + 1, 0, 0


def batches_per_epoch(source: MemoryExamples, spec: Batching) -> int:
    """Micro-batches in the first epoch (packing makes this depend on the order a little)."""
    return sum(1 for _ in batches(source.items(0, 0), 0, spec))
