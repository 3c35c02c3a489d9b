"""Resumable checkpoints, written atomically: a temp folder is filled, then renamed.

A checkpoint holds the adapter weights, optimizer, scheduler, every RNG state and the data
position, so a run killed at any moment resumes from its last checkpoint and continues the
same loss curve as a run that was never interrupted.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

STATE_FILE = "trainer_state.pt"
PREFIX = "step-"


def rng_state() -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished folder `tmp` to `final`, replacing an older one without a gap in which
    neither exists under a name a reader would look for."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(folder: Path, step: int, model, state: dict, keep: int = 2) -> Path:
    """Write checkpoint `step` under `folder` atomically; keep the newest `keep` of them."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{PREFIX}{step:08d}"
    tmp = folder / f".tmp-{PREFIX}{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp / "adapter", save_embedding_layers=False)
    torch.save({**state, "step": step, "rng": rng_state()}, tmp / STATE_FILE)
    _fsync_tree(tmp)
    replace_dir(tmp, final)
    for stale in list_checkpoints(folder)[:-keep]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temp folders of an interrupted save are skipped)."""
    if not folder.is_dir():
        return []
    done = [p for p in folder.iterdir() if p.name.startswith(PREFIX) and (p / STATE_FILE).exists()]
    return sorted(done, key=lambda p: p.name)


def load_checkpoint(path: Path, model) -> dict:
    """Load adapter weights from checkpoint `path` into `model`; return the trainer state."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(path / "adapter" / "adapter_model.safetensors"))
    set_peft_model_state_dict(model, weights)
    return torch.load(path / STATE_FILE, weights_only=False)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
