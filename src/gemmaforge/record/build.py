"""Build the run record (record.json): everything an auditor needs to know how a run was made.

Data files (fingerprints, rows, the validation split and its seed), the base model (source,
revision, every file's sha256), tokenizer and chat-template hashes, the resolved config with
secrets redacted, seeds and determinism settings, package versions, device, start and end
time, final metrics, the sha256 of every output, and the network guard's log. Written by
train/finish.py just before the manifest, so the manifest (and a signature) cover it.
"""

from __future__ import annotations

import hashlib
import os
import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from gemmaforge.files import sha256_file
from gemmaforge.record.redact import redact
from gemmaforge.runs import RunFolder

FORMAT = "gemmaforge-run-record/1"
PACKAGES = (
    "gemmaforge",
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "datasets",
    "tokenizers",
    "safetensors",
    "numpy",
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "processor_config.json",
    "preprocessor_config.json",
)
NOT_OUTPUTS = ("manifest.json", "record.json", "model.sig")
"""Files that describe the outputs rather than being one (the signature covers them all)."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def outputs(root: Path) -> dict[str, str]:
    """sha256 of every file in the run folder but the record, manifest and signature."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and p.relative_to(root).as_posix() not in NOT_OUTPUTS
        and ".tmp" not in p.name
    }


def base_files(source: str) -> dict[str, str]:
    """sha256 of each file of a local base model (folder or .gguf); {} for a hub id."""
    path = Path(source)
    if path.is_file():
        return {path.name: sha256_file(path)}
    if path.is_dir():
        return {
            p.relative_to(path).as_posix(): sha256_file(p)
            for p in sorted(path.rglob("*"))
            if p.is_file() and not p.name.startswith(".")
        }
    return {}


def packages() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_facts(device, dtype) -> dict[str, Any]:
    import torch

    facts = {
        "type": getattr(device, "type", str(device)),
        "dtype": str(dtype).removeprefix("torch."),
        "machine": platform.machine(),
        "system": platform.system(),
        "cpus": os.cpu_count(),
    }
    if facts["type"] == "cuda":
        facts["name"] = torch.cuda.get_device_name(device)
        facts["cuda"] = torch.version.cuda
    return facts


def determinism(seed: int) -> dict[str, Any]:
    import torch

    return {
        "seed": seed,
        "seeded": ["python random", "numpy", "torch", "data order", "validation split"],
        "torch_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }


def tokenizer_facts(adapter: Path, tokenizer) -> dict[str, Any]:
    template = getattr(tokenizer, "chat_template", None)
    return {
        "files": {
            name: sha256_file(adapter / name)
            for name in TOKENIZER_FILES
            if (adapter / name).is_file()
        },
        "chat_template_sha256": (
            hashlib.sha256(template.encode()).hexdigest() if isinstance(template, str) else None
        ),
    }


def build_record(
    *,
    folder: RunFolder,
    config: dict,
    loaded,
    report,
    final: dict,
    network: list[dict] | None,
) -> dict:
    """The record of a finished run whose outputs are all written (but the manifest)."""
    data_cfg = config["data"]
    # The config is written once the model and data are loaded, just before the first step
    # (and kept by a resume): the start of training.
    started = datetime.fromtimestamp(folder.config.stat().st_mtime, UTC)
    return {
        "format": FORMAT,
        "started": started.isoformat(timespec="seconds"),
        "ended": now(),
        "base_model": {
            "source": loaded.source,
            "revision": config["model"].get("revision"),
            "sha256": loaded.source_sha256,
            "family": loaded.family.name,
            "files": base_files(loaded.source),
        },
        "tokenizer": tokenizer_facts(folder.adapter, loaded.tokenizer),
        "data": {
            "files": [
                {"path": f.path, "fingerprint": f.fingerprint, "rows": f.rows, "format": f.format}
                for f in report.files
            ],
            "split": {
                "validation": report.validation,
                "val_fraction": data_cfg["val_fraction"],
                "val_max_rows": data_cfg["val_max_rows"],
                "seed": config["train"]["seed"],
                "train_examples": report.train_examples,
                "val_examples": report.val_examples,
            },
            "rows_read": report.rows_read,
            "skipped": report.skipped,
            "redact_pii": data_cfg.get("redact_pii", False),
        },
        "config": redact(config),
        "determinism": determinism(config["train"]["seed"]),
        "packages": packages(),
        "device": device_facts(loaded.device, loaded.dtype),
        "metrics": final,
        "network": {
            "guard": "on" if network is not None else "off",
            "log": network or [],
        },
        "outputs": outputs(folder.root),
    }
