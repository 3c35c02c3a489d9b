"""The hub's gate: every check an adapter folder must pass to be published or used.

The server runs it on every upload, the client before publishing and after pulling, so both
ends judge a folder the same way. Each check returns a list of problems (empty when fine),
each naming the file or module, what is wrong, and the fix; `check_adapter_folder` runs them
all. Nothing here loads weights or unpickles anything: files are judged by name and by
content (magic bytes, strict parses), shapes come from safetensors headers.

What is checked, and why (docs/hub.md, "The gate", says the same for users):
- files: an allow-list of names and kinds (safetensors, JSON, Markdown/text, tokenizer and
  processor files, PNG, the signature), each parsed or sniffed, because a pickle or an
  executable renamed to an allowed name must not pass; no links, hidden files, `..` or
  absolute names; size caps per kind and in total;
- the signature (`gemmaforge.signing`): the publisher's key signed exactly these files;
- fit: every LoRA module targets a weight the base has, with matching shapes and rank;
  the tokenizer vocabulary and chat template hash the same as the base's;
- the base reference: a canonical `org/name` id and a revision, never a local path;
- modalities: derived from which towers carry LoRA weights, not from what the publisher says;
- the licence: required, and compatible with the base's.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gemmaforge import signing
from gemmaforge.errors import UserError, problem
from gemmaforge.files import write_json_atomic, write_text_atomic
from gemmaforge.hub.bases import (
    GEMMA_LICENCE,
    SHARE_ALIKE_PREFIXES,
    BaseModel,
    base_reference_problems,
    licence_problems,
    template_sha256,
    tokenizer_sha256,
)
from gemmaforge.hub.header import (
    MAX_HEADER_BYTES,
    TensorInfo,
    header_problems,
    read_safetensors_header,
)
from gemmaforge.models.structure import TOWER_MODULES

__all__ = [
    "MAX_HEADER_BYTES",
    "AdapterModule",
    "TensorInfo",
    "adapter_modules",
    "check_adapter_folder",
    "check_base_reference",
    "check_file",
    "check_files",
    "check_fits",
    "check_licence",
    "check_relative_path",
    "checkpoint_weight",
    "modalities",
    "name_base",
    "read_safetensors_header",
]

MiB = 1024 * 1024
MAX_FILES = 256
"""Most files a folder may hold."""
MAX_DEPTH = 3
"""Most path components in a file name (`eval/reports/x.json` is 3)."""
MAX_TOTAL_BYTES = 16 * 1024 * MiB
"""Largest folder accepted, all files together."""
MAX_SAFETENSORS_BYTES = 8 * 1024 * MiB
"""Largest single safetensors file."""
MAX_JSON_BYTES = 64 * MiB
"""Largest JSON / JSON Lines file (a Gemma tokenizer.json is ~33 MB)."""
MAX_TEXT_BYTES = 4 * MiB
"""Largest Markdown, text, YAML or Jinja file."""
MAX_TOKENIZER_MODEL_BYTES = 64 * MiB
"""Largest SentencePiece tokenizer.model (Gemma's is ~4.7 MB)."""
MAX_PNG_BYTES = 2 * MiB
"""Largest PNG (model card pictures)."""
MAX_SIGNATURE_BYTES = 4 * MiB
"""Largest signature bundle (it lists one hash per file)."""

TOKENIZER_FILES = frozenset(
    {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "tokenizer.model",
        "chat_template.jinja",
        "chat_template.json",
        "preprocessor_config.json",
        "processor_config.json",
        "added_tokens.json",
        "generation_config.json",
    }
)
"""Tokenizer and processor files an adapter folder may carry (judged by their kind below)."""

ALLOWED = ".safetensors, .json, .jsonl, .md, .txt, .yaml, .png, tokenizer/processor files, " + (
    signing.SIGNATURE_NAME
)

# Magic bytes of formats that can run code when loaded, or hide other files.
_MAGIC = (
    (b"PK\x03\x04", "a zip archive (PyTorch .pt/.bin files are zip archives of pickles)"),
    (b"PK\x05\x06", "a zip archive"),
    (b"\x7fELF", "an ELF executable"),
    (b"MZ", "a Windows executable"),
    (b"#!", "a script (it starts with #!)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7z archive"),
    (b"Rar!", "a rar archive"),
    (b"\x28\xb5\x2f\xfd", "a zstd archive"),
    (b"\xca\xfe\xba\xbe", "a Mach-O or Java class file"),
    (b"\xfe\xed\xfa\xce", "a Mach-O executable"),
    (b"\xfe\xed\xfa\xcf", "a Mach-O executable"),
    (b"\xce\xfa\xed\xfe", "a Mach-O executable"),
    (b"\xcf\xfa\xed\xfe", "a Mach-O executable"),
    (b"\x93NUMPY", "a NumPy array (which can hold pickles)"),
)
_REFUSED_SUFFIXES = {
    ".bin": "PyTorch pickle weights",
    ".pt": "PyTorch pickle weights",
    ".pth": "PyTorch pickle weights",
    ".pkl": "a pickle",
    ".pickle": "a pickle",
    ".ckpt": "a pickle checkpoint",
    ".npy": "a NumPy array",
    ".npz": "NumPy arrays",
    ".joblib": "a joblib pickle",
}
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_NAME_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}")


