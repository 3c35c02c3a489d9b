"""Predict a run's peak memory and step time before training, and what would fit if it
does not.

Memory is a sum of parts, each a product of sizes from the model's config (`perf/shapes.py`)
and the run's settings, with a few byte-per-element constants measured on the benchmark
configs (`gemmaforge bench` prints predicted next to measured; docs/performance.md):

  weights      parameters kept in memory x dtype bytes (unused towers are released)
  LoRA         LoRA parameters x 16 bytes (fp32 weight, gradient, two AdamW moments)
  activations  tokens x bytes per token and layer, for each layer not checkpointed, and
               tokens x hidden for each checkpointed one (it keeps only its input), plus one
               layer's activations while it is recomputed
  loss         gemmaforge: one chunk of logits (chunk x vocab) with its softmax and gradient;
               a plain Trainer: the whole batch's logits (tokens x vocab) in bf16 and fp32
  runtime      allocator and kernel workspaces, measured

Step time is the step's floating-point operations (recomputation included) divided by the
device's measured matmul throughput times an efficiency measured on the benchmark configs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from gemmaforge.config import Config
from gemmaforge.errors import UserError, problem
from gemmaforge.models.load import check_quantize, resolve_device, resolve_dtype
from gemmaforge.perf.measure import available_bytes, matmul_flops
from gemmaforge.perf.shapes import ModelShape, model_shape, read_config

GiB = 2**30
MiB = 2**20

# Measured constants (CPU, bf16 and fp32, transformers 5.23; see docs/performance.md).
RUNTIME_BYTES = 400 * MiB
"""Thread pools, oneDNN workspaces and allocator slack of a training process."""
ACT_SCALE = 1.5
"""Correction on the analytic bytes per token and layer."""
LOSS_CHUNK_BYTES = 10
"""Bytes per (chunk token x vocab entry) of the fused loss's buffers: the logits in the weights'
dtype, their fp32 copy (softmax and gradient in place), the soft-cap's tanh."""
FULL_LOGITS_BYTES = 14
"""Bytes per (token x vocab entry) of a plain Trainer's loss (bf16 logits, fp32 copy,
log-softmax, gradient)."""
EFFICIENCY = 0.35
"""Share of the measured matmul peak a training step reaches."""
AUTO_SHARE = 0.5
"""`train.gradient_checkpointing: auto` keeps a run's predicted memory above its weights within
this share of the memory available: room for the prediction's error (+-25%) and for the
other programs of a laptop."""

MIN_SEQ_LEN = 128


@dataclass(frozen=True)
class Settings:
    """The settings that change memory and time."""

    batch_size: int
    seq_len: int
    grad_accum: int = 1
    checkpointed_layers: int = 0
    """Decoder layers whose activations are recomputed in the backward pass."""
    loss_chunk_size: int = 64
    lora_r: int = 16
    lora_targets: tuple[str, ...] | None = None
    towers_kept: tuple[str, ...] = ()
    """Vision/audio towers kept in memory (used by the data or adapted)."""
    trained_fraction: float = 1.0
    """Share of tokens with a label (the loss runs at these positions only)."""
    dtype_bytes: int = 2
    sequences_per_row: int = 1
    """2 for preference pairs (dpo, orpo, simpo): chosen and rejected in one forward."""
    reference_forward: bool = False
    """dpo / kto without precomputed reference log-probs: a no-grad forward of the base
    model (adapter off) per micro-batch; compute, not memory (nothing of it is kept)."""
    plain_trainer: bool = False
    """A plain transformers Trainer + PEFT (the benchmark's baseline): the whole batch's
    logits, and PEFT's fp32 copy of each adapted layer's input."""

    def describe(self) -> str:
        parts = [f"batch {self.batch_size}", f"seq {self.seq_len}"]
        if self.grad_accum > 1:
            parts.append(f"accum {self.grad_accum}")
        checkpointed = self.checkpointed_layers
        parts.append(f"checkpointing {checkpointed} layers" if checkpointed else "no checkpointing")
        if self.sequences_per_row > 1:
            parts.append(f"{self.sequences_per_row} sequences per row")
        if self.reference_forward:
            parts.append("a reference forward per batch")
        return ", ".join(parts)


