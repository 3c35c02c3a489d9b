"""The training loop: short and visible. Micro-batches in a seeded order (data/batches/epochs.py),
loss summed over labelled tokens and normalised by the optimizer step's token count, AdamW,
warm-up + decay, clipping, periodic validation and atomic checkpoints.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from gemmaforge.config import TrainConfig
from gemmaforge.data.batches.batching import BatchSpec, Position
from gemmaforge.data.batches.collate import Collator, collator_for
from gemmaforge.data.batches.epochs import ExampleSource, batch_stream, batches_per_epoch
from gemmaforge.data.examples.render import IGNORE_INDEX
from gemmaforge.files import append_jsonl
from gemmaforge.plots import plot_loss_curve
from gemmaforge.runs import RunFolder
from gemmaforge.train import artifacts, checkpoint
from gemmaforge.train.loss import batch_loss, mean_loss


@dataclass
class LoopData:
    """What the loop consumes: training examples (in memory or streamed), validation
    examples, and how to batch them."""

    train: ExampleSource
    val: list
    collate: Collator
    spec: BatchSpec


@dataclass
class LoopState:
    """Where training is; saved in every checkpoint."""

    step: int = 0
    position: Position = field(default_factory=Position)
    """Where the next micro-batch starts in the example stream."""
    train_seconds: float = 0.0
    padding: float = 0.0
    """Padding tokens among the token slots of all batches so far."""
    slots: int = 0
    """Token slots (rows x width) of all batches so far."""
    final: dict = field(default_factory=dict)


@dataclass
class Training:
    """Everything the loop works on, in one object: the model and its optimizer, the data,
    the settings, where to write, and where it is."""

    model: Any
    optimizer: Any
    scheduler: Any
    accelerator: Any
    data: LoopData
    cfg: TrainConfig
    folder: RunFolder
    steps: int
    """Optimizer steps to train to."""
    state: LoopState = field(default_factory=LoopState)


def build(
    model, cfg: TrainConfig, folder: RunFolder, accelerator, train, val, data_cfg, loaded, media
) -> Training:
    """A Training for `model` (LoRA attached) on the given examples, optimizer and schedule
    sized to the run, prepared by Accelerate."""
    data = LoopData(
        train=train,
        val=val,
        collate=collator_for(loaded, media, packed=data_cfg.packing),
        spec=BatchSpec(
            batch_size=cfg.batch_size,
            max_tokens=data_cfg.max_seq_length,
            packing=data_cfg.packing,
            group_by_length=data_cfg.group_by_length,
            seed=cfg.seed,
        ),
    )
    steps = total_steps(cfg, data)
    optimizer, scheduler = make_optimizer(model, cfg, steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    return Training(model, optimizer, scheduler, accelerator, data, cfg, folder, steps)


def total_steps(cfg: TrainConfig, data: LoopData) -> int:
    if cfg.max_steps:
        return cfg.max_steps
    per_epoch = batches_per_epoch(data.train, data.spec)
    return max(1, math.ceil(cfg.epochs * per_epoch / cfg.grad_accum))


def make_optimizer(model, cfg: TrainConfig, steps: int):
    from transformers import get_scheduler

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = cfg.warmup_steps or round(cfg.warmup_ratio * steps)
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}
    scheduler = get_scheduler(name[cfg.scheduler], optimizer, warmup, steps)
    return optimizer, scheduler


def validation_loss(t: Training) -> float | None:
    if not t.data.val:
        return None
    device = t.accelerator.device
    return mean_loss(
        t.model, t.data.val, t.data.collate, t.cfg.batch_size, device, t.cfg.loss_chunk_size
    )


def run_loop(t: Training, progress) -> LoopState:
    """Train from `t.state` to `t.steps` optimizer steps; returns the final state.
    `progress` is a `gemmaforge.progress.Tracker` over the steps."""
    cfg, data, state, model = t.cfg, t.data, t.state, t.model
    device = t.accelerator.device
    stream = batch_stream(data.train, data.spec, state.position)
    model.train()
    while state.step < t.steps:
        started = time.perf_counter()
        batches = [next(stream) for _ in range(cfg.grad_accum)]
        state.position = batches[-1].after
        tensors = [data.collate(batch.rows, device) for batch in batches]
        # Normalise by the whole step's labelled tokens, so every token weighs the same
        # whatever micro-batch it landed in.
        step_tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in tensors)
        loss_total = 0.0
        for batch in tensors:
            loss_sum, _ = batch_loss(model, batch, cfg.loss_chunk_size)
            t.accelerator.backward(loss_sum / max(step_tokens, 1))
            loss_total += loss_sum.item()
        if cfg.max_grad_norm:
            t.accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        lr = t.scheduler.get_last_lr()[0]
        t.optimizer.step()
        t.scheduler.step()
        t.optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - started
        state.train_seconds += elapsed
        state.step += 1
        input_tokens = sum(len(ex.input_ids) for b in batches for ex in b.examples)
        slots = sum(b["input_ids"].numel() for b in tensors)
        state.padding = (state.padding * state.slots + slots - input_tokens) / (state.slots + slots)
        state.slots += slots
        record = {
            "step": state.step,
            "loss": loss_total / max(step_tokens, 1),
            "lr": lr,
            "tokens_per_second": input_tokens / elapsed,
            "trained_tokens": step_tokens,
            "padding": (slots - input_tokens) / slots,
            "epoch": _epoch(state.position, data.train.size),
        }
        last = state.step == t.steps
        if (cfg.eval_every and state.step % cfg.eval_every == 0) or (last and data.val):
            record["eval_loss"] = validation_loss(t)
        if state.step % cfg.log_every == 0 or last or "eval_loss" in record:
            append_jsonl(t.folder.metrics, record)
        if "eval_loss" in record:
            # The loss plot follows the run: updated at each validation (RUN/loss.png).
            plot_loss_curve(t.folder.metrics, t.folder.loss_plot)
        state.final = record
        progress.update(state.step, status_line(record))
        if (cfg.save_every and state.step % cfg.save_every == 0) or last:
            save(t)
    return state


def save(t: Training) -> Path:
    state = t.state
    payload = {
        "position": asdict(state.position),
        "train_seconds": state.train_seconds,
        "padding": state.padding,
        "slots": state.slots,
        "final": state.final,
        "optimizer": t.optimizer.state_dict(),
        "scheduler": t.scheduler.state_dict(),
    }
    return checkpoint.save_checkpoint(
        t.folder.checkpoints, state.step, t.model, payload, t.cfg.keep_checkpoints
    )


def restore(t: Training) -> None:
    """Load the newest checkpoint of the run into the model, optimizer and scheduler."""
    latest = checkpoint.list_checkpoints(t.folder.checkpoints)[-1]
    saved = checkpoint.load_checkpoint(latest, t.model)
    t.optimizer.load_state_dict(saved["optimizer"])
    t.scheduler.load_state_dict(saved["scheduler"])
    checkpoint.set_rng_state(saved["rng"])
    artifacts.truncate_metrics(t.folder.metrics, saved["step"])
    t.state = LoopState(
        step=saved["step"],
        position=Position(**saved["position"]),
        train_seconds=saved["train_seconds"],
        padding=saved["padding"],
        slots=saved["slots"],
        final=saved["final"],
    )


def _epoch(position: Position, size: int | None) -> float:
    """Epochs done: fractional when the epoch's size is known (in memory)."""
    return position.epoch + (position.start / size if size else 0.0)


def status_line(record: dict) -> str:
    text = (
        f"loss {record['loss']:.4f}  lr {record['lr']:.2e}  {record['tokens_per_second']:.0f} tok/s"
    )
    if record.get("eval_loss") is not None:
        text += f"  eval {record['eval_loss']:.4f}"
    return text