def sniff(head: bytes) -> str | None:
    """What a file's first bytes say it is, if it is a format the gate refuses (else None)."""
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return f"a pickle (protocol {head[1]})"
    if head[257:262] == b"ustar":
        return "a tar archive"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    return None


def _head(path: Path, size: int = 512) -> bytes:
    with path.open("rb") as handle:
        return handle.read(size)


# --- file names ------------------------------------------------------------------------------


def check_relative_path(name: str) -> list[str]:
    """Problems with a file name inside a folder, as an upload or manifest gives it.

    Names are relative, `/`-separated, at most MAX_DEPTH components, each starting with a
    letter, digit or `_` and made of letters, digits and `._+-`: so no absolute paths, Windows
    drives or backslashes, no `..` or `.`, no hidden files, no control or shell characters.
    """
    where = f"file name {name!r}"
    if not name:
        return [problem("file name", "is empty")]
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return [problem(where, "is an absolute path", "use names relative to the folder")]
    if "\\" in name:
        return [problem(where, "contains a backslash", "use / between folders")]
    parts = name.split("/")
    if any(part in ("..", ".") for part in parts):
        return [problem(where, "contains a `..` or `.` component", "use plain relative names")]
    if any(part.startswith(".") for part in parts):
        return [problem(where, "is or lies in a hidden file or folder", "remove it")]
    if len(parts) > MAX_DEPTH:
        return [
            problem(
                where,
                f"is nested {len(parts)} deep, over the limit of {MAX_DEPTH} (MAX_DEPTH)",
                "flatten the folder",
            )
        ]
    if not all(_NAME_PART.fullmatch(part) for part in parts):
        return [
            problem(
                where,
                "has an empty part or characters other than letters, digits and ._+-",
                "rename it",
            )
        ]
    return []


# --- file contents ---------------------------------------------------------------------------


def check_files(folder: Path) -> list[str]:
    """Problems with the files of `folder` by name and content (empty when all are allowed)."""
    folder = Path(folder)
    if not folder.is_dir():
        return [problem(str(folder), "is not a folder")]
    found, files, total, seen = [], 0, 0, {}
    for root, dirs, names in os.walk(folder, followlinks=False):
        for entry in sorted(dirs) + sorted(names):
            path = Path(root) / entry
            relative = path.relative_to(folder).as_posix()
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                found.append(
                    problem(
                        f"{folder}/{relative}",
                        f"is a symbolic link (to {os.readlink(path)})",
                        "copy the file itself into the folder",
                    )
                )
                continue
            name_problems = check_relative_path(relative)
            if name_problems:
                found += [problem(str(folder), p) for p in name_problems]
                continue
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                found.append(problem(f"{folder}/{relative}", "is not a regular file"))
                continue
            if relative.lower() in seen:
                found.append(
                    problem(
                        f"{folder}/{relative}",
                        f"differs from {seen[relative.lower()]} only by case (one would overwrite "
                        "the other on macOS and Windows)",
                        "rename one",
                    )
                )
            seen[relative.lower()] = relative
            files += 1
            if files > MAX_FILES:
                break  # reported below; reading more would only cost time
            total += path.stat().st_size
            found += check_file(path, relative, where=f"{folder}/{relative}")
        if files > MAX_FILES:
            break
        # Never descend into what was refused (links are not followed anyway).
        dirs[:] = [
            d
            for d in dirs
            if not (Path(root) / d).is_symlink()
            and not check_relative_path((Path(root) / d).relative_to(folder).as_posix())
        ]
    if files == 0 and not found:
        found.append(problem(str(folder), "holds no files"))
    if files > MAX_FILES:
        found.append(
            problem(str(folder), f"holds more than {MAX_FILES} files, the limit (MAX_FILES)")
        )
    if total > MAX_TOTAL_BYTES:
        found.append(
            problem(
                str(folder),
                f"holds {total:,} bytes, over the limit of {MAX_TOTAL_BYTES:,} (MAX_TOTAL_BYTES)",
            )
        )
    return found


