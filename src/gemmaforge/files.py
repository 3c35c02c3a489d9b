"""Writing files so a crash never leaves a half-written one, and hashing them.

Every file gemmaforge writes for a user goes through here: a temp file in the same folder,
fsync, then a rename, so a reader sees either the old file or the new one, never half of it.
Files are created private (0600, folders 0700): run folders and caches hold data
fingerprints, configs and media. Text has signed URL query strings redacted (redact.py) as
a last net: no secret is written down, whichever report or card it travelled into.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from gemmaforge.redact import redact_text


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write under a unique temp name (concurrent writers never share one), fsync, rename."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:

    write_bytes_atomic(path, redact_text(text).encode("utf-8"))


def write_json_atomic(path: Path, data) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def append_jsonl(path: Path, record: dict) -> None:
    """Append one line and fsync it, so a killed run keeps every line it logged."""
    with Path(path).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (memory stays flat)."""
    digest = hashlib.sha256()
    update_digest(digest, Path(path))
    return digest.hexdigest()


def sha256_files(paths: list[Path]) -> str:
    """One hex sha256 over several files: each file's name, then its bytes, in name order."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(path.name.encode())
        update_digest(digest, path)
    return digest.hexdigest()


def update_digest(digest, path: Path) -> None:
    """Feed a file's bytes to a hashlib object, 1 MiB at a time."""
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
