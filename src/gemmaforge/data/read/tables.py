"""Rows of columnar sources: Parquet files and 🤗 `datasets` folders (`save_to_disk`).

Both are read in batches of BATCH_ROWS rows (Parquet with pyarrow `iter_batches`, one row
group in memory at a time; datasets through their memory-mapped Arrow files), so memory stays
bounded whatever the table's size. A row's `line` is its 1-based row number.

Images and audio stored inside the table (the 🤗 `Image` / `Audio` columns: a struct of
`bytes` and `path`, or plain binary) are written once to the media cache's blob store and the
row carries that file's path, so the rest of the pipeline reads them like any local media
file: one code path for media, whatever held them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gemmaforge.data.read import media_cache
from gemmaforge.data.read.media_files import describe_content, resolve_media_path
from gemmaforge.data.read.records import BadRow, Record
from gemmaforge.data.read.remote import is_url, open_remote, options, parent
from gemmaforge.errors import UserError, problem

BATCH_ROWS = 256
"""Rows converted to Python at a time: small, because embedded images make rows large."""

MEDIA_STRUCT_KEYS = {"bytes", "path"}


def iter_parquet(
    path: str, storage_options: dict[str, Any] | None = None, base: str | None = None
) -> Iterator[Record | BadRow]:
    """Stream the rows of a Parquet file (local path or URL)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    handle = open_remote(path, storage_options) if is_url(path) else None
    try:
        table = pq.ParquetFile(handle or path)
        batches = table.iter_batches(batch_size=BATCH_ROWS)
        yield from _rows(path, batches, base or parent(path))
    except (pa.ArrowException, OSError) as err:
        if isinstance(err, FileNotFoundError) and not is_url(path):
            raise UserError(problem(path, "file not found", "check the path")) from None
        raise UserError(
            problem(
                path,
                f"is not a readable Parquet file ({err})",
                "re-export it (e.g. pandas `df.to_parquet(...)`); an interrupted copy leaves "
                "a truncated file",
            )
        ) from None
    finally:
        if handle is not None:
            handle.close()


def iter_hf_disk(
    folder: str, split: str | None, storage_options: dict[str, Any] | None = None
) -> Iterator[Record | BadRow]:
    """Stream the rows of a `datasets` `save_to_disk` folder (one split of a DatasetDict).

    A remote folder is first copied to a temporary local folder by `datasets` itself.
    """
    from datasets import load_from_disk

    dataset = load_from_disk(folder, storage_options=options(storage_options) or None)
    if split is not None:
        dataset = dataset[split]
    name = f"{folder}#{split}" if split else folder
    # The arrow format hands out raw columns: an Image column stays {bytes, path}, undecoded.
    batches = dataset.with_format("arrow").iter(batch_size=BATCH_ROWS)
    yield from _rows(name, batches, folder)


def _rows(name: str, batches, base: str) -> Iterator[Record]:
    line = 0
    for batch in batches:
        for row in batch.to_pylist():
            line += 1
            yield Record(
                row={k: _media_value(v, base) for k, v in row.items()}, path=name, line=line
            )


def _media_value(value: Any, base: str) -> Any:
    """An embedded image/clip/video becomes a file path; every other value is left as it is."""

    if isinstance(value, dict) and set(value) <= MEDIA_STRUCT_KEYS | {"sampling_rate"}:
        data, ref = value.get("bytes"), value.get("path")
        if data:
            return media_cache.store_blob(data, _suffix(ref))
        if ref:
            return resolve_media_path(ref, base)
        return value
    if isinstance(value, bytes) and describe_content(value)[0] in ("image", "audio", "video"):
        return media_cache.store_blob(value, "")
    return value


def _suffix(ref: str | None) -> str:
    """The original file's extension, for people reading the cache; decoders go by content."""
    suffix = Path(ref).suffix.lower() if ref else ""
    return suffix if suffix.isascii() and 1 < len(suffix) <= 6 else ""
