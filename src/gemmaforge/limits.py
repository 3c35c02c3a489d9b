"""Caps on what one input may cost: bytes per row and per media file, decoded pixels, audio
seconds, text characters. Bad or hostile input stops early with the setting that raises the
cap, instead of eating the machine's memory.

The caps are `data.*` settings (config.py); `apply(cfg.data)` makes a run's values current for
the readers, which sit several calls below any config (`open_sources` does it, the one way
into a run's data). Until then the defaults hold, which are the settings' defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Limits:
    max_row_bytes: int = 16 * 2**20
    max_media_bytes: int = 256 * 2**20
    max_image_pixels: int = 50_000_000
    max_audio_seconds: float = 3600.0
    max_chars_per_token: int = 32
    """A generous bound on characters per token: text longer than the context times this
    cannot fit and is refused before it is tokenized."""


_current = Limits()


def current() -> Limits:
    return _current


def apply(data_cfg: Any) -> Limits:
    """Make the caps of a `DataConfig` current (fields it lacks keep their values)."""
    global _current
    fields = {
        name: getattr(data_cfg, name)
        for name in Limits.__dataclass_fields__
        if hasattr(data_cfg, name)
    }
    _current = replace(_current, **fields)
    return _current
