"""Speed and memory options of a training run: activation checkpointing (of every decoder
layer, of none, or with `auto` of as few as the device's free memory needs; optionally
offloaded to host memory) and torch.compile of the decoder layers.

Checked before the model loads, so an option that cannot work on this device fails at once.
"""

from __future__ import annotations

import os

from gemmaforge.config import Config
from gemmaforge.errors import UserError, problem
from gemmaforge.models.load import resolve_device
from gemmaforge.models.structure import decoder_layers
from gemmaforge.perf.measure import available_bytes
from gemmaforge.perf.plan import AUTO_SHARE, DataLengths, predict, settings_from_config
from gemmaforge.perf.shapes import model_shape

GiB = 2**30


def check_options(cfg: Config) -> None:
    """Refuse option combinations that cannot do what they promise on the chosen device."""

    problems = []
    if cfg.train.offload_activations:
        device = resolve_device(cfg.model.device)
        if device.type == "cpu":
            problems.append(
                problem(
                    "train.offload_activations",
                    "moves checkpointed activations from the accelerator to host memory, but "
                    "this run trains on the CPU, where they already are",
                    "remove it (train.gradient_checkpointing=true alone saves the memory on CPU)",
                )
            )
        if cfg.train.gradient_checkpointing is not True:
            state = "off" if cfg.train.gradient_checkpointing is False else "auto (maybe no layer)"
            problems.append(
                problem(
                    "train.offload_activations",
                    f"offloads the activations kept by gradient checkpointing, which is {state}",
                    "also set train.gradient_checkpointing=true",
                )
            )
    if problems:
        raise UserError(problems)


def checkpointed_layers(
    model, cfg: Config, device, dtype, processes: int = 1, examples=None
) -> tuple[int, str]:
    """How many decoder layers of the loaded `model` to checkpoint, and why.

    true: all; false: none; auto: the fewest that keep the run's predicted memory above the
    weights within `plan.AUTO_SHARE` of what the device has free now (`perf/plan.py`), so a run
    that fits comfortably keeps every activation and runs at full speed. Given the rendered
    training `examples` (in memory), activations are sized by the widest batch they make;
    streamed data (None) by data.max_seq_length.
    """

    layers = len(decoder_layers(model.get_base_model()))
    choice = cfg.train.gradient_checkpointing
    if choice != "auto":
        return (layers, "train.gradient_checkpointing=true") if choice else (0, "set to false")
    shape = model_shape(model.get_base_model().config)
    # Processes on one CPU share its memory (each sees all of it free).
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if device.type == "cpu" else 1
    free = available_bytes(device) // local
    lengths = DataLengths.of(examples) if examples else None
    settings = settings_from_config(cfg, shape, dtype.itemsize, (), free, True, processes, lengths)
    prediction = predict(shape, settings)
    need = prediction.peak_bytes - prediction.parts["weights"]
    why = (
        f"auto: {need / GiB:.2f} GiB predicted above the weights for batches of "
        f"{settings.batch_size} x {settings.seq_len} tokens, within "
        f"{AUTO_SHARE:.0%} of the {free / GiB:.2f} GiB free"
    )
    return settings.checkpointed_layers, why


def apply_options(model, cfg: Config, checkpointed: tuple[int, str]) -> list[str]:
    """Turn on checkpointing (of `checkpointed[0]` decoder layers, for the reason
    `checkpointed[1]`), offload and compile on a PEFT-wrapped model; lines to report."""
    from gemmaforge.models.lean_norm import lean_gemma3_mlps, lean_gemma3_norms

    lines = []
    base = model.get_base_model()
    # Always: the same output, fewer bytes kept for backward by Gemma 3's norms and MLPs.
    lean_gemma3_norms(base)
    lean_gemma3_mlps(base)
    count, why = checkpointed
    decoder = decoder_layers(base)
    if count:
        # transformers' own implementation; with offload it wraps each checkpoint in
        # torch.autograd.graph.save_on_cpu, so the saved layer inputs live in pinned host memory.
        base.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False},
            offload=cfg.train.offload_activations,
        )
        # Then back off on the decoder layers not chosen, spread evenly (any `count` layers
        # save the same memory). Encoder towers stay checkpointed.
        chosen = {index * len(decoder) // count for index in range(count)}
        for index, layer in enumerate(decoder):
            layer.gradient_checkpointing = index in chosen
        where = " (offloaded to host memory)" if cfg.train.offload_activations else ""
        lines.append(
            f"gradient checkpointing on {count} of {len(decoder)} decoder layers{where} ({why})"
        )
    else:
        lines.append(f"gradient checkpointing off ({why})")
    if cfg.train.compile:
        for layer in decoder:
            # Module.compile compiles in place: parameter names, and so saving, resuming and
            # the PEFT adapter files, stay exactly as without it. Layers are compiled one by
            # one (same code, shared graph) rather than the whole model, whose Python control
            # flow (masks, per-layer embeddings, towers) would break the graph anyway.
            layer.compile(dynamic=None)
        lines.append(
            f"torch.compile on {len(decoder)} decoder layers (compiles on the first steps)"
        )
    return lines


def trim_host_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's malloc_trim; nothing
    elsewhere).

    On the CPU torch allocates with malloc, and glibc keeps freed blocks below its mmap
    threshold (which grows to 32 MiB as large blocks are freed) in the heap: a step's
    activations, freed in the backward pass, stay resident, and the next step's differently
    ordered allocations land beside them, so the resident peak creeps up step after step
    (measured on a Gemma 3 270M DPO step: +200 MiB by the second step; docs/preference.md).
    So, on the first call, blocks from 1 MiB up are given their own mappings (a fixed mmap
    threshold), returned to the system when freed, and every call trims what the heap holds
    free. The page faults of fresh mappings cost little next to a step's matmuls.
    """
    global _LIBC
    if _LIBC is None:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("c")
        try:
            _LIBC = ctypes.CDLL(name) if name else False
            _LIBC = _LIBC if _LIBC and hasattr(_LIBC, "malloc_trim") else False
        except OSError:
            _LIBC = False
        if _LIBC:
            _LIBC.mallopt(_M_MMAP_THRESHOLD, 1 << 20)
    if _LIBC:
        _LIBC.malloc_trim(0)


_M_MMAP_THRESHOLD = -3
"""glibc's mallopt parameter number (malloc.h)."""
_LIBC = None
"""libc when it has malloc_trim (glibc), False when not: looked up once."""
