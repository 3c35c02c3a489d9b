"""What every export format shares: the staged output folder and the merged model.

Outputs are written into a hidden temp folder next to the destination and renamed into place
at the end, so an interrupted export never leaves a half-written folder under the name the
user asked for, and `--overwrite` only removes the old folder once the new one is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gemmaforge.errors import UserError, problem
from gemmaforge.infer.load import load_run
from gemmaforge.models.bases import base_sha256, run_base
from gemmaforge.runs import Run, check_base

# config.json dtype names -> the dtype a merged checkpoint is saved in. A GGUF base has no
# single dtype: its dequantised weights are exact only in fp32, so fp32 is what it keeps.
_SAVED_DTYPES = {"bfloat16": "bfloat16", "float32": "float32", "float16": "float16"}


@dataclass
class Merged:
    """A base model with the run's adapter merged in, ready to save or convert."""

    model: Any
    """The merged transformers model (no PEFT wrappers), on the CPU, in `model.dtype`."""
    loaded: Any
    """The `LoadedModel` of the base (tokenizer, processor, family, source path)."""


@dataclass
class Job:
    """One export: the run and the options."""

    run: Run
    base: str | None = None
    """Base model to load instead of the run's own (same weights, checked by sha256)."""
    gguf_type: str = "f16"
    """Tensor type of GGUF weight matrices: f16, bf16 or q8_0."""

    def merged(self) -> Merged:
        """The base with the adapter merged in (loads the base: seconds to minutes)."""
        return merge(self.run, self.base)


def output_problems(run_dir: Path, output: Path, overwrite: bool) -> list[str]:
    """Reasons `output` cannot receive an export (empty if it can)."""
    out, run = output.resolve(), run_dir.resolve()
    if out == run or run.is_relative_to(out) or out.is_relative_to(run):
        return [
            problem(
                str(output),
                "is the run folder or overlaps it; exporting there could destroy the run",
                "pass an --output folder outside the run folder",
            )
        ]
    if output.exists() and not output.is_dir():
        return [problem(str(output), "exists and is not a folder", "pass another --output")]
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        return [
            problem(
                str(output),
                "already exists and is not empty",
                "pass --overwrite to replace it, or another --output folder",
            )
        ]
    return []


@contextlib.contextmanager
def staged_output(output: Path) -> Iterator[Path]:
    """A fresh temp folder next to `output`; on success it replaces `output` in one rename."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.parent / f".{output.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = output.parent / f".{output.name}.old-{os.getpid()}"
    if output.exists():
        output.rename(old)
    tmp.rename(output)
    shutil.rmtree(old, ignore_errors=True)


def check_base_path(run: Run, base: str) -> None:
    """Refuse `base` unless its weights hash to the run's base (without loading them)."""
    from types import SimpleNamespace

    path = Path(base).expanduser()
    if not path.exists():
        raise UserError(
            problem(base, "no such base model", "pass the folder or .gguf file the run used")
        )
    check_base(run, SimpleNamespace(source=base, source_sha256=base_sha256(path)))


def source_dtype(source: str) -> str | None:
    """The dtype name a base checkpoint is stored in (None when it cannot be told up front)."""
    path = Path(source).expanduser()
    if path.suffix == ".gguf":
        return "float32"
    config_file = path / "config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text(encoding="utf-8"))
    text = config.get("text_config") or {}
    name = config.get("dtype") or config.get("torch_dtype") or text.get("dtype")
    return _SAVED_DTYPES.get(name)


def merge(run: Run, base: str | None = None) -> Merged:
    """Load the run's base on the CPU (refusing another base) and merge the adapter into it.

    The base is loaded in bf16 only when it is stored in bf16, else in fp32, so the merge adds
    the LoRA delta at full precision; the result is cast back to the base's stored dtype.
    """
    import torch

    base = base or run_base(run, "--base")
    stored = source_dtype(base)
    loaded, model = load_run(run, base=base, device="cpu", dtype=_load_dtype(stored))
    merged = model.merge_and_unload()
    if stored:
        merged.to(getattr(torch, stored))
    merged.eval()
    return Merged(model=merged, loaded=loaded)


def _load_dtype(stored: str | None) -> str:
    if stored is None:
        return "auto"
    return "bf16" if stored == "bfloat16" else "fp32"


def run_model_type(run: Run) -> str:
    """The base's `config.model_type`, as the run recorded it (e.g. gemma3_text, gemma4)."""
    return json.loads(run.folder.record.read_text(encoding="utf-8"))["model_type"]


def stop_token_ids(tokenizer, family) -> list[int]:
    """Ids of the family's stop tokens in `tokenizer` (those it has)."""
    ids = [tokenizer.convert_tokens_to_ids(token) for token in family.stop_tokens]
    return [i for i in ids if i is not None and i != tokenizer.unk_token_id]


def chat_template(tokenizer, family) -> str:
    """The tokenizer's chat template, or the family's own when it has none (the Gemma 3
    GGUF ships without one). Both render exactly what gemmaforge trains on."""
    from gemmaforge.models.tiny import chat_template as family_template

    return tokenizer.chat_template or family_template(family.name)
