"""What the dashboard knows about a run: only what its folder holds (runs.py's RunFolder names),
so the same page works while a run trains, after it ends, and after a resume.

Every read tolerates files that do not exist yet or are being appended to (a half-written last
line is skipped until it is complete).
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gemmaforge.dashboard.charts import PALETTE, Chart, Series, line_chart
from gemmaforge.runs import RunFolder

MAX_POINTS = 500
"""Points drawn per curve at most (a chart is ~400 px wide); longer runs are thinned evenly."""
ACTIVE_SECONDS = 120
"""A run without run.json whose metrics changed this recently is shown as training."""


_tails: dict[Path, tuple[int, int, list[dict]]] = {}
"""path -> (inode, bytes parsed, records): each refresh parses only what was appended."""
_tails_lock = threading.Lock()


def read_lines(path: Path) -> list[dict]:
    """JSON lines of a file being appended to: missing file -> [], a torn last line left for
    the next read. Only new bytes are parsed (a long run's metrics are not re-read every
    second); a file that shrank or was replaced (a resume truncates it) is read afresh."""
    try:
        with path.open("rb") as handle:
            inode = os.fstat(handle.fileno()).st_ino
            with _tails_lock:
                known_inode, offset, records = _tails.get(path, (inode, 0, []))
            size = os.fstat(handle.fileno()).st_size
            if known_inode != inode or size < offset:
                offset, records = 0, []
            handle.seek(offset)
            chunk = handle.read()
    except FileNotFoundError:
        return []
    # Parse complete lines only; a torn last line is left for the next read.
    complete = chunk[: chunk.rfind(b"\n") + 1]
    records = list(records)
    for line in complete.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    with _tails_lock:
        _tails[path] = (inode, offset + len(complete), records)
    return records


_configs: dict[Path, tuple[tuple[int, int], dict]] = {}


def read_config(path: Path) -> dict:
    """config.yaml as a dict ({} if absent or unreadable), parsed again only when it changes
    (YAML parsing is the costliest part of a refresh otherwise)."""
    import yaml

    try:
        stat = path.stat()
    except FileNotFoundError:
        return {}
    key = (stat.st_mtime_ns, stat.st_size)
    cached = _configs.get(path)
    if cached and cached[0] == key:
        return cached[1]
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    _configs[path] = (key, config)
    return config


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def flat(config: dict | None) -> dict[str, Any]:
    """`section.field -> value` of a config as loaded from config.yaml."""
    if not config:
        return {}
    return {
        f"{section}.{key}": value
        for section, fields in config.items()
        if isinstance(fields, dict)
        for key, value in fields.items()
    }


@dataclass
class RunView:
    """One run folder, read once per page render."""

    name: str
    folder: RunFolder
    color: str
    metrics: list[dict] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    data_check: dict | None = None
    finished: bool = False
    updated: float | None = None

    @classmethod
    def read(cls, name: str, root: Path, color: str) -> RunView:
        folder = RunFolder(root)
        config = read_config(folder.config)
        try:
            updated = folder.metrics.stat().st_mtime
        except FileNotFoundError:
            updated = None
        return cls(
            name=name,
            folder=folder,
            color=color,
            metrics=read_lines(folder.metrics),
            samples=read_lines(folder.samples),
            config=config,
            data_check=read_json(folder.data_check),
            finished=folder.record.is_file(),
            updated=updated,
        )

    @property
    def last(self) -> dict:
        return self.metrics[-1] if self.metrics else {}

    @property
    def status(self) -> str:
        if self.finished:
            return "finished"
        if not self.metrics:
            return "starting" if self.folder.root.exists() else "no run folder yet"
        if self.updated and time.time() - self.updated < ACTIVE_SECONDS:
            return "training"
        return "stopped (continue it with gemmaforge train --resume)"

    @property
    def total_steps(self) -> int | None:
        return self.last.get("steps") or flat(self.config).get("train.max_steps")

    @property
    def eta_seconds(self) -> float | None:
        last, total = self.last, self.total_steps
        if self.finished or not last.get("seconds") or not total:
            return None
        per_step = last["seconds"] / max(last["step"], 1)
        return max(total - last["step"], 0) * per_step

    @property
    def last_eval(self) -> float | None:
        return next(
            (r["eval_loss"] for r in reversed(self.metrics) if r.get("eval_loss") is not None),
            None,
        )

    @property
    def latest_samples(self) -> list[dict]:
        if not self.samples:
            return []
        step = self.samples[-1]["step"]
        return [s for s in self.samples if s["step"] == step]

    def series(self, key: str, label: str | None = None, dashed: bool = False) -> Series:
        # Evaluations are few and all kept; other curves are drawn from an even thinning of
        # the records, so a render costs the same at step 100 and at step 100,000.
        records = self.metrics
        if key != "eval_loss" and len(records) > MAX_POINTS:
            stride = len(records) / MAX_POINTS
            records = [records[int(i * stride)] for i in range(MAX_POINTS - 1)] + [records[-1]]
        points = [
            (float(r["step"]), float(r[key]))
            for r in records
            if isinstance(r.get(key), int | float) and not isinstance(r.get(key), bool)
        ]
        return Series(label or self.name, points, self.color, dashed)


def load_runs(roots: list[Path]) -> list[RunView]:
    names = [root.name or str(root) for root in roots]
    # Two runs called the same (runs/a/latest, runs/b/latest) are told apart by their parent.
    names = [
        f"{root.parent.name}/{name}" if names.count(name) > 1 else name
        for root, name in zip(roots, names, strict=True)
    ]
    return [
        RunView.read(name, root, PALETTE[i % len(PALETTE)])
        for i, (name, root) in enumerate(zip(names, roots, strict=True))
    ]


def charts(runs: list[RunView]) -> list[Chart]:
    """The page's charts; with several runs, each curve is one run (overlaid)."""
    several = len(runs) > 1

    def label(run: RunView, what: str) -> str:
        return f"{run.name} {what}" if several else what

    loss = []
    for run in runs:
        loss.append(run.series("loss", label(run, "train")))
        loss.append(run.series("eval_loss", label(run, "validation"), dashed=True))
    memory = []
    for run in runs:
        memory.append(run.series("rss_mib", label(run, "RSS")))
        memory.append(run.series("device_mib", label(run, "device"), dashed=True))
    out = [
        line_chart("loss", loss),
        line_chart("learning rate", [run.series("lr") for run in runs]),
        line_chart("gradient norm", [run.series("grad_norm") for run in runs]),
        line_chart("tokens/s", [run.series("tokens_per_second") for run in runs]),
        line_chart("memory (MiB)", [s for s in memory if s.points]),
        line_chart("padding share", [run.series("padding") for run in runs]),
    ]
    return [chart for chart in out if not chart.empty]


def config_rows(runs: list[RunView]) -> tuple[list[str], list[list[Any]]]:
    """(keys, values per key per run): every setting for one run; for several, only those
    that differ (the config diff)."""
    flats = [flat(run.config) for run in runs]
    keys = sorted({key for f in flats for key in f})
    if len(runs) > 1:
        keys = [k for k in keys if len({json.dumps(f.get(k), default=str) for f in flats}) > 1]
    return keys, [[f.get(key) for f in flats] for key in keys]


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def signature(roots: list[Path]) -> tuple:
    """Changes whenever any file the page shows changes (size or mtime), so live updates are
    sent only when there is something new."""
    out = []
    for root in roots:
        folder = RunFolder(root)
        for path in (
            folder.metrics,
            folder.samples,
            folder.config,
            folder.data_check,
            folder.record,
        ):
            try:
                stat = path.stat()
                out.append((stat.st_mtime_ns, stat.st_size))
            except FileNotFoundError:
                out.append(None)
    return tuple(out)
