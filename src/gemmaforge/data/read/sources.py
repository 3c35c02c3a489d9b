"""Data sources: turn a spec (file, glob, folder, URL, or a list of them) into rows.

`open_sources` is the one way in: it resolves a config's `data.train` and `data.validation`
and decides whether they stream. `resolve_sources` expands a spec into the files to read, in
a stable sorted order; `iter_source_records` streams their rows, memory bounded (training's
in-memory reader, `dataset.read_rows`, collects them per source with a fingerprint for the
model card). What a folder is, is decided by what it holds:

- `dataset_dict.json` or `state.json` (🤗 `save_to_disk`): kind `hf_disk`, the dataset's rows;
  of a DatasetDict, the `train` split, or the one named as `folder#split`.
- `metadata.csv` / `.jsonl` / `.parquet` (🤗 imagefolder / audiofolder): kind `mediafolder`,
  the metadata rows, each `file_name` replaced by an `image` or `audio` column (its path).
- data files (`*.jsonl`, `*.csv`, `*.tsv`, `*.parquet`, ...): one source per file.
- subfolders of images or clips: kind `classfolder`, rows `{"image" | "audio": path,
  "label": subfolder name}`.

Local paths and fsspec URLs (`s3://`, `gs://`, `https://`, `file://`) take the same code
path: fsspec's local filesystem lists local folders too.
"""

from __future__ import annotations

import glob
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from gemmaforge import limits, netguard
from gemmaforge.config import DataConfig
from gemmaforge.data.read import media_cache, remote
from gemmaforge.data.read.media_files import resolve_media_path
from gemmaforge.data.read.records import (
    JSONL_SUFFIXES,
    BadRow,
    Record,
    file_suffix,
    iter_records,
    raise_if_problems,
)
from gemmaforge.data.read.tables import iter_hf_disk, iter_parquet
from gemmaforge.errors import UserError, problem

PARQUET_SUFFIXES = (".parquet", ".pq")
FILE_KINDS = {
    **dict.fromkeys(JSONL_SUFFIXES, "jsonl"),
    ".csv": "csv",
    ".tsv": "tsv",
    **dict.fromkeys(PARQUET_SUFFIXES, "parquet"),
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".gif", ".bmp")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".webm")
METADATA_FILES = ("metadata.jsonl", "metadata.csv", "metadata.parquet")
"""Looked for in this order (as 🤗 imagefolder / audiofolder do)."""


LINE_KINDS = ("jsonl", "csv", "tsv")
"""Sources read line by line (records.py)."""


@dataclass(frozen=True)
class SourceFile:
    """One thing to read: a data file, a `datasets` folder (one split), or a media folder."""

    path: str
    """Local path (absolute) or URL."""
    kind: str
    """jsonl, csv, tsv, parquet, hf_disk, mediafolder or classfolder."""
    size: int | None
    """Bytes, when known (for a folder: the files that make it up)."""
    split: str | None = None
    """hf_disk: the DatasetDict split read (None: a plain Dataset)."""
    metadata: str | None = None
    """mediafolder: its metadata file."""
    listed_fingerprint: str | None = None
    """Remote sources: the fingerprint from the storage listing."""
    storage_options: dict[str, Any] | None = field(default=None, repr=False)
    """fsspec options for a remote source (not shown: they may hold credentials)."""
    row_mapping: dict[str, Any] | None = None
    """LLaMA-Factory dataset_info.json entry (formatting, columns, tags) the rows follow."""

    @property
    def name(self) -> str:
        """How rows and reports name this source (`folder#split` for a split)."""
        return f"{self.path}#{self.split}" if self.split else self.path

    @property
    def hashed_by_reading(self) -> bool:
        """A local JSONL/CSV file: its fingerprint is the sha256 of the bytes its rows are
        read from, so a reader can hash them on the way (`iter_file_records(digest=)`)."""
        return self.kind in LINE_KINDS and self.listed_fingerprint is None

    @cached_property
    def fingerprint(self) -> str:
        """`sha256:<hex>` over the bytes of a local source's files (computed on first use,
        streamed); a remote source's version id, ETag, or size and mtime (never a download)."""
        if self.listed_fingerprint:
            return self.listed_fingerprint
        root = Path(self.path, self.split) if self.split else Path(self.path)
        digest = hashlib.sha256()
        # A file's fingerprint is its plain sha256 (what `sha256sum` prints); a folder's
        # covers each file's relative name and bytes, in sorted order.
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            if path != root:
                digest.update(f"{path.relative_to(root)}\n".encode())
            with path.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
        return f"sha256:{digest.hexdigest()}"


