"""Progress without a terminal: a line at least every 30 s or 5% of the work, each with the
elapsed time and an ETA; never a line per step; log lines never wrapped mid-sentence."""

from __future__ import annotations

import io

from rich.console import Console

from gemmaforge.progress import Tracker, duration, log_console, stage


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def plain(out: io.StringIO) -> Console:
    return Console(file=out, soft_wrap=True, force_terminal=False)


def test_plain_lines_every_5_percent_with_eta():
    out, clock = io.StringIO(), Clock()
    with Tracker("step", 200, console=plain(out), clock=clock) as bar:
        for step in range(1, 201):
            clock.now += 1.0
            bar.update(step, status=f"loss {1 / step:.3f}")
    lines = out.getvalue().splitlines()
    assert len(lines) == 20  # every 10 of 200 steps, not 200 lines
    assert lines[0] == "step 10/200 (5%)  loss 0.100  elapsed 10s  ETA 3m10s"
    assert lines[-1].startswith("step 200/200 (100%)") and "ETA" not in lines[-1]


def test_plain_lines_at_least_every_30_seconds():
    out, clock = io.StringIO(), Clock()
    with Tracker("scoring", 1000, console=plain(out), clock=clock, unit="examples") as bar:
        for done in range(1, 11):
            clock.now += 12.0  # 12 s per example: 5% would be 10 minutes of silence
            bar.update(done)
    lines = out.getvalue().splitlines()
    assert lines[0] == "scoring 3/1000 examples (0%)  elapsed 36s  ETA 3h19m"
    assert len(lines) == 4  # at 36, 72, 108 s and the last count on leaving


def test_resumed_eta_counts_this_process_only():
    clock = Clock()
    bar = Tracker("step", 100, console=plain(io.StringIO()), completed=50, clock=clock)
    clock.now = 10.0
    bar.completed = 60
    assert bar.eta() == 40.0  # 10 steps in 10 s, 40 to go


def test_stage_prints_start_and_done(monkeypatch):
    import gemmaforge.progress as progress

    monkeypatch.setattr(progress, "EVERY_S", 0.05)
    out = io.StringIO()
    with stage("reading x.gguf", plain(out), estimate="about a minute"):
        import time

        time.sleep(0.2)
    lines = out.getvalue().splitlines()
    assert lines[0] == "reading x.gguf (about a minute) ..."
    assert any(line.startswith("still reading x.gguf (") for line in lines[1:-1])
    assert lines[-1].startswith("reading x.gguf: done in ")


def test_duration():
    assert [duration(s) for s in (4, 65, 3725)] == ["4s", "1m05s", "1h02m"]


def test_log_lines_are_not_wrapped_when_not_a_terminal(capsys):
    console = log_console()
    long = "data: " + "word " * 40
    console.print(long)
    assert capsys.readouterr().err.strip() == long.strip()
