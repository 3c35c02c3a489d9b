"""Load the configured data files into rendered training and validation examples.

Ties the data stages together: read each file (records), convert rows (formats), render
them for the model family (render), hold out a seeded validation split when no validation
file is given, and drop or truncate examples longer than `max_seq_length`. Problems in
every row of every file are collected and raised once. The returned report holds the
counts a user needs to trust the run, and each file's sha256 for the model card.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from gemmaforge.config import DataConfig
from gemmaforge.data.examples.formats import Conversation, detect_format, to_conversation
from gemmaforge.data.examples.media import MediaDropped, MediaError
from gemmaforge.data.examples.render import (
    RenderedExample,
    render,
    render_segments,
    render_text,
)
from gemmaforge.data.examples.skiplog import SkipLog
from gemmaforge.data.read.records import BadRow, Record, raise_if_problems
from gemmaforge.data.read.sources import (
    DataSources,
    SourceFile,
    iter_file_records,
    iter_source_records,
    open_sources,
)
from gemmaforge.errors import UserError, problem
from gemmaforge.models.families import Family

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from gemmaforge.data.examples.multimodal import MediaEncoder


@dataclass(frozen=True)
class FileReport:
    """One data file as the model card records it."""

    path: str
    fingerprint: str
    """`sha256:<hex>` of a local file's bytes; an ETag or version for remote objects."""
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
    videos: int = 0
    """Videos in the training examples."""
    streaming: bool = False
    """Training rows are streamed: their counts are not known before training reads them."""
    skipped: int = 0
    """Rows left out (unreadable, invalid, too long...), each listed in skipped.jsonl."""
    notes: list[str] = field(default_factory=list)
    """Per-example notes, e.g. media examples dropped as too long and the length they need."""

    def summary(self) -> str:
        if self.streaming:
            return (
                f"streaming {', '.join(f.path for f in self.files)}; {self.val_examples} "
                f"validation examples ({self.validation})"
            )
        return (
            f"{self.rows_read} rows read; {self.train_examples} train / {self.val_examples} "
            f"validation ({self.validation}); {self.dropped_overlong} dropped as too long, "
            f"{self.truncated} truncated, {self.skipped} skipped in all; "
            f"{self.trained_tokens} of {self.train_tokens} training tokens trained"
            + (
                f"; {self.images} images, {self.audio_clips} audio clips"
                + (f", {self.videos} videos" if self.videos else "")
                if self.has_media
                else ""
            )
        )

    @property
    def has_media(self) -> bool:
        return bool(self.images or self.audio_clips or self.videos)


def load_datasets(
    cfg: DataConfig,
    sources: DataSources,
    family: Family,
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    media: MediaEncoder | None = None,
    skips: SkipLog | None = None,
) -> tuple[list[RenderedExample], list[RenderedExample], DataReport]:
    """Train and validation examples, rendered for `family`, and a report of what happened.

    `media` (the model's processor) expands image and audio parts; every media file is
    decoded here, so broken media fail before training starts. Rows left out are recorded in
    `skips`; under `data.on_error=fail` any unusable row stops loading, with every problem
    of every file listed at once.
    """
    skips = skips if skips is not None else SkipLog()
    renderer = RowRenderer(cfg, family, tokenizer, media)
    problems: list[str] = []
    files: list[FileReport] = []
    train_rows = read_rows(sources.train, cfg, files, problems, skips)
    val_rows = read_rows(sources.validation, cfg, files, problems, skips)
    source = "file" if sources.validation else "none"
    if not sources.validation:
        held_out = set(split_indices(len(train_rows), cfg.val_fraction, cfg.val_max_rows, seed))
        source = "split" if held_out else "none"
        val_rows = [r for i, r in enumerate(train_rows) if i in held_out]
        train_rows = [r for i, r in enumerate(train_rows) if i not in held_out]
    train = renderer.render_all(train_rows, problems, skips, cfg.on_error)
    val = renderer.render_all(val_rows, problems, skips, cfg.on_error)
    raise_if_problems(problems)
    notes: list[str] = []
    train, train_dropped, train_cut = fit_length(train, cfg, notes, skips)
    val, val_dropped, val_cut = fit_length(val, cfg, notes, skips)
    if not train:
        raise UserError([_all_too_long(cfg), *notes[:10]])
    report = summarise(
        files, train, val, source, train_dropped + val_dropped, train_cut + val_cut, skips, notes
    )
    return train, val, report


