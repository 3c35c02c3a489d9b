"""`peft`: the adapter alone, as PEFT saved it, with the run's model card and base record.

The folder is what `PeftModel.from_pretrained(base, folder)` and the hub expect: the adapter
weights and config, the tokenizer/processor files, `README.md` (the run's model card: base
model and its sha256, data hashes, hyperparameters, final metrics; it replaces PEFT's
placeholder card) and `run.json` (the base's path, sha256 and family, machine-readable).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from gemmaforge.export.common import Job
from gemmaforge.runs import Run

LOADS_BASE = False


def problems(run: Run) -> list[str]:
    """Every adapter can be exported as it is."""
    return []


def write(job: Job, out: Path) -> None:
    run = job.run
    shutil.copytree(run.adapter_dir, out, dirs_exist_ok=True)
    for path in (run.folder.card, run.folder.record):
        shutil.copy2(path, out / path.name)