@dataclass(frozen=True)
class Prediction:
    peak_bytes: int
    parts: dict[str, int]
    step_flops: float
    """Floating-point operations of one optimizer step, recomputation included."""
    model_flops_per_token: float
    """Useful operations per trained token (no recomputation), for MFU."""


def layer_bytes_per_token(shape: ModelShape, dtype_bytes: int, plain_peft: bool = False) -> float:
    """Activations one decoder layer keeps per token for the backward pass.

    Counted from a Gemma layer: norms, q/k/v, rotary, attention output, o_proj and residuals
    (about 10 hidden-wide and 4 attention-wide tensors), the MLP's gate, up, activation and
    product (4 intermediate-wide), in the weights' dtype. Plain PEFT on a bf16 base also keeps
    an fp32 copy of each LoRA layer's input (5 hidden-wide, one attention-wide, one
    intermediate-wide); gemmaforge's adapters compute in bf16 and keep none
    (`models/lora_precision.py`).
    """
    h, i, q, kv = shape.hidden, shape.intermediate, shape.attention_width, shape.kv_width
    native = dtype_bytes * (10 * h + 4 * q + 4 * kv + 4 * i)
    lora_inputs = 4 * (5 * h + q + i) if plain_peft and dtype_bytes != 4 else 0
    return ACT_SCALE * (native + lora_inputs)


def predict(shape: ModelShape, s: Settings) -> Prediction:
    tokens = s.batch_size * s.seq_len * s.sequences_per_row
    labelled = max(1, round(tokens * s.trained_fraction))
    kept_towers = sum(n for t, n in shape.tower_params.items() if t in s.towers_kept)
    text_params = shape.layer_params + shape.embedding_params + shape.other_text_params
    weights = (text_params + kept_towers) * s.dtype_bytes
    lora = shape.lora_params(s.lora_r, list(s.lora_targets or ())) * 16
    per_layer = layer_bytes_per_token(shape, s.dtype_bytes, s.plain_trainer)
    kept = s.checkpointed_layers
    activations = tokens * (shape.layers - kept) * per_layer
    if kept:
        activations += tokens * (kept * shape.hidden * s.dtype_bytes + per_layer)
    embeddings = tokens * shape.hidden * s.dtype_bytes * 2
    if s.plain_trainer:
        loss = tokens * shape.vocab * FULL_LOGITS_BYTES
    else:
        loss = min(s.loss_chunk_size, labelled) * shape.vocab * LOSS_CHUNK_BYTES
        loss += labelled * shape.hidden * s.dtype_bytes
    parts = {
        "weights": weights,
        "lora + optimizer": lora,
        "activations": int(activations + embeddings),
        "loss": int(loss),
        "runtime": RUNTIME_BYTES,
    }
    flops = step_flops(shape, s, tokens, labelled)
    useful = model_flops(shape, s.seq_len, s.trained_fraction)
    return Prediction(sum(parts.values()), parts, flops * s.grad_accum, useful)


def _attention_flops_per_token(shape: ModelShape, seq_len: int) -> float:
    """Scores and weighted sum, forward: 4 x width x attended keys, per layer."""
    window = shape.sliding_window or seq_len
    full = shape.full_layers
    attended = full * seq_len / 2 + (shape.layers - full) * min(window, seq_len / 2)
    return 4 * shape.attention_width * attended


