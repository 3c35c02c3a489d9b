"""`gguf-lora`: the adapter alone as a llama.cpp LoRA GGUF, applied at load time to a base GGUF.

`llama-cli -m base.gguf --lora adapter.gguf` (or `Llama(model_path=..., lora_path=...)`)
adds `scale * B @ A` to each adapted matrix, where llama.cpp computes the scale as
`adapter.lora.alpha / rank`. The base GGUF may be quantised (the quickstart's Q4_K_M file
works as it is); it must be the base the run was trained on. Tensors are named after the
base's (`blk.N.attn_q.weight.lora_a`), with PEFT's layout: A is [r, in], B is [out, r].
Adapter weights stay f32: they are small, and rounding them would move the merged result.

DoRA has no llama.cpp equivalent: such runs are refused (export `gguf`, merged, instead).
"""

from __future__ import annotations

import re
from pathlib import Path

from gemmaforge.errors import UserError, problem
from gemmaforge.export import gguf_model
from gemmaforge.export.common import Job
from gemmaforge.runs import Run

FILE_NAME = "adapter.gguf"
LOADS_BASE = False

_PEFT_KEY = re.compile(r"base_model\.model\.(model\.layers\.\d+\..+?)\.lora_([AB])\.weight")


def problems(run: Run) -> list[str]:
    found = gguf_model.problems(run, "gguf-lora")
    if run.adapter_config().get("use_dora"):
        found.append(
            problem(
                str(run.dir),
                "DoRA adapters have no llama.cpp LoRA equivalent",
                "export --format gguf (the adapter merged into the model) instead",
            )
        )
    return found


def write(job: Job, out: Path) -> None:
    import gguf

    run = job.run
    config, weights = run.adapter_config(), run.adapter_weights()
    rank, alpha = config["r"], float(config["lora_alpha"])
    # llama.cpp scales by alpha / rank; rsLoRA's alpha / sqrt(rank) needs alpha * sqrt(rank).
    if config.get("use_rslora"):
        alpha *= rank**0.5
    layers = 1 + max(int(k.split("layers.")[1].split(".")[0]) for k in weights)
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.GEMMA3, layers)

    writer = gguf.GGUFWriter(out / FILE_NAME, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GEMMA3])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_name(run.dir.name)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for key, tensor in sorted(weights.items()):
        match = _PEFT_KEY.fullmatch(key)
        name = match and names.get_name(f"{match[1]}.weight", try_suffixes=(".weight",))
        if not name:
            raise UserError(problem(key, "is not a LoRA weight llama.cpp can apply"))
        writer.add_tensor(f"{name}.lora_{match[2].lower()}", tensor.float().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
