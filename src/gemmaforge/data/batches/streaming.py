"""Training data read lazily: rows are fetched, shuffled in a bounded buffer and rendered as
the loop asks for them, so training starts at once and memory does not grow with the data.

Order is a pure function of (seed, epoch): the row stream is read in file order, passed
through a seeded shuffle buffer, and numbered. A resumed run re-reads the stream and skips
the rows it already trained on without rendering them (no media is decoded for them).
Validation rows are held in memory: the validation file's first `val_max_rows` rows, or,
without one, rows picked from the stream by a seeded hash (`held_out`), which training then
never sees.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Iterator

from gemmaforge.config import DataConfig
from gemmaforge.data.batches.batching import Item
from gemmaforge.data.examples.dataset import (
    DataReport,
    FileReport,
    RowRenderer,
    fit_length,
    fit_one,
)
from gemmaforge.data.examples.skiplog import SkipLog
from gemmaforge.data.read.records import BadRow, Record, raise_if_problems

Rows = Callable[[], Iterable[Record | BadRow]]
"""Opens the row stream afresh (each epoch reads the source again)."""


def shuffle_buffer(items: Iterable, size: int, rng: random.Random) -> Iterator:
    """Items in a random order that only ever holds `size` of them: each arriving item
    replaces a random one of the buffer, which is emitted."""
    buffer: list = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        index = rng.randrange(size)
        yield buffer[index]
        buffer[index] = item
    rng.shuffle(buffer)
    yield from buffer


def held_out(index: int, seed: int, fraction: float) -> bool:
    """Whether stream row `index` belongs to the validation split (a seeded coin flip that
    needs no state, so every epoch and every resumed run agrees)."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


class StreamedExamples:
    """The training side of a streamed source, as an ExampleSource (data/batches/epochs.py)."""

    size = None

    def __init__(
        self,
        rows: Rows,
        cfg: DataConfig,
        renderer: RowRenderer,
        skips: SkipLog,
        seed: int,
        validation_ids: frozenset[int],
    ):
        self.rows, self.cfg, self.renderer, self.skips = rows, cfg, renderer, skips
        self.seed = seed
        self.validation_ids = validation_ids

    def items(self, epoch: int, start: int) -> Iterator[Item]:
        train = (row for index, row in enumerate(self.rows()) if index not in self.validation_ids)
        rng = random.Random(f"{self.seed}:{epoch}")
        for n, row in enumerate(shuffle_buffer(train, self.cfg.shuffle_buffer, rng)):
            if n < start:
                continue
            example = self.renderer.admit(row, self.skips, self.cfg.on_error)
            if example is None:
                continue
            example, why = fit_one(example, self.cfg)
            if example is None:
                self.skips.add(row.where, "too_long", why)
                continue
            yield Item(n, example)


def validation_rows(
    rows: Rows, cfg: DataConfig, seed: int, validation: Rows | None
) -> tuple[list[Record | BadRow], frozenset[int]]:
    """(validation rows, their indices in the training stream) without reading everything:
    the validation file's first rows, or the stream rows picked by `held_out` until
    `val_max_rows` are found (an empty set of indices when a file gives them)."""
    limit = cfg.val_max_rows
    if validation is not None:
        picked = []
        for row in validation():
            if len(picked) >= limit:
                break
            picked.append(row)
        return picked, frozenset()
    if cfg.val_fraction <= 0 or limit == 0:
        return [], frozenset()
    picked, indices = [], set()
    for index, row in enumerate(rows()):
        if held_out(index, seed, cfg.val_fraction):
            picked.append(row)
            indices.add(index)
            if len(picked) >= limit:
                break
    return picked, frozenset(indices)


def open_stream(
    cfg: DataConfig, renderer: RowRenderer, skips: SkipLog, seed: int
) -> tuple[StreamedExamples, list, DataReport]:
    """The streamed training source, the (in-memory) validation examples, and a report of
    what is known before reading: the files and the validation split."""
    from gemmaforge.data.read.sources import (
        companion_validation,
        iter_source_records,
        resolve_sources,
    )

    # Listed once: every epoch re-reads the same objects.
    train_sources = resolve_sources(cfg.train, cfg.storage_options)
    # As in memory: an mlx-lm style folder brings its validation file.
    val_spec = cfg.validation or companion_validation(cfg.train, cfg.storage_options)
    val_sources = resolve_sources(val_spec, cfg.storage_options) if val_spec else []

    def rows() -> Iterable[Record | BadRow]:
        return iter_source_records(train_sources)

    validation = (lambda: iter_source_records(val_sources)) if val_sources else None
    picked, indices = validation_rows(rows, cfg, seed, validation)
    problems: list[str] = []
    val = renderer.render_all(picked, problems, skips, cfg.on_error)
    raise_if_problems(problems)
    val, dropped, truncated = fit_length(val, cfg, skips=skips)
    # Fingerprints from the listing (remote) or a hash pass (local): never a download.
    sources = train_sources + val_sources
    files = [FileReport(s.name, s.fingerprint, 0, cfg.format) for s in sources]
    report = DataReport(
        files=files,
        rows_read=0,
        train_examples=0,
        val_examples=len(val),
        validation="file" if val_spec else ("split" if val else "none"),
        dropped_overlong=dropped,
        truncated=truncated,
        train_tokens=0,
        trained_tokens=0,
        streaming=True,
    )
    return StreamedExamples(rows, cfg, renderer, skips, seed, indices), val, report