def model_flops(shape: ModelShape, seq_len: int, trained_fraction: float) -> float:
    """Useful operations per input token of LoRA training: forward and input-gradient of
    every frozen matmul (the frozen weights need no weight gradient), and the LM head at the
    labelled positions only. Recomputation is not useful work and is not counted."""
    linear = shape.layer_params
    head = shape.hidden * shape.vocab * trained_fraction
    return 4 * linear + 4 * head + 3 * _attention_flops_per_token(shape, seq_len)


def step_flops(shape: ModelShape, s: Settings, tokens: int, labelled: int) -> float:
    """Operations one micro-batch really costs, recomputation included."""
    linear = shape.layer_params
    attention = _attention_flops_per_token(shape, s.seq_len)
    per_token = 4 * linear + 3 * attention
    per_token += (2 * linear + attention) * s.checkpointed_layers / shape.layers
    # A plain Trainer runs the head on every position; gemmaforge's fused loss on the labelled
    # ones only, its forward and input gradient once each (train/loss.py).
    head_positions = tokens if s.plain_trainer else labelled
    flops = tokens * per_token + 4 * shape.hidden * shape.vocab * head_positions
    if s.reference_forward:
        # Forward only: the frozen matmuls, attention, and the head at labelled positions.
        flops += tokens * (2 * linear + attention) + 2 * shape.hidden * shape.vocab * labelled
    return flops


def step_seconds(prediction: Prediction, matmul_flops: float) -> float:
    return prediction.step_flops / (matmul_flops * EFFICIENCY)


@dataclass
class Plan:
    """What `gemmaforge plan` prints."""

    model: str
    shape: ModelShape
    device: str
    available_bytes: int
    matmul_flops: float
    settings: Settings
    prediction: Prediction
    seconds_per_step: float
    suggestions: list[tuple[str, Settings, Prediction]]
    """When the run does not fit: settings that would, with their predictions."""
    notes: list[str]

    @property
    def fits(self) -> bool:
        return self.prediction.peak_bytes <= self.available_bytes


