"""How a hub server is set up: where its database and blobs live, who may read, and limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Settings:
    root: Path
    """Folder of the embedded database (hub.sqlite) and, by default, the blobs."""
    db_url: str | None = None
    """SQLAlchemy URL (`postgresql+psycopg://user@host/db`); default SQLite in `root`."""
    storage_url: str | None = None
    """fsspec URL of the blob store (`s3://bucket/prefix`); default `root/blobs`."""
    storage_options: dict = field(default_factory=dict)
    """Passed to fsspec (e.g. `endpoint_url`, `key`, `secret` for S3)."""
    private: bool = False
    """Reads need a token too (else anonymous reads are allowed)."""
    max_blob_bytes: int = 8 * 2**30
    """Largest single file accepted."""
    max_json_bytes: int = 4 * 2**20
    """Largest JSON request body (version manifests, keys, bases)."""
    rate_per_s: float = 50.0
    """Requests per second each token (or anonymous address) may make, on average."""
    rate_burst: int = 500
    """Requests a token may make at once before the rate applies."""
    orphan_minutes: float = 60.0
    """Blobs no version references, older than this, are deleted at start-up."""

    def __post_init__(self):
        self.root = Path(self.root)

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.root / 'hub.sqlite'}"

    @property
    def blob_url(self) -> str:
        return self.storage_url or str(self.root / "blobs")