def summarise(files, train, val, validation, dropped, truncated, skips, notes=()) -> DataReport:
    """The report of rendered train / validation examples (SFT and preference loading alike)."""
    return DataReport(
        files=files,
        rows_read=sum(f.rows for f in files),
        train_examples=len(train),
        val_examples=len(val),
        validation=validation,
        dropped_overlong=dropped,
        truncated=truncated,
        train_tokens=sum(len(ex.input_ids) for ex in train),
        trained_tokens=sum(ex.num_trained for ex in train),
        images=sum(m.kind == "image" for ex in train for m in ex.media),
        audio_clips=sum(m.kind == "audio" for ex in train for m in ex.media),
        videos=sum(m.kind == "video" for ex in train for m in ex.media),
        skipped=skips.total,
        notes=list(notes),
    )


def rows_have_problems(cfg: DataConfig, sources: DataSources) -> bool:
    """Read every row and convert it to a conversation, without a tokenizer or a model, and
    say whether any would stop the run (unreadable rows, wrong columns): seconds, so it runs
    before the weights load (minutes). Only under on_error=fail (skip leaves such rows out
    anyway) and for in-memory data (a stream is judged as it is read)."""
    if cfg.on_error != "fail" or sources.streaming:
        return False
    problems: list[str] = []
    skips = SkipLog()
    rows = read_rows(sources.train, cfg, [], problems, skips)
    rows += read_rows(sources.validation, cfg, [], problems, skips)
    formats: dict[str, str] = {}
    for record in rows:
        try:
            fmt = formats.get(record.path)
            if fmt is None:
                fmt = cfg.format if cfg.format != "auto" else detect_format(record, cfg)
                formats[record.path] = fmt
            to_conversation(record, fmt, cfg)
        except UserError as err:
            problems.extend(err.problems)
    return bool(problems)


def split_indices(n: int, fraction: float, max_rows: int, seed: int) -> list[int]:
    """Sorted indices of the rows held out for validation: the same for the same seed.

    At least one row when `fraction` > 0 and there are two or more rows, so a small dataset
    still gets a validation loss; never all rows, so something is left to train on.
    """
    if fraction <= 0 or n < 2:
        return []
    size = min(max(1, int(n * fraction)), max_rows, n - 1)
    return sorted(random.Random(seed).sample(range(n), size))


def fit_one(ex: RenderedExample, cfg: DataConfig) -> tuple[RenderedExample | None, str | None]:
    """Apply `cfg.overlong` to one example: (the example, possibly cut, or None; why it was
    changed or dropped). A cut never falls inside or before an image/audio token run: the
    model would then get features for tokens that are gone and fail. Such examples are
    dropped instead."""
    limit = cfg.max_seq_length
    if len(ex.input_ids) <= limit:
        return ex, None
    cut = replace(
        ex,
        input_ids=ex.input_ids[:limit],
        labels=ex.labels[:limit],
        token_types=ex.token_types[:limit] if ex.token_types is not None else None,
    )
    # A truncated example with no label left would only cost compute.
    if cfg.overlong == "drop" or cut.num_trained == 0 or ex.media_end > limit:
        what = "its image/audio tokens need" if ex.media else "it needs"
        return None, f"too long: {what} max_seq_length >= {len(ex.input_ids)} (now {limit})"
    return cut, "truncated"


def fit_length(
    examples: list[RenderedExample],
    cfg: DataConfig,
    notes: list[str] | None = None,
    skips: SkipLog | None = None,
) -> tuple[list[RenderedExample], int, int]:
    """`fit_one` over examples: (kept, dropped, truncated). Dropped media examples are noted
    with the length they need (text ones are only counted: there may be thousands)."""
    kept, dropped, truncated = [], 0, 0
    for ex in examples:
        fitted, why = fit_one(ex, cfg)
        if fitted is None:
            dropped += 1
            if skips is not None:
                skips.add(ex.where, "too_long", why)
            if ex.media and notes is not None:
                notes.append(f"{ex.where}: dropped, {why.removeprefix('too long: ')}")
        else:
            kept.append(fitted)
            truncated += why == "truncated"
    return kept, dropped, truncated


