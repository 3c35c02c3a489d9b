"""Read a JSONL, JSON or CSV file into plain dict rows, each tagged with its file and line.

Files are local paths or fsspec URLs (`s3://`, `gs://`, `https://`, `file://`), read line by
line either way (remote reads retry transient failures, see `remote.py`). This is the only
place that touches the bytes of a line-based data file, so it also hashes them (the model
card records which data trained an adapter). Every problem in a file is collected and
raised once as a UserError that names the file, the line and the fix.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from gemmaforge import limits
from gemmaforge.data.read.remote import is_url, open_remote, parent
from gemmaforge.errors import UserError, problem

MAX_PROBLEMS = 20
"""Problems listed in one error; the rest are counted, so a broken file stays readable."""

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_DELIMITERS = {".csv": ",", ".tsv": "\t"}


@dataclass(frozen=True)
class Record:
    """One row of a data file: its fields, and where it came from."""

    row: dict[str, Any]
    path: str
    line: int
    """1-based line the row starts on (the row number for columnar sources)."""

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def base(self) -> str:
        """The folder relative media paths in the row start from: the data file's folder,
        a URL for remote files (`Path` would collapse `s3://b/x` to `s3:/b/x`)."""
        return parent(self.path)


@dataclass(frozen=True)
class BadRow:
    """A row that could not be read, with the problem (file:line, what, fix) in words."""

    path: str
    line: int
    problem: str
    raw: str | None = None
    """The row's text, when there is any, for `skipped.jsonl`."""

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class DataFile:
    """The rows of one file plus the facts a model card needs about it."""

    path: str
    fingerprint: str
    """`sha256:<hex>` of the bytes for a local file; see data/read/sources.py for remote ones."""
    records: list[Record]


def raise_if_problems(problems: list[str]) -> None:
    """Raise one UserError listing up to MAX_PROBLEMS problems and counting the rest."""
    # The same problem can come from every row (e.g. a tokenizer missing a turn token).
    problems = list(dict.fromkeys(problems))
    if not problems:
        return
    shown = problems[:MAX_PROBLEMS]
    if len(problems) > MAX_PROBLEMS:
        shown.append(f"... and {len(problems) - MAX_PROBLEMS} more")
    raise UserError(shown)


def read_records(path: str | Path) -> DataFile:
    """Every row of a JSONL (.jsonl/.ndjson/.json) or CSV (.csv/.tsv) file, in memory.

    Every bad row of the file is reported at once.
    """
    digest = hashlib.sha256()
    records, problems = [], []
    for item in iter_records(path, digest):
        if isinstance(item, BadRow):
            problems.append(item.problem)
        else:
            records.append(item)
    if not records and not problems:
        problems.append(
            problem(str(path), "the file has no rows", "add at least one example to the file")
        )
    raise_if_problems(problems)
    return DataFile(path=str(path), fingerprint=f"sha256:{digest.hexdigest()}", records=records)


def iter_records(
    path: str | Path, digest=None, storage_options: dict[str, Any] | None = None
) -> Iterator[Record | BadRow]:
    """Stream the rows of a JSONL or CSV file (a path or an fsspec URL), one at a time.

    A row that cannot be read comes out as a BadRow (the caller's error policy decides);
    a file that cannot be read at all raises UserError. `digest` (a hashlib object) is fed
    every byte read. `storage_options` go to fsspec for URLs.
    """
    name = str(path)
    suffix = file_suffix(name)
    with _open_binary(name, storage_options) as handle:
        if suffix == ".json":
            yield from _parse_json(name, handle, digest)
            return
        lines = _decode_lines(name, handle, digest)
        if suffix in JSONL_SUFFIXES:
            yield from _parse_jsonl(name, lines)
        else:
            yield from _parse_csv(name, lines, CSV_DELIMITERS[suffix])
        for _ in lines:  # hash any bytes left after a fatal CSV error
            pass


def file_suffix(name: str) -> str:
    """The lower-case extension of a path or URL (a URL's query string is not part of it)."""
    return Path(name.split("?", 1)[0] if is_url(name) else name).suffix.lower()


