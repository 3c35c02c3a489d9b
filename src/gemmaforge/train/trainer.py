"""One training run, end to end: load, render data, attach LoRA, loop, leave a run folder.

The run folder (`train.output_dir`) is self-describing: `adapter/` (PEFT weights + config +
tokenizer/processor files), `config.yaml`, `metrics.jsonl`, `data_report.json`,
`checkpoints/`, a model card `README.md` and `manifest.json` with the sha256 of every file.
"""

from __future__ import annotations

import random
import shutil
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from gemmaforge.config import Config, DataConfig
from gemmaforge.errors import UserError, problem
from gemmaforge.files import write_json_atomic, write_text_atomic
from gemmaforge.models.load import LoadedModel
from gemmaforge.runs import RunFolder

RESUME_SECTIONS = ("model", "data", "lora")


@dataclass
class TrainResult:
    run_dir: Path
    model: Any
    """The trained PEFT model, in eval mode, on its device."""
    loaded: LoadedModel
    final: dict
    """The last metrics record (step, loss, lr, tokens_per_second, eval_loss)."""


def train(cfg: Config, loaded: LoadedModel | None = None, console=None) -> TrainResult:
    """Train LoRA per `cfg`. Given `loaded`, its model is adapted in place (no second load)."""
    import numpy as np
    import torch
    from accelerate import Accelerator
    from rich.console import Console

    from gemmaforge.config_load import dump_config
    from gemmaforge.data.batches.batching import BatchSpec
    from gemmaforge.data.batches.collate import Collator
    from gemmaforge.data.examples.multimodal import media_encoder
    from gemmaforge.data.examples.skiplog import FILE as SKIP_FILE
    from gemmaforge.data.examples.skiplog import SkipLog
    from gemmaforge.data.read.sources import configure_storage
    from gemmaforge.models.load import load_model
    from gemmaforge.models.lora import apply_lora
    from gemmaforge.train import loop
    from gemmaforge.train.options import apply_options, check_options, checkpointed_layers

    console = console or Console(stderr=True)
    run_dir = Path(cfg.train.output_dir)
    check_options(cfg)
    configure_storage(cfg.data)
    _prepare_run_dir(run_dir, cfg)
    loaded = loaded or load_model(cfg.model)
    console.print(
        f"model: {loaded.source} ({loaded.family.name}) on {loaded.device}, "
        f"{str(loaded.dtype).removeprefix('torch.')}"
    )
    media = media_encoder(loaded, cfg.data)
    skips = SkipLog(run_dir / SKIP_FILE)
    source, val_set, report = _open_data(cfg, loaded, media, skips)
    console.print(f"data: {report.summary()}")
    for note in report.notes[:20]:
        console.print(f"  {note}")
    if skips.total:
        console.print(f"  {skips.summary()}")
    if report.streaming and loaded.processor is not None:
        console.print("  streaming: encoders are kept (the data's media kinds are not known yet)")
    elif not report.streaming:
        used = source.examples + val_set
        for line in release_unused_towers(loaded.model, used, cfg.lora.towers):
            console.print(line)

    random.seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    model, lora_report = apply_lora(loaded.model, cfg.lora)
    console.print(lora_report.summary())
    checkpointed = checkpointed_layers(model, cfg, loaded.device, loaded.dtype)
    for line in apply_options(model, cfg, checkpointed):
        console.print(line)
    accelerator = Accelerator(cpu=loaded.device.type == "cpu")
    data = loop.LoopData(
        train=source,
        val=val_set,
        collate=Collator(
            pad_id=_pad_id(loaded.tokenizer),
            type_key=media.type_key if media else None,
            media=media,
            dtype=loaded.dtype,
            packed=cfg.data.packing,
        ),
        spec=BatchSpec(
            batch_size=cfg.train.batch_size,
            max_tokens=cfg.data.max_seq_length,
            packing=cfg.data.packing,
            group_by_length=cfg.data.group_by_length,
            seed=cfg.train.seed,
        ),
    )
    steps = loop.total_steps(cfg.train, data)
    optimizer, scheduler = loop.make_optimizer(model, cfg.train, steps)
    model, optimizer = accelerator.prepare(model, optimizer)

    if cfg.train.resume:
        state = loop.restore(model, run_dir, optimizer, scheduler)
        console.print(f"resumed from step {state.step}")
    else:
        state = loop.LoopState()
        write_text_atomic(run_dir / "config.yaml", dump_config(cfg))
        write_json_atomic(run_dir / "data_report.json", asdict(report))
    with _progress(console) as progress:
        state = loop.run_loop(
            model,
            data,
            cfg.train,
            run_dir,
            accelerator,
            progress,
            state,
            optimizer,
            scheduler,
            steps,
        )
    model = accelerator.unwrap_model(model)
    model.eval()
    if skips.total:
        console.print(skips.summary())
        # Streamed rows are only judged as they are read: the count is final now.
        report = replace(report, skipped=skips.total)
        write_json_atomic(run_dir / "data_report.json", asdict(report))
    if cfg.data.packing or state.padding:
        console.print(f"padding: {state.padding:.1%} of the token slots trained on")
    _write_outputs(run_dir, cfg, model, loaded, report, lora_report, state.final)
    console.print(f"done: {run_dir} (final {loop.status_line(state.final)})")
    return TrainResult(run_dir=run_dir, model=model, loaded=loaded, final=state.final)


