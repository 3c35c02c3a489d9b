"""Load the configured data files into rendered training and validation examples.

Ties the data stages together: read each file (records), convert rows (formats), render
them for the model family (render), hold out a seeded validation split when no validation
file is given, and drop or truncate examples longer than `max_seq_length`. Problems in
every row of every file are collected and raised once. The returned report holds the
counts a user needs to trust the run, and each file's sha256 for the model card.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gemmaforge.config import DataConfig
from gemmaforge.data.formats import detect_format, to_conversation
from gemmaforge.data.records import DataFile, raise_if_problems, read_records
from gemmaforge.data.render import RenderedExample, render, render_text
from gemmaforge.errors import UserError, problem
from gemmaforge.models.families import Family

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


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

    def summary(self) -> str:
        return (
            f"{self.rows_read} rows read; {self.train_examples} train / {self.val_examples} "
            f"validation ({self.validation}); {self.dropped_overlong} dropped as too long, "
            f"{self.truncated} truncated; {self.trained_tokens} of {self.train_tokens} "
            "training tokens trained"
        )


def load_datasets(
    cfg: DataConfig, family: Family, tokenizer: PreTrainedTokenizerBase, seed: int
) -> tuple[list[RenderedExample], list[RenderedExample], DataReport]:
    """Train and validation examples, rendered for `family`, and a report of what happened."""
    if not cfg.train:
        raise UserError(problem(None, "no training data", "set data.train to a JSONL or CSV file"))
    problems: list[str] = []
    files: list[FileReport] = []
    train = _load_file(cfg.train, cfg, family, tokenizer, files, problems)
    val = _load_file(cfg.validation, cfg, family, tokenizer, files, problems)
    raise_if_problems(problems)
    source = "file" if cfg.validation else "none"
    if not cfg.validation:
        held_out = set(split_indices(len(train), cfg.val_fraction, cfg.val_max_rows, seed))
        source = "split" if held_out else "none"
        val = [ex for i, ex in enumerate(train) if i in held_out]
        train = [ex for i, ex in enumerate(train) if i not in held_out]
    train, train_dropped, train_cut = fit_length(train, cfg)
    val, val_dropped, val_cut = fit_length(val, cfg)
    if not train:
        raise UserError(_all_too_long(cfg))
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
    examples: list[RenderedExample], cfg: DataConfig
) -> tuple[list[RenderedExample], int, int]:
    """Apply `cfg.overlong` to examples over `cfg.max_seq_length`: (kept, dropped, truncated)."""
    kept, dropped, truncated = [], 0, 0
    limit = cfg.max_seq_length
    for ex in examples:
        if len(ex.input_ids) <= limit:
            kept.append(ex)
            continue
        cut = RenderedExample(ex.input_ids[:limit], ex.labels[:limit], ex.where)
        # A truncated example with no label left would only cost compute.
        if cfg.overlong == "drop" or cut.num_trained == 0:
            dropped += 1
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
    return _render_rows(data, fmt, cfg, family, tokenizer, problems)


def _render_rows(
    data: DataFile,
    fmt: str,
    cfg: DataConfig,
    family: Family,
    tokenizer: PreTrainedTokenizerBase,
    problems: list[str],
) -> list[RenderedExample]:
    examples = []
    for record in data.records:
        try:
            conv = to_conversation(record, fmt, cfg)
            if conv.text is not None:
                examples.append(render_text(conv.text, family, tokenizer, conv.where))
            else:
                examples.append(render(conv.messages, family, tokenizer, cfg.train_on, conv.where))
        except UserError as err:
            problems.extend(err.problems)
    return examples


def _all_too_long(cfg: DataConfig) -> str:
    fix = f"raise data.max_seq_length (now {cfg.max_seq_length})"
    if cfg.overlong == "drop":
        fix += " or set data.overlong=truncate"
    return problem(cfg.train, "no training example is left after removing over-long ones", fix)
