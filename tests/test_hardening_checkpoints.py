"""Checkpoints under stress: a full disk, a run killed during its first checkpoint, a
half-deleted old checkpoint (issue 12)."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from gemmaforge.train.artifacts import write_manifest
from gemmaforge.train.checkpoint import check_checksums, list_checkpoints

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
}


def gemmaforge(*args: str, file_limit: int | None = None) -> subprocess.CompletedProcess:
    def limit() -> None:
        # A real file size limit: writes past it fail with EFBIG, as on a full disk (the
        # signal that would kill the process is ignored, as a disk-full write sends none).
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.run(
        [sys.executable, "-m", "gemmaforge", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
        preexec_fn=limit if file_limit else None,
    )


def test_a_full_disk_while_checkpointing_keeps_the_last_good_one(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run("plain"), run)
    before = list_checkpoints(run / "checkpoints")
    state_size = (before[-1] / "trainer_state.pt").stat().st_size
    done = gemmaforge(
        "train",
        str(run / "config.yaml"),
        "--output",
        str(run),
        "--resume",
        "train.max_steps=31",
        "--reschedule",
        file_limit=state_size // 2,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 2, out[-3000:]
    assert "no space left on device" in out and "Traceback" not in out
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    assert list_checkpoints(run / "checkpoints") == before
    check_checksums(before[-1])


def test_a_run_killed_in_its_first_checkpoint_says_start_again(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run("plain"), run)
    for checkpoint in list_checkpoints(run / "checkpoints"):
        shutil.rmtree(checkpoint)
    (run / "checkpoints" / ".tmp-step-00000010" / "adapter").mkdir(parents=True)
    config = str(run / "config.yaml")
    resumed = gemmaforge("train", config, "--output", str(run), "--resume")
    fresh = gemmaforge("train", config, "--output", str(run))
    for done in (resumed, fresh):
        assert done.returncode == 2, done.stderr[-3000:]
        assert "no complete checkpoint" in done.stderr
        assert "train.overwrite=true" in done.stderr and "pass --resume" not in done.stderr


def test_a_half_deleted_checkpoint_is_not_in_the_manifest(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run("plain"), run)
    for leftover in (".tmp-deleting-step-00000001", "step-00000002.old", ".tmp-step-00000003"):
        (run / "checkpoints" / leftover / "adapter").mkdir(parents=True)
        (run / "checkpoints" / leftover / "adapter" / "adapter_model.safetensors").write_bytes(b"x")
    listed = write_manifest(run)["files"]
    assert not [name for name in listed if "00000001" in name or "00000002" in name]
    assert not [name for name in listed if "00000003" in name]
    assert any(name.startswith("checkpoints/step-") for name in listed)
