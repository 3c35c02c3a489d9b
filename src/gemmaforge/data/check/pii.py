"""`gemmaforge data check --pii`: count personal identifiers per file and column, with masked
`file:row` examples. The detectors (and their limits) are in data/examples/pii.py, the module
`data.redact_pii` uses too, so what is reported is what redaction replaces."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from gemmaforge.config import Config
from gemmaforge.data.examples.pii import find_pii, mask
from gemmaforge.data.read.records import Record
from gemmaforge.data.read.sources import iter_file_records, open_sources

EXAMPLES = 3
"""Masked examples kept per file, column and kind."""


@dataclass
class PiiReport:
    rows: int = 0
    counts: Counter = field(default_factory=Counter)
    """(file, column, kind) -> findings."""
    examples: dict = field(default_factory=lambda: defaultdict(list))
    """(file, column, kind) -> ["file:row: masked", ...]."""

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        return {
            "rows": self.rows,
            "total": self.total,
            "findings": [
                {
                    "file": file,
                    "column": column,
                    "kind": kind,
                    "count": count,
                    "examples": self.examples[(file, column, kind)],
                }
                for (file, column, kind), count in sorted(self.counts.items())
            ],
        }

    def lines(self) -> list[str]:
        if not self.total:
            return [f"personal data: none found in {self.rows} rows (heuristic: docs/privacy.md)"]
        out = [
            f"personal data: {self.total} possible identifiers in {self.rows} rows "
            "(heuristic: docs/privacy.md; data.redact_pii=true replaces them for training)"
        ]
        for (file, column, kind), count in sorted(self.counts.items()):
            out.append(f"  {file} [{column}] {kind}: {count}")
            out.extend(f"    {example}" for example in self.examples[(file, column, kind)])
        return out


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def scan_pii(cfg: Config) -> PiiReport:
    """Every row of data.train and data.validation, every string in every column."""
    sources = open_sources(cfg.data)
    report = PiiReport()
    for source in sources.train + sources.validation:
        for record in iter_file_records(source):
            if not isinstance(record, Record):
                continue
            report.rows += 1
            for column, value in record.row.items():
                for text in _strings(value):
                    for finding in find_pii(text):
                        key = (source.name, str(column), finding.kind)
                        report.counts[key] += 1
                        if len(report.examples[key]) < EXAMPLES:
                            report.examples[key].append(f"{record.where}: {mask(finding.text)}")
    return report
