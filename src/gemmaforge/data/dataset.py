"""Load the configured data files into rendered training and validation examples.

Ties the data stages together: read each file (records), convert rows (formats), render
them for the model family (render), hold out a seeded validation split when no validation
file is given, and drop or truncate examples longer than `max_seq_length`. Problems in
every row of every file are collected and raised once. The returned report holds the
counts a user needs to trust the run, and each file's sha256 for the model card.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from gemmaforge.config import DataConfig
from gemmaforge.data.formats import detect_format, to_conversation
from gemmaforge.data.records import DataFile, raise_if_problems, read_records
from gemmaforge.data.render import RenderedExample, render, render_text
from gemmaforge.errors import UserError, problem
from gemmaforge.models.families import Family

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from gemmaforge.data.multimodal import MediaEncoder


@dataclass(frozen=True)
class FileReport:
    """One data file as the model card records it."""

    path: str
    sha256: str
    rows: int
    format: str


@dataclass(frozen=True)
class DataReport:
    """What loading did to the data: counts and the files it came from."""

    files: list[FileReport]
    rows_read: int
    train_examples: int
    val_examples: int
    validation: str
    """Where validation examples came from: "file", "split" (held out of train) or "none"."""
    dropped_overlong: int
    """Examples dropped for being longer than max_seq_length (or having nothing trained
    left after truncation)."""
    truncated: int
    train_tokens: int
    """Tokens in the training examples."""
    trained_tokens: int
    """Training tokens that carry a label."""
    images: int = 0
    """Images in the training examples."""
    audio_clips: int = 0
    """Audio clips in the training examples."""
    notes: list[str] = field(default_factory=list)
    """Per-example notes, e.g. media examples dropped as too long and the length they need."""

    def summary(self) -> str:
        return (
            f"{self.rows_read} rows read; {self.train_examples} train / {self.val_examples} "
            f"validation ({self.validation}); {self.dropped_overlong} dropped as too long, "
            f"{self.truncated} truncated; {self.trained_tokens} of {self.train_tokens} "
            "training tokens trained"
            + (f"; {self.images} images, {self.audio_clips} audio clips" if self.has_media else "")
        )

    @property
    def has_media(self) -> bool:
        return bool(self.images or self.audio_clips)


def load_datasets(
    cfg: DataConfig,
    family: Family,
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    media: MediaEncoder | None = None,
) -> tuple[list[RenderedExample], list[RenderedExample], DataReport]:
    """Train and validation examples, rendered for `family`, and a report of what happened.

    `media` (the model's processor) expands image and audio parts; every media file is
    decoded here, so broken media fail before training starts.
    """
    if not cfg.train:
        raise UserError(problem(None, "no training data", "set data.train to a JSONL or CSV file"))
    problems: list[str] = []
    files: list[FileReport] = []
    notes: list[str] = []
    train = _load_file(cfg.train, cfg, family, tokenizer, files, problems, media, notes)
    val = _load_file(cfg.validation, cfg, family, tokenizer, files, problems, media, notes)
    raise_if_problems(problems)
    source = "file" if cfg.validation else "none"
    if not cfg.validation:
        held_out = set(split_indices(len(train), cfg.val_fraction, cfg.val_max_rows, seed))
        source = "split" if held_out else "none"
        val = [ex for i, ex in enumerate(train) if i in held_out]
        train = [ex for i, ex in enumerate(train) if i not in held_out]
    train, train_dropped, train_cut = fit_length(train, cfg, notes)
    val, val_dropped, val_cut = fit_length(val, cfg, notes)
    if not train:
        raise UserError([_all_too_long(cfg), *notes[:10]])
    report = DataReport(
        files=files,
        rows_read=sum(f.rows for f in files),
        train_examples=len(train),
        val_examples=len(val),
        validation=source,
        dropped_overlong=train_dropped + val_dropped,
        truncated=train_cut + val_cut,
        train_tokens=sum(len(ex.input_ids) for ex in train),
        trained_tokens=sum(ex.num_trained for ex in train),
        images=sum(m.kind == "image" for ex in train for m in ex.media),
        audio_clips=sum(m.kind == "audio" for ex in train for m in ex.media),
        notes=notes,
    )
    return train, val, report


def split_indices(n: int, fraction: float, max_rows: int, seed: int) -> list[int]:
    """Sorted indices of the rows held out for validation: the same for the same seed.

    At least one row when `fraction` > 0 and there are two or more rows, so a small dataset
    still gets a validation loss; never all rows, so something is left to train on.
    """
    if fraction <= 0 or n < 2:
        return []
    size = min(max(1, int(n * fraction)), max_rows, n - 1)
    return sorted(random.Random(seed).sample(range(n), size))


def fit_length(
    examples: list[RenderedExample], cfg: DataConfig, notes: list[str] | None = None
) -> tuple[list[RenderedExample], int, int]:
    """Apply `cfg.overlong` to examples over `cfg.max_seq_length`: (kept, dropped, truncated).

    A cut never falls inside or before an image/audio token run: the model would then get
    features for tokens that are gone and fail. Such examples are dropped instead.
    """
    kept, dropped, truncated = [], 0, 0
    limit = cfg.max_seq_length
    for ex in examples:
        if len(ex.input_ids) <= limit:
            kept.append(ex)
            continue
        cut = replace(
            ex,
            input_ids=ex.input_ids[:limit],
            labels=ex.labels[:limit],
            token_types=ex.token_types[:limit] if ex.token_types is not None else None,
        )
        # A truncated example with no label left would only cost compute.
        if cfg.overlong == "drop" or cut.num_trained == 0 or ex.media_end > limit:
            dropped += 1
            if ex.media and notes is not None:
                notes.append(
                    f"{ex.where}: dropped, its image/audio tokens need max_seq_length >= "
                    f"{len(ex.input_ids)} (now {limit})"
                )
        else:
            kept.append(cut)
            truncated += 1
    return kept, dropped, truncated


def _load_file(
    path: str | None,
    cfg: DataConfig,
    family: Family,
    tokenizer: PreTrainedTokenizerBase,
    files: list[FileReport],
    problems: list[str],
    media: MediaEncoder | None = None,
    notes: list[str] | None = None,
) -> list[RenderedExample]:
    """Render every row of one file, adding its report to `files` and its problems to
    `problems` (so the train and validation files are checked in one pass)."""
    if path is None:
        return []
    try:
        data = read_records(path)
        fmt = cfg.format if cfg.format != "auto" else detect_format(data.records[0], cfg)
    except UserError as err:
        problems.extend(err.problems)
        return []
    files.append(FileReport(data.path, data.sha256, len(data.records), fmt))
    return _render_rows(data, fmt, cfg, family, tokenizer, problems, media, notes)


def _render_rows(
    data: DataFile,
    fmt: str,
    cfg: DataConfig,
    family: Family,
    tokenizer: PreTrainedTokenizerBase,
    problems: list[str],
    media: MediaEncoder | None = None,
    notes: list[str] | None = None,
) -> list[RenderedExample]:
    from gemmaforge.data.media import MediaDropped

    notes = notes if notes is not None else []
    examples = []
    for record in data.records:
        try:
            conv = to_conversation(record, fmt, cfg)
            if conv.text is not None:
                examples.append(render_text(conv.text, family, tokenizer, conv.where))
            else:
                examples.append(
                    render(conv.messages, family, tokenizer, cfg.train_on, conv.where, media)
                )
        except MediaDropped as err:
            # data.audio_overlong=drop: a reported choice, not a problem.
            notes.extend(f"dropped: {p}" for p in err.problems)
        except UserError as err:
            problems.extend(err.problems)
    return examples


def _all_too_long(cfg: DataConfig) -> str:
    fix = f"raise data.max_seq_length (now {cfg.max_seq_length})"
    if cfg.overlong == "drop":
        fix += " or set data.overlong=truncate"
    return problem(cfg.train, "no training example is left after removing over-long ones", fix)
