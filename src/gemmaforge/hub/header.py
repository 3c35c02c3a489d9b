"""A strict reader for safetensors headers: tensor names, dtypes, shapes and byte ranges.

Written here rather than taken from the `safetensors` package because the hub must judge files
from strangers before anything loads them: the package reads whatever header length a file
declares, and accepts gaps in the data. This reader never reads more than the header, caps its
size before reading it, and accepts only a file where every byte after the header belongs to
exactly one tensor. Both the gate (adapters) and the base registry (base checkpoints) use it.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from gemmaforge.errors import UserError, problem

MAX_HEADER_BYTES = 100 * 1024 * 1024
"""Largest safetensors header accepted (bytes). A 2,000-tensor checkpoint needs ~300 KB."""

DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
}
"""The dtypes accepted, with their size in bytes (sub-byte and unsigned wide types are not)."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as its header declares it; `start`/`end` are offsets into the data section."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """The tensors of a safetensors file, checked strictly; a UserError listing every problem.

    Checks: an 8-byte little-endian header length no larger than MAX_HEADER_BYTES and the file;
    a JSON object with unique keys; known dtypes; shapes of non-negative integers; byte ranges
    of exactly prod(shape) * itemsize bytes that tile the data section from 0 to its end with
    no overlap, gap or trailing byte; `__metadata__` (optional) mapping strings to strings.
    """
    tensors, found = header_problems(Path(path))
    if found:
        raise UserError(found)
    return tensors


def header_problems(
    path: Path, where: str | None = None
) -> tuple[dict[str, TensorInfo], list[str]]:
    """`read_safetensors_header` without raising: (tensors read, problems naming `where`,
    by default the path)."""
    where = where or str(path)
    size = path.stat().st_size
    if size < 8:
        return {}, [problem(where, f"is {size} bytes, too short for a safetensors file")]
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > MAX_HEADER_BYTES:
            return {}, [
                problem(
                    where,
                    f"declares a {length:,}-byte safetensors header, over the "
                    f"{MAX_HEADER_BYTES:,}-byte limit (MAX_HEADER_BYTES); not read",
                    "save it with the safetensors library",
                )
            ]
        if 8 + length > size:
            return {}, [
                problem(
                    where,
                    f"declares a {length:,}-byte header but the file has only {size - 8:,} "
                    "bytes after the length prefix (truncated or not safetensors)",
                )
            ]
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        return {}, [problem(where, f"its safetensors header is not valid JSON ({err!r:.200})")]
    if not isinstance(header, dict):
        return {}, [problem(where, "its safetensors header is not a JSON object")]
    found = _metadata_problems(where, header.pop("__metadata__", {}))
    tensors = {}
    for name, entry in header.items():
        info, entry_problems = _tensor(where, name, entry)
        found += entry_problems
        if info is not None:
            tensors[name] = info
    if not found:
        found += _layout_problems(where, tensors, size - 8 - length)
    return tensors, found


def _unique_keys(pairs):
    keys = [key for key, _ in pairs]
    duplicated = sorted({key for key in keys if keys.count(key) > 1})
    if duplicated:
        # A duplicated tensor name would let two readers see different tensors.
        raise ValueError(f"duplicate key(s) {', '.join(duplicated)}")
    return dict(pairs)


def _metadata_problems(where: str, metadata) -> list[str]:
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        return [problem(where, "__metadata__ must map strings to strings")]
    return []


def _tensor(where: str, name: str, entry) -> tuple[TensorInfo | None, list[str]]:
    at = f"{where}: tensor {name!r}"
    if not name:
        return None, [problem(where, "has a tensor with an empty name")]
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        return None, [problem(at, "must have exactly dtype, shape and data_offsets")]
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPE_BYTES:
        allowed = ", ".join(DTYPE_BYTES)
        return None, [problem(at, f"has dtype {dtype!r}, not one of {allowed}")]
    if not isinstance(shape, list) or not all(_natural(d) for d in shape):
        return None, [problem(at, f"has shape {shape!r}, not a list of non-negative integers")]
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_natural(o) for o in offsets)
        or offsets[0] > offsets[1]
    ):
        return None, [
            problem(at, f"has data_offsets {offsets!r}, not [start, end] with start <= end")
        ]
    start, end = offsets
    expected = math.prod(shape) * DTYPE_BYTES[dtype]
    if end - start != expected:
        return None, [
            problem(
                at,
                f"spans {end - start:,} bytes but {dtype} {shape} needs {expected:,}",
            )
        ]
    return TensorInfo(dtype, tuple(shape), start, end), []


def _natural(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _layout_problems(where: str, tensors: dict[str, TensorInfo], data_bytes: int) -> list[str]:
    """The byte ranges must tile [0, data_bytes) exactly, in order."""
    found = []
    position, previous = 0, None
    for name, info in sorted(tensors.items(), key=lambda item: (item[1].start, item[1].end)):
        if info.start < position:
            found.append(
                problem(
                    where,
                    f"tensor {name!r} bytes [{info.start}, {info.end}) overlap tensor "
                    f"{previous!r} (which ends at {position})",
                )
            )
        elif info.start > position:
            found.append(
                problem(where, f"has {info.start - position:,} unused bytes before {name!r}")
            )
        position, previous = max(position, info.end), name
    if position > data_bytes:
        found.append(
            problem(
                where,
                f"tensors end at byte {position:,} of the data, past its end ({data_bytes:,}): "
                "truncated",
            )
        )
    elif position < data_bytes:
        found.append(
            problem(
                where,
                f"has {data_bytes - position:,} trailing bytes after the last tensor",
                "save it with the safetensors library",
            )
        )
    return found
