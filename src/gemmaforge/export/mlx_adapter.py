"""`mlx`: the adapter in mlx-lm's own format, for `mlx_lm.generate --adapter-path` on a Mac.

mlx-lm keeps LoRA weights under its model's parameter names, transposed relative to PEFT:

    PEFT  base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight   [r, in]
    mlx   model.layers.3.self_attn.q_proj.lora_a                            [in, r]
    PEFT  ...q_proj.lora_B.weight                                           [out, r]
    mlx   ...q_proj.lora_b                                                  [r, out]

and computes `y + scale * (x @ lora_a) @ lora_b`, so `scale` is PEFT's alpha / r (alpha /
sqrt(r) with rsLoRA). DoRA's magnitude vector is mlx's `m`. `adapter_config.json` names the
fine-tune type, how many of the last layers carry adapters, and `lora_parameters` (rank,
scale, dropout, and `keys`: the module names inside a layer). The base model is the user's
own transformers folder, which mlx-lm reads directly.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from gemmaforge.errors import UserError, problem
from gemmaforge.export.common import Job, run_model_type
from gemmaforge.runs import Run

LOADS_BASE = False

# Where mlx-lm's model classes keep the decoder layers, per config.model_type (read from
# mlx_lm/models/<model_type>.py); the names inside a layer match transformers'.
MLX_LAYERS = {
    "gemma3_text": "model.layers",
    "gemma3n": "model.language_model.layers",
    "gemma4": "language_model.model.layers",
    "gemma4_text": "model.layers",
}

_PEFT_KEY = re.compile(
    r"base_model\.model\.model\.(?:language_model\.)?layers\.(\d+)\.(.+?)\."
    r"(lora_A\.weight|lora_B\.weight|lora_magnitude_vector)"
)
_MLX_LEAF = {"lora_A.weight": "lora_a", "lora_B.weight": "lora_b", "lora_magnitude_vector": "m"}


def problems(run: Run) -> list[str]:
    found, model_type = [], run_model_type(run)
    if model_type not in MLX_LAYERS:
        found.append(
            problem(
                str(run.dir),
                f"mlx export supports bases of model_type {', '.join(MLX_LAYERS)}; this run's "
                f"base is {model_type}",
                "export --format merged or peft instead",
            )
        )
    towers = [t for t in run.config.lora.towers if t != "text"]
    if towers:
        # mlx-lm drops the vision/audio towers when it loads a Gemma checkpoint.
        found.append(
            problem(
                str(run.dir),
                f"mlx-lm runs the language model only, but this run also adapts the "
                f"{' and '.join(towers)} tower",
                "export --format merged or peft instead",
            )
        )
    return found


def write(job: Job, out: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    run = job.run
    peft_config, weights = run.adapter_config(), run.adapter_weights()
    modules: dict[tuple[int, str], dict[str, object]] = {}
    for key, tensor in weights.items():
        match = _PEFT_KEY.fullmatch(key)
        if not match:
            raise UserError(problem(key, "is not a LoRA weight of a decoder layer"))
        layer, name, leaf = int(match[1]), match[2], match[3]
        # mlx stores the transpose of PEFT's A and B; the magnitude is a vector either way.
        array = tensor.float().numpy()
        modules.setdefault((layer, name), {})[_MLX_LEAF[leaf]] = (
            array.T if array.ndim == 2 else array
        )
    prefix = MLX_LAYERS[run_model_type(run)]
    tensors = {
        f"{prefix}.{layer}.{name}.{leaf}": np.ascontiguousarray(array)
        for (layer, name), leaves in modules.items()
        for leaf, array in leaves.items()
    }
    save_file(tensors, out / "adapters.safetensors", metadata={"format": "mlx"})
    config = mlx_config(peft_config, modules, run)
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", "utf-8")


def mlx_config(peft_config: dict, modules: dict, run: Run) -> dict:
    """mlx-lm's adapter_config.json for a PEFT adapter config and its (layer, module) pairs."""
    if peft_config.get("rank_pattern") or peft_config.get("alpha_pattern"):
        raise UserError(
            problem(str(run.adapter_dir), "per-module ranks or alphas have no mlx-lm equivalent")
        )
    rank, alpha = peft_config["r"], peft_config["lora_alpha"]
    scale = alpha / rank**0.5 if peft_config.get("use_rslora") else alpha / rank
    return {
        "fine_tune_type": "dora" if peft_config.get("use_dora") else "lora",
        # gemmaforge adapts every decoder layer, so "the last N" is all of them.
        "num_layers": max(layer for layer, _ in modules) + 1,
        "lora_parameters": {
            "rank": rank,
            "scale": scale,
            "dropout": peft_config.get("lora_dropout", 0.0),
            "keys": sorted({name for _, name in modules}),
        },
        "base_model": run.base_model,
        "base_sha256": run.base_sha256,
    }
