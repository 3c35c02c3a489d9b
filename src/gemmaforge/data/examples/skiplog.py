"""Rows left out of training, each with its reason: nothing is dropped silently.

Every row that does not train, for any reason (unreadable, invalid, broken media under
`data.on_error=skip`; too long under `data.overlong=drop`; audio too long under
`data.audio_overlong=drop`), is appended as one JSON line to `OUT/skipped.jsonl` and counted
by kind for the end-of-run summary. A resumed run re-reads the file and does not write a row
twice.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

FILE = "skipped.jsonl"
MAX_RAW = 2000
"""Characters of a row's raw content kept in the log (enough to find it; rows can be huge)."""


class SkipLog:
    def __init__(self, path: Path | None = None):
        self.path = path
        self.counts: Counter[str] = Counter()
        self._seen: set[str] = set()
        if path is not None and path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # the last line of a killed run
                    continue
                self._seen.add(entry["where"])
                self.counts[entry["kind"]] += 1

    def add(self, where: str | None, kind: str, reason: str, row: Any = None) -> None:
        """Record one row left out. `kind` groups reasons for the summary."""
        where = where or "?"
        if where in self._seen:
            return
        self._seen.add(where)
        self.counts[kind] += 1
        if self.path is None:
            return
        entry: dict[str, Any] = {"where": where, "kind": kind, "reason": reason}
        if row is not None:
            text = row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)
            entry["row"] = text[:MAX_RAW]
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.total:
            return "no rows skipped"
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(self.counts.items()))
        where = f" (each with its reason in {self.path})" if self.path else ""
        return f"{self.total} rows skipped: {kinds}{where}"