def configure_storage(cfg: DataConfig) -> None:
    """Make a run's data settings reach every remote read: `storage_options` and `retries`
    (remote.py, also used by media) and the media cache folder and cap (media_cache.py).

    Module-level settings rather than arguments: media are read deep inside rendering, where
    passing the config through every call would touch every stage. Call it once when a run
    (train, eval, serve) starts; explicit `storage_options` arguments still win.
    """
    netguard.allow_data(cfg)
    remote.configure(storage_options=cfg.storage_options, retries=cfg.retries)
    media_cache.configure(cache_dir=cfg.media_cache_dir, max_mb=cfg.media_cache_mb)


@dataclass(frozen=True)
class DataSources:
    """What `data.train` and `data.validation` name, resolved: the one way into the data."""

    train: list[SourceFile]
    validation: list[SourceFile]
    """Empty when no validation data is named (a split is held out of train instead)."""
    validation_spec: str | list[str] | None
    """What the validation sources came from: data.validation, or the validation file of an
    mlx-lm style folder (train.jsonl, valid.jsonl, test.jsonl) given as data.train."""
    streaming: bool
    """Rows are read as training asks for them (data.streaming, or auto for remote sources)."""

    @property
    def remote(self) -> bool:
        return any(is_remote(s.path) for s in self.train + self.validation)


def open_sources(cfg: DataConfig, *, need_train: bool = True) -> DataSources:
    """Resolve `data.train` / `data.validation` in any documented form (a file, glob, list,
    folder, `folder#split`, URL) into sources, checking that each exists, before anything is
    read or loaded. Every verb that reads data (train, data check, plan, eval) starts here, so
    "is it remote, does it exist, should it stream" has one answer. All problems are raised
    at once."""
    netguard.allow_data(cfg)

    limits.apply(cfg)
    problems: list[str] = []
    if need_train and not cfg.train:
        problems.append(problem("data.train", "no training data", "set data.train or pass --data"))

    def resolve(key: str, spec) -> list[SourceFile]:
        if not spec:
            return []
        try:
            return resolve_sources(spec, cfg.storage_options)
        except UserError as err:
            # Name the setting too: the same path may be given as train and validation.
            problems.extend(f"data.{key}: {p}" for p in err.problems)
            return []

    train = resolve("train", cfg.train)
    # An mlx-lm style folder brings its own validation file (its test file is never read).
    validation_spec = cfg.validation or (
        companion_validation(cfg.train, cfg.storage_options) if not problems else None
    )
    validation = resolve("validation", validation_spec)
    raise_if_problems(problems)
    sources = train + validation
    if cfg.streaming == "auto":
        streaming = any(is_remote(s.path) for s in sources)
    else:
        streaming = cfg.streaming == "on"
    return DataSources(train, validation, validation_spec, streaming)


def is_remote(path: str) -> bool:
    """A URL other than `file://` (local paths and file URLs are read from this machine)."""
    return "://" in path and not path.startswith("file://")


def resolve_sources(
    spec: str | list[str], storage_options: dict[str, Any] | None = None
) -> list[SourceFile]:
    """The sources a spec names, in a stable order (each entry's matches sorted by path).

    An entry is a file, a glob, a folder, `folder#split`, or the same as a URL. Every entry
    is checked before anything is read; all problems are raised at once.
    """
    specs = [spec] if isinstance(spec, str) else list(spec)
    if not specs:
        raise UserError(problem(None, "no data source given", "name a file, folder or URL"))
    sources, problems = [], []
    for entry in specs:
        try:
            sources.extend(_resolve_entry(str(entry), storage_options))
        except UserError as err:
            problems.extend(err.problems)
    raise_if_problems(problems)
    return sources


def iter_source_records(
    spec: str | list[str] | list[SourceFile], storage_options: dict[str, Any] | None = None
) -> Iterator[Record | BadRow]:
    """Every row of every source, streamed, memory bounded; unreadable rows as BadRow."""
    sources = spec if _resolved(spec) else resolve_sources(spec, storage_options)
    for source in sources:
        yield from iter_file_records(source)


def iter_file_records(source: SourceFile, digest=None) -> Iterator[Record | BadRow]:
    """The rows of one resolved source; a JSONL/CSV file's bytes also feed `digest`."""
    if source.row_mapping is not None:
        mapping = source.row_mapping
        for item in iter_file_records(replace(source, row_mapping=None), digest):
            yield _map_llamafactory(item, mapping) if isinstance(item, Record) else item
        return
    so = source.storage_options
    if source.kind in LINE_KINDS:
        yield from iter_records(source.path, digest, storage_options=so)
    elif source.kind == "parquet":
        yield from iter_parquet(source.path, so)
    elif source.kind == "hf_disk":
        yield from iter_hf_disk(source.path, source.split, so)
    elif source.kind == "mediafolder":
        yield from _iter_mediafolder(source)
    else:
        yield from _iter_classfolder(source)


