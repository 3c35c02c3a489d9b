"""Load a finished run for inference: its base model with the adapter on top, computing as in
training (the same dtype policy, the same image budget, the base checked by sha256)."""

from __future__ import annotations

from gemmaforge.models.bases import run_base
from gemmaforge.models.load import load_model
from gemmaforge.models.peft_compat import quiet_checkpointing_probe
from gemmaforge.runs import Run, check_base


def load_run(run: Run, base: str | None = None, device: str = "auto", dtype: str | None = None):
    """(LoadedModel, PeftModel in eval mode) for `run`, on `base` or the run's own base
    (found by hash if it moved: `models.bases.run_base`).

    `dtype` (auto, bf16, fp32) replaces the run's `model.dtype` when given."""
    from peft import PeftModel

    from gemmaforge.data.read.sources import configure_storage
    from gemmaforge.models.lora_precision import compute_adapters_in_input_dtype

    configure_storage(run.config.data)  # media URLs in eval rows and requests

    model_cfg = run.config.model.model_copy(update={"device": device})
    if dtype:
        model_cfg = model_cfg.model_copy(update={"dtype": dtype})
    model_cfg = model_cfg.model_copy(update={"name_or_path": base or run_base(run)})
    loaded = load_model(model_cfg, for_training=False)
    check_base(run, loaded)
    if loaded.processor is not None:
        from gemmaforge.data.examples.multimodal import set_image_budget

        # The Gemma 4 image budget is part of what the adapter learned: reuse the run's.
        set_image_budget(loaded.processor, run.config.data.image_budget)
    quiet_checkpointing_probe()
    model = PeftModel.from_pretrained(loaded.model, run.adapter_dir)
    # The adapter computes exactly as it did in training (bf16 on a bf16 base).
    compute_adapters_in_input_dtype(model)
    model.eval()
    return loaded, model
