"""Content-addressed blob storage through fsspec: a local folder (`--root/blobs`) or any
fsspec URL such as `s3://bucket/prefix` (endpoint from `AWS_ENDPOINT_URL` or storage options).

A blob's name is its sha256, so a stored blob never changes and uploading the same bytes twice
stores them once. An upload streams into `tmp/<random>` while hashing, and is moved to
`sha256/<ab>/<hash>` only when the hash matches the name it was sent under; a crash mid-upload
leaves only a temp object, which `collect_orphans` deletes at the next start-up.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import time
from collections.abc import Iterable, Iterator

import fsspec

SHA256 = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20


class HashMismatch(ValueError):
    """The bytes sent do not hash to the name they were sent under."""


class TooLarge(ValueError):
    """The upload went past the size cap."""


class BlobStore:
    def __init__(self, url: str, storage_options: dict | None = None):
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        self.root = self.root.rstrip("/")
        if self.fs.protocol in ("file", "local") or "file" in self.fs.protocol:
            os.makedirs(self.root, exist_ok=True)
        elif not self.fs.exists(self.root.split("/")[0]):
            self.fs.mkdir(self.root.split("/")[0])

    def path(self, sha256: str) -> str:
        return f"{self.root}/sha256/{sha256[:2]}/{sha256}"

    def exists(self, sha256: str) -> bool:
        return self.fs.exists(self.path(sha256))

    def size(self, sha256: str) -> int:
        return int(self.fs.info(self.path(sha256))["size"])

    def put_stream(self, sha256: str, chunks: Iterable[bytes], max_bytes: int) -> int:
        """Store the streamed bytes as blob `sha256`; returns the size. Raises HashMismatch or
        TooLarge (nothing stored) if the bytes are not what they claim or are too many."""
        tmp = f"{self.root}/tmp/{int(time.time())}-{os.urandom(8).hex()}"
        self.fs.makedirs(f"{self.root}/tmp", exist_ok=True)
        digest, size = hashlib.sha256(), 0
        try:
            with self.fs.open(tmp, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooLarge(f"more than {max_bytes} bytes")
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != sha256:
                raise HashMismatch(f"the bytes sent hash to {digest.hexdigest()}, not {sha256}")
            if not self.exists(sha256):
                self.fs.makedirs(f"{self.root}/sha256/{sha256[:2]}", exist_ok=True)
                self.fs.mv(tmp, self.path(sha256))
            return size
        finally:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)

    def open(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The blob's bytes [start, end) in 1 MiB chunks (memory stays flat)."""
        with self.fs.open(self.path(sha256), "rb") as handle:
            handle.seek(start)
            left = None if end is None else end - start
            while left is None or left > 0:
                block = handle.read(CHUNK if left is None else min(CHUNK, left))
                if not block:
                    return
                if left is not None:
                    left -= len(block)
                yield block

    def get_file(self, sha256: str, local_path: str) -> None:
        self.fs.get_file(self.path(sha256), local_path)

    def delete(self, sha256: str) -> None:
        self.fs.rm(self.path(sha256))

    def _listing(self, folder: str) -> list[dict]:
        try:
            return [
                info
                for info in self.fs.find(folder, detail=True).values()
                if info.get("type") != "directory"
            ]
        except FileNotFoundError:
            return []

    def collect_orphans(self, referenced: set[str], older_than_s: float) -> list[str]:
        """Delete temp objects and blobs no version references, if older than `older_than_s`
        (a younger one may belong to a publish in progress). Returns what was deleted."""
        self.fs.invalidate_cache()
        cutoff = time.time() - older_than_s
        deleted = []
        for folder in ("tmp", "sha256"):
            for info in self._listing(f"{self.root}/{folder}"):
                name = info["name"].rstrip("/").rsplit("/", 1)[-1]
                if folder == "sha256" and (name in referenced or not SHA256.match(name)):
                    continue
                if _mtime(info) > cutoff:
                    continue
                self.fs.rm(info["name"])
                deleted.append(name)
        return deleted


def _mtime(info: dict) -> float:
    """Modification time in seconds from an fsspec listing (local: `mtime`; S3: datetime)."""
    for key in ("mtime", "LastModified", "last_modified", "created"):
        value = info.get(key)
        if isinstance(value, dt.datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
    return 0.0
