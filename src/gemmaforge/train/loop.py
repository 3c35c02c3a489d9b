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
from gemmaforge.data.batches.batching import Batching, Position
from gemmaforge.data.batches.collate import Collator, collator_for
from gemmaforge.data.batches.epochs import ExampleSource, batch_stream, batches_per_epoch
from gemmaforge.data.batches.pairs import PairCollator
from gemmaforge.files import append_jsonl
from gemmaforge.plots import plot_loss_curve
from gemmaforge.runs import RunFolder
from gemmaforge.train import artifacts, checkpoint, observe, preference
from gemmaforge.train.loss import mean_loss


@dataclass
class LoopData:
    """What the loop consumes: training examples (in memory or streamed), validation
    examples, and how to batch them."""

    train: ExampleSource
    val: list
    collate: Collator
    spec: Batching


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
    """The PEFT model (saved, validated)."""
    loss: Any
    """`LossModule` around the model, as Accelerate prepared it (DDP-wrapped on several
    processes): training forwards go through it."""
    optimizer: Any
    scheduler: Any
    accelerator: Any
    data: LoopData
    cfg: TrainConfig
    folder: RunFolder
    steps: int
    """Optimizer steps to train to."""
    state: LoopState = field(default_factory=LoopState)
    observers: list = field(default_factory=list)
    """Called with (training, record) after every step: samples, trackers (train/observe.py)."""


def build(
    model, cfg: TrainConfig, folder: RunFolder, accelerator, train, val, data_cfg, loaded, media
) -> Training:
    """A Training for `model` (LoRA attached) on the given examples, optimizer and schedule
    sized to the run, prepared by Accelerate."""
    collate = collator_for(loaded, media, packed=data_cfg.packing)
    if preference.is_preference(cfg):
        collate = PairCollator(collate)
    data = LoopData(
        train=train,
        val=val,
        collate=collate,
        spec=Batching(
            batch_size=cfg.batch_size,
            max_tokens=data_cfg.max_seq_length,
            packing=data_cfg.packing,
            group_by_length=data_cfg.group_by_length,
            seed=cfg.seed,
        ),
    )
    steps = total_steps(cfg, data)
    optimizer, scheduler = make_optimizer(model, cfg, steps)
    if preference.is_preference(cfg) and cfg.precompute_ref_logps:
        preference.precompute_reference(model, data, cfg, folder, accelerator.device)
    loss, optimizer = accelerator.prepare(preference.loss_module(model, cfg), optimizer)
    return Training(model, loss, optimizer, scheduler, accelerator, data, cfg, folder, steps)


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
    return validation_record(t)["eval_loss"]


def validation_record(t: Training) -> dict:
    """`eval_loss` (None without validation data), and for preference objectives the held-out
    reward accuracy and margin."""
    if not t.data.val:
        return {"eval_loss": None}
    device = t.accelerator.device
    if preference.is_preference(t.cfg):
        return preference.validation(t.model, t.data.val, t.data.collate, t.cfg, device)
    loss = mean_loss(
        t.model, t.data.val, t.data.collate, t.cfg.batch_size, device, t.cfg.loss_chunk_size
    )
    return {"eval_loss": loss}