def _resolved(spec) -> bool:
    return isinstance(spec, list) and bool(spec) and all(isinstance(s, SourceFile) for s in spec)


def _resolve_entry(entry: str, storage_options: dict[str, Any] | None) -> list[SourceFile]:
    split = None
    if "#" in entry and not Path(entry).exists():
        entry, split = entry.rsplit("#", 1)
    fs, path = remote.filesystem(entry, storage_options)
    local = _is_local(fs)
    lister = _Lister(fs, entry, None if local else remote.options(storage_options))
    if glob.has_magic(path):
        infos = lister.call(lambda: fs.glob(path, detail=True))
        if not infos:
            raise UserError(problem(entry, "matches no files", "check the pattern and folder"))
        found = [_classify(lister, info, split) for _, info in sorted(infos.items())]
        return [source for sources in found for source in sources]
    try:
        info = lister.call(lambda: fs.info(path))
    except remote.StorageError as err:
        if local and "not found" in err.what:
            where = f"check the path (relative paths start from {Path.cwd()})"
            raise UserError(problem(entry, "not found", where)) from None
        raise
    return _classify(lister, info, split)


@dataclass
class _Lister:
    """Listing calls on one filesystem, retried, with URLs (not bare paths) in the results."""

    fs: Any
    entry: str
    storage_options: dict[str, Any] | None

    @property
    def local(self) -> bool:
        """Local filesystems get no storage options (so None marks them)."""
        return self.storage_options is None

    def call(self, fn):
        if self.local:
            try:
                return fn()
            except FileNotFoundError as err:
                raise remote.storage_error(self.entry, err) from None
        return remote.with_retries(fn, self.entry, self.storage_options)

    def name(self, path: str) -> str:
        return path if self.local else self.fs.unstrip_protocol(path)

    def fingerprint(self, infos: list[dict[str, Any]]) -> str | None:
        if self.local:
            return None
        if len(infos) == 1:
            return remote.fingerprint(infos[0])
        lines = sorted(f"{i['name']} {i.get('size')} {remote.fingerprint(i)}" for i in infos)
        return "listing-sha256:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def source(self, path: str, kind: str, infos: list[dict[str, Any]], **extra) -> SourceFile:
        size = sum(i.get("size") or 0 for i in infos) if infos else None
        return SourceFile(
            path=self.name(path),
            kind=kind,
            size=size,
            listed_fingerprint=self.fingerprint(infos),
            storage_options=self.storage_options,
            **extra,
        )


def _classify(lister: _Lister, info: dict[str, Any], split: str | None) -> list[SourceFile]:
    path = info["name"]
    if info.get("type") != "directory":
        if split:
            raise UserError(_split_on_non_dataset(lister.name(path), split))
        kind = FILE_KINDS.get(file_suffix(path))
        if kind is None:
            known = ", ".join(FILE_KINDS)
            what = f"unsupported file type {file_suffix(path) or '(no extension)'!r}"
            raise UserError(problem(lister.name(path), what, f"use one of {known}, or a folder"))
        return [lister.source(path, kind, [info])]
    return _classify_folder(lister, path, split)


def _classify_folder(lister: _Lister, folder: str, split: str | None) -> list[SourceFile]:
    fs, name = lister.fs, lister.name(folder)
    listing = {Path(i["name"]).name: i for i in lister.call(lambda: fs.ls(folder, detail=True))}
    if "dataset_dict.json" in listing:
        text = lister.call(lambda: fs.cat_file(f"{folder}/dataset_dict.json"))
        splits = json.loads(text)["splits"]
        chosen = split or "train"
        if chosen not in splits:
            what = f"is a DatasetDict without a {chosen!r} split (splits: {', '.join(splits)})"
            fix = f"name a split, like {name}#{splits[0]}"
            raise UserError(problem(name, what, fix))
        infos = lister.call(lambda: fs.find(f"{folder}/{chosen}", detail=True)).values()
        return [lister.source(folder, "hf_disk", list(infos), split=chosen)]
    if "dataset_info.json" in listing and "state.json" not in listing:
        return _llamafactory(lister, folder, split)
    splits = _split_files(lister, listing)
    if split and split not in splits:
        raise UserError(_split_on_non_dataset(name, split))
    if splits:
        return splits[split or "train"]
    if "state.json" in listing and "dataset_info.json" in listing:
        infos = [i for i in listing.values() if i.get("type") != "directory"]
        return [lister.source(folder, "hf_disk", infos)]
    metadata = next((m for m in METADATA_FILES if m in listing), None)
    if metadata:
        infos = list(lister.call(lambda: fs.find(folder, detail=True)).values())
        return [
            lister.source(
                folder, "mediafolder", infos, metadata=lister.name(f"{folder}/{metadata}")
            )
        ]
    data_files = sorted(
        i["name"]
        for n, i in listing.items()
        if i.get("type") != "directory" and file_suffix(n) in FILE_KINDS
    )
    if data_files:
        return [
            lister.source(p, FILE_KINDS[file_suffix(p)], [listing[Path(p).name]])
            for p in data_files
        ]
    if any(i.get("type") == "directory" for i in listing.values()):
        infos = list(lister.call(lambda: fs.find(folder, detail=True)).values())
        if any(_media_kind(i["name"]) for i in infos):
            return [lister.source(folder, "classfolder", infos)]
    raise UserError(
        problem(
            name,
            "is a folder without data: no data files (.jsonl, .csv, .tsv, .parquet), no "
            "metadata.csv/jsonl/parquet, no 🤗 datasets folder, no subfolders of media",
            "point at a data file or a folder that holds some",
        )
    )


