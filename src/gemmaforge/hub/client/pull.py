"""Pull an adapter version from a hub and verify it before anything loads it.

Files stream into a cache keyed by sha256 (`CACHE/blobs/<sha256>`: a file shared by two
versions is fetched once), then the version is assembled in `CACHE/versions/<digest>/` and
checked there: every file's hash against the hub's manifest, the manifest against the
version's digest, the gate's file rules, the signature against the publisher's pinned public
key (fetched from the hub, kept beside the version as `CACHE/origins/<digest>.pem`) and, with
a local base model, the adapter's shapes against that model. Only a folder that passed every
check is moved into place (a rename), and only then copied to `--to`.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from gemmaforge import signing
from gemmaforge.errors import UserError, problem
from gemmaforge.files import sha256_file, write_json_atomic
from gemmaforge.hub import gate
from gemmaforge.hub.client.api import HubClient, split_name
from gemmaforge.hub.client.config import cache_dir


@dataclass
class Pulled:
    folder: Path
    """The verified folder (in the cache, or `--to`)."""
    info: dict
    warnings: list[str] = field(default_factory=list)


def version_digest(files: dict[str, str]) -> str:
    import hashlib

    lines = "".join(f"{files[path]} {path}\n" for path in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def _safe(path: str) -> bool:
    parts = path.split("/")
    return (
        bool(path)
        and not path.startswith("/")
        and "\\" not in path
        and all(part not in ("", ".", "..") for part in parts)
    )


def pull(
    client: HubClient,
    ref: str,
    to: Path | None = None,
    model: str | Path | None = None,
    cache: Path | None = None,
) -> Pulled:
    """Fetch and verify `ns/name[@version]`; returns where the verified folder is."""
    namespace, name, version = split_name(ref)
    cache = Path(cache or cache_dir())
    info = client.version(namespace, name, version, pull=True)
    where = f"{namespace}/{name}@{info['version']}"
    warnings = []
    if info.get("yanked"):
        warnings.append(f"{where} was yanked by its publisher: {info.get('yank_reason')}")
    files = {f["path"]: f["sha256"] for f in info["files"]}
    unsafe = sorted(path for path in files if not _safe(path))
    if unsafe or version_digest(files) != info["digest"]:
        raise UserError(
            problem(
                where,
                f"the hub's file list is not consistent (unsafe names {unsafe} or digest mismatch)",
                "do not use this adapter; tell the hub's operator",
            )
        )
    final = cache / "versions" / info["digest"]
    key_file = cache / "origins" / f"{info['digest']}.pem"
    if not final.is_dir():
        for sha in sorted(set(files.values())):
            blob = cache / "blobs" / sha
            if not blob.is_file() or sha256_file(blob) != sha:
                client.download(sha, blob)
        staging = cache / "versions" / f".{info['digest']}.{os.getpid()}-{os.urandom(4).hex()}"
        try:
            for path, sha in files.items():
                target = staging / path
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(cache / "blobs" / sha, target)
            _fetch_key(client, namespace, info, key_file)
            problems = check_folder(staging, key_file, files)
            if problems:
                raise UserError(problems)
            try:
                os.replace(staging, final)
            except OSError:
                if not final.is_dir():  # not a concurrent pull of the same version
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        write_json_atomic(cache / "origins" / f"{info['digest']}.json", _origin(info))
    if not key_file.is_file():  # cached earlier, key file since removed
        _fetch_key(client, namespace, info, key_file)
    problems = check_folder(final, key_file, files)
    if model is not None:
        problems += check_model(final, info, model)
    if problems:
        raise UserError(problems)
    folder = final
    if to is not None:
        folder = place(final, Path(to))
    return Pulled(folder=folder, info=info, warnings=warnings)


def _fetch_key(client: HubClient, namespace: str, info: dict, key_file: Path) -> None:
    keys = [k for k in client.keys(namespace) if k["fingerprint"] == info["key_fingerprint"]]
    if not keys:
        raise UserError(
            problem(
                f"{namespace}/{info['name']}@{info['version']}",
                "the hub has no public key for the publisher that signed it",
                "do not use this adapter",
            )
        )
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text(keys[0]["pem"])


def _origin(info: dict) -> dict:
    return {k: info[k] for k in ("name", "version", "digest", "base", "key_fingerprint")}


def check_folder(folder: Path, key_file: Path, files: dict[str, str] | None = None) -> list[str]:
    """Hashes (when a manifest is given), the gate's file rules, and the signature."""

    problems = []
    if files is not None:
        present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        if present != set(files):
            problems.append(
                problem(
                    str(folder),
                    f"holds other files than the version lists: {sorted(present ^ set(files))}",
                )
            )
        for path, sha in files.items():
            if (folder / path).is_file() and sha256_file(folder / path) != sha:
                problems.append(problem(str(folder / path), f"does not hash to {sha}"))
    problems += gate.check_files(folder)
    try:
        signing.verify(folder, key_file)
    except UserError as exc:
        problems += exc.problems
    return problems


def check_model(folder: Path, info: dict, model: str | Path) -> list[str]:
    """The adapter's shapes against a local base model (headers only, no weights loaded)."""
    from gemmaforge.hub import bases, gate

    # The licence given here only labels the record; shapes and hashes are what is compared.
    base = bases.read_base(Path(model), info["base"]["id"], info["base"]["revision"], "gemma")
    return gate.check_fits(folder, base)


def place(source: Path, to: Path) -> Path:
    """Copy a verified folder to `to` (new or empty), via a temp folder and a rename."""
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise UserError(
            problem(str(to), "exists and is not an empty folder", "pass a new or empty --to")
        )
    tmp = to.with_name(f".{to.name}.{os.getpid()}.tmp")
    shutil.copytree(source, tmp)
    if to.exists():
        to.rmdir()
    os.replace(tmp, to)
    return to


def verify_folder(folder: Path, model: str | Path | None = None, key: Path | None = None) -> dict:
    """Check a pulled folder again: signature (with `key`, else the publisher key recorded
    when it was pulled), the gate's file rules and, with `model`, shapes. Returns its origin."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(problem(str(folder), "is not a folder", "pass the --to of `hub pull`"))
    files = {
        p.relative_to(folder).as_posix(): sha256_file(p) for p in folder.rglob("*") if p.is_file()
    }
    digest = version_digest(files)
    origins = cache_dir() / "origins"
    origin_file = origins / f"{digest}.json"
    origin = json.loads(origin_file.read_text("utf-8")) if origin_file.is_file() else None
    if key is None:
        if origin is None:
            raise UserError(
                problem(
                    str(folder),
                    "matches no version pulled on this machine (a file was changed, added or "
                    "removed, or it was pulled elsewhere)",
                    "pass the publisher's public key with --key, or pull it again",
                )
            )
        key = origins / f"{digest}.pem"
    problems = check_folder(folder, Path(key))
    if model is not None:
        info = origin or {"base": _base_of(folder)}
        problems += check_model(folder, info, model)
    if problems:
        raise UserError(problems)
    return origin or {"digest": digest}


def _base_of(folder: Path) -> dict:
    config = json.loads((folder / "adapter_config.json").read_text("utf-8"))
    return {"id": config.get("base_model_name_or_path"), "revision": config.get("revision")}
