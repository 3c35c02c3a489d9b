"""The benchmark's baseline: a plain transformers `Trainer` with PEFT LoRA, as its
documentation shows it, with its default loss (full logits) and default settings.

It trains on the same rendered token ids and labels as gemmaforge (gemmaforge's render, so
both sides see identical batches of identical length), with the same LoRA rank, alpha and
target modules, on weights loaded in the same dtype. Text batches are padded the Hugging Face
way (`DataCollatorForSeq2Seq`, labels padded with -100); image/audio batches also need the
processor's features, which gemmaforge's collator builds for both sides.
"""

from __future__ import annotations

import time

from gemmaforge.bench.worker import data_config
from gemmaforge.config import LoraConfig as OurLora
from gemmaforge.data.examples.render import IGNORE_INDEX
from gemmaforge.models.lora import target_modules
from gemmaforge.models.peft_compat import quiet_checkpointing_probe


def run_baseline(spec, loaded) -> tuple[list[float], list[float]]:
    """Train `spec.steps` steps; per-step seconds and losses."""
    from peft import get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from gemmaforge.data.batches.collate import collate, pad_id
    from gemmaforge.data.examples.dataset import load_datasets
    from gemmaforge.data.examples.multimodal import media_encoder
    from gemmaforge.data.read.sources import open_sources

    media = media_encoder(loaded, data_config(spec))
    data = data_config(spec)
    examples, _, report = load_datasets(
        data, open_sources(data), loaded.family, loaded.tokenizer, spec.seed, media
    )
    lora = _lora_config(loaded, spec)
    quiet_checkpointing_probe()
    model = get_peft_model(loaded.model, lora)
    pad = pad_id(loaded.tokenizer)
    if report.has_media:

        def collator(batch):
            out = collate([[ex] for ex in batch], pad, media.type_key, media)
            return {k: v.to(loaded.dtype) if v.is_floating_point() else v for k, v in out.items()}

        dataset = examples
    else:
        collator = DataCollatorForSeq2Seq(
            loaded.tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX
        )
        dataset = [{"input_ids": ex.input_ids, "labels": ex.labels} for ex in examples]
    if media is not None and media.type_key and not report.has_media:
        # Gemma 4 wants its per-token modality ids even for text (all zeros).
        plain = collator
        collator = lambda batch: _with_types(plain(batch), media.type_key)  # noqa: E731

    timer = _step_timer()
    args = TrainingArguments(
        **_shared_args(loaded, spec),
        remove_unused_columns=False,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        callbacks=[timer],
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return timer.seconds, losses


def run_dpo_baseline(spec, loaded) -> tuple[list[float], list[float]]:
    """TRL's DPOTrainer with a new PEFT adapter (reference: the adapter disabled, as in
    gemmaforge), its defaults otherwise, on the same pairs.

    TRL tokenises its rows itself, and the bench's GGUF tokenizer has no chat template, so it
    gets the standard (text) format: the prompt and each reply decoded from gemmaforge's own
    rendering with their turn tokens; TRL adds `<bos>` and an `<eos>` after each reply (one
    token more per sequence than gemmaforge)."""
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from gemmaforge.data.examples.preference import load_preference_datasets
    from gemmaforge.data.read.sources import open_sources

    data = data_config(spec)
    tok = loaded.tokenizer
    examples, _, _ = load_preference_datasets(
        data, open_sources(data), loaded.family, tok, spec.seed, "dpo"
    )
    rows = []
    for ex in examples:
        start = next(i for i, label in enumerate(ex.chosen.labels) if label != IGNORE_INDEX)
        rows.append(
            {
                "prompt": tok.decode(ex.chosen.input_ids[1:start]),
                "chosen": tok.decode(ex.chosen.input_ids[start:]),
                "rejected": tok.decode(ex.rejected.input_ids[start:]),
            }
        )
    lora = _lora_config(loaded, spec)
    timer = _step_timer()
    args = DPOConfig(
        **_shared_args(loaded, spec),
        beta=0.1,
        bf16=loaded.dtype == torch.bfloat16,
        max_length=None,
    )
    trainer = DPOTrainer(
        model=loaded.model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        peft_config=lora,
        callbacks=[timer],
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return timer.seconds, losses


def _step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Seconds per optimizer step (batch fetch, forward, backward, update)."""

        def __init__(self):
            self.seconds: list[float] = []
            self.started = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self.started)

    return StepTimer()


def _with_types(batch: dict, key: str) -> dict:
    import torch

    batch[key] = torch.zeros_like(batch["input_ids"])
    return batch


def run_trl_baseline(spec, loaded) -> dict:
    """TRL's SFTTrainer with a new PEFT adapter, as its documentation recommends for
    variable-length data: BFD packing into rows of up to `spec.seq_len` tokens, padding-free
    (one flattened sequence per batch, position ids restarting per example, which
    transformers turns into a block-diagonal mask), completion-only loss. It gets gemmaforge's
    rendered token ids (the bench's GGUF tokenizer has no chat template) with a completion
    mask of the trained tokens, so both sides train on identical examples."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from gemmaforge.data.examples.dataset import load_datasets
    from gemmaforge.data.read.sources import open_sources

    data = data_config(spec)
    examples, _, _ = load_datasets(
        data, open_sources(data), loaded.family, loaded.tokenizer, spec.seed, None
    )
    rows = [
        {
            "input_ids": ex.input_ids,
            "completion_mask": [int(label != IGNORE_INDEX) for label in ex.labels],
        }
        for ex in examples
    ]
    lora = _lora_config(loaded, spec)
    timer = _step_timer()
    args = SFTConfig(
        **_shared_args(loaded, spec),
        bf16=str(loaded.dtype) == "torch.bfloat16",
        max_length=spec.seq_len,
        packing=spec.packing,
        padding_free=True,
        completion_only_loss=True,
    )
    counts: list[tuple[int, int]] = []

    class CountingTrainer(SFTTrainer):
        """Counts each step's real tokens and token slots (padding-free: the same)."""

        def training_step(self, model, inputs, *args, **kwargs):
            ids = inputs["input_ids"]
            mask = inputs.get("attention_mask")
            real = int(mask.sum()) if mask is not None else ids.numel()
            counts.append((real, ids.numel()))
            return super().training_step(model, inputs, *args, **kwargs)

    trainer = CountingTrainer(
        model=loaded.model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=loaded.tokenizer,
        peft_config=lora,
        callbacks=[timer],
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    real = [r for r, _ in counts]
    return {
        "step_seconds": timer.seconds,
        "step_tokens": real,
        "padding": 1 - sum(real) / max(1, sum(n for _, n in counts)),
        "losses": losses,
    }


def _lora_config(loaded, spec):
    """PEFT's LoRA config for a peer: gemmaforge's default targets, the spec's rank and alpha."""
    from peft import LoraConfig

    names = [n for ns in target_modules(loaded.model, OurLora(r=spec.lora_r)).values() for n in ns]
    return LoraConfig(
        r=spec.lora_r, lora_alpha=spec.lora_alpha, target_modules=names, task_type="CAUSAL_LM"
    )


def _shared_args(loaded, spec) -> dict:
    """The arguments every peer's Trainer (transformers, TRL SFT and DPO) runs with."""
    return {
        "output_dir": spec.run_dir,
        "per_device_train_batch_size": spec.batch_size,
        "max_steps": spec.steps,
        "learning_rate": 2e-4,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "seed": spec.seed,
        "use_cpu": loaded.device.type == "cpu",
        "gradient_checkpointing": bool(spec.train.get("gradient_checkpointing")),
        "disable_tqdm": True,
    }
