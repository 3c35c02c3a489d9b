"""How much the live dashboard slows training: the same tiny run with the dashboard off and on
(served from a thread of the training process, with a client following its event stream, as
an open browser tab would), sampling off, alternated to spread drift over both. Prints the
loop's wall time per step for each and the ratio on/off (the goal: at most 1.02).

    PYTHONPATH=src python tools/dashboard_overhead.py [--model DIR] [--steps 80] [--repeats 3]

Without --model a tiny random Gemma 3 is built in a temp folder. The loop's wall time is
timed (not the step times the metrics log), so work between steps counts: metrics lines,
observers, and the dashboard thread's competition for the CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_data(path: Path, rows: int = 256) -> Path:
    import random

    rng = random.Random(0)
    text = "the sky is blue cows drink water seven is prime up is away from the ground"
    words = text.split(" ")
    with path.open("w") as handle:
        for _ in range(rows):
            question = " ".join(rng.choices(words, k=rng.randint(4, 12)))
            answer = " ".join(rng.choices(words, k=rng.randint(4, 12)))
            messages = [
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
            handle.write(json.dumps({"messages": messages}) + "\n")
    return path


FOLLOWER = """
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "events", timeout=3600) as stream:
    while stream.readline():
        pass
"""
"""A browser tab's part: another process reading the event stream."""


def thread_cpu(native_id: int) -> float:
    """CPU seconds (user + system) one thread of this process has used."""
    import psutil

    for thread in psutil.Process().threads():
        if thread.id == native_id:
            return thread.user_time + thread.system_time
    return 0.0


def one_run(model: Path, data: Path, out: Path, steps: int, dashboard: bool):
    """(seconds per step of the training loop, CPU seconds of the dashboard's thread per
    second of loop), dashboard on or off."""
    from rich.console import Console

    from gemmaforge.config import Config
    from gemmaforge.train.finish import finish
    from gemmaforge.train.loop import run_loop
    from gemmaforge.train.observe import attach
    from gemmaforge.train.prepare import prepare
    from gemmaforge.train.trainer import progress_bar

    cfg = Config.model_validate(
        {
            "model": {"name_or_path": str(model)},
            "data": {"train": str(data), "val_fraction": 0.0},
            "lora": {"r": 8},
            "train": {"output_dir": str(out), "max_steps": steps, "batch_size": 4, "seed": 0},
        }
    )
    console = Console(stderr=True, quiet=True)
    run = prepare(cfg, None, console)
    running, follower, cpu = None, None, 0.0
    if dashboard:
        from gemmaforge.dashboard.app import start

        running = start([out], port=0)
        follower = subprocess.Popen([sys.executable, "-c", FOLLOWER, running.url])
        time.sleep(2)  # the follower connects and gets its first page
    with progress_bar(console) as progress, attach(run, console):
        if running:
            cpu = thread_cpu(running.thread.native_id)
        started = time.perf_counter()
        run_loop(run.training, progress)
        seconds = time.perf_counter() - started
        if running:
            cpu = thread_cpu(running.thread.native_id) - cpu
    if running:
        follower.terminate()
        follower.wait()
        running.stop()
    finish(run, console)
    return seconds / steps, cpu / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model folder (default: a tiny Gemma 3)")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = args.model
        if model is None:
            from gemmaforge.models.tiny import make_tiny

            model = make_tiny("gemma3", root / "tiny")
        data = write_data(root / "train.jsonl")
        times: dict[bool, list[float]] = {False: [], True: []}
        shares = []
        for i in range(args.repeats):
            for dashboard in (False, True) if i % 2 == 0 else (True, False):
                out = root / f"run-{i}-{dashboard}"
                per_step, share = one_run(model, data, out, args.steps, dashboard)
                times[dashboard].append(per_step)
                state = f"on  (its thread: {share:.2%} of a core)" if dashboard else "off"
                print(f"repeat {i}: {per_step * 1e3:.1f} ms/step, dashboard {state}", flush=True)
                if dashboard:
                    shares.append(share)
        off, on = statistics.median(times[False]), statistics.median(times[True])
        print(f"median ms/step: off {off * 1e3:.1f}, on {on * 1e3:.1f}")
        print(f"ratio on/off: {on / off:.3f} (goal: <= 1.02; noisy on a shared machine)")
        print(
            f"dashboard thread CPU: {statistics.median(shares):.2%} of a core while training "
            "(an upper bound on what it takes from training, noise-free)"
        )


if __name__ == "__main__":
    main()
