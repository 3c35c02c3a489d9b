"""Read a finished run folder back: its config, its adapter, and the base it belongs to.

Everything downstream of training (eval, generate, chat, serve, export) starts here, so the
checks live in one place: the folder is a run, the adapter exists, and the base model given
is the one the adapter was trained on (same sha256), or the user is told both hashes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gemmaforge.config import Config
from gemmaforge.errors import UserError, problem

RUN_FILE = "run.json"


@dataclass
class Run:
    dir: Path
    config: Config
    base_model: str
    base_sha256: str
    family: str

    @property
    def adapter_dir(self) -> Path:
        return self.dir / "adapter"

    def adapter_config(self) -> dict:
        """The PEFT adapter_config.json (rank, alpha, rsLoRA/DoRA flags, targets)."""
        return json.loads((self.adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))

    def adapter_weights(self) -> dict:
        """The adapter's tensors by PEFT key, on the CPU."""
        from safetensors.torch import load_file

        return load_file(self.adapter_dir / "adapter_model.safetensors")


def open_run(path: str | Path) -> Run:
    """The run folder at `path` (a UserError naming what is missing if it is not one)."""
    import yaml

    folder = Path(path)
    if not folder.is_dir():
        raise UserError(
            problem(
                str(folder),
                "no such run folder",
                "pass the --output folder of a finished `gemmaforge train`",
            )
        )
    needed = [RUN_FILE, "config.yaml", "adapter/adapter_config.json"]
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise UserError(
            problem(
                str(folder),
                f"is not a finished run folder (missing {', '.join(missing)})",
                "finish or resume the run with `gemmaforge train --resume`, or pass another folder",
            )
        )
    record = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    config = Config.model_validate(yaml.safe_load((folder / "config.yaml").read_text("utf-8")))
    return Run(
        dir=folder,
        config=config,
        base_model=record["base_model"],
        base_sha256=record["base_sha256"],
        family=record["family"],
    )


def check_base(run: Run, loaded) -> None:
    """Refuse a base model other than the one the adapter was trained on."""
    if loaded.source_sha256 != run.base_sha256:
        raise UserError(
            problem(
                str(run.dir),
                f"its adapter was trained on {run.base_model} (sha256 {run.base_sha256}), but the "
                f"base model given, {loaded.source}, has sha256 {loaded.source_sha256}",
                "pass the base model the run was trained on",
            )
        )


def load_run(run: Run, base: str | None = None, device: str = "auto", dtype: str | None = None):
    """(LoadedModel, PeftModel in eval mode) for `run`, on `base` or the run's own base.

    `dtype` (auto, bf16, fp32) replaces the run's `model.dtype` when given."""
    from peft import PeftModel

    from gemmaforge.data.sources import configure_storage
    from gemmaforge.models.load import load_model
    from gemmaforge.models.lora_precision import compute_adapters_in_input_dtype

    configure_storage(run.config.data)  # media URLs in eval rows and requests

    model_cfg = run.config.model.model_copy(update={"device": device})
    if dtype:
        model_cfg = model_cfg.model_copy(update={"dtype": dtype})
    if base:
        model_cfg = model_cfg.model_copy(update={"name_or_path": base})
    loaded = load_model(model_cfg, for_training=False)
    check_base(run, loaded)
    if loaded.processor is not None:
        from gemmaforge.data.multimodal import set_image_budget

        # The Gemma 4 image budget is part of what the adapter learned: reuse the run's.
        set_image_budget(loaded.processor, run.config.data.image_budget)
    model = PeftModel.from_pretrained(loaded.model, run.adapter_dir)
    # The adapter computes exactly as it did in training (bf16 on a bf16 base).
    compute_adapters_in_input_dtype(model)
    model.eval()
    return loaded, model