def check_file(path: Path, name: str, where: str | None = None) -> list[str]:
    """Problems with one file's content, judged as the kind its `name` says it is.

    `name` is the file's name inside its folder (e.g. `adapter_model.safetensors`); the server
    checks an uploaded blob under the name it was uploaded as. Problems name `where` (default:
    `name`).
    """
    path = Path(path)
    where = where or name
    base = PurePosixPath(name).name
    suffix = PurePosixPath(name).suffix.lower()
    size = path.stat().st_size
    if base == signing.SIGNATURE_NAME:
        return _cap(where, size, MAX_SIGNATURE_BYTES, "MAX_SIGNATURE_BYTES") or _json(path, where)
    if suffix == ".safetensors":
        return _safetensors(path, where, size)
    if base == "tokenizer.model":
        return _cap(where, size, MAX_TOKENIZER_MODEL_BYTES, "MAX_TOKENIZER_MODEL_BYTES") or (
            _sentencepiece(path, where)
        )
    if suffix == ".json":
        return _cap(where, size, MAX_JSON_BYTES, "MAX_JSON_BYTES") or _json(path, where)
    if suffix == ".jsonl":
        return _cap(where, size, MAX_JSON_BYTES, "MAX_JSON_BYTES") or _json_lines(path, where)
    if suffix in (".md", ".txt", ".yaml", ".yml") or base == "chat_template.jinja":
        return _cap(where, size, MAX_TEXT_BYTES, "MAX_TEXT_BYTES") or _text(path, where, suffix)
    if suffix == ".png":
        return _cap(where, size, MAX_PNG_BYTES, "MAX_PNG_BYTES") or _png(path, where)
    what = sniff(_head(path)) or _REFUSED_SUFFIXES.get(suffix)
    kind = f" (it is {what})" if what else ""
    return [
        problem(
            where,
            f"is not a file the hub accepts{kind}",
            f"keep only {ALLOWED}; save weights as safetensors",
        )
    ]


def _cap(where: str, size: int, limit: int, constant: str) -> list[str]:
    if size > limit:
        return [problem(where, f"is {size:,} bytes, over the {limit:,}-byte limit ({constant})")]
    return []


def _safetensors(path: Path, where: str, size: int) -> list[str]:
    if size > MAX_SAFETENSORS_BYTES:
        return _cap(where, size, MAX_SAFETENSORS_BYTES, "MAX_SAFETENSORS_BYTES")
    _, found = header_problems(path, where)
    if found:
        # Its first bytes were not a valid header: say what the file really is, if we can.
        what = sniff(_head(path))
        if what:
            return [
                problem(
                    where,
                    f"is {what}, not safetensors",
                    "save the weights with safetensors (never load this file)",
                )
            ]
    return found


def _json(path: Path, where: str) -> list[str]:
    try:
        json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        what = sniff(_head(path))
        return [problem(where, f"is {what}" if what else f"is not valid JSON ({err})")]
    return []


def _json_lines(path: Path, where: str) -> list[str]:
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        return [problem(where, f"is not UTF-8 text ({err})")]
    for number, line in enumerate(lines, 1):
        try:
            if line.strip():
                json.loads(line)
        except (ValueError, RecursionError) as err:
            return [problem(f"{where} line {number}", f"is not valid JSON ({err})")]
    return []


