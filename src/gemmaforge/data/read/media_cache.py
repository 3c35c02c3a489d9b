"""A local, size-capped cache for remote media, and a store for media embedded in tables.

Remote images and clips are read once per epoch or more; fetching them every time would make
the network the bottleneck. `fetch(url)` keeps a copy under `<cache>/urls/`, evicting the
least recently used files once the total passes the cap (`data.media_cache_mb`).

Media embedded in Parquet / Arrow rows (🤗 `Image` / `Audio` columns: raw bytes) are written
once to `<cache>/blobs/<sha256>.<ext>` and the row carries that path, so every later stage
reads them like any local file. Blobs are not evicted: a row read now may be rendered much
later (after a shuffle buffer, or from an in-memory validation set), and the bytes exist
nowhere else on disk as a file. They take as much room as the embedded media; delete the
folder between runs to reclaim it.

Why our own code rather than fsspec's `filecache::`: fsspec's cache has no size cap and keeps
its index in one JSON file that concurrent processes overwrite. Here each file stands alone:
writes go to a temporary name and are renamed into place (a killed run never leaves a half
file, two processes writing the same URL both write whole files, the last rename wins),
recency is the file's mtime (touched on every hit), and eviction tolerates files vanishing
under it, so several processes can share one cache without a lock.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from gemmaforge.data.read.remote import read_remote
from gemmaforge.files import write_bytes_atomic

DEFAULT_MB = 2048
STALE_TMP_S = 3600
"""Temporary files older than this are leftovers of a killed process, removed on eviction."""

_settings: dict[str, Any] = {"dir": None, "max_mb": DEFAULT_MB}
_caches: dict[tuple[Path, int], MediaCache] = {}


def configure(cache_dir: str | Path | None = None, max_mb: int | None = None) -> None:
    """Set the run's cache folder (None: the default) and cap (None: keep the current one)."""
    _settings["dir"] = cache_dir
    if max_mb is not None:
        _settings["max_mb"] = max_mb


def default_dir() -> Path:
    """`$XDG_CACHE_HOME/gemmaforge/media`, else `~/.cache/gemmaforge/media`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gemmaforge" / "media"


def current() -> MediaCache:
    """The cache the configured settings name (one instance per folder and cap)."""
    root = Path(_settings["dir"]).expanduser() if _settings["dir"] else default_dir()
    key = (root, _settings["max_mb"])
    if key not in _caches:
        _caches[key] = MediaCache(root, _settings["max_mb"] * 2**20)
    return _caches[key]


def fetch(url: str, storage_options: dict[str, Any] | None = None) -> bytes:
    """The bytes at `url`, from the configured cache or fetched (with retries) into it."""
    return current().fetch(url, storage_options)


def store_blob(data: bytes, suffix: str) -> str:
    """Write embedded media bytes to the configured cache's blob store; returns the path."""
    return current().store_blob(data, suffix)


class MediaCache:
    """One cache folder: `urls/` (LRU, capped at `max_bytes`) and `blobs/` (not evicted)."""

    def __init__(self, root: Path, max_bytes: int):
        self.root, self.max_bytes = Path(root), max_bytes
        self.urls, self.blobs = self.root / "urls", self.root / "blobs"
        self._total: int | None = None
        """Bytes in urls/ as this process last counted them plus what it wrote since."""

    def path_for(self, url: str) -> Path:
        suffix = Path(url.split("?")[0]).suffix[:10]
        return self.urls / (hashlib.sha256(url.encode()).hexdigest() + suffix)

    def fetch(self, url: str, storage_options: dict[str, Any] | None = None) -> bytes:
        path = self.path_for(url)
        try:
            data = path.read_bytes()
            os.utime(path)  # recency for LRU: atime is unreliable (noatime mounts)
            return data
        except FileNotFoundError:  # not cached, or evicted by another process just now
            pass
        data = read_remote(url, storage_options)
        if len(data) <= self.max_bytes:
            write_bytes_atomic(path, data)
            self._added(len(data))
        return data

    def store_blob(self, data: bytes, suffix: str) -> str:
        path = self.blobs / (hashlib.sha256(data).hexdigest() + suffix)
        if not path.exists():
            write_bytes_atomic(path, data)
        return str(path)

    def total_bytes(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def _added(self, size: int) -> None:
        if self._total is None:
            self._total = self.total_bytes()
        else:
            self._total += size
        if self._total > self.max_bytes:
            self._evict()

    def _evict(self) -> None:
        """Delete the least recently used files until the total is at most 90% of the cap
        (the margin spares a full rescan on every following write)."""
        entries = sorted(self._entries(), key=lambda entry: entry[2])
        total = sum(size for _, size, _ in entries)
        target = int(self.max_bytes * 0.9)
        for path, size, _ in entries:
            if total <= target:
                break
            path.unlink(missing_ok=True)
            total -= size
        self._total = total

    def _entries(self) -> list[tuple[Path, int, float]]:
        """(path, size, mtime) of every cached file; stale temporary files are removed."""
        entries = []
        try:
            scan = list(os.scandir(self.urls))
        except FileNotFoundError:
            return []
        for entry in scan:
            try:
                stat = entry.stat()
            except FileNotFoundError:  # evicted by another process meanwhile
                continue
            if entry.name.endswith(".tmp"):
                if time.time() - stat.st_mtime > STALE_TMP_S:
                    Path(entry.path).unlink(missing_ok=True)
                continue
            entries.append((Path(entry.path), stat.st_size, stat.st_mtime))
        return entries
