"""Dequantised GGUF bases, kept so the second load takes seconds instead of minutes.

Reading a GGUF means converting its tokenizer (the Gemma 3 vocabulary: 262,144 pieces) and
dequantising every tensor; for the 270M that is most of a minute on two cores, on every
`generate`, `chat`, `eval` and `export`. The result is saved once as an ordinary transformers
folder (safetensors + tokenizer files) under `CACHE/gguf/<sha256 of the GGUF>-<dtype>/`, and
later loads read that folder. The key is the GGUF's own hash, so an edited or replaced file
never reads a stale copy; `LoadedModel.source` and `source_sha256` stay the GGUF's.

Writes are atomic (a temp folder renamed into place). The cache is capped at
`GEMMAFORGE_GGUF_CACHE_GB` GiB (default 8; 0 turns it off): after each write, the least
recently used entries go until the total fits. A cache that cannot be written is skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from gemmaforge.cache import cache_root

DEFAULT_CAP_GB = 8.0


def cap_bytes() -> int:
    try:
        gib = float(os.environ.get("GEMMAFORGE_GGUF_CACHE_GB", DEFAULT_CAP_GB))
    except ValueError:
        gib = DEFAULT_CAP_GB
    return int(max(0.0, gib) * 2**30)


def folder() -> Path:
    return cache_root() / "gguf"


def entry(sha: str, dtype) -> Path:
    return folder() / f"{sha[:32]}-{str(dtype).removeprefix('torch.')}"


def lookup(sha: str, dtype=None) -> Path | None:
    """The cached folder for this GGUF hash and dtype (any dtype when None: the tokenizer is
    the same in each), marked as just used; None if absent."""
    if cap_bytes() == 0:
        return None
    if dtype is None:
        found = sorted(folder().glob(f"{sha[:32]}-*")) if folder().is_dir() else []
        path = found[0] if found else entry(sha, "none")
    else:
        path = entry(sha, dtype)
    if not (path / "config.json").is_file():
        return None
    with contextlib.suppress(OSError):
        os.utime(path)
    return path


def store(model, tokenizer, sha: str, dtype) -> Path | None:
    """Save the dequantised model and its tokenizer for `sha`; returns the folder, or None
    when it does not fit the cap or cannot be written."""
    cap = cap_bytes()
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    if cap == 0 or size > cap:
        return None
    final = entry(sha, dtype)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if final.exists():  # another process finished first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        return None
    _evict(cap, keep=final)
    return final


def _evict(cap: int, keep: Path) -> None:
    """Delete the least recently used entries until the cache fits `cap`."""
    entries = [p for p in folder().iterdir() if p.is_dir() and not p.name.startswith(".")]
    sizes = {p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in entries}
    total = sum(sizes.values())
    for path in sorted(entries, key=lambda p: p.stat().st_mtime):
        if total <= cap:
            break
        if path == keep:
            continue
        shutil.rmtree(path, ignore_errors=True)
        total -= sizes[path]
