"""One side of a benchmark, run in its own process: `python -m gemmaforge.bench.worker SPEC OUT`.

A fresh process per side means neither inherits the other's allocator caches, threads or
peak memory. Both sides load the weights with gemmaforge's loader (same dtype, same device),
then the peak-memory mark is reset, so what is compared is the training method alone. The
result (per-step seconds and losses, peak memory) is written as JSON to OUT.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gemmaforge.config import Config, DataConfig, LoraConfig, ModelConfig, TrainConfig
from gemmaforge.models.load import load_model, resolve_device
from gemmaforge.models.structure import decoder_layers
from gemmaforge.perf.measure import PeakMemory, device_base_bytes


@dataclass
class BenchSide:
    side: str
    """gemmaforge or baseline."""
    model: str
    data: str
    seq_len: int
    batch_size: int
    steps: int
    run_dir: str
    lora_r: int = 16
    lora_alpha: float = 32.0
    dtype: str = "auto"
    device: str = "auto"
    seed: int = 0
    train: dict = field(default_factory=dict)
    """Extra gemmaforge TrainConfig fields (gradient_checkpointing, loss_chunk_size, compile)."""
    peer: str = "trainer"
    """The baseline side's trainer: trainer (transformers) or trl (SFTTrainer)."""
    quantize: str = "none"
    """model.quantize for both sides (4bit: QLoRA, CUDA only)."""
    packing: bool = False
    """Pack examples into rows of up to seq_len tokens (gemmaforge: data.packing; TRL: BFD
    packing, padding-free)."""


@dataclass
class WorkerResult:
    side: str
    pid: int
    device: str
    dtype: str
    step_seconds: list[float]
    step_tokens: list[int]
    """Input tokens per step, padding not counted."""
    padding: float
    """Share of the token slots computed on that were padding."""
    losses: list[float]
    base_bytes: int
    """Memory in use before the model loaded (the process itself)."""
    peak_bytes: int
    """Peak memory while training (RSS on CPU, allocated on CUDA/MPS)."""
    load_peak_bytes: int
    """The process's peak RSS up to the end of loading (CPU on Linux; else 0): resetting the
    training peak's mark also resets the one the parent reads at exit."""
    checkpointed_layers: int
    """Decoder layers recomputed in the backward pass."""


def model_config(spec: BenchSide):

    return ModelConfig(
        name_or_path=spec.model, dtype=spec.dtype, device=spec.device, quantize=spec.quantize
    )


def data_config(spec: BenchSide):

    return DataConfig(
        train=spec.data, max_seq_length=spec.seq_len, val_fraction=0.0, packing=spec.packing
    )


def run_gemmaforge(spec: BenchSide, loaded) -> dict:
    """gemmaforge's own trainer, exactly as `gemmaforge train` runs it."""
    from rich.console import Console

    from gemmaforge.train.trainer import train

    cfg = Config(
        model=model_config(spec),
        data=data_config(spec),
        lora=LoraConfig(r=spec.lora_r, alpha=spec.lora_alpha),
        train=TrainConfig(
            output_dir=spec.run_dir,
            max_steps=spec.steps,
            batch_size=spec.batch_size,
            seed=spec.seed,
            overwrite=True,
            **spec.train,
        ),
    )
    result = train(cfg, loaded=loaded, console=Console(stderr=True))
    lines = (Path(spec.run_dir) / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    # Each record holds the seconds trained so far and the step's input tokens per second.
    done = [0.0] + [r["seconds"] for r in records]
    seconds = [b - a for a, b in itertools.pairwise(done)]
    tokens = [r["tokens_per_second"] * s for r, s in zip(records, seconds, strict=True)]
    slots = [n / (1 - r["padding"]) for r, n in zip(records, tokens, strict=True)]
    return {
        "step_seconds": seconds,
        "step_tokens": [round(n) for n in tokens],
        "padding": 1 - sum(tokens) / sum(slots),
        "losses": [r["loss"] for r in records],
        "checkpointed_layers": checkpointed(result.model.get_base_model()),
    }


def checkpointed(base) -> int:

    return sum(bool(layer.gradient_checkpointing) for layer in decoder_layers(base))


def main(argv: list[str]) -> None:

    spec = BenchSide(**json.loads(Path(argv[0]).read_text()))
    device = resolve_device(spec.device)
    # Both sides import the same libraries before the baseline memory is read, so the peak
    # above it is the model and training, not the code.
    import accelerate  # noqa: F401
    import peft  # noqa: F401
    import transformers.trainer  # noqa: F401

    base = device_base_bytes(device.type)
    loaded = load_model(model_config(spec))
    peak = PeakMemory(device.type)
    peak.start()
    if spec.side == "gemmaforge":
        ran = run_gemmaforge(spec, loaded)
    else:
        from gemmaforge.bench.baseline import run_baseline, run_dpo_baseline, run_trl_baseline

        if spec.peer == "trl":
            ran = run_trl_baseline(spec, loaded)
        else:
            dpo = spec.train.get("objective") == "dpo"
            seconds, losses = (run_dpo_baseline if dpo else run_baseline)(spec, loaded)
            # Equal rows of seq_len tokens (bench/synthetic.py): no padding.
            tokens = spec.batch_size * spec.seq_len * (2 if dpo else 1)
            ran = {
                "step_seconds": seconds,
                "step_tokens": [tokens] * len(seconds),
                "padding": 0.0,
                "losses": losses,
            }
        ran["checkpointed_layers"] = checkpointed(loaded.model)
    result = WorkerResult(
        side=spec.side,
        pid=os.getpid(),
        device=str(device),
        dtype=str(loaded.dtype).removeprefix("torch."),
        base_bytes=base,
        peak_bytes=peak.stop(),
        load_peak_bytes=peak.before,
        **ran,
    )
    Path(argv[1]).write_text(json.dumps(asdict(result)))


if __name__ == "__main__":
    from gemmaforge import netguard

    # The parent verb's guard rules come through the environment: the worker is guarded too.
    netguard.install_inherited()
    main(sys.argv[1:])