def _open_binary(name: str, storage_options: dict[str, Any] | None) -> BinaryIO:
    suffixes = ", ".join(JSONL_SUFFIXES + tuple(CSV_DELIMITERS))
    suffix = file_suffix(name)
    if suffix not in JSONL_SUFFIXES + tuple(CSV_DELIMITERS):
        raise UserError(
            problem(
                name,
                f"unsupported file type {suffix or '(no extension)'!r}",
                f"use one of {suffixes}",
            )
        )
    if is_url(name):
        return open_remote(name, storage_options)
    path = Path(name)
    if path.is_dir():
        raise UserError(problem(str(path), "is a folder, not a file", "point at a data file"))
    if not path.exists():
        raise UserError(
            problem(
                str(path),
                "file not found",
                f"check the path (relative paths start from {Path.cwd()})",
            )
        )
    return path.open("rb")


@dataclass
class _Line:
    number: int
    text: str
    problem: str | None
    """Set when the line is not valid UTF-8 (the text then has replacement characters)."""


def _decode_lines(name: str, handle: BinaryIO, digest) -> Iterator[_Line]:
    """Decode line by line so every non-UTF-8 line is reported, not just the first.

    Bytes are split before decoding because a UTF-8 newline byte never occurs inside a
    multi-byte character. Undecodable lines are kept (with replacement characters) so the
    rest of the file is still checked.
    """
    cap = limits.current().max_row_bytes
    for number, raw in enumerate(_capped_lines(handle, cap, digest), start=1):
        if raw is None:
            yield _Line(number, "", _too_long(name, number, cap))
            continue
        issue = None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            issue = problem(
                f"{name}:{number}",
                f"byte {raw[err.start]:#04x} at column {err.start + 1} is not valid UTF-8",
                "re-encode the file as UTF-8 (e.g. `iconv -f cp1252 -t utf-8 in > out`, or "
                "save as 'CSV UTF-8' in Excel)",
            )
            text = raw.decode("utf-8", errors="replace")
        # Excel and Notepad write a byte-order mark that would otherwise end up in a column name.
        yield _Line(number, text.removeprefix("\ufeff") if number == 1 else text, issue)


def _capped_lines(handle: BinaryIO, cap: int, digest) -> Iterator[bytes | None]:
    """The file's lines, each read with at most `cap` bytes held; None for a longer line,
    whose rest is read through in chunks (hashed, not kept)."""
    while raw := handle.readline(cap + 1):
        if digest is not None:
            digest.update(raw)
        if len(raw) <= cap or raw.endswith(b"\n"):
            yield raw
            continue
        while (rest := handle.readline(2**20)) and not rest.endswith(b"\n"):
            if digest is not None:
                digest.update(rest)
        if digest is not None and rest:
            digest.update(rest)
        yield None


def _too_long(name: str, number: int, cap: int) -> str:
    return problem(
        f"{name}:{number}",
        f"the row is longer than {cap:,} bytes (data.max_row_bytes)",
        "shorten it (media belong in files the row points at), or raise data.max_row_bytes",
    )


def _parse_jsonl(name: str, lines: Iterator[_Line]) -> Iterator[Record | BadRow]:
    for line in lines:
        number, text = line.number, line.text
        if line.problem:
            yield BadRow(name, number, line.problem, text)
            continue
        if not text.strip():
            continue
        where = f"{name}:{number}"
        try:
            row = json.loads(text)
        except json.JSONDecodeError as err:
            issue = problem(
                where, f"not valid JSON ({_json_error(err, text)})", _json_fix(number, text)
            )
            yield BadRow(name, number, issue, text)
            continue
        if not isinstance(row, dict):
            issue = problem(
                where,
                f"expected a JSON object, got {type(row).__name__}",
                'write one JSON object per line, like {"messages": [...]}',
            )
            yield BadRow(name, number, issue, text)
            continue
        yield Record(row=row, path=name, line=number)