class RowRenderer:
    """Render rows one at a time for a family: format detected per file, media expanded."""

    def __init__(self, cfg: DataConfig, family: Family, tokenizer, media=None):
        self.cfg, self.family, self.tokenizer, self.media = cfg, family, tokenizer, media
        self._formats: dict[str, str] = {}

    def __call__(self, record: Record) -> RenderedExample:
        """The rendered example; raises UserError (bad row) or MediaDropped."""
        cfg = self.cfg
        fmt = self._formats.get(record.path)
        if fmt is None:
            fmt = cfg.format if cfg.format != "auto" else detect_format(record, cfg)
            self._formats[record.path] = fmt
        return self.render_conversation(to_conversation(record, fmt, cfg))

    def render_conversation(self, conv: Conversation) -> RenderedExample:
        """One converted row rendered (raises UserError for a conversation it refuses)."""
        if conv.text is not None:
            return render_text(conv.text, self.family, self.tokenizer, conv.where)
        if conv.segments is not None:
            return render_segments(conv.segments, self.family, self.tokenizer, conv.where)
        cfg = self.cfg
        return render(
            conv.messages,
            self.family,
            self.tokenizer,
            cfg.train_on,
            conv.where,
            self.media,
            train_thinking=cfg.train_thinking,
            tools=conv.tools,
        )

    def admit(self, item: Record | BadRow, skips: SkipLog, on_error: str) -> RenderedExample | None:
        """The example for one row, or None when it is left out (and recorded in `skips`).

        Under on_error=fail a bad row raises its UserError; a dropped-by-policy audio clip
        (data.audio_overlong=drop) is a choice, not an error, and is always just recorded.
        """
        if isinstance(item, BadRow):
            if on_error == "fail":
                raise UserError(item.problem)
            skips.add(item.where, "unreadable", item.problem, item.raw)
            return None
        try:
            return self(item)
        except MediaDropped as err:
            skips.add(item.where, "audio_too_long", "; ".join(err.problems))
        except UserError as err:
            if on_error == "fail":
                raise
            kind = "media" if isinstance(err, MediaError) else "invalid"
            skips.add(item.where, kind, "; ".join(err.problems), item.row)
        return None

    def render_all(
        self, rows: list[Record], problems: list[str], skips: SkipLog, on_error: str
    ) -> list[RenderedExample]:
        """Every row rendered; under on_error=fail the problems are collected, not raised,
        so one error lists them all."""
        examples = []
        for record in rows:
            try:
                example = self.admit(record, skips, on_error)
            except UserError as err:
                problems.extend(err.problems)
                continue
            if example is not None:
                examples.append(example)
        return examples


def read_rows(
    sources: list[SourceFile],
    cfg: DataConfig,
    files: list[FileReport],
    problems: list[str],
    skips: SkipLog,
) -> list[Record]:
    """The readable rows of `sources` (data/read/sources.py `open_sources`), in order;
    unreadable ones go to `problems` (on_error=fail) or `skips`. Each source's report joins
    `files`."""
    rows: list[Record] = []
    for source in sources:
        count, bad = len(rows), 0
        # A local data file is hashed as it is read, not read a second time for its hash.
        digest = hashlib.sha256() if source.hashed_by_reading else None
        try:
            for item in iter_file_records(source, digest):
                if isinstance(item, Record):
                    rows.append(item)
                    continue
                bad += 1
                if cfg.on_error == "fail":
                    problems.append(item.problem)
                else:
                    skips.add(item.where, "unreadable", item.problem, item.raw)
            fingerprint = f"sha256:{digest.hexdigest()}" if digest else source.fingerprint
        except UserError as err:
            problems.extend(err.problems)
            continue
        mine = rows[count:]
        if not mine and not bad:
            problems.append(
                problem(source.name, "the source has no rows", "add at least one example")
            )
        # Rows read counts every row of the file, unreadable ones too (they are reported as
        # skipped or as errors), as `data check` counts them: the two agree on a file.
        rows_in_file = len(mine) + bad
        files.append(FileReport(source.name, fingerprint, rows_in_file, _format_name(mine, cfg)))
    return rows


def _format_name(rows: list[Record], cfg: DataConfig) -> str:
    if cfg.format != "auto" or not rows:
        return cfg.format
    try:
        return detect_format(rows[0], cfg)
    except UserError:
        return "unknown"


def _all_too_long(cfg: DataConfig) -> str:
    fix = f"raise data.max_seq_length (now {cfg.max_seq_length})"
    if cfg.overlong == "drop":
        fix += " or set data.overlong=truncate"
    return problem(cfg.train, "no training example is left after removing over-long ones", fix)


def media_per_row(cfg: DataConfig) -> list[list[tuple[str, str]]]:
    """Each training row's image, audio and video parts as (kind, reference), for `plan`'s token
    count; empty when there is no training data or it is remote (a prediction must not
    download). Unreadable rows and rows that do not convert are left out: `data check` and
    `train` report those."""
    # preference.py builds on this module: imported here, not at the top, to avoid a cycle.
    from gemmaforge.data.examples.preference import preference_kind, to_preference

    sources = open_sources(cfg)
    if sources.remote:
        return []
    rows, fmt = [], None
    for record in iter_source_records(sources.train):
        if not isinstance(record, Record):
            continue
        try:
            if preference_kind(record.row):
                # A pair's media belong to its prompt, shared by both replies.
                messages = to_preference(record, cfg).prompt
            else:
                fmt = fmt or (cfg.format if cfg.format != "auto" else detect_format(record, cfg))
                messages = to_conversation(record, fmt, cfg).messages
        except UserError:
            continue
        parts = [
            (part["type"], part["ref"])
            for message in messages
            if isinstance(message["content"], list)
            for part in message["content"]
            if part["type"] in ("image", "audio", "video")
        ]
        rows.append(parts)
    return rows