def _split_on_non_dataset(name: str, split: str) -> str:
    return problem(
        f"{name}#{split}",
        "a split (#name) is only read from a 🤗 DatasetDict folder (one with dataset_dict.json), "
        "a folder of split files (train.jsonl, valid.jsonl, ...) or a LLaMA-Factory folder "
        "(dataset_info.json)",
        f"drop #{split}, or point at one of those",
    )


SPLIT_NAMES = {
    "train": "train",
    "valid": "validation",
    "validation": "validation",
    "val": "validation",
    "dev": "validation",
    "eval": "validation",
    "test": "test",
}
"""Data file stems that name a split (mlx-lm: train/valid/test.jsonl; 🤗 hub folders:
train-00000-of-00001.parquet)."""


def _split_files(lister: _Lister, listing: dict[str, dict[str, Any]]) -> dict[str, list]:
    """A folder whose data files are named by split (mlx-lm's train.jsonl / valid.jsonl /
    test.jsonl): {split: its sources}, under both the file's and the canonical name; empty
    unless a `train` file is among them. Only the train files are training data: a test file
    is never read unless named (`folder#test`)."""
    by_split: dict[str, list] = {}
    for n, info in sorted(listing.items()):
        if info.get("type") == "directory" or file_suffix(n) not in FILE_KINDS:
            continue
        stem = n[: -len(file_suffix(n))].lower()
        word = next((w for w in SPLIT_NAMES if stem == w or stem.startswith(f"{w}-")), None)
        if word is None:
            return {}
        source = lister.source(info["name"], FILE_KINDS[file_suffix(n)], [info])
        for key in dict.fromkeys((word, SPLIT_NAMES[word])):
            by_split.setdefault(key, []).append(source)
    return by_split if "train" in by_split else {}


def companion_validation(
    spec: str | list[str] | None, storage_options: dict[str, Any] | None = None
) -> str | None:
    """`folder#validation` when `spec` is one local folder of split files that has a
    validation file (mlx-lm's valid.jsonl), so data.validation defaults to it; else None."""
    if not isinstance(spec, str) or "#" in spec or remote.is_url(spec) or not Path(spec).is_dir():
        return None
    fs, path = remote.filesystem(spec, storage_options)
    lister = _Lister(fs, spec, None)
    listing = {Path(i["name"]).name: i for i in fs.ls(path, detail=True)}
    if "dataset_info.json" in listing or "dataset_dict.json" in listing:
        return None
    return f"{spec}#validation" if "validation" in _split_files(lister, listing) else None


LLAMAFACTORY_COLUMNS = {
    "alpaca": {"prompt": "instruction", "query": "input", "response": "output"},
    "sharegpt": {"messages": "conversations"},
}
"""LLaMA-Factory's default column names per `formatting`, and ours (the same names)."""
LLAMAFACTORY_SHARED = (
    "system",
    "tools",
    "images",
    "videos",
    "audios",
    "history",
    "chosen",
    "rejected",
    "kto_tag",
)
LLAMAFACTORY_TAGS = {"role_tag": "from", "content_tag": "value"}
LLAMAFACTORY_ROLES = {
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}


