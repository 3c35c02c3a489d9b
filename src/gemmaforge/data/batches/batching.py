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
- packing: groups of about GROUP_BATCHES batches' worth of tokens are packed into rows of at
  most `max_tokens` tokens (best-fit decreasing: rows nearly full), the rows cut into
  batches of `batch_size` by width and drawn in a seeded random order, like length groups.
  The collator restarts position ids per example so no example attends to another.
"""

from __future__ import annotations

import bisect
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
    budget = GROUP_BATCHES * spec.batch_size * spec.max_tokens
    group: list[Item] = []
    tokens = 0
    for item in items:
        if group and tokens + _length(item) > budget:
            rows = _best_fit(group, spec.max_tokens)
            yield from _emit(rows, group[0].n, epoch, spec, next_start=item.n)
            group, tokens = [], 0
        group.append(item)
        tokens += _length(item)
    if group:
        rows = _best_fit(group, spec.max_tokens)
        yield from _emit(rows, group[0].n, epoch, spec, next_start=group[-1].n + 1)


def _best_fit(group: list[Item], max_tokens: int) -> list[list]:
    """Rows of at most `max_tokens` tokens, packed best-fit decreasing: longest example
    first, each into the fullest row it still fits in. Next-fit in stream order left ~15% of
    the slots as padding on real chat data; this leaves little more than the last rows'."""
    rows: list[list] = []
    free: list[tuple[int, int]] = []  # (tokens left, row index), sorted
    for item in sorted(group, key=lambda i: (-_length(i), i.n)):
        length = _length(item)
        at = bisect.bisect_left(free, (length, -1))
        if at == len(free):
            rows.append([item.example])
            left, index = max_tokens - length, len(rows) - 1
        else:
            left, index = free.pop(at)
            rows[index].append(item.example)
            left -= length
        bisect.insort(free, (left, index))
    return rows


def _grouped(items: Iterable[Item], epoch: int, spec: Batching) -> Iterator[Batch]:
    size = spec.batch_size * GROUP_BATCHES
    group: list[Item] = []
    for item in items:
        if len(group) == size:
            rows = [[i.example] for i in sorted(group, key=_length, reverse=True)]
            yield from _emit(rows, group[0].n, epoch, spec, next_start=item.n)
            group = []
        group.append(item)
    if group:
        rows = [[i.example] for i in sorted(group, key=_length, reverse=True)]
        yield from _emit(rows, group[0].n, epoch, spec, next_start=group[-1].n + 1)


def _emit(rows: list[list], start: int, epoch: int, spec: Batching, next_start: int):
    """A group's rows (longest first) cut into batches of similar width, drawn in a seeded
    random order; `start` is the group's first ordinal."""
    rows = sorted(rows, key=lambda row: sum(len(ex.input_ids) for ex in row), reverse=True)
    cut = [rows[i : i + spec.batch_size] for i in range(0, len(rows), spec.batch_size)]
    # Seeded by the group's first ordinal, so a resumed run draws the same batch order.
    random.Random(f"{spec.seed}:{epoch}:{start}").shuffle(cut)
    for index, part in enumerate(cut):
        last = index == len(cut) - 1
        after = Position(epoch, next_start) if last else Position(epoch, start, index + 1)
        yield Batch(part, after)
