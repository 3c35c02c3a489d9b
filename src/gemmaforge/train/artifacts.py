"""The run folder's self-describing files: metrics log, manifest of hashes, model card.

Everything is written atomically (temp file, fsync, rename) so a crash never leaves a
half-written file behind under its real name.
"""

from __future__ import annotations

import json
from pathlib import Path

from gemmaforge.files import read_jsonl, sha256_file, write_json_atomic, write_text_atomic
from gemmaforge.runs import RunFolder


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines logged after `last_step` (work a resumed run will redo)."""
    kept = [record for record in read_jsonl(path) if record["step"] <= last_step]
    write_text_atomic(path, "".join(json.dumps(record) + "\n" for record in kept))


def write_manifest(run_dir: Path) -> dict:
    """sha256 of every file in the run folder (relative paths), written to manifest.json."""
    folder = RunFolder(run_dir)
    # Temp and half-deleted folders (`.tmp-*`, `*.old`) and their files are not the run's.
    files = sorted(
        p
        for p in run_dir.rglob("*")
        if p.is_file()
        and p != folder.manifest
        and not any(
            part.startswith(".tmp") or part.endswith(".old") or ".tmp" in part
            for part in p.relative_to(run_dir).parts
        )
    )
    manifest = {
        "files": {str(p.relative_to(run_dir)): sha256_file(p) for p in files},
    }
    write_json_atomic(folder.manifest, manifest)
    return manifest


def model_card(
    *,
    base: str,
    base_sha256: str,
    family: str,
    data: dict,
    config: dict,
    final: dict,
    lora_summary: str,
    base_path: str | None = None,
) -> str:
    """A Markdown model card: what was trained on what, how, and how well."""
    where = f"\n- Base weights at training time: `{base_path}`" if base_path else ""
    rows = "\n".join(
        f"| {name} | `{info['fingerprint'][:23]}…` | {info['rows']} |"
        for name, info in data.items()
    )
    hyper = "\n".join(
        f"| {section}.{key} | {value} |"
        for section in ("lora", "train")
        for key, value in config[section].items()
    )
    metrics = "\n".join(f"| {key} | {value} |" for key, value in final.items())
    return f"""---
library_name: peft
base_model: {base}
tags: [gemmaforge, lora, {family}]
---

# LoRA adapter for `{base}`

Trained with gemmaforge on this machine. Load it with
`PeftModel.from_pretrained(base_model, "adapter")`.

- Base model: `{base}` (family `{family}`)
- Base weights sha256: `{base_sha256}`{where}
- {lora_summary}

## Data

| file | fingerprint | rows |
| --- | --- | --- |
{rows}

## Hyperparameters

| setting | value |
| --- | --- |
{hyper}

## Final metrics

| metric | value |
| --- | --- |
{metrics}
"""