def _parse_json(name: str, handle: BinaryIO, digest) -> Iterator[Record | BadRow]:
    """A `.json` file: one JSON array of rows (LLaMA-Factory's and axolotl's format), one
    (pretty-printed) object, or JSON Lines. A whole-file document is read into memory (the
    standard library cannot stream an array); rows of an array are numbered by position."""
    data = handle.read()
    if digest is not None:
        digest.update(data)
    try:
        document = json.loads(data.decode("utf-8").removeprefix("\ufeff"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        document = None
    if isinstance(document, dict):
        yield Record(row=document, path=name, line=1)
        return
    if not isinstance(document, list):
        # JSON Lines named .json (or broken JSON): line by line, so each bad line is named.
        yield from _parse_jsonl(name, _decode_lines(name, io.BytesIO(data), None))
        return
    for number, row in enumerate(document, start=1):
        if isinstance(row, dict):
            yield Record(row=row, path=name, line=number)
        else:
            issue = problem(
                f"{name}:{number}",
                f"item {number} of the JSON array is a {type(row).__name__}, not an object",
                'make every item an object, like {"messages": [...]}',
            )
            yield BadRow(name, number, issue, json.dumps(row)[:1000])


def _json_error(err: json.JSONDecodeError, text: str) -> str:
    """The parser's complaint at the file's column: json counts lines and columns within the
    string it was given, so a line cut short reads as "line 2 column 1" (its newline)."""
    body = text.rstrip("\r\n")
    column = min(err.pos, len(body)) + 1
    if err.pos >= len(body.rstrip()):
        return (
            f"{err.msg} at column {column}, the end of the line: the object is cut short or "
            "spread over several lines"
        )
    return f"{err.msg} at column {column}"


def _json_fix(number: int, text: str) -> str:
    if number == 1 and text.lstrip().startswith("["):
        return "write one JSON object per line (JSONL), not one JSON array for the whole file"
    return "fix the JSON on this line; each line must hold one complete JSON object"


def _parse_csv(name: str, lines: Iterator[_Line], delimiter: str) -> Iterator[Record | BadRow]:
    # Long documents in one cell exceed csv's default 128 KiB field limit.
    csv.field_size_limit(2**31 - 1)
    source = _LineFeed(lines)
    reader = csv.reader(source, delimiter=delimiter, strict=True)
    header = None
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader, None)
        except csv.Error as err:
            issue = problem(
                f"{name}:{reader.line_num}",
                f"not valid CSV ({err}); the rows after it were not read",
                'quote fields that contain the delimiter, quotes or newlines ("a ""b"" c")',
            )
            yield BadRow(name, reader.line_num, issue)
            return
        if fields is None:
            return
        bad_encoding = source.take_problems()
        if not fields:
            continue
        if header is None:
            header = fields
            issues = bad_encoding + _header_problems(f"{name}:{start}", header)
            for issue in issues:
                yield BadRow(name, start, issue, delimiter.join(fields))
            if issues:
                return
            continue
        raw = delimiter.join(fields)
        if bad_encoding:
            yield BadRow(name, start, bad_encoding[0], raw)
        elif len(fields) != len(header):
            issue = problem(
                f"{name}:{start}",
                f"row has {len(fields)} fields but the header has {len(header)}",
                "quote fields that contain the delimiter, or add/remove the missing fields",
            )
            yield BadRow(name, start, issue, raw)
        else:
            yield Record(row=dict(zip(header, fields, strict=True)), path=name, line=start)


class _LineFeed:
    """Feeds decoded lines to csv.reader and remembers the encoding problems of the lines
    the current row was read from (a quoted field may span several lines)."""

    def __init__(self, lines: Iterator[_Line]):
        self._lines = lines
        self._problems: list[str] = []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        if line.problem:
            self._problems.append(line.problem)
        return line.text

    def take_problems(self) -> list[str]:
        problems, self._problems = self._problems, []
        return problems


def _header_problems(where: str, header: list[str]) -> list[str]:
    problems = []
    if any(not column.strip() for column in header):
        problems.append(problem(where, "the header has an empty column name", "name every column"))
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:
        problems.append(
            problem(where, f"duplicate column names {duplicates}", "give each column its own name")
        )
    return problems