def settings_from_config(
    cfg: Config,
    shape: ModelShape,
    dtype_bytes: int,
    media_kinds,
    available: int,
    weights_loaded: bool = False,
    processes: int = 1,
) -> Settings:
    """One process's settings. `available` (memory free to this process; the weights already
    among what is used when `weights_loaded`) decides how many layers
    `gradient_checkpointing: auto` checkpoints. With several processes (DDP) each trains its
    share of every micro-batch: ceil(batch_size / processes) rows."""
    # Media kinds are "image" and "audio"; the towers that encode them, "vision" and "audio".
    towers = (("vision", "image"), ("audio", "audio"))
    kept = tuple(t for t, kind in towers if t in cfg.lora.towers or kind in media_kinds)
    settings = Settings(
        batch_size=-(-cfg.train.batch_size // processes),
        seq_len=cfg.data.max_seq_length,
        grad_accum=cfg.train.grad_accum,
        loss_chunk_size=cfg.train.loss_chunk_size,
        lora_r=cfg.lora.r,
        lora_targets=tuple(cfg.lora.targets) if cfg.lora.targets else None,
        towers_kept=kept,
        dtype_bytes=dtype_bytes,
        sequences_per_row=2 if cfg.train.objective in ("dpo", "orpo", "simpo") else 1,
        reference_forward=cfg.train.objective in ("dpo", "kto")
        and not cfg.train.precompute_ref_logps,
    )
    choice = cfg.train.gradient_checkpointing
    if choice == "auto":
        weights = 0 if weights_loaded else predict(shape, settings).parts["weights"]
        choice = auto_checkpointed_layers(shape, settings, available - weights)
    return replace(settings, checkpointed_layers=shape.layers if choice is True else int(choice))


def auto_checkpointed_layers(shape: ModelShape, s: Settings, room: int) -> int:
    """The fewest decoder layers to checkpoint for the run's predicted memory above its weights
    to stay within AUTO_SHARE of `room`; every layer when no fewer do.

    Any layers will do: the peak is the sum of what every layer keeps at the end of the
    forward pass. Checkpointing a layer costs about a third of its step time (a second forward).
    """
    for layers in range(shape.layers + 1):
        prediction = predict(shape, replace(s, checkpointed_layers=layers))
        if prediction.peak_bytes - prediction.parts["weights"] <= AUTO_SHARE * room:
            return layers
    return shape.layers


def make_plan(
    cfg: Config, media_rows: list[list[tuple[str, str]]] | None = None, processes: int = 1
) -> Plan:
    """Predict the run `cfg` describes, on this machine, per process when `processes` (DDP,
    one machine) train it; a UserError when it cannot fit."""

    if not cfg.model.name_or_path:
        raise UserError(problem("model.name_or_path", "no model given", "pass --model PATH"))
    device = resolve_device(cfg.model.device)
    check_quantize(cfg.model, device)
    dtype = resolve_dtype(cfg.model.dtype, device)
    config = read_config(cfg.model.name_or_path)
    shape = model_shape(config, cfg.model.name_or_path)
    _check_image_budget(cfg, shape)
    need, kinds = media_need(media_rows or [], cfg, shape, config)
    if need > cfg.data.max_seq_length:
        raise UserError(
            problem(
                "data.max_seq_length",
                f"{cfg.data.max_seq_length} tokens is less than the {need} the image/audio tokens "
                f"of a row of {cfg.data.train} need (media runs are never cut)",
                f"raise data.max_seq_length to at least {need + 64}",
            )
        )
    # Processes on a CPU share the machine's memory; on GPUs each has its own device.
    available = available_bytes(device) // (processes if device.type == "cpu" else 1)
    settings = settings_from_config(cfg, shape, dtype.itemsize, kinds, available, False, processes)
    prediction = predict(shape, settings)
    flops = matmul_flops(device, dtype, seconds=0.5)
    notes = [
        f"towers kept in memory: {', '.join(settings.towers_kept) or 'none'} "
        "(unused encoders are released)"
    ]
    if cfg.train.gradient_checkpointing == "auto":
        notes.append(
            f"train.gradient_checkpointing=auto checkpoints {settings.checkpointed_layers} of "
            f"{shape.layers} decoder layers: the fewest that keep the memory above the weights "
            f"within {AUTO_SHARE:.0%} of what is available"
        )
    if processes > 1:
        notes.append(
            f"per process: {processes} processes (DDP) each hold the weights and train "
            f"{settings.batch_size} of every {cfg.train.batch_size} rows"
            + ("; on a CPU they share its memory" if device.type == "cpu" else "")
        )
    if cfg.model.quantize == "4bit":
        notes.append("4-bit weights are not modelled yet: the prediction is for bf16 weights")
    suggestions = []
    if prediction.peak_bytes > available:
        smallest = replace(
            settings,
            batch_size=1,
            grad_accum=settings.batch_size * settings.grad_accum,
            checkpointed_layers=shape.layers,
            seq_len=min(settings.seq_len, max(need + 64, MIN_SEQ_LEN)),
            loss_chunk_size=min(64, settings.loss_chunk_size),
        )
        least = predict(shape, smallest)
        if least.peak_bytes > available:
            raise UserError(
                problem(
                    cfg.model.name_or_path,
                    f"does not fit: even {smallest.describe()} and loss chunks of "
                    f"{smallest.loss_chunk_size} need {least.peak_bytes / GiB:.2f} GiB, and "
                    f"{device} has {available / GiB:.2f} GiB available",
                    "use a smaller model, free memory, or a device with more memory",
                )
            )
        suggestions = fitting_settings(shape, settings, available, need)
    return Plan(
        model=cfg.model.name_or_path,
        shape=shape,
        device=str(device),
        available_bytes=available,
        matmul_flops=flops,
        settings=settings,
        prediction=prediction,
        seconds_per_step=step_seconds(prediction, flops),
        suggestions=suggestions,
        notes=notes,
    )


def fitting_settings(shape: ModelShape, s: Settings, available: int, need: int):
    """Single changes first, then combinations, each keeping the effective batch."""
    effective = s.batch_size * s.grad_accum
    candidates: list[tuple[str, Settings]] = []
    every = shape.layers
    if s.checkpointed_layers < every:
        candidates.append(
            ("train.gradient_checkpointing=true", replace(s, checkpointed_layers=every))
        )
    batch = s.batch_size
    while batch > 1:
        batch //= 2
        accum = -(-effective // batch)
        change = f"train.batch_size={batch} train.grad_accum={accum}"
        candidates.append((change, replace(s, batch_size=batch, grad_accum=accum)))
        if s.checkpointed_layers < every:
            candidates.append(
                (
                    change + " train.gradient_checkpointing=true",
                    replace(s, batch_size=batch, grad_accum=accum, checkpointed_layers=every),
                )
            )
    seq = s.seq_len
    while seq // 2 >= max(need, MIN_SEQ_LEN):
        seq //= 2
        candidates.append((f"data.max_seq_length={seq}", replace(s, seq_len=seq)))
    if s.loss_chunk_size > 64:
        candidates.append(("train.loss_chunk_size=64", replace(s, loss_chunk_size=64)))
    out = []
    for change, settings in candidates:
        # Two spellings of the same settings are one suggestion, shown once.
        if any(settings == kept for _, kept, _ in out):
            continue
        prediction = predict(shape, settings)
        if prediction.peak_bytes <= available:
            out.append((change, settings, prediction))
    return out[:6]


def _check_image_budget(cfg: Config, shape: ModelShape) -> None:
    if cfg.data.image_budget is None:
        return
    if shape.family.name != "gemma4" or not shape.multimodal:
        raise UserError(
            problem(
                "data.image_budget",
                f"is a Gemma 4 image setting; {cfg.model.name_or_path} is a "
                f"{'multimodal' if shape.multimodal else 'text-only'} {shape.family.name} model",
                "remove data.image_budget",
            )
        )


def media_need(
    rows: list[list[tuple[str, str]]], cfg: Config, shape: ModelShape, config
) -> tuple[int, set[str]]:
    """(tokens the media of the most demanding row take, media kinds used), from each row's
    media parts as (kind, reference) pairs (data/examples/dataset.py `media_per_row`)."""
    need, kinds = 0, set()
    for parts in rows:
        kinds |= {kind for kind, _ in parts}
        total = sum(media_tokens(kind, ref, cfg, shape, config) for kind, ref in parts)
        need = max(need, total)
    return need, kinds


def media_tokens(kind: str, ref: str, cfg: Config, shape: ModelShape, config) -> int:
    """Tokens one image or clip becomes, with its begin/end markers (models/families.py)."""
    family = shape.family
    if family.audio_tokens_per_second is None or kind == "image":
        if family.name == "gemma3n":
            count = (
                config.vision_soft_tokens_per_image
                if kind == "image"
                else config.audio_soft_tokens_per_image
            )
        else:
            count = cfg.data.image_budget or _processor_budget(cfg.model.name_or_path)
        return count + family.media_markers
    import soundfile

    longest = family.audio_max_seconds or 0.0
    try:
        seconds = min(soundfile.info(ref).duration, longest)
    except (RuntimeError, OSError):
        seconds = longest  # unreadable here (URL, compressed format): assume the longest clip
    return int(seconds * family.audio_tokens_per_second) + family.media_markers


def _processor_budget(folder: str) -> int:
    """Gemma 4's image budget as saved in the checkpoint's processor files (280 if unset)."""
    import json
    from pathlib import Path

    for name in ("processor_config.json", "preprocessor_config.json"):
        path = Path(folder) / name
        if path.exists():
            data = json.loads(path.read_text())
            data = data.get("image_processor", data)
            if "max_soft_tokens" in data:
                return int(data["max_soft_tokens"])
    return 280
