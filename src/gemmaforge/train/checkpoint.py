"""Resumable checkpoints, written atomically: a temp folder is filled, then renamed.

A checkpoint holds the adapter weights, optimizer, scheduler, every RNG state and the data
position, so a run killed at any moment resumes from its last checkpoint and continues the
same loss curve as a run that was never interrupted.

A checkpoint is data, never code: the trainer state is read with `torch.load(weights_only=True)`
(plain containers, numbers and tensors only; numpy's RNG state is stored as a list for that),
and every file is checked against the sha256 table written with it (`checksums.json`) before
anything is read, so a corrupted or swapped file is refused with its name.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from gemmaforge.errors import UserError, problem
from gemmaforge.files import sha256_file

STATE_FILE = "trainer_state.pt"
CHECKSUMS = "checksums.json"
PREFIX = "step-"


def rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        # A list, not an ndarray: the state must load with weights_only=True.
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
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
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    final = folder / f"{PREFIX}{step:08d}"
    tmp = folder / f".tmp-{PREFIX}{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp / "adapter", save_embedding_layers=False)
        torch.save({**state, "step": step, "rng": rng_state()}, tmp / STATE_FILE)
        _write_checksums(tmp)
        _fsync_tree(tmp)
    except (OSError, RuntimeError) as err:
        # The partial folder goes; the last complete checkpoint is untouched.
        shutil.rmtree(tmp, ignore_errors=True)
        if not _out_of_space(err):
            raise
        kept = list_checkpoints(folder)
        raise UserError(
            problem(
                str(folder),
                f"no space left on device while writing checkpoint {step} ({err})",
                "free disk space (or raise the file size limit), then continue with --resume"
                + (f" from {kept[-1].name}" if kept else ""),
            )
        ) from None
    replace_dir(tmp, final)
    for stale in list_checkpoints(folder)[:-keep]:
        _remove(stale)
    return final


def _out_of_space(err: BaseException) -> bool:
    """A full disk, a quota or a file size limit: as OSError, or as torch's RuntimeError
    from its zip writer, which keeps only the words ("file write failed", then on closing
    "unexpected pos"), anywhere in the exception's chain."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return True
        text = str(seen).lower()
        if any(words in text for words in ("file write failed", "no space left")):
            return True
        if "unexpected pos" in text and "inline_container" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _remove(checkpoint: Path) -> None:
    """Delete an old checkpoint by first renaming it out of sight, so a deletion cut short
    leaves a `.tmp-` folder (skipped everywhere), never a half checkpoint under its name."""
    doomed = checkpoint.with_name(f".tmp-deleting-{checkpoint.name}")
    try:
        os.replace(checkpoint, doomed)
    except OSError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temp folders of an interrupted save are skipped)."""
    if not folder.is_dir():
        return []
    done = [p for p in folder.iterdir() if p.name.startswith(PREFIX) and (p / STATE_FILE).exists()]
    return sorted(done, key=lambda p: p.name)


def load_checkpoint(path: Path, model) -> dict:
    """Load adapter weights from checkpoint `path` into `model`; return the trainer state.

    The files are checked against the checkpoint's checksums first, and the state is read as
    data only: a checkpoint that would run code is refused (UserError), never executed."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    check_checksums(path)
    try:
        state = torch.load(path / STATE_FILE, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UserError(
            problem(
                str(path / STATE_FILE),
                "holds objects that are not allowed in a checkpoint (only numbers, strings, "
                f"lists, dicts and tensors are; loading it could run code): {err}",
                "delete this checkpoint folder and resume from an older one, or start again "
                "with train.overwrite=true",
            )
        ) from None
    weights = load_file(str(path / "adapter" / "adapter_model.safetensors"))
    set_peft_model_state_dict(model, weights)
    return state


def _write_checksums(folder: Path) -> None:
    table = {
        str(p.relative_to(folder)): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != CHECKSUMS
    }
    (folder / CHECKSUMS).write_text(json.dumps(table, indent=1), encoding="utf-8")


def check_checksums(folder: Path) -> None:
    """A UserError unless every file of checkpoint `folder` matches its checksums table."""
    fix = "delete this checkpoint folder and resume from an older one, or start again with "
    fix += "train.overwrite=true"
    table_path = folder / CHECKSUMS
    try:
        table = json.loads(table_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(problem(str(table_path), f"cannot be read ({err})", fix)) from None
    problems = []
    for needed in (STATE_FILE, "adapter/adapter_model.safetensors"):
        if needed not in table:
            problems.append(problem(str(table_path), f"does not list {needed}", fix))
    for name, digest in table.items():
        file = folder / name
        if not file.is_file() or sha256_file(file) != digest:
            problems.append(problem(str(file), "is missing or does not match its checksum", fix))
    if problems:
        raise UserError(problems)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