def _open_data(cfg: Config, loaded: LoadedModel, media, skips):
    """(training example source, validation examples, report): in memory, or streamed."""
    from gemmaforge.data.batches.epochs import MemoryExamples
    from gemmaforge.data.batches.streaming import open_stream
    from gemmaforge.data.examples.dataset import RowRenderer, load_datasets

    if streams(cfg.data):
        renderer = RowRenderer(cfg.data, loaded.family, loaded.tokenizer, media)
        return open_stream(cfg.data, renderer, skips, cfg.train.seed)
    train_set, val_set, report = load_datasets(
        cfg.data, loaded.family, loaded.tokenizer, cfg.train.seed, media, skips
    )
    if cfg.data.packing and report.has_media:
        raise UserError(
            problem(
                "data.packing",
                f"the data has {report.images} images and {report.audio_clips} audio clips: "
                "packing is for text",
                "set data.packing=false (data.group_by_length=true also cuts padding)",
            )
        )
    return MemoryExamples(train_set, cfg.train.seed), val_set, report


def streams(data: DataConfig) -> bool:
    """Whether training rows are streamed: asked for, or (auto) read from remote storage."""
    if data.streaming != "auto":
        return data.streaming == "on"
    return any(
        "://" in path and not path.startswith("file://")
        for path in (data.train, data.validation)
        if path
    )


def run_record(loaded: LoadedModel) -> dict:
    """The machine-readable facts downstream verbs (eval, export, serve) check an adapter
    against: which base it was trained on, by hash."""
    from gemmaforge import __version__

    return {
        "base_model": loaded.source,
        "base_sha256": loaded.source_sha256,
        "family": loaded.family.name,
        "model_type": loaded.model.config.model_type,
        "gemmaforge_version": __version__,
    }


def release_unused_towers(model, examples, towers) -> list[str]:
    """Drop the vision/audio encoders the data never uses, and say so.

    A text-only run on Gemma 3n or Gemma 4 would otherwise keep every encoder's weights in
    memory for nothing (hundreds of MB on E2B/E4B). The forward pass only calls an encoder
    when pixels or audio features are given; the small token embedders (`embed_vision`,
    `embed_audio`) are used for every batch and stay. The adapter saved is unaffected.
    """
    from gemmaforge.models.lora import TOWER_MODULES

    tower_of = {"image": "vision", "audio": "audio"}
    used = {tower_of[ref.kind] for example in examples for ref in example.media}
    inner = getattr(model, "model", model)
    lines = []
    for tower, (encoder, _) in TOWER_MODULES.items():
        module = getattr(inner, encoder, None)
        if module is None or tower in used or tower in towers:
            continue
        size = sum(p.numel() * p.element_size() for p in module.parameters())
        setattr(inner, encoder, None)
        lines.append(f"{tower} encoder unused by this data: released {size / 2**20:.1f} MiB")
    return lines


def _prepare_run_dir(run_dir: Path, cfg: Config) -> None:
    from gemmaforge.train.checkpoint import list_checkpoints

    # Before the model loads (minutes for a large one): a mistyped data path fails at once.
    missing = [
        problem(f"data.{key}", f"{path}: file not found", "check the path")
        for key, path in (("train", cfg.data.train), ("validation", cfg.data.validation))
        if path and "://" not in path and not Path(path).exists()
    ]
    if streams(cfg.data) and not cfg.train.max_steps:
        missing.append(
            problem(
                "train.max_steps",
                "streamed data has no known length, so epochs cannot be counted",
                "set train.max_steps (or data.streaming=off to load the data first)",
            )
        )
    if missing:
        raise UserError(missing)
    if cfg.train.resume:
        if not list_checkpoints(run_dir / "checkpoints"):
            raise UserError(
                problem(
                    str(run_dir),
                    "has no checkpoint to resume from",
                    "run without --resume to start a new run there",
                )
            )
        _check_same_run(run_dir, cfg)
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        if not cfg.train.overwrite:
            raise UserError(
                problem(
                    str(run_dir),
                    "already holds a run",
                    "pass --resume to continue it, train.overwrite=true to replace it, "
                    "or --output for a new folder",
                )
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def _check_same_run(run_dir: Path, cfg: Config) -> None:
    """Resuming with other model/data/LoRA settings would silently train something else."""
    import yaml

    saved = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    now = cfg.model_dump()
    changed = [
        f"{section}.{key}"
        for section in RESUME_SECTIONS
        for key, value in now[section].items()
        if saved[section].get(key) != value
    ]
    if changed:
        raise UserError(
            problem(
                str(run_dir / "config.yaml"),
                f"resuming with changed settings: {', '.join(changed)}",
                "resume with the run's own settings, or start a new run with --output",
            )
        )


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def _progress(console):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not sys.stderr.isatty(),
    )


def _write_outputs(run_dir, cfg, model, loaded, report, lora_report, final) -> None:
    from gemmaforge.train import artifacts
    from gemmaforge.train.checkpoint import replace_dir

    tmp = run_dir / ".tmp-adapter"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, save_embedding_layers=False)
    (loaded.processor or loaded.tokenizer).save_pretrained(tmp)
    replace_dir(tmp, run_dir / "adapter")
    data = {Path(f.path).name: {"fingerprint": f.fingerprint, "rows": f.rows} for f in report.files}
    card = artifacts.model_card(
        base=loaded.source,
        base_sha256=loaded.source_sha256,
        family=loaded.family.name,
        data=data,
        config=cfg.model_dump(),
        final=final,
        lora_summary=lora_report.summary(),
    )
    write_text_atomic(run_dir / "README.md", card)
    write_json_atomic(RunFolder(run_dir).record, run_record(loaded))
    artifacts.write_manifest(run_dir)
