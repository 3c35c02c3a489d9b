"""Cut a stream of examples into micro-batches: plain, length-grouped, or packed.

The same code batches examples held in memory and examples streamed from storage. Each
example comes with its ordinal `n` in the epoch's (shuffled) stream, and each batch says
where to restart the stream to continue after it (`Batch.after`), so a resumed run rebuilds
exactly the batches an uninterrupted run would have seen, without re-reading what came
before. A batch is emitted only once the example after it has arrived (or the stream has
ended), so `after` never skips past an example that is not in any batch.

- plain: `batch_size` examples per batch, one per row;
- group_by_length: groups of GROUP_BATCHES batches' worth of examples are sorted by length,
  cut into batches, and those batches drawn in a seeded random order (less padding, still
  random);
- packing: examples are laid end to end into rows of at most `max_tokens` tokens (greedy, in
  stream order), `batch_size` rows per batch. The collator restarts position ids per
  example so no example attends to another.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

GROUP_BATCHES = 32
"""Batches per length group: large enough to find similar lengths, small enough to keep
order random and memory bounded when streaming."""


@dataclass(frozen=True)
class Item:
    """One example and its ordinal in the epoch's stream."""

    n: int
    example: object
    """A RenderedExample."""


@dataclass(frozen=True)
class Position:
    """Where to (re)start reading: stream ordinal `start` of `epoch`, then drop `skip`
    batches (nonzero only inside a length group)."""

    epoch: int = 0
    start: int = 0
    skip: int = 0


@dataclass(frozen=True)
class Batch:
    rows: list[list]
    """Examples per row: one each, or several when packed."""
    after: Position
    """Where to restart to continue after this batch."""

    @property
    def examples(self) -> list:
        return [example for row in self.rows for example in row]


@dataclass(frozen=True)
class Batching:
    batch_size: int
    max_tokens: int
    packing: bool = False
    group_by_length: bool = False
    seed: int = 0


def batches(items: Iterable[Item], epoch: int, spec: Batching) -> Iterator[Batch]:
    """The micro-batches of one epoch's `items`, in order."""
    if spec.packing:
        return _packed(items, epoch, spec)
    if spec.group_by_length:
        return _grouped(items, epoch, spec)
    return _plain(items, epoch, spec)


def _length(item: Item) -> int:
    return len(item.example.input_ids)


def _plain(items: Iterable[Item], epoch: int, spec: Batching) -> Iterator[Batch]:
    pending: list[Item] = []
    for item in items:
        if len(pending) == spec.batch_size:
            yield Batch([[i.example] for i in pending], Position(epoch, item.n))
            pending = []
        pending.append(item)
    if pending:
        yield Batch([[i.example] for i in pending], Position(epoch, pending[-1].n + 1))


def _packed(items: Iterable[Item], epoch: int, spec: Batching) -> Iterator[Batch]:
    rows: list[list] = []
    used = spec.max_tokens  # tokens in the last row; "full" so the first item opens a row
    last_n = -1
    for item in items:
        length = _length(item)
        if used + length > spec.max_tokens:
            if len(rows) == spec.batch_size:
                yield Batch(rows, Position(epoch, item.n))
                rows = []
            rows.append([])
            used = 0
        rows[-1].append(item.example)
        used += length
        last_n = item.n
    if rows:
        yield Batch(rows, Position(epoch, last_n + 1))


def _grouped(items: Iterable[Item], epoch: int, spec: Batching) -> Iterator[Batch]:
    size = spec.batch_size * GROUP_BATCHES
    group: list[Item] = []
    for item in items:
        if len(group) == size:
            yield from _emit_group(group, epoch, spec, next_start=item.n)
            group = []
        group.append(item)
    if group:
        yield from _emit_group(group, epoch, spec, next_start=group[-1].n + 1)


def _emit_group(group: list[Item], epoch: int, spec: Batching, next_start: int):
    ordered = sorted(group, key=_length, reverse=True)
    cut = [ordered[i : i + spec.batch_size] for i in range(0, len(ordered), spec.batch_size)]
    # Seeded by the group's first ordinal, so a resumed run draws the same batch order.
    random.Random(f"{spec.seed}:{epoch}:{group[0].n}").shuffle(cut)
    start = group[0].n
    for index, part in enumerate(cut):
        last = index == len(cut) - 1
        after = Position(epoch, next_start) if last else Position(epoch, start, index + 1)
        yield Batch([[i.example] for i in part], after)
