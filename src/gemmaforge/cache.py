"""Where gemmaforge keeps what it can rebuild: hashes of base models, the index of known
bases, dequantised GGUF bases, downloaded media.

`GEMMAFORGE_CACHE_DIR` wins, then `$XDG_CACHE_HOME/gemmaforge`, then `~/.cache/gemmaforge`.
Everything here may be deleted at any time; it only saves time.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from gemmaforge.files import write_json_atomic


def cache_root() -> Path:
    """The gemmaforge cache folder (not created)."""
    explicit = os.environ.get("GEMMAFORGE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gemmaforge"


def read_json(name: str) -> dict:
    """A small JSON mapping from the cache ({} when missing or unreadable)."""
    try:
        data = json.loads((cache_root() / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(name: str, data: dict) -> None:
    """Write a small JSON mapping atomically; a cache that cannot be written is skipped (a
    read-only home must not stop a run)."""
    with contextlib.suppress(OSError):
        write_json_atomic(cache_root() / name, data)
