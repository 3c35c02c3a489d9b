"""Progress for every step that can take more than a few seconds: one helper, two faces.

On a terminal: a rich progress bar (or a spinner when the amount of work is unknown) with the
elapsed time and an ETA. Elsewhere (a log file, CI, a pipe): plain lines, at least every
`EVERY_S` seconds or every `EVERY_FRACTION` of the work, each with the elapsed time and an
ETA, so a log never goes silent for minutes and never fills with a line per step.

    with Tracker("scoring the base", total=48, console=console) as bar:
        for batch in batches:
            ...
            bar.advance(len(batch))

    with stage("reading the GGUF", console):   # unknown length: a line every EVERY_S
        ...
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Any

EVERY_S = 30.0
"""Longest silence in plain (non-terminal) output, in seconds."""
EVERY_FRACTION = 0.05
"""Plain output also prints a line every 5% of the work."""


def duration(seconds: float) -> str:
    """`42s`, `3m05s`, `1h02m`."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _console(console: Any | None):
    return console if console is not None else log_console()


def is_terminal(console: Any) -> bool:
    """True when the console writes to an interactive terminal (a live bar can redraw)."""
    return bool(getattr(console, "is_terminal", False))


class Tracker:
    """Progress through `total` units of work (see the module docstring).

    `completed` starts the count (a resumed run starts at its step); the ETA is measured from
    the work done in this process only. `status` is free text shown after the count (the
    training loss, for instance). `live` forces the face (tests); default: the console's."""

    def __init__(
        self,
        description: str,
        total: int,
        *,
        console: Any | None = None,
        completed: int = 0,
        unit: str = "",
        live: bool | None = None,
        clock=time.monotonic,
    ):
        self.description, self.total, self.unit = description, max(0, total), unit
        self.console = _console(console)
        self.live = is_terminal(self.console) if live is None else live
        self.completed = self.start_count = completed
        self.status = ""
        self._clock = clock
        self._started = clock()
        self._printed_at = self._started
        self._printed_count = completed
        self._bar = None
        self._task = None

    def __enter__(self) -> Tracker:
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(
                self.description, total=self.total, completed=self.completed, status=""
            )
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if self._bar is not None:
            self._bar.__exit__(kind, value, traceback)
        elif kind is None and self._printed_count != self.completed:
            self._print()

    def advance(self, count: int = 1, status: str | None = None) -> None:
        self.update(self.completed + count, status)

    def update(self, completed: int, status: str | None = None) -> None:
        self.completed = completed
        if status is not None:
            self.status = status
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, status=self.status)
            return
        now = self._clock()
        step = max(1, round(self.total * EVERY_FRACTION))
        due = now - self._printed_at >= EVERY_S or completed - self._printed_count >= step
        if due or completed >= self.total:
            self._print(now)

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left at the rate of this process's work so far (None before any)."""
        now = self._clock() if now is None else now
        done = self.completed - self.start_count
        if done <= 0:
            return None
        return (now - self._started) / done * (self.total - self.completed)

    def line(self, now: float | None = None) -> str:
        """The plain line: `description 12/100 (12%)  status  elapsed 1m02s  ETA 7m30s`."""
        now = self._clock() if now is None else now
        unit = f" {self.unit}" if self.unit else ""
        share = f" ({self.completed / self.total:.0%})" if self.total else ""
        text = f"{self.description} {self.completed}/{self.total}{unit}{share}"
        if self.status:
            text += f"  {self.status}"
        text += f"  elapsed {duration(now - self._started)}"
        if self.completed < self.total:
            eta = self.eta(now)
            text += f"  ETA {duration(eta)}" if eta is not None else "  ETA unknown"
        return text

    def _print(self, now: float | None = None) -> None:
        now = self._clock() if now is None else now
        self.console.print(self.line(now), markup=False, highlight=False)
        self._printed_at, self._printed_count = now, self.completed


@contextmanager
def stage(description: str, console: Any | None = None, *, estimate: str | None = None):
    """Work of unknown length: a spinner with the elapsed time on a terminal; elsewhere a line
    at the start, `still DESCRIPTION (1m00s)` every EVERY_S seconds, and one when done.
    `estimate` (e.g. "about a minute") is shown at the start."""
    console = _console(console)
    hint = f" ({estimate})" if estimate else ""
    started = time.monotonic()
    if is_terminal(console):
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        columns = (SpinnerColumn(), TextColumn(f"{description}{hint}"), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as spinner:
            spinner.add_task(description, total=None)
            yield
        console.print(f"{description}: done in {duration(time.monotonic() - started)}")
        return
    console.print(f"{description}{hint} ...", markup=False, highlight=False)
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(EVERY_S):
            elapsed = duration(time.monotonic() - started)
            console.print(f"still {description} ({elapsed})", markup=False, highlight=False)

    beat = threading.Thread(target=heartbeat, daemon=True)
    beat.start()
    try:
        yield
    finally:
        done.set()
        beat.join()
    elapsed = duration(time.monotonic() - started)
    console.print(f"{description}: done in {elapsed}", markup=False, highlight=False)


def log_console(stderr: bool = True):
    """A rich Console for status lines: on a terminal, wrapped to its width; elsewhere (a log
    file, a pipe) never wrapped, so a sentence stays on one line instead of being cut at
    rich's default 80 columns."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    terminal = hasattr(stream, "isatty") and stream.isatty()
    return Console(stderr=stderr, soft_wrap=not terminal, highlight=False)
