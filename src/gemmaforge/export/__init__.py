"""Export a finished run folder to the formats other tools load.

| format | writes | for |
| --- | --- | --- |
| merged | transformers folder, adapter merged into the base | transformers, vLLM, TGI |
| peft   | the adapter folder with its model card | PEFT, the adapter hub |
| gguf   | `model.gguf` (merged; Gemma 3 text) | llama.cpp |
| gguf-lora | `adapter.gguf`, applied to a base GGUF at load time | llama.cpp `--lora` |
| ollama | `model.gguf` + `Modelfile` | Ollama |
| mlx    | `adapters.safetensors` + `adapter_config.json` | mlx-lm |

Each format is one module with `problems(run)` (what it cannot hold, checked before any
weights are loaded), `write(job, folder)` and `LOADS_BASE` (whether it needs the base model).
Everything is written into a temp folder next to the output and renamed into place when
complete (`common.staged_output`).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from gemmaforge.errors import UserError, problem
from gemmaforge.runs import open_run

FORMATS = {
    "merged": "merged",
    "peft": "peft_adapter",
    "gguf": "gguf_model",
    "gguf-lora": "gguf_lora",
    "ollama": "ollama",
    "mlx": "mlx_adapter",
}
"""Format name -> module in this package."""

GGUF_TYPES = ("f16", "bf16", "q8_0")


def export(
    run_dir: str | Path,
    fmt: str,
    output: str | Path,
    *,
    overwrite: bool = False,
    gguf_type: str = "f16",
    base: str | None = None,
) -> Path:
    """Export the run at `run_dir` as `fmt` into the folder `output`; returns `output`.

    `base` replaces the run's recorded base path (same weights: the sha256 is checked).
    """
    from gemmaforge.export.common import Job, check_base_path, output_problems, staged_output

    output, found = Path(output), []
    if fmt not in FORMATS:
        found.append(
            problem("--format", f"unknown format {fmt!r}", f"choose one of {', '.join(FORMATS)}")
        )
    if gguf_type not in GGUF_TYPES:
        found.append(
            problem(
                "--gguf-type",
                f"unknown type {gguf_type!r}",
                f"choose one of {', '.join(GGUF_TYPES)}",
            )
        )
    found += output_problems(Path(run_dir), output, overwrite)
    if found:
        raise UserError(found)
    run = open_run(run_dir)
    module = importlib.import_module(f"gemmaforge.export.{FORMATS[fmt]}")
    if found := module.problems(run):
        raise UserError(found)
    if base and not module.LOADS_BASE:
        check_base_path(run, base)  # the formats that load the base check it as they load it
    with staged_output(output) as folder:
        module.write(Job(run=run, base=base, gguf_type=gguf_type), folder)
    return output