def _llamafactory(lister: _Lister, folder: str, name: str | None) -> list[SourceFile]:
    """One dataset of a LLaMA-Factory data folder (`folder#name`), read through its
    dataset_info.json entry: its file, and a mapping of its columns and role tags to the
    standard alpaca / sharegpt names that formats.py reads."""
    where = lister.name(f"{folder}/dataset_info.json")
    info = json.loads(lister.call(lambda: lister.fs.cat_file(f"{folder}/dataset_info.json")))
    names = ", ".join(info) or "none"
    if name is None and len(info) == 1:
        name = next(iter(info))
    if name not in info:
        what = (
            f"has no dataset named {name!r} (datasets: {names})"
            if name
            else (f"describes several datasets ({names})")
        )
        raise UserError(problem(where, what, f"name one, like {lister.name(folder)}#NAME"))
    entry = info[name]
    if "file_name" not in entry:
        raise UserError(
            problem(
                where,
                f"dataset {name!r} is not a local file (hub or script datasets are not fetched)",
                "download the data and give its file_name in dataset_info.json",
            )
        )
    mapping = {
        "formatting": entry.get("formatting", "alpaca"),
        "columns": entry.get("columns", {}),
        "tags": entry.get("tags", {}),
    }
    sources = _classify(
        lister, lister.call(lambda: lister.fs.info(f"{folder}/{entry['file_name']}")), None
    )
    return [replace(source, row_mapping=mapping) for source in sources]


def _map_llamafactory(record: Record, mapping: dict[str, Any]) -> Record:
    """A row renamed from a dataset_info.json entry's columns and tags to the defaults."""
    formatting, columns, tags = mapping["formatting"], mapping["columns"], mapping["tags"]
    ours = {
        **dict(zip(LLAMAFACTORY_SHARED, LLAMAFACTORY_SHARED, strict=True)),
        **LLAMAFACTORY_COLUMNS.get(formatting, LLAMAFACTORY_COLUMNS["sharegpt"]),
    }
    ours["kto_tag"] = "label"
    row = {}
    for key, standard in ours.items():
        column = columns.get(key, standard if key != "kto_tag" else None)
        if column and column in record.row:
            row[standard] = record.row[column]
    if formatting != "alpaca" and isinstance(row.get("conversations"), list):
        role_tag = tags.get("role_tag", "from")
        content_tag = tags.get("content_tag", "value")
        roles = {tags.get(k, v): v for k, v in LLAMAFACTORY_ROLES.items()}
        row["conversations"] = [
            {"from": roles.get(m.get(role_tag), m.get(role_tag)), "value": m.get(content_tag)}
            if isinstance(m, dict)
            else m
            for m in row["conversations"]
        ]
    return Record(row=row, path=record.path, line=record.line)


def _iter_mediafolder(source: SourceFile) -> Iterator[Record | BadRow]:
    """Metadata rows whose `file_name` (relative to the folder) becomes `image` or `audio`."""

    metadata, so = source.metadata, source.storage_options
    assert metadata is not None
    rows = (
        iter_parquet(metadata, so)
        if file_suffix(metadata) in PARQUET_SUFFIXES
        else iter_records(metadata, storage_options=so)
    )
    for item in rows:
        if isinstance(item, BadRow):
            yield item
            continue
        row = dict(item.row)
        file_name = row.pop("file_name", None)
        kind = _media_kind(file_name) if isinstance(file_name, str) else None
        if kind is None:
            what = (
                "has no 'file_name' column"
                if file_name is None
                else f"'file_name' {file_name!r} is not an image or audio file"
            )
            suffixes = ", ".join(IMAGE_SUFFIXES + AUDIO_SUFFIXES)
            fix = f"give each row a file_name relative to the folder, ending in one of {suffixes}"
            yield BadRow(
                item.path,
                item.line,
                problem(item.where, what, fix),
                json.dumps(item.row, default=str),
            )
            continue
        row[kind] = resolve_media_path(file_name, source.path)
        yield Record(row=row, path=item.path, line=item.line)


def _iter_classfolder(source: SourceFile) -> Iterator[Record]:
    """One row per media file in a first-level subfolder: the path and the subfolder's name."""
    fs, folder = remote.filesystem(source.path, source.storage_options)
    lister = _Lister(fs, source.path, source.storage_options)
    files = sorted(lister.call(lambda: fs.find(folder)))
    line = 0
    for path in files:
        relative = path[len(folder.rstrip("/")) + 1 :]
        kind = _media_kind(path)
        if kind is None or "/" not in relative:
            continue
        line += 1
        row = {kind: lister.name(path), "label": relative.split("/", 1)[0]}
        yield Record(row=row, path=source.path, line=line)


def _media_kind(path: str) -> str | None:
    suffix = file_suffix(path)
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in AUDIO_SUFFIXES:
        return "audio"
    return None


def _is_local(fs) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)