def _text(path: Path, where: str, suffix: str) -> list[str]:
    data = path.read_bytes()
    what = sniff(data[:512])
    if what:
        return [problem(where, f"is {what}, not text")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        return [problem(where, f"is not UTF-8 text ({err})")]
    if "\x00" in text:
        return [problem(where, "contains NUL bytes, not text")]
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            yaml.safe_load(text)
        except (yaml.YAMLError, RecursionError) as err:
            return [problem(where, f"is not valid YAML ({err})")]
    return []


def _png(path: Path, where: str) -> list[str]:
    head = _head(path, 16)
    if not head.startswith(_PNG_MAGIC) or head[12:16] != b"IHDR":
        return [problem(where, "is not a PNG image (wrong signature)")]
    return []


def _sentencepiece(path: Path, where: str) -> list[str]:
    data = path.read_bytes()
    what = sniff(data[:512])
    # A SentencePiece ModelProto opens with its repeated `pieces` field: tag 0x0A.
    if what or not data.startswith(b"\x0a"):
        kind = f"is {what}" if what else "does not start like a SentencePiece model"
        return [problem(where, f"{kind}, not a SentencePiece model")]
    import sentencepiece

    try:
        sentencepiece.SentencePieceProcessor().LoadFromSerializedProto(data)
    except RuntimeError as err:
        return [problem(where, f"is not a SentencePiece model ({err})")]
    return []


# --- the adapter's modules -------------------------------------------------------------------

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
_PEFT_PREFIX = "base_model.model."
_KEY = re.compile(
    r"base_model\.model\.(?P<module>.+)\."
    r"(?P<part>lora_A\.weight|lora_B\.weight|lora_B\.bias|lora_magnitude_vector(?:\.weight)?"
    r"|lora_embedding_A|lora_embedding_B)"
)


@dataclass(frozen=True)
class AdapterModule:
    """The LoRA tensors on one module of the base, by shape."""

    module: str
    """Module path in the transformers model, e.g. `model.layers.0.self_attn.q_proj`."""
    kind: str
    """`linear` (lora_A [r, in], lora_B [out, r]) or `embedding` (A [r, rows], B [dim, r])."""
    lora_a: tuple[int, ...]
    lora_b: tuple[int, ...]
    magnitude: tuple[int, ...] | None = None
    """DoRA's magnitude vector [out]."""
    bias: tuple[int, ...] | None = None
    """lora_B's bias [out] (PEFT `lora_bias`)."""

    @property
    def rank(self) -> int:
        return self.lora_a[0]


def adapter_modules(adapter_dir: Path) -> dict[str, AdapterModule]:
    """The modules the adapter in `adapter_dir` adapts, by module path; a UserError if its
    weights or config cannot be read as a PEFT LoRA adapter."""
    modules, found = _read_adapter(Path(adapter_dir))
    if found:
        raise UserError(found)
    return modules


def _read_adapter(adapter_dir: Path) -> tuple[dict[str, AdapterModule], list[str]]:
    weights, config_path = adapter_dir / ADAPTER_WEIGHTS, adapter_dir / ADAPTER_CONFIG
    missing = [p.name for p in (weights, config_path) if not p.is_file()]
    if missing:
        return {}, [
            problem(
                str(adapter_dir),
                f"is not a PEFT adapter folder (missing {', '.join(missing)})",
                "publish the adapter/ folder of a finished run",
            )
        ]
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        return {}, [problem(str(config_path), f"is not valid JSON ({err})")]
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        kind = config.get("peft_type") if isinstance(config, dict) else None
        return {}, [
            problem(
                str(config_path),
                f"describes a {kind!r} adapter; the hub checks LoRA adapters only",
            )
        ]
    tensors, found = header_problems(weights)
    if found:
        return {}, found
    parts: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, info in tensors.items():
        match = _KEY.fullmatch(key)
        if match is None:
            found.append(
                problem(
                    str(weights),
                    f"holds {key!r}, which is not a LoRA tensor the hub can check",
                    "publish plain LoRA/DoRA adapters (no modules_to_save or other methods)",
                )
            )
            continue
        part = match["part"].removesuffix(".weight").removesuffix(".bias")
        part = "lora_B_bias" if match["part"] == "lora_B.bias" else part
        parts.setdefault(match["module"], {})[part] = info.shape
    modules = {}
    for module, shapes in sorted(parts.items()):
        built, module_problems = _module(str(weights), module, shapes, config)
        found += module_problems
        if built is not None:
            modules[module] = built
    if not modules and not found:
        found.append(problem(str(weights), "holds no LoRA weights"))
    return modules, found


def _module(where, module, shapes, config) -> tuple[AdapterModule | None, list[str]]:
    at = f"{where}: {module}"
    embedding = "lora_embedding_A" in shapes or "lora_embedding_B" in shapes
    a_key, b_key = ("lora_embedding_A", "lora_embedding_B") if embedding else ("lora_A", "lora_B")
    if a_key not in shapes or b_key not in shapes:
        return None, [problem(at, f"has only one of {a_key} / {b_key}")]
    a, b = shapes[a_key], shapes[b_key]
    if len(a) != 2 or len(b) != 2:
        return None, [
            problem(
                at,
                f"{a_key} {list(a)} / {b_key} {list(b)} are not matrices (only Linear and "
                "Embedding LoRA can be checked)",
            )
        ]
    found = []
    if a[0] != b[1]:
        found.append(problem(at, f"{a_key} {list(a)} and {b_key} {list(b)} disagree on the rank"))
    import regex

    try:
        expected = _expected_rank(module, config)
    except (ValueError, TypeError, TimeoutError, regex.error) as err:
        return None, [problem(f"{where}: adapter_config.json rank_pattern", f"is unusable ({err})")]
    if expected is not None and a[0] != expected:
        found.append(
            problem(
                at,
                f"has rank {a[0]} ({a_key} {list(a)}) but adapter_config.json says r={expected}",
            )
        )
    magnitude, bias = shapes.get("lora_magnitude_vector"), shapes.get("lora_B_bias")
    for name, vector in (("lora_magnitude_vector", magnitude), ("lora_B.bias", bias)):
        if vector is not None and list(vector) != [b[0]]:
            found.append(problem(at, f"{name} {list(vector)} does not match the output {b[0]}"))
    kind = "embedding" if embedding else "linear"
    return AdapterModule(module, kind, tuple(a), tuple(b), magnitude, bias), found


def _expected_rank(module: str, config: dict) -> int | None:
    """The rank PEFT gives `module`: the first matching `rank_pattern` entry, else `r`.

    The patterns come from a stranger's adapter_config.json: they run under the `regex`
    package's timeout, so a pattern built to backtrack forever cannot stall the server.
    """
    import regex

    patterns = config.get("rank_pattern") or {}
    if not isinstance(patterns, dict):
        raise ValueError("rank_pattern is not a mapping")
    for pattern, rank in patterns.items():
        # PEFT's own rule (peft.utils.other.get_pattern_key): the pattern ends the name.
        if regex.match(rf"(.*\.)?({pattern})$", module, timeout=_PATTERN_SECONDS):
            return int(rank)
    rank = config.get("r")
    return rank if isinstance(rank, int) and not isinstance(rank, bool) else None


_PATTERN_SECONDS = 0.05


# --- fitting a base --------------------------------------------------------------------------

# How a module path in the transformers class maps to the checkpoint's tensor name. Tried in
# order; the first name the base has wins. Each entry: (module prefix, checkpoint prefix).
CHECKPOINT_LAYOUTS = (
    # Same names: checkpoints saved by transformers 5 (Gemma 3n, Gemma 4, text-only Gemma 3,
    # and GGUF files, whose names bases.py maps back to these).
    ("", ""),
    # Gemma 3 multimodal checkpoints saved before transformers 4.52 (the layout of
    # google/gemma-3-4b-it and larger), which transformers renames on load.
    ("model.language_model.", "language_model.model."),
    ("model.vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("lm_head.", "language_model.lm_head."),
)
# A LoRA on lm_head of a model with tied embeddings adapts the embedding matrix.
TIED_LM_HEAD = (
    "model.embed_tokens.weight",
    "model.language_model.embed_tokens.weight",
    "language_model.model.embed_tokens.weight",
)


def checkpoint_weight(module: str, shapes: dict[str, list[int]]) -> str | None:
    """The base checkpoint's tensor name for `module`'s weight (None if the base has none)."""
    weight = f"{module}.weight"
    for module_prefix, checkpoint_prefix in CHECKPOINT_LAYOUTS:
        if weight.startswith(module_prefix):
            name = checkpoint_prefix + weight[len(module_prefix) :]
            if name in shapes:
                return name
    if module == "lm_head":
        return next((name for name in TIED_LM_HEAD if name in shapes), None)
    return None


MAX_FIT_PROBLEMS = 10
"""Fit problems listed one by one; more are counted (one wrong base breaks every module)."""


def check_fits(adapter_dir: Path, base: BaseModel) -> list[str]:
    """Problems fitting the adapter in `adapter_dir` onto `base`, shape by shape."""
    adapter_dir = Path(adapter_dir)
    modules, found = _read_adapter(adapter_dir)
    if found:
        return found
    label = f"{base.id}@{base.revision}"
    misfits = []
    for module in modules.values():
        misfits += _fit(module, base, label)
    if len(misfits) > MAX_FIT_PROBLEMS:
        more = len(misfits) - MAX_FIT_PROBLEMS
        misfits = [
            *misfits[:MAX_FIT_PROBLEMS],
            problem(None, f"... and {more} more modules that do not fit {label}"),
        ]
    found += misfits
    for what, hash_of, theirs in (
        ("tokenizer vocabulary", tokenizer_sha256, base.tokenizer_sha256),
        ("chat template", template_sha256, base.template_sha256),
    ):
        try:
            ours = hash_of(adapter_dir)
        except UserError as err:
            found += err.problems
            continue
        if ours and theirs and ours != theirs:
            found.append(
                problem(
                    str(adapter_dir),
                    f"its {what} (sha256 {ours[:12]}…) differs from the base {label}'s "
                    f"({theirs[:12]}…)",
                    "publish with the tokenizer files of the base the adapter was trained on",
                )
            )
    return found


def _fit(module: AdapterModule, base: BaseModel, label: str) -> list[str]:
    name = checkpoint_weight(module.module, base.shapes)
    if name is None:
        return [
            problem(
                module.module,
                f"is adapted (lora_A {list(module.lora_a)}), but base {label} has no such "
                f"module (no {module.module}.weight in its checkpoint)",
                "claim the base the adapter was trained on",
            )
        ]
    shape = base.shapes[name]
    a, b = list(module.lora_a), list(module.lora_b)
    if module.kind == "embedding":
        needed, names = [a[1], b[0]], f"lora_embedding_A {a} and lora_embedding_B {b}"
    else:
        needed, names = [b[0], a[1]], f"lora_A {a} and lora_B {b}"
    if shape != needed:
        return [
            problem(
                module.module,
                f"{names} need a base weight of shape {needed}, but base {label} has {name} "
                f"of shape {shape}",
                "claim the base the adapter was trained on",
            )
        ]
    return []


# --- modalities, base reference, licence -----------------------------------------------------

# Module path components that mark a tower (models/lora.py targets these; Gemma 3 names its
# vision projector `multi_modal_projector`).
_TOWER_PARTS = {
    "vision": frozenset(TOWER_MODULES["vision"]) | {"multi_modal_projector"},
    "audio": frozenset(TOWER_MODULES["audio"]),
}


def modalities(adapter_dir: Path) -> list[str]:
    """`text`, `vision`, `audio`: the towers whose modules carry LoRA weights, in that order."""
    found = set()
    for module in adapter_modules(Path(adapter_dir)):
        parts = set(module.split("."))
        tower = next((t for t, names in _TOWER_PARTS.items() if parts & names), "text")
        found.add(tower)
    return [m for m in ("text", "vision", "audio") if m in found]


def check_base_reference(base_id: str, revision: str | None) -> list[str]:
    """Problems naming a base `base_id` at `revision`: a canonical `org/name` id and a
    revision are required; a local path (absolute, ./, ~, a drive, an existing folder) never
    passes."""
    return base_reference_problems(base_id, revision)


def check_licence(licence: str, base: BaseModel) -> list[str]:
    """Problems publishing an adapter of `base` under `licence`.

    The rule: a licence is required (`gemma` or one SPDX id). A base under the Gemma Terms of
    Use (`gemma`) makes every adapter of it a Model Derivative, distributed under the same
    terms: its adapters must say `gemma`. A base under a share-alike licence (GPL, CC-BY-SA,
    ...) requires the same licence. Any other base licence allows any valid licence.
    """
    found = licence_problems(licence)
    if found:
        return found
    ours, theirs = licence.lower(), base.licence.lower()
    label = f"{base.id}@{base.revision}"
    if theirs == GEMMA_LICENCE and ours != GEMMA_LICENCE:
        return [
            problem(
                f"licence {licence!r}",
                f"base {label} is under the Gemma Terms of Use, which bind adapters of it too",
                "publish with --licence gemma",
            )
        ]
    if theirs.startswith(SHARE_ALIKE_PREFIXES) and ours != theirs:
        return [
            problem(
                f"licence {licence!r}",
                f"base {label} is under the share-alike licence {base.licence}",
                f"publish with --licence {base.licence}",
            )
        ]
    return []


def name_base(adapter_dir: Path, base_id: str, revision: str) -> None:
    """Point the adapter at `base_id`@`revision`, replacing the local path training wrote:
    adapter_config.json (what PEFT reads) and, if the folder has a card with YAML front
    matter, its `base_model` and `base_model:adapter:` tag (what the Hugging Face Hub reads).
    Refuses a bad reference. Run before signing: it changes files."""
    import yaml

    found = check_base_reference(base_id, revision)
    if found:
        raise UserError(found)
    path = Path(adapter_dir) / ADAPTER_CONFIG
    config = json.loads(path.read_text(encoding="utf-8"))
    old = config.get("base_model_name_or_path")
    config["base_model_name_or_path"], config["revision"] = base_id, revision
    write_json_atomic(path, config)
    card = Path(adapter_dir) / "README.md"
    front, body = _front_matter(card)
    if front is not None and "base_model" in front:
        front["base_model"] = base_id
        if isinstance(front.get("tags"), list):
            front["tags"] = [
                f"base_model:adapter:{base_id}" if tag == f"base_model:adapter:{old}" else tag
                for tag in front["tags"]
            ]
        header = yaml.safe_dump(front, sort_keys=False, allow_unicode=True)
        write_text_atomic(card, f"---\n{header}---\n{body}")


def _reference_problems(folder: Path, base: BaseModel | None) -> list[str]:
    """The base the adapter's own files name: adapter_config.json and the card's front matter."""
    path = folder / ADAPTER_CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return []  # reported by _read_adapter
    if not isinstance(config, dict):
        return []
    named, revision = config.get("base_model_name_or_path"), config.get("revision")
    # check_base_reference's own fixes say how to name the base (publish does it).
    found = [problem(str(path), p) for p in check_base_reference(named, revision)]
    if base is not None and not found and (named, revision) != (base.id, base.revision):
        found.append(
            problem(
                str(path),
                f"names base {named}@{revision}, not the claimed {base.id}@{base.revision}",
                "claim the base the adapter names",
            )
        )
    card_base = _card_base_model(folder / "README.md")
    if card_base is not None and card_base != named:
        found.append(
            problem(
                f"{folder}/README.md",
                f"its front matter names base_model {card_base!r}, but adapter_config.json "
                f"names {named!r}",
                "set base_model in the card to the canonical id",
            )
        )
    return found


def _front_matter(card: Path) -> tuple[dict | None, str]:
    """A card's YAML front matter (None if it has none) and the Markdown after it."""
    import yaml

    if not card.is_file():
        return None, ""
    text = card.read_text(encoding="utf-8", errors="replace")
    match = re.match(r"---\n(.*?)\n---\n?", text, re.DOTALL)
    if match is None:
        return None, text
    try:
        data = yaml.safe_load(match[1])
    except (yaml.YAMLError, RecursionError):
        return None, text
    return (data if isinstance(data, dict) else None), text[match.end() :]


def _card_base_model(card: Path) -> str | None:
    """`base_model` from a card's YAML front matter (None if there is none)."""
    value = (_front_matter(card)[0] or {}).get("base_model")
    return value if isinstance(value, str) else None


# --- all of it -------------------------------------------------------------------------------


def check_adapter_folder(
    folder: Path, base: BaseModel | None = None, public_key: Path | None = None
) -> list[str]:
    """Every check at once (empty when the folder may be published or used).

    Files by name and content; that it is a LoRA adapter naming a canonical base; with
    `base`, that it fits that base; with `public_key`, that it carries a signature by that
    key over exactly its files. Licences are checked apart (`check_licence`): they are
    metadata, not files.
    """
    folder = Path(folder)
    found = check_files(folder)
    if not folder.is_dir():
        return found
    for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG):
        path = folder / name
        if path.is_symlink() or (path.is_file() and check_file(path, name)):
            return found  # the adapter files themselves are refused: read nothing further
    if public_key is not None:
        try:
            signing.verify(folder, Path(public_key))
        except UserError as err:
            found += err.problems
    _, adapter_problems = _read_adapter(folder)
    found += adapter_problems
    found += _reference_problems(folder, base)
    if base is not None and not adapter_problems:
        found += check_fits(folder, base)
    return found
