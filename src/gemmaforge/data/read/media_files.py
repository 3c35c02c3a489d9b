"""Media files as the readers meet them, before any decoding: where a reference in a row
points (relative to its data file), and what a file's first bytes say it is. Kept apart from
the decoders (data/examples/media.py) so reading rows never imports Pillow, PyAV or numpy."""

from __future__ import annotations

from pathlib import Path

from gemmaforge.data.read.remote import is_url


def resolve_media_path(ref: str, base_dir: str | Path) -> str:
    """Where `ref` points: relative paths start from the data file's folder (`base_dir`).

    Absolute paths and URLs are kept; a relative path under a URL folder becomes a URL.
    """
    if is_url(ref) or ref.startswith("data:"):
        return ref
    path = Path(ref).expanduser()
    if path.is_absolute():
        return str(path)
    if is_url(str(base_dir)):
        return f"{str(base_dir).rstrip('/')}/{ref}"
    return str(Path(base_dir) / path)


# (offset, magic bytes, kind, description): enough to tell a user what they pointed at.
_SIGNATURES = [
    (0, b"version https://git-lfs", "other", "a Git LFS pointer (run `git lfs pull`)"),
    (0, b"\x89PNG\r\n\x1a\n", "image", "a PNG image"),
    (0, b"\xff\xd8\xff", "image", "a JPEG image"),
    (0, b"GIF8", "image", "a GIF image"),
    (0, b"II*\x00", "image", "a TIFF image"),
    (0, b"MM\x00*", "image", "a TIFF image"),
    (0, b"BM", "image", "a BMP image"),
    (8, b"WEBP", "image", "a WebP image"),
    (8, b"WAVE", "audio", "WAV audio"),
    (8, b"AVI ", "video", "an AVI video"),
    (0, b"fLaC", "audio", "FLAC audio"),
    (0, b"OggS", "audio", "Ogg audio (Vorbis or Opus)"),
    (0, b"ID3", "audio", "MP3 audio"),
    (8, b"M4A ", "audio", "M4A (AAC) audio"),
    (8, b"heic", "image", "a HEIC image (convert it to JPEG)"),
    (4, b"ftyp", "video", "an MP4/QuickTime video"),
    (0, b"\x1aE\xdf\xa3", "video", "a Matroska/WebM video"),
    (0, b"%PDF", "other", "a PDF document"),
    (0, b"PK\x03\x04", "other", "a ZIP archive (or an Office document)"),
]


def describe_content(data: bytes) -> tuple[str, str]:
    """(kind, description) of what `data` looks like; kind is "image", "audio", "video" or
    "other"."""
    for offset, magic, kind, description in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return kind, description
    if len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0:
        return "audio", "MP3 or AAC audio"
    text = data[:200].decode("utf-8", errors="ignore")
    if text and all(c.isprintable() or c.isspace() for c in text):
        lower = text.lower()
        if "<svg" in lower:
            return "image", "an SVG (vector) image"
        if "<html" in lower or "<!doctype html" in lower:
            return "other", "an HTML web page"
        return "other", f"text ({text[:40].strip()!r})"
    return "other", f"unrecognised binary data (first bytes {data[:8].hex(' ')})"
