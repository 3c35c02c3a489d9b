"""A run killed with SIGKILL mid-training and resumed continues the uninterrupted run's loss
curve exactly: same data order, same dropout masks, same optimizer and scheduler state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from safetensors.torch import load_file

from test_train import write_task

STEPS = 60


def start(config, out, *extra):
    cmd = [sys.executable, "-m", "gemmaforge", "train", str(config), "--output", str(out), *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def finish(process) -> None:
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err.decode()[-3000:]


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


DATA_VARIANTS = {
    "memory": {},
    # Streamed rows through a small shuffle buffer, packed, with an unreadable row skipped:
    # the resumed run must restart the stream mid-epoch at the same row.
    "streamed-packed-skip": {
        "streaming": "on",
        "shuffle_buffer": 8,
        "packing": True,
        "max_seq_length": 64,
        "on_error": "skip",
    },
}


@pytest.mark.parametrize("variant", DATA_VARIANTS)
def test_resume_after_sigkill_matches_uninterrupted_run(variant, tiny_dir, tmp_path):
    data = write_task(tmp_path / "train.jsonl", rows=64)
    if DATA_VARIANTS[variant]:
        with data.open("a") as handle:
            handle.write("{not json\n")
    config = tmp_path / "run.yaml"
    # Dropout on, so the resumed run must also restore the RNG to match.
    settings = {
        "model": {"name_or_path": str(tiny_dir("gemma3"))},
        "data": {"train": str(data), **DATA_VARIANTS[variant]},
        "lora": {"r": 8, "dropout": 0.1},
        "train": {
            "max_steps": STEPS,
            "batch_size": 4,
            "lr": 5e-3,
            "save_every": 5,
            "eval_every": 10,
            "seed": 3,
        },
    }
    config.write_text(yaml.safe_dump(settings))

    finish(start(config, tmp_path / "whole"))

    killed = start(config, tmp_path / "killed")
    metrics_file = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and killed.poll() is None:
        if metrics_file.exists() and len(metrics_file.read_text().splitlines()) >= 13:
            break
        time.sleep(0.02)
    assert killed.poll() is None, "the run ended before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    logged = len(metrics_file.read_text().splitlines())
    assert 13 <= logged < STEPS

    finish(start(config, tmp_path / "killed", "--resume"))

    whole, resumed = metrics(tmp_path / "whole"), metrics(tmp_path / "killed")
    assert [m["step"] for m in resumed] == list(range(1, STEPS + 1))
    for a, b in zip(whole, resumed, strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-5 * max(1.0, abs(a["loss"])), (a, b)
        assert a["lr"] == b["lr"]
        assert abs(a.get("eval_loss", 0) - b.get("eval_loss", 0)) <= 1e-5
    if DATA_VARIANTS[variant]:
        for run in ("whole", "killed"):  # the bad row is logged once, even after a resume
            skipped = (tmp_path / run / "skipped.jsonl").read_text().splitlines()
            assert [json.loads(line)["where"] for line in skipped] == [f"{data}:65"]
    final_a = load_file(tmp_path / "whole" / "adapter" / "adapter_model.safetensors")
    final_b = load_file(tmp_path / "killed" / "adapter" / "adapter_model.safetensors")
    assert final_a.keys() == final_b.keys()
    for name in final_a:
        assert (final_a[name] - final_b[name]).abs().max() <= 1e-5, name


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    out = tmp_path / "empty"
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "gemmaforge",
            "train",
            "--model",
            "m",
            "--data",
            str(write_task(tmp_path / "d.jsonl", rows=4)),
            "--output",
            str(out),
            "--resume",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 2
    assert "has no complete checkpoint to resume from" in process.stderr
    assert "Traceback" not in process.stderr


def test_resume_with_another_schedule_needs_reschedule(tiny_dir, tmp_path):
    """A changed --max-steps on resume is refused (it would silently recompute the learning
    rate schedule), and with --reschedule the run continues to the new length."""
    from gemmaforge.errors import UserError
    from gemmaforge.train.trainer import train
    from test_train import run_config

    data = write_task(tmp_path / "d.jsonl", rows=8)
    out = tmp_path / "run"
    train(run_config(tiny_dir("gemma3"), data, out, max_steps=2, eval_every=0))
    longer = run_config(tiny_dir("gemma3"), data, out, max_steps=4, eval_every=0, resume=True)
    with pytest.raises(UserError) as err:
        train(longer)
    assert "train.max_steps 2 -> 4" in str(err.value) and "--reschedule" in str(err.value)
    longer.train.reschedule = True
    assert train(longer).final["step"] == 4
    assert "max_steps: 4" in (out / "config.yaml").read_text()