def run_loop(t: Training, progress) -> LoopState:
    """Train from `t.state` to `t.steps` optimizer steps; returns the final state.

    On several processes every rank walks the same global batch stream and trains its own
    rows of each micro-batch (`shard`), so the rows, the loss and the data position are those
    of one process with the same settings; only the main process writes. `progress` is a
    `gemmaforge.progress.Tracker` over the steps."""
    cfg, data, state = t.cfg, t.data, t.state
    acc = t.accelerator
    device, rank, world = acc.device, acc.process_index, acc.num_processes
    stream = batch_stream(data.train, data.spec, state.position)
    t.model.train()
    while state.step < t.steps:
        started = time.perf_counter()
        batches = [next(stream) for _ in range(cfg.grad_accum)]
        state.position = batches[-1].after
        shards = [shard(batch.rows, rank, world) for batch in batches]
        tensors = [data.collate(rows, device) for rows, _ in shards]
        # loss units (labelled tokens; pairs), input tokens, token slots, labelled tokens
        counts = [0, 0, 0, 0]
        for batch, (rows, weight) in zip(tensors, shards, strict=True):
            if weight:
                counts[0] += preference.loss_units(cfg, batch)
                counts[1] += sum(len(ex.input_ids) for row in rows for ex in row)
                counts[2] += batch["input_ids"].numel()
                counts[3] += preference.labelled_tokens(batch)
        # Normalise by the whole step's labelled tokens over every rank, so every token weighs
        # the same whatever micro-batch and process it landed in. DDP averages gradients over
        # the processes; multiplying by their number turns that average into this sum.
        step_tokens, input_tokens, slots, labelled = (int(n) for n in _sum_over_ranks(acc, counts))
        loss_total, stats = 0.0, {}
        for batch, (_, weight) in zip(tensors, shards, strict=True):
            loss_sum = t.loss(batch) * weight
            preference.take_stats(t.loss, stats, weight)
            acc.backward(loss_sum * world / max(step_tokens, 1))
            loss_total += loss_sum.item()
        loss_total = _sum_over_ranks(acc, [loss_total])[0]
        if preference.is_preference(cfg):  # every rank has the same keys (take_stats)
            stats = dict(zip(stats, _sum_over_ranks(acc, list(stats.values())), strict=True))
        norm = (
            acc.clip_grad_norm_(t.model.parameters(), cfg.max_grad_norm)
            if cfg.max_grad_norm
            else None
        )
        lr = t.scheduler.get_last_lr()[0]
        t.optimizer.step()
        t.scheduler.step()
        t.optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - started
        state.train_seconds += elapsed
        state.step += 1
        state.padding = (state.padding * state.slots + slots - input_tokens) / (state.slots + slots)
        state.slots += slots
        record = {
            "step": state.step,
            "loss": loss_total / max(step_tokens, 1),
            "lr": lr,
            "tokens_per_second": input_tokens / elapsed,
            "trained_tokens": labelled,
            "padding": (slots - input_tokens) / slots,
            "epoch": _epoch(state.position, data.train.size),
            **observe.facts(t, norm),
            **preference.step_metrics(cfg, stats),
        }
        last = state.step == t.steps
        if (cfg.eval_every and state.step % cfg.eval_every == 0) or (last and data.val):
            record.update(validation_record(t))
        if acc.is_main_process and (
            state.step % cfg.log_every == 0 or last or "eval_loss" in record
        ):
            append_jsonl(t.folder.metrics, record)
        if acc.is_main_process and "eval_loss" in record:
            # The loss plot follows the run: updated at each validation (RUN/loss.png).
            plot_loss_curve(t.folder.metrics, t.folder.loss_plot)
        state.final = record
        observe.notify(t, record)
        progress.update(state.step, status_line(record))
        if (cfg.save_every and state.step % cfg.save_every == 0) or last:
            if acc.is_main_process:
                save(t)
            acc.wait_for_everyone()
    return state


def shard(rows: list, rank: int, world: int) -> tuple[list, float]:
    """This process's rows of one global micro-batch, and the weight of their loss.

    Rank r takes rows r, r + world, ...: disjoint, and together every row once. A rank left
    without a row (a short last batch) trains a copy of the first row at weight 0, so every
    process still runs the forward and backward that gradient synchronisation waits for."""
    mine = rows[rank::world]
    return (mine, 1.0) if mine else (rows[:1], 0.0)


def _sum_over_ranks(accelerator, values: list) -> list:
    """`values` summed over every process (unchanged on one)."""
    if accelerator.num_processes == 1:
        return values
    # On the process group's own device: NCCL reduces CUDA tensors only, gloo CPU ones.
    summed = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    return accelerator.reduce(summed, "sum").tolist()


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
    if "reward_accuracy" in record or "reward_margin" in record:
        text += f"  margin {record['reward_margin']:.3f}"
        if "reward_accuracy" in record:
            text += f"  acc {record['reward_accuracy']:.2f}"
    if record.get("eval_loss") is not None:
        text += f"  eval {record['eval_loss']:.4f}"
    return text
