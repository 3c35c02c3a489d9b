"""Everything before the first step: check the settings and the data sources (cheap, so before
the model loads), lay out the run folder, load the model, read and render the data, attach
LoRA, apply the memory options, and build the optimizer — or restore them from a checkpoint.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import asdict, dataclass
from typing import Any

from gemmaforge.config import Config
from gemmaforge.config_load import dump_config
from gemmaforge.data.batches.epochs import MemoryExamples
from gemmaforge.data.batches.streaming import open_stream
from gemmaforge.data.examples.dataset import DataReport, load_datasets, rows_have_problems
from gemmaforge.data.examples.multimodal import media_encoder
from gemmaforge.data.examples.preference import load_preference_datasets
from gemmaforge.data.examples.skiplog import SkipLog
from gemmaforge.data.read.sources import DataSources, configure_storage, open_sources
from gemmaforge.errors import UserError, problem
from gemmaforge.files import write_json_atomic, write_text_atomic
from gemmaforge.models.load import LoadedModel, load_model, load_tokenizer, resolve_device
from gemmaforge.models.lora import apply_lora
from gemmaforge.models.structure import release_unused_towers
from gemmaforge.runs import RunFolder
from gemmaforge.train import loop
from gemmaforge.train.checkpoint import list_checkpoints
from gemmaforge.train.options import apply_options, check_options, checkpointed_layers

RESUME_SECTIONS = ("model", "data", "lora")
"""Config sections a resumed run must share with the run it continues."""
SCHEDULE_KEYS = ("max_steps", "epochs", "lr", "scheduler", "warmup_steps", "warmup_ratio")
"""train.* settings the learning-rate schedule is built from: changing one on resume
recomputes the schedule mid-run, so it needs train.reschedule."""


@dataclass
class Prepared:
    """A run ready to loop: the model, its data and optimizer, and what to report at the end."""

    cfg: Config
    loaded: LoadedModel
    training: loop.Training
    report: DataReport
    skips: SkipLog
    lora_summary: str


def prepare(cfg: Config, loaded: LoadedModel | None, console: Any) -> Prepared:
    """Load, render, adapt and restore per `cfg`. Given `loaded`, its model is adapted in place
    (no second load)."""
    import numpy as np
    import torch
    from accelerate import Accelerator

    check_options(cfg)
    configure_storage(cfg.data)
    # Sources are resolved before the model loads (minutes for a large one): a mistyped path,
    # an empty glob or a missing split fails at once.
    sources = open_sources(cfg.data)
    # (Preference rows are checked by their own loader, which knows their formats.)
    if loaded is None and cfg.train.objective == "sft" and rows_have_problems(cfg.data, sources):
        # Every row is parsed and converted before the weights load (and before an old run
        # is replaced); when one is bad, every problem is listed with the tokenizer alone:
        # a data error in seconds, not after minutes of loading weights.
        _raise_data_problems(cfg, sources)
    # Under torchrun / accelerate launch this joins the process group; alone it is one process.
    device = loaded.device if loaded else resolve_device(cfg.model.device)
    accelerator = Accelerator(cpu=device.type == "cpu")
    main = accelerator.is_main_process
    if not main:
        console = _quiet_console()
    # Only the main process writes to the run folder; the others wait until it is laid out.
    folder = prepare_run_dir(cfg, sources) if main else RunFolder(cfg.train.output_dir)
    accelerator.wait_for_everyone()
    loaded = loaded or load_model(cfg.model)
    console.print(
        f"model: {loaded.source} ({loaded.family.name}) on {loaded.device}, "
        f"{str(loaded.dtype).removeprefix('torch.')}"
    )
    media = media_encoder(loaded, cfg.data)
    skips = SkipLog(folder.skipped) if main else SkipLog()
    train_source, val_set, report = open_data(cfg, sources, loaded, media, skips)
    console.print(f"data: {report.summary()}")
    for note in report.notes[:20]:
        console.print(f"  {note}")
    if skips.total:
        console.print(f"  {skips.summary()}")
    _release_towers(cfg, loaded, report, train_source, val_set, console)

    random.seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    model, lora_report = apply_lora(loaded.model, cfg.lora)
    console.print(lora_report.summary())
    checkpointed = checkpointed_layers(
        model,
        cfg,
        loaded.device,
        loaded.dtype,
        accelerator.num_processes,
        getattr(train_source, "examples", None),  # None when streamed
    )
    for line in apply_options(model, cfg, checkpointed):
        console.print(line)
    training = loop.build(
        model, cfg.train, folder, accelerator, train_source, val_set, cfg.data, loaded, media
    )
    if accelerator.num_processes > 1:
        console.print(
            f"distributed: {accelerator.num_processes} processes ({accelerator.distributed_type}),"
            f" each training its share of every batch of {cfg.train.batch_size} rows"
        )
    if cfg.train.resume:
        loop.restore(training)
        console.print(f"resumed from step {training.state.step}")
        if cfg.train.reschedule:
            # The run's config now says what the rest of it trains with.
            from gemmaforge.config_load import dump_config

            if main:
                write_text_atomic(folder.config, dump_config(cfg))
            console.print(f"schedule recomputed for {training.steps} steps from here on")
    elif main:
        from gemmaforge.config_load import dump_config

        # Without its secrets (storage credentials, tokens): they come from the config or the
        # environment again when the run is resumed or evaluated.
        write_text_atomic(folder.config, dump_config(cfg))  # redacted (gemmaforge.redact)
        write_json_atomic(folder.data_report, asdict(report))
    return Prepared(cfg, loaded, training, report, skips, lora_report.summary())


def _quiet_console():
    from rich.console import Console

    return Console(quiet=True)


def _raise_data_problems(cfg: Config, sources: DataSources) -> None:
    """Render the data as training would, with the model's tokenizer and processor but no
    weights, raising its one UserError that lists every problem."""

    tok = load_tokenizer(cfg.model)
    media = media_encoder(tok, cfg.data)
    load_datasets(cfg.data, sources, tok.family, tok.tokenizer, cfg.train.seed, media, SkipLog())


def open_data(cfg: Config, sources: DataSources, loaded: LoadedModel, media, skips: SkipLog):
    """(training example source, validation examples, report): in memory, or streamed."""
    from gemmaforge.data.examples.dataset import RowRenderer, load_datasets

    if cfg.train.objective != "sft":
        return _open_preference(cfg, sources, loaded, media, skips)
    if sources.streaming:
        renderer = RowRenderer(cfg.data, loaded.family, loaded.tokenizer, media)
        return open_stream(cfg.data, sources, renderer, skips, cfg.train.seed)
    train_set, val_set, report = load_datasets(
        cfg.data, sources, loaded.family, loaded.tokenizer, cfg.train.seed, media, skips
    )
    if cfg.data.packing and report.has_media:
        raise UserError(
            problem(
                "data.packing",
                f"the data has {report.images} images, {report.audio_clips} audio clips and "
                f"{report.videos} videos: packing is for text",
                "set data.packing=false (data.group_by_length=true also cuts padding)",
            )
        )
    return MemoryExamples(train_set, cfg.train.seed), val_set, report


def _open_preference(cfg: Config, sources: DataSources, loaded: LoadedModel, media, skips):
    """Preference pairs (or KTO replies) in memory: streamed and packed rows are refused."""

    objective = cfg.train.objective
    if sources.streaming or cfg.data.packing:
        setting = "data.packing" if cfg.data.packing else "data.streaming"
        raise UserError(
            problem(
                setting,
                f"train.objective={objective} reads preference rows into memory, unpacked",
                "set data.packing=false and data.streaming=off (group_by_length cuts padding)",
            )
        )
    train_set, val_set, report = load_preference_datasets(
        cfg.data, sources, loaded.family, loaded.tokenizer, cfg.train.seed, objective, media, skips
    )
    return MemoryExamples(train_set, cfg.train.seed), val_set, report


def _release_towers(cfg, loaded, report, train_source, val_set, console) -> None:

    if report.streaming:
        if loaded.processor is not None:
            console.print(
                "  streaming: encoders are kept (the data's media kinds are not known yet)"
            )
        return
    used = {ref.kind for example in train_source.examples + val_set for ref in example.media}
    for line in release_unused_towers(loaded.model, used, cfg.lora.towers):
        console.print(line)


def prepare_run_dir(cfg: Config, sources: DataSources) -> RunFolder:
    """The run folder, new (or replaced with train.overwrite) or, with train.resume, the one
    being continued; refused when that would lose or mix up a run."""

    folder = RunFolder(cfg.train.output_dir)
    if sources.streaming and not cfg.train.max_steps:
        raise UserError(
            problem(
                "train.max_steps",
                "streamed data has no known length, so epochs cannot be counted",
                "set train.max_steps (or data.streaming=off to load the data first)",
            )
        )
    if cfg.train.resume:
        if not list_checkpoints(folder.checkpoints):
            started = folder.root.is_dir() and any(folder.root.iterdir())
            raise UserError(
                problem(
                    str(folder.root),
                    "has no complete checkpoint to resume from"
                    + (" (the run stopped before its first one was written)" if started else ""),
                    "start again with train.overwrite=true (without --resume)"
                    if started
                    else "run without --resume to start a new run there",
                )
            )
        _check_same_run(folder, cfg)
        return folder
    if folder.root.exists() and any(folder.root.iterdir()):
        if not cfg.train.overwrite:
            resumable = bool(list_checkpoints(folder.checkpoints))
            raise UserError(
                problem(
                    str(folder.root),
                    "already holds a run"
                    + ("" if resumable else " with no complete checkpoint to resume from"),
                    ("pass --resume to continue it, " if resumable else "")
                    + "train.overwrite=true to start again, or --output for a new folder",
                )
            )
        shutil.rmtree(folder.root)
    folder.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def _check_same_run(folder: RunFolder, cfg: Config) -> None:
    """Resuming with other model/data/LoRA settings would silently train something else."""
    import yaml

    saved = yaml.safe_load(folder.config.read_text(encoding="utf-8"))
    # config.yaml is written redacted: compare like with like.
    now = yaml.safe_load(dump_config(cfg))
    changed = [
        f"{section}.{key}"
        for section in RESUME_SECTIONS
        for key, value in now[section].items()
        if saved[section].get(key) != value
    ]
    if changed:
        raise UserError(
            problem(
                str(folder.config),
                f"resuming with changed settings: {', '.join(changed)}",
                "resume with the run's own settings, or start a new run with --output",
            )
        )
    schedule = [
        f"train.{key} {saved['train'].get(key)} -> {now['train'][key]}"
        for key in SCHEDULE_KEYS
        if saved["train"].get(key) != now["train"][key]
    ]
    if schedule and not cfg.train.reschedule:
        raise UserError(
            problem(
                str(folder.config),
                f"resuming with a changed learning-rate schedule ({', '.join(schedule)}): the "
                "schedule would be recomputed mid-run",
                "resume with the run's own settings, or pass --reschedule to recompute the "
                "schedule for the new settings from the resumed step on",
            )
        )
