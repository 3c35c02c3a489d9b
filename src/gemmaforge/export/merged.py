"""`merged`: a plain transformers checkpoint with the adapter folded into the base weights.

The folder loads with `AutoModelForCausalLM` (or `AutoModelForImageTextToText` for multimodal
checkpoints) and needs neither PEFT nor gemmaforge: safetensors weights in the base's dtype,
config, a generation config that stops on the family's stop tokens, and the tokenizer (or
processor) files with a chat template in the format the adapter was trained on.
"""

from __future__ import annotations

from pathlib import Path

from gemmaforge.export.common import Job, Merged, chat_template, stop_token_ids
from gemmaforge.runs import Run

LOADS_BASE = True


def problems(run: Run) -> list[str]:
    """Every family and checkpoint can be merged."""
    return []


def write(job: Job, out: Path) -> None:
    save_merged(job.merged(), out)


def save_merged(merged: Merged, out: Path) -> None:
    """Save `merged` as a transformers folder at `out` (which must exist)."""
    model, loaded = merged.model, merged.loaded
    tokenizer = loaded.tokenizer
    model.generation_config.eos_token_id = stop_token_ids(tokenizer, loaded.family)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    if not tokenizer.chat_template:
        tokenizer.chat_template = chat_template(tokenizer, loaded.family)
    (loaded.processor or tokenizer).save_pretrained(out)
