"""A run folder: every file name in it, and reading a finished run back.

`RunFolder` owns the names of the files a run leaves behind; the trainer writes through it
and every reader (eval, generate, chat, serve, export, the hub) finds files through it, so a
name is defined once. `open_run` checks that a folder is a finished run before anything
downstream loads weights; `check_base` refuses a base other than the one the adapter was
trained on (same sha256), telling the user both hashes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gemmaforge.config import Config
from gemmaforge.errors import UserError, problem


@dataclass(frozen=True)
class RunFolder:
    """The files of one run folder (`train.output_dir`), by what they hold."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def adapter(self) -> Path:
        """PEFT adapter weights + config + tokenizer/processor files."""
        return self.root / "adapter"

    @property
    def config(self) -> Path:
        """The resolved config (YAML)."""
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        """One JSON line per logged step."""
        return self.root / "metrics.jsonl"

    @property
    def data_report(self) -> Path:
        """Rows read, dropped, skipped; data fingerprints."""
        return self.root / "data_report.json"

    @property
    def skipped(self) -> Path:
        """Every row left out, with its reason."""
        return self.root / "skipped.jsonl"

    @property
    def samples(self) -> Path:
        """Replies to held-out prompts during training (train.sample_every): one JSON line each,
        with step, prompt, reply, reference and media."""
        return self.root / "samples.jsonl"

    @property
    def data_check(self) -> Path:
        """`gemmaforge data check --json` output saved with the run (the dashboard shows it)."""
        return self.root / "data_check.json"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard event files (train.report_to: tensorboard)."""
        return self.root / "tensorboard"

    @property
    def mlflow(self) -> Path:
        """A local MLflow store, SQLite (train.report_to: mlflow)."""
        return self.root / "mlflow"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def card(self) -> Path:
        """The model card (Markdown with Hugging Face YAML front matter)."""
        return self.root / "README.md"

    @property
    def record(self) -> Path:
        """Machine-readable facts about the base the adapter belongs to."""
        return self.root / "run.json"

    @property
    def record_file(self) -> Path:
        """The complete run record (record/ package): data, base, config, versions, outputs'
        hashes, the network guard's log."""
        return self.root / "record.json"

    @property
    def manifest(self) -> Path:
        """sha256 of every other file."""
        return self.root / "manifest.json"

    @property
    def eval_dir(self) -> Path:
        """The latest evaluation (report.md/json, loss_curve.png); each one is also kept in
        eval/N/, and eval/latest names N."""
        return self.root / "eval"

    @property
    def loss_plot(self) -> Path:
        """Training and validation loss against step, redrawn at each validation."""
        return self.root / "loss.png"

    def tmp(self, name: str) -> Path:
        """A temp path inside the folder (left out of the manifest, cleaned on failure)."""
        return self.root / f".tmp-{name}"


@dataclass
class Run:
    dir: Path
    config: Config
    base_model: str
    base_sha256: str
    family: str
    base_path: str | None = None
    """The base's absolute path when it was trained (None for a hub id or an older run)."""

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.dir)

    @property
    def adapter_dir(self) -> Path:
        return self.folder.adapter

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
    files = RunFolder(folder)
    needed = [files.record, files.config, files.adapter / "adapter_config.json"]
    missing = [str(path.relative_to(folder)) for path in needed if not path.is_file()]
    if missing:
        raise UserError(
            problem(
                str(folder),
                f"is not a finished run folder (missing {', '.join(missing)})",
                "finish or resume the run with `gemmaforge train --resume`, or pass another folder",
            )
        )
    record = json.loads(files.record.read_text(encoding="utf-8"))
    config = Config.model_validate(yaml.safe_load(files.config.read_text("utf-8")))
    return Run(
        dir=folder,
        config=config,
        base_model=record["base_model"],
        base_sha256=record["base_sha256"],
        family=record["family"],
        base_path=record.get("base_path"),
    )


def check_base(run: Run, loaded) -> None:
    """Refuse a base model other than the one the adapter was trained on."""
    if loaded.source_sha256 != run.base_sha256:
        raise UserError(
            problem(
                str(run.dir),
                f"its adapter was trained on {run.base_model} (sha256 {run.base_sha256}), but the "
                f"base model given, {loaded.source}, has sha256 {loaded.source_sha256}",
                "pass the base model the run was trained on (--model; --base for export)",
            )
        )
