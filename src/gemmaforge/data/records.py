"""Read a JSONL or CSV file into plain dict rows, each tagged with its file and line.

This is the only place that touches the bytes of a data file, so it also hashes them (the
model card records which data trained an adapter). Every problem in a file is collected and
raised once as a UserError that names the file, the line and the fix.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    """1-based line the row starts on."""

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class DataFile:
    """The rows of one file plus the facts a model card needs about it."""

    path: str
    sha256: str
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
    """Read every row of a JSONL (.jsonl/.ndjson/.json) or CSV (.csv/.tsv) file."""
    name = str(path)
    data = _read_bytes(Path(path))
    suffix = Path(path).suffix.lower()
    problems: list[str] = []
    lines = _decode_lines(name, data, problems)
    if suffix in JSONL_SUFFIXES:
        records = _parse_jsonl(name, lines, problems)
    else:
        records = _parse_csv(name, lines, CSV_DELIMITERS[suffix], problems)
    if not records and not problems:
        problems.append(
            problem(name, "the file has no rows", "add at least one example to the file")
        )
    raise_if_problems(problems)
    return DataFile(path=name, sha256=hashlib.sha256(data).hexdigest(), records=records)


def _read_bytes(path: Path) -> bytes:
    suffixes = ", ".join(JSONL_SUFFIXES + tuple(CSV_DELIMITERS))
    if path.suffix.lower() not in JSONL_SUFFIXES + tuple(CSV_DELIMITERS):
        raise UserError(
            problem(
                str(path),
                f"unsupported file type {path.suffix or '(no extension)'!r}",
                f"use one of {suffixes}",
            )
        )
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
    return path.read_bytes()


def _decode_lines(name: str, data: bytes, problems: list[str]) -> list[str]:
    """Decode line by line so every non-UTF-8 line is reported, not just the first.

    Bytes are split before decoding because a UTF-8 newline byte never occurs inside a
    multi-byte character. Undecodable lines are kept (with replacement characters) so the
    rest of the file is still checked.
    """
    lines = []
    for number, raw in enumerate(data.splitlines(keepends=True), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            problems.append(
                problem(
                    f"{name}:{number}",
                    f"byte {raw[err.start]:#04x} at column {err.start + 1} is not valid UTF-8",
                    "re-encode the file as UTF-8 (e.g. `iconv -f cp1252 -t utf-8 in > out`, or "
                    "save as 'CSV UTF-8' in Excel)",
                )
            )
            text = raw.decode("utf-8", errors="replace")
        # Excel and Notepad write a byte-order mark that would otherwise end up in a column name.
        lines.append(text.removeprefix("\ufeff") if number == 1 else text)
    return lines


def _parse_jsonl(name: str, lines: list[str], problems: list[str]) -> list[Record]:
    records = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        where = f"{name}:{number}"
        try:
            row = json.loads(text)
        except json.JSONDecodeError as err:
            problems.append(problem(where, f"not valid JSON ({err})", _json_fix(number, text)))
            continue
        if not isinstance(row, dict):
            problems.append(
                problem(
                    where,
                    f"expected a JSON object, got {type(row).__name__}",
                    'write one JSON object per line, like {"messages": [...]}',
                )
            )
            continue
        records.append(Record(row=row, path=name, line=number))
    return records


def _json_fix(number: int, text: str) -> str:
    if number == 1 and text.lstrip().startswith("["):
        return "write one JSON object per line (JSONL), not one JSON array for the whole file"
    return "fix the JSON on this line; each line must hold one complete JSON object"


def _parse_csv(name: str, lines: list[str], delimiter: str, problems: list[str]) -> list[Record]:
    # Long documents in one cell exceed csv's default 128 KiB field limit.
    csv.field_size_limit(2**31 - 1)
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        rows = _csv_rows(reader)
    except csv.Error as err:
        problems.append(
            problem(
                f"{name}:{reader.line_num}",
                f"not valid CSV ({err})",
                'quote fields that contain the delimiter, quotes or newlines ("a ""b"" c")',
            )
        )
        return []
    if not rows:
        return []
    header_line, header = rows[0]
    problems.extend(_header_problems(f"{name}:{header_line}", header))
    records = []
    for line, fields in rows[1:]:
        if len(fields) != len(header):
            problems.append(
                problem(
                    f"{name}:{line}",
                    f"row has {len(fields)} fields but the header has {len(header)}",
                    "quote fields that contain the delimiter, or add/remove the missing fields",
                )
            )
            continue
        records.append(Record(row=dict(zip(header, fields, strict=True)), path=name, line=line))
    return records


def _csv_rows(reader: Any) -> list[tuple[int, list[str]]]:
    """(start line, fields) of each non-blank row, the header included.

    A row starts one past the lines read before it: quoted fields may span several lines, so
    row numbers and line numbers differ.
    """
    rows = []
    while True:
        start = reader.line_num + 1
        fields = next(reader, None)
        if fields is None:
            return rows
        if fields:
            rows.append((start, fields))


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
