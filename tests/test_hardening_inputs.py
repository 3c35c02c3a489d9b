"""Inputs that would eat the machine stop early, with the setting that raises the cap, under
a real memory limit (RLIMIT_AS in the child process): a media path to a device, one huge
JSONL row, hours of silence in a small FLAC, a YAML alias bomb (issue 12)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
}
HEADROOM = 1536 * 2**20
"""Address space allowed above what `data check` of a tiny clean file needs: far less than
what reading the bad input whole takes (6 GB+ for /dev/zero, GBs for a 50 MB row, 4 GB of
decoded silence)."""

RUNNER = """
import resource, runpy, sys
cap = int(sys.argv[1])
if cap:
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
sys.argv = ["gemmaforge", *sys.argv[2:]]
try:
    runpy.run_module("gemmaforge", run_name="__main__")
finally:
    peak = [l for l in open("/proc/self/status") if l.startswith("VmPeak")]
    print("PEAK", peak[0].split()[1], file=sys.stderr)
"""


def capped(cap: int, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", RUNNER, str(cap), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


@pytest.fixture(scope="module")
def baseline(tiny_dir, tmp_path_factory) -> int:
    """Peak address space (bytes) of `data check` on a clean two-row file."""
    data = tmp_path_factory.mktemp("clean") / "ok.jsonl"
    write_rows(data, [chat("hi", "yo"), chat("hello", "hey")])
    done = capped(0, "data", "check", str(data), "--model", str(tiny_dir("gemma3")))
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stderr.rsplit("PEAK", 1)[1].split()[0]) * 1024


def chat(question: str, answer: str) -> dict:
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def check_refused(done: subprocess.CompletedProcess, *needles: str) -> None:
    out = done.stdout + done.stderr
    assert done.returncode in (1, 2), out[-3000:]
    assert "Traceback" not in out and "MemoryError" not in out, out[-3000:]
    for needle in needles:
        assert needle in out, out[-3000:]


def test_one_huge_jsonl_row(tiny_dir, tmp_path, baseline):
    data = tmp_path / "big.jsonl"
    with data.open("w") as handle:
        handle.write(json.dumps(chat("hi", "yo")) + "\n")
        handle.write(json.dumps(chat("x" * (50 * 2**20), "yo")) + "\n")
    model = str(tiny_dir("gemma3"))
    done = capped(baseline + HEADROOM, "data", "check", str(data), "--model", model)
    check_refused(done, "big.jsonl:2", "data.max_row_bytes")
    # train stops (exit 2) at the same row, with the same cap named.
    done = capped(
        baseline + HEADROOM,
        "train",
        "--model",
        model,
        "--data",
        str(data),
        "--output",
        str(tmp_path / "run"),
        "train.max_steps=1",
    )
    assert done.returncode == 2, done.stderr[-3000:]
    check_refused(done, "big.jsonl:2", "data.max_row_bytes")


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_media_path_to_a_device(tiny_dir, tmp_path, baseline, device):
    data = write_rows(tmp_path / "img.jsonl", [{"image": device, "caption": "a picture"}] * 2)
    done = capped(
        baseline + HEADROOM,
        "data",
        "check",
        str(data),
        "--model",
        str(tiny_dir("gemma3")),
        "data.format=caption",
    )
    check_refused(done, "not a regular file")


def test_hours_of_silence_in_a_small_flac(tiny_dir, tmp_path, baseline):
    clip = tmp_path / "silence.flac"
    rate = 16_000
    with soundfile.SoundFile(clip, "w", rate, 1, format="FLAC") as out:
        block = np.zeros(rate * 60, dtype=np.int16)
        for _ in range(4 * 60):
            out.write(block)
    assert clip.stat().st_size < 20 * 2**20
    data = write_rows(tmp_path / "asr.jsonl", [{"audio": str(clip), "text": "nothing"}] * 2)
    done = capped(
        baseline + HEADROOM,
        "data",
        "check",
        str(data),
        "--model",
        str(tiny_dir("gemma3")),
        "data.format=transcription",
    )
    check_refused(done, "data.max_audio_seconds")


def test_a_yaml_alias_bomb(tmp_path):
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev, name = chr(ord("a") + i - 1), chr(ord("a") + i)
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    config = tmp_path / "bomb.yaml"
    config.write_text("\n".join(levels) + "\ntrain:\n  lr: 1e-4\n")
    done = capped(3 * 2**30, "config", "show", str(config), timeout=60)
    assert done.returncode == 2, done.stderr[-3000:]
    check_refused(done, "aliases")
