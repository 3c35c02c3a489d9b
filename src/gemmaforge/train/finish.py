"""Everything after the last step: the adapter and the processor files, the final data report,
the model card, the run record (which base, by hash) and the manifest of hashes — each written
atomically, the manifest last, so a folder with a manifest is a finished run."""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from gemmaforge import __version__, netguard
from gemmaforge.files import write_json_atomic, write_text_atomic
from gemmaforge.models.load import LoadedModel
from gemmaforge.record.build import build_record
from gemmaforge.runs import RunFolder
from gemmaforge.train import artifacts
from gemmaforge.train.checkpoint import replace_dir
from gemmaforge.train.loop import status_line
from gemmaforge.train.prepare import Prepared


@dataclass
class TrainResult:
    run_dir: Path
    model: Any
    """The trained PEFT model, in eval mode, on its device."""
    loaded: LoadedModel
    final: dict
    """The last metrics record (step, loss, lr, tokens_per_second, eval_loss)."""
    main: bool = True
    """This process wrote the run folder (False on the other ranks of a distributed run)."""


def finish(run: Prepared, console: Any) -> TrainResult:

    t, folder = run.training, run.training.folder
    model = t.model
    model.eval()
    result = TrainResult(run_dir=folder.root, model=model, loaded=run.loaded, final=t.state.final)
    if not t.accelerator.is_main_process:
        result.main = False
        return result  # the main process writes the outputs
    report = run.report
    counted = getattr(t.data.train, "rows_by_file", None)
    if report.streaming and counted:
        # A stream's rows are known once read: the counts of the furthest pass go in.
        files = [replace(f, rows=counted.get(f.path, f.rows)) for f in report.files]
        report = replace(report, files=files)
        write_json_atomic(folder.data_report, asdict(report))
    if run.skips.total:
        console.print(run.skips.summary())
        # Streamed rows are only judged as they are read: the count is final now.
        report = replace(report, skipped=run.skips.total)
        write_json_atomic(folder.data_report, asdict(report))
    if run.cfg.data.packing or t.state.padding:
        console.print(padding_line(t.state.padding, run.cfg.data))
    _save_adapter(folder, model, run.loaded)
    data = {Path(f.path).name: {"fingerprint": f.fingerprint, "rows": f.rows} for f in report.files}
    card = artifacts.model_card(
        base=run.loaded.source,
        base_sha256=run.loaded.source_sha256,
        base_path=run.loaded.source_path,
        family=run.loaded.family.name,
        data=data,
        config=run.cfg.model_dump(),
        final=t.state.final,
        lora_summary=run.lora_summary,
    )
    write_text_atomic(folder.card, card)
    write_json_atomic(folder.record, run_record(run.loaded))
    write_json_atomic(folder.record_file, run_full_record(run, report, t.state.final))
    artifacts.write_manifest(folder.root)
    console.print(f"done: {folder.root} (final {status_line(t.state.final)})")
    return result


def padding_line(share: float, data) -> str:
    """What the padding share means, and what lowers it when it is worth lowering."""
    text = (
        f"padding: {share:.1%} of the token positions the model computed were padding "
        "(batches are as wide as their longest row), i.e. compute spent on no data"
    )
    if share >= 0.2 and not data.packing:
        text += "; data.packing=true (text) or data.group_by_length=true lowers it"
    return text


def _save_adapter(folder: RunFolder, model, loaded: LoadedModel) -> None:

    tmp = folder.tmp("adapter")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, save_embedding_layers=False)
    (loaded.processor or loaded.tokenizer).save_pretrained(tmp)
    replace_dir(tmp, folder.adapter)


def run_full_record(run: Prepared, report, final: dict) -> dict:

    guard = netguard.active()
    return build_record(
        folder=run.training.folder,
        config=run.cfg.model_dump(),
        loaded=run.loaded,
        report=report,
        final=final,
        network=guard.entries() if guard else None,
    )


def run_record(loaded: LoadedModel) -> dict:
    """The machine-readable facts downstream verbs (eval, export, serve) check an adapter
    against: which base it was trained on, by hash."""

    # The base as given (relative paths included), where it was (absolute) and what it is (by
    # hash): a run moved to another folder or machine finds its base again by hash.
    return {
        "base_model": loaded.source,
        "base_path": loaded.source_path,
        "base_sha256": loaded.source_sha256,
        "family": loaded.family.name,
        "model_type": loaded.model.config.model_type,
        "gemmaforge_version": __version__,
    }
