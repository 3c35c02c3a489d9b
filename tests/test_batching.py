"""Batching: plain, length-grouped and packed batches; every batch's `after` position
restarts the stream exactly where an uninterrupted run would continue; padding is counted."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from gemmaforge.data.batches.batching import Batching, Position, batches
from gemmaforge.data.batches.collate import collate
from gemmaforge.data.batches.epochs import MemoryExamples, batch_stream


@dataclass(frozen=True)
class Ex:
    input_ids: list
    labels: list
    token_types: list | None = None
    media: tuple = ()
    where: str | None = None


def examples(count: int, seed: int = 0, top: int = 60) -> list[Ex]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        length = rng.randint(3, top)
        ids = [1000 * i + t for t in range(length)]
        out.append(Ex(ids, ids, where=f"row {i}"))
    return out


def ids_of(batch) -> list[list[int]]:
    return [[ex.input_ids[0] // 1000 for ex in row] for row in batch.rows]


SPECS = {
    "plain": Batching(batch_size=4, max_tokens=64, seed=3),
    "grouped": Batching(batch_size=4, max_tokens=64, group_by_length=True, seed=3),
    "packed": Batching(batch_size=2, max_tokens=64, packing=True, seed=3),
}


@pytest.mark.parametrize("mode", SPECS)
def test_every_example_once_per_epoch_and_deterministic(mode):
    source = MemoryExamples(examples(300), seed=7)
    spec = SPECS[mode]
    first = [ids_of(b) for b in batches(source.items(0, 0), 0, spec)]
    again = [ids_of(b) for b in batches(source.items(0, 0), 0, spec)]
    assert first == again
    seen = sorted(i for batch in first for row in batch for i in row)
    assert seen == list(range(300))
    other_epoch = [ids_of(b) for b in batches(source.items(1, 0), 1, spec)]
    assert other_epoch != first


@pytest.mark.parametrize("mode", SPECS)
def test_restarting_from_any_batch_continues_identically(mode):
    source = MemoryExamples(examples(300), seed=7)
    spec = SPECS[mode]
    stream = batch_stream(source, spec, Position())
    reference = [next(stream) for _ in range(200)]  # crosses into later epochs
    for cut in (0, 1, 5, 37, 75, 76, 120):
        resumed = batch_stream(source, spec, reference[cut].after)
        rest = [ids_of(next(resumed)) for _ in range(40)]
        assert rest == [ids_of(b) for b in reference[cut + 1 : cut + 41]], cut


def test_packed_rows_respect_the_budget_and_are_nearly_full():
    spec = SPECS["packed"]
    source = MemoryExamples(examples(200), seed=1)
    packed = list(batches(source.items(0, 0), 0, spec))
    assert all(len(b.rows) <= spec.batch_size for b in packed)
    widths = [sum(len(ex.input_ids) for ex in row) for b in packed for row in b.rows]
    assert max(widths) <= spec.max_tokens
    # Best-fit decreasing: rows (nearly) full, where next-fit in stream order left about a
    # sixth of the slots empty on these lengths (3-60 in 64).
    # Batches are cut from rows of similar width, so little is padded in the tensors either.
    slots = sum(collate(b.rows, 0, packed=True)["input_ids"].numel() for b in packed)
    real = sum(len(ex.input_ids) for ex in examples(200))
    assert real / slots > 0.95, real / slots


def test_length_grouping_cuts_padding():
    source = MemoryExamples(examples(512, top=200), seed=2)

    def padding(spec):
        slots = real = 0
        for batch in batches(source.items(0, 0), 0, spec):
            tensors = collate(batch.rows, 0)
            slots += tensors["input_ids"].numel()
            real += sum(len(ex.input_ids) for ex in batch.examples)
        return 1 - real / slots

    plain, grouped = padding(SPECS["plain"]), padding(SPECS["grouped"])
    assert grouped < plain / 3, (plain, grouped)


def test_packed_collate_restarts_positions_and_pads_as_its_own_block():
    a, b = Ex([5, 6, 7], [5, 6, 7]), Ex([8, 9], [-100, 9])
    batch = collate([[a, b], [b]], pad_id=0, packed=True)
    assert "attention_mask" not in batch
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [8, 9, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]
    assert batch["labels"].tolist() == [[5, 6, 7, -100, 9], [-100, 9, -100, -100, -100]]


def test_packing_refuses_media_examples():
    from gemmaforge.errors import UserError

    with pytest.raises(UserError, match=r"row 3: has images or audio, and data\.packing"):
        collate([[Ex([1], [1], media=("img",), where="row 3")]], 0, packed=True)
