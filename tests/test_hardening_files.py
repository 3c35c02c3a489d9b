"""No file may run code: a tampered checkpoint or a model folder with custom code is refused
before anything in it executes (issue 12)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
}


class Planted:
    """A pickle that writes `marker` when unpickled: what a tampered checkpoint could hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def gemmaforge(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gemmaforge", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )


def newest_checkpoint(run: Path) -> Path:
    return sorted((run / "checkpoints").glob("step-*"))[-1]


@pytest.mark.parametrize("rehash", [False, True], ids=["hash-mismatch", "hash-rewritten"])
def test_resume_refuses_a_pickle_that_runs_code(tiny_run, tmp_path, rehash):
    run = tmp_path / "run"
    shutil.copytree(tiny_run("plain"), run)
    marker = tmp_path / "marker"
    state = newest_checkpoint(run) / "trainer_state.pt"
    state.write_bytes(pickle.dumps({"step": Planted(marker)}))
    if rehash:  # the attacker also rewrote the checksums: torch's loader must still refuse
        from gemmaforge.files import sha256_file

        sums = newest_checkpoint(run) / "checksums.json"
        table = json.loads(sums.read_text())
        table["trainer_state.pt"] = sha256_file(state)
        sums.write_text(json.dumps(table))
    done = gemmaforge("train", str(run / "config.yaml"), "--output", str(run), "--resume")
    assert not marker.exists(), "the checkpoint's code ran"
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    expected = "not allowed in a checkpoint" if rehash else "does not match its checksum"
    assert expected in done.stderr


def test_a_model_folder_with_custom_code_is_refused_before_it_runs(tiny_dir, tmp_path):
    folder = tmp_path / "custom"
    shutil.copytree(tiny_dir("gemma3"), folder)
    marker = tmp_path / "marker"
    (folder / "modeling_evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('pwned')\n"
        "from transformers import PretrainedConfig\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "evil"
    config["auto_map"] = {
        "AutoConfig": "modeling_evil.EvilConfig",
        "AutoModelForCausalLM": "modeling_evil.EvilModel",
    }
    (folder / "config.json").write_text(json.dumps(config))
    data = tmp_path / "d.jsonl"
    data.write_text(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "yo"},
                ]
            }
        )
        + "\n"
    )
    for args in (
        ("generate", "--model", str(folder), "--device", "cpu", "hi"),
        ("data", "check", str(data), "--model", str(folder)),
    ):
        done = gemmaforge(*args, stdin="y\n")
        assert not marker.exists(), f"{args[0]} ran the folder's code"
        assert done.returncode == 2, done.stderr[-2000:]
        assert "model_type 'evil'" in done.stderr and "Traceback" not in done.stderr


def test_an_untampered_checkpoint_still_resumes(tiny_run, tmp_path):
    """What a checkpoint holds (RNG states, optimizer, scheduler) loads with weights_only."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run("plain"), run)
    args = ("train", str(run / "config.yaml"), "--output", str(run), "--resume")
    done = gemmaforge(*args, "train.max_steps=32", "--reschedule")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from step 30" in done.stdout + done.stderr
