"""What `data check` found, as data (`CheckReport`, the `--json` output) and as a
terminal report (rich).

Finding kinds are one table (`KINDS`): each kind's severity decides the exit code, and its
title heads its group in the terminal, where each group lists a few findings and counts the
rest (`--json` lists them all).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

KINDS: dict[str, tuple[str, str]] = {
    # kind: (severity, what the report calls it), in report order
    "unreadable_file": ("error", "files that cannot be read"),
    "unreadable_row": ("error", "rows that cannot be read (encoding, JSON, CSV fields)"),
    "schema": ("error", "rows that do not fit the data format"),
    "preference_data": ("error", "preference rows, and train.objective is sft"),
    "empty_text": ("error", "empty text or messages"),
    "missing_media": ("error", "missing images, audio or video"),
    "unreadable_media": ("error", "unreadable images, audio or video"),
    "conversation": ("error", "conversations training would reject"),
    "audio_too_long": ("error", "audio over the model's limit (audio_overlong=fail)"),
    "no_examples": ("error", "no training example left"),
    "overlong_dropped": ("warning", "over-long examples training would drop"),
    "overlong_truncated": ("warning", "over-long examples training would truncate"),
    "audio_dropped": ("warning", "long audio: examples training would skip"),
    "audio_truncated": ("warning", "long audio training would cut"),
    "duplicate": ("warning", "duplicate examples"),
    "train_val_overlap": ("warning", "examples in both training and validation"),
    "label_imbalance": ("warning", "imbalanced replies"),
}


@dataclass(frozen=True)
class Finding:
    """One problem: its kind, the file and row (None for a whole file), and the message
    (`file:row: what. Fix: how`)."""

    kind: str
    file: str | None
    row: int | None
    message: str

    @property
    def severity(self) -> str:
        return KINDS[self.kind][0]

    @property
    def where(self) -> str | None:
        return f"{self.file}:{self.row}" if self.row is not None else self.file

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "where": self.where,
            "file": self.file,
            "row": self.row,
            "message": self.message,
        }


@dataclass
class CheckReport:
    """Everything `data check` found; `to_dict` is the `--json` output (stable keys)."""

    tokenizer: dict[str, Any]
    settings: dict[str, Any]
    sources: list[dict[str, Any]]
    examples: dict[str, int]
    tokens: dict[str, dict[str, Any]]
    media: dict[str, dict[str, Any]]
    duplicates: dict[str, int]
    overlap: dict[str, Any]
    labels: dict[str, Any]
    findings: list[Finding]

    def count(self, severity: str) -> int:
        return sum(f.severity == severity for f in self.findings)

    def exit_code(self, strict: bool = False) -> int:
        """1 when errors were found (or warnings, with `strict`), else 0."""
        return int(bool(self.count("error") or (strict and self.count("warning"))))

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.count("error"),
            "errors": self.count("error"),
            "warnings": self.count("warning"),
            "counts": dict(Counter(f.kind for f in self.findings)),
            "tokenizer": self.tokenizer,
            "settings": self.settings,
            "sources": self.sources,
            "examples": self.examples,
            "tokens": self.tokens,
            "media": self.media,
            "duplicates": self.duplicates,
            "overlap": self.overlap,
            "labels": self.labels,
            "findings": [f.to_dict() for f in self.findings],
        }


def distribution(values) -> dict[str, float | int | None]:
    """count, min, median, p95 and max of some numbers (None for each when there are none)."""
    if not len(values):
        return {"count": 0, "min": None, "median": None, "p95": None, "max": None}
    v = np.asarray(values)
    return {
        "count": int(v.size),
        "min": _plain(v.min()),
        "median": round(float(np.median(v)), 2),
        "p95": round(float(np.percentile(v, 95)), 2),
        "max": _plain(v.max()),
    }


def _plain(value) -> float | int:
    return round(float(value), 2) if np.issubdtype(type(value), np.floating) else int(value)


def print_report(report: CheckReport, console: Console, show: int = 10) -> None:
    """The report for a person: sources, problems (`show` per kind), token lengths, media,
    duplicates, overlap, labels, and the verdict."""
    tok = report.tokenizer
    console.print(Text(f"Tokenizer: {tok['source']} ({tok['family']})", style="bold"))
    if tok["default"]:
        console.print(
            "  the bundled Gemma 3 270M tokenizer (no model given): pass --model for your "
            "model's exact counts",
            style="yellow",
        )
    if any(stats["untokenized"] for stats in report.tokens.values()):
        console.print(
            "  token counts for images, audio and video need a multimodal --model (Gemma 3n or "
            "Gemma 4); their files were still checked",
            style="yellow",
        )
    _sources(report, console)
    _problems(report, console, show)
    _tokens(report, console)
    _media(report, console)
    _overlap_and_labels(report, console)
    errors, warnings = report.count("error"), report.count("warning")
    if errors:
        verdict = f"errors: {errors}, warnings: {warnings}; training would stop or lose rows"
        console.print(Text(verdict, style="bold red"))
    elif warnings:
        console.print(Text(f"No errors; warnings: {warnings}", style="bold yellow"))
    else:
        console.print(Text("No problems found", style="bold green"))


def _sources(report: CheckReport, console: Console) -> None:
    table = Table("file", "split", "rows", "unreadable", "format", title="Sources")
    for source in report.sources:
        table.add_row(
            Text(source["path"]),
            source["split"],
            str(source["rows"]),
            str(source["unreadable"]),
            source["format"] or "?",
        )
    console.print(table)
    examples = report.examples
    held = report.settings["validation"]
    console.print(
        f"{examples['rows_read']} rows read; usable examples: {examples['train']} train, "
        f"{examples['validation']} validation ({'seeded split' if held == 'split' else held})"
    )


def _problems(report: CheckReport, console: Console, show: int) -> None:
    by_kind: dict[str, list[Finding]] = {}
    for finding in report.findings:
        by_kind.setdefault(finding.kind, []).append(finding)
    for kind, findings in by_kind.items():
        severity, title = KINDS[kind]
        mark, style = ("x", "red") if severity == "error" else ("!", "yellow")
        console.print(Text(f"\n{mark} {title}: {len(findings)}", style=f"bold {style}"))
        for finding in findings[:show]:
            console.print(Text(f"  {finding.message}"))
        if len(findings) > show:
            console.print(f"  ... and {len(findings) - show} more (--json lists them all)")


def _tokens(report: CheckReport, console: Console) -> None:
    settings = report.settings
    title = (
        f"Token lengths (max_seq_length {settings['max_seq_length']}, "
        f"overlong={settings['overlong']})"
    )
    table = Table(
        "modality", "examples", "min", "median", "p95", "max", "over max", "trained", title=title
    )
    for modality, stats in report.tokens.items():
        cells = [_num(stats[key]) for key in ("count", "min", "median", "p95", "max")]
        over = f"{stats['over_max']} ({stats['dropped']} dropped, {stats['truncated']} cut)"
        if stats["untokenized"]:
            over += f"; {stats['untokenized']} not tokenized"
        # Tokens that carry a label (replies, minus what loss flags or train_on mask).
        trained = f"{stats.get('trained', 0)} of {stats.get('tokens', 0)} tokens"
        table.add_row(modality, *cells, over, trained)
    console.print()
    console.print(table)


def _media(report: CheckReport, console: Console) -> None:
    images, audio = report.media["images"], report.media["audio"]
    video = report.media.get("video", {"count": 0})
    if images["count"] or audio["count"] or video["count"]:
        console.print()
    if images["count"]:
        w, h = images["width"], images["height"]
        console.print(
            f"Images: {images['count']}; width {w['min']}-{w['max']} (median {w['median']}), "
            f"height {h['min']}-{h['max']} (median {h['median']}); {_formats(images)}"
        )
    if audio["count"]:
        s = audio["seconds"]
        limit = report.settings["audio_max_seconds"]
        console.print(
            f"Audio: {audio['count']} clips; {s['min']}-{s['max']} s (median {s['median']}, "
            f"p95 {s['p95']}); {_formats(audio)}"
            + (f"; {audio['over_limit']} over the {limit:g} s limit" if limit else "")
        )
    if video["count"]:
        s, f = video["seconds"], video["frames"]
        console.print(
            f"Video: {video['count']}; {s['min']}-{s['max']} s (median {s['median']}); "
            f"{f['min']}-{f['max']} frames each (median {f['median']}; {video['fps']:g} per "
            f"second, at most {video['max_frames']}); {_formats(video)}"
        )


def _overlap_and_labels(report: CheckReport, console: Console) -> None:
    overlap = report.overlap
    console.print(
        f"\nDuplicates: {_rows(report.duplicates['rows'])} repeating an earlier row. "
        f"Train/validation overlap ({overlap['validation']}): {_rows(overlap['rows'])}"
    )
    labels = report.labels
    if not labels["replies"]:
        return
    r = labels["reply_tokens"]
    line = (
        f"Replies: {labels['replies']}, {labels['distinct']} distinct; reply tokens median "
        f"{r['median']}, p95 {r['p95']}, max {r['max']}"
    )
    if labels["classification_like"]:
        top = ", ".join(f"{item['reply']!r} {item['count']}" for item in labels["top"])
        line += f"; short answers, most common: {top}"
    console.print(Text(line))


def _formats(media: dict[str, Any]) -> str:
    return ", ".join(f"{suffix} {n}" for suffix, n in sorted(media["formats"].items()))


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _num(value: float | int | None) -> str:
    return "-" if value is None else f"{value:g}"
