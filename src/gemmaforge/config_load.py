"""Build a `Config` from a YAML file, `section.field=value` overrides and flags.

Precedence is flags > overrides > file > defaults. Every problem found on the way (file,
syntax, unknown keys, invalid values) is collected and raised as one `UserError`, each line
naming where the bad setting came from (`path:line` or "command line") and how to fix it.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from gemmaforge.config import Config
from gemmaforge.errors import UserError, problem
from gemmaforge.redact import redact

COMMAND_LINE = "command line"


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-4` as a float.

    PyYAML follows YAML 1.1, where a float needs a dot (`1.0e-4`); everyone writes learning
    rates as `1e-4`, and `max_steps=1e3` would otherwise fail as a non-integer string.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)

_NULLS = ("", "~", "null", "Null", "NULL")
MAX_YAML_NODES = 100_000
"""Most values a config may expand to through YAML aliases; a real config has a few hundred."""


@functools.cache
def config_fields() -> dict[str, FieldInfo]:
    """Every settable dotted key (`train.lr`, ...) and its field, in declaration order."""

    def walk(model: type[BaseModel], prefix: str) -> Iterable[tuple[str, FieldInfo]]:
        for name, info in model.model_fields.items():
            if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
                yield from walk(info.annotation, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}", info

    return dict(walk(Config, ""))


def _sections() -> list[str]:
    return list(dict.fromkeys(key.split(".")[0] for key in config_fields()))


def field_help(dotted: str) -> str:
    """The one-line help of a dotted key: its field docstring, whitespace collapsed."""
    info = config_fields().get(dotted)
    if info is None:
        raise UserError(f"{dotted}: unknown key; {_suggest(dotted)}")
    return " ".join((info.description or "").split())


def dump_config(cfg: Config, redacted: bool = True) -> str:
    """The resolved config as YAML, every default included, keys in declaration order.

    Redacted (the default, for config.yaml and the console): storage option credentials and
    signed URL query strings become `REDACTED-<hash>` (see redact.py)."""
    data = cfg.model_dump(mode="json")
    if redacted:
        data = redact(data)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def load_config(
    path: str | None,
    overrides: Iterable[str] = (),
    flags: Mapping[str, object] | None = None,
) -> Config:
    """Resolve defaults < YAML file < `section.field=value` overrides < flags into a Config.

    `flags` maps dotted keys to values (None values are ignored: the flag was not given).
    Raises one `UserError` listing every problem found.
    """
    problems: list[str] = []
    # Where each dotted key's current value came from, for error messages.
    sources: dict[str, str] = {}
    data: dict[Any, Any] = _read_yaml(path, sources, problems) if path else {}
    if path:
        _resolve_paths(data, Path(path).parent)
    for text in overrides:
        parsed = _parse_override(text, problems)
        if parsed:
            _set(data, *parsed, COMMAND_LINE, sources, problems)
    for key, value in (flags or {}).items():
        if value is not None:
            _set(data, key, value, COMMAND_LINE, sources, problems)
    # `train:` with every field commented out loads as null; treat it as an empty section.
    for name in _sections():
        if name in data and data[name] is None:
            data[name] = {}
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        problems += [_explain(err, sources, path) for err in exc.errors()]
        raise UserError(problems) from None
    if problems:
        raise UserError(problems)
    return cfg


def _read_yaml(path: str, sources: dict[str, str], problems: list[str]) -> dict[Any, Any]:
    """The file's top-level mapping ({} after a problem); records each key's line in sources."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(problem(path, "config file not found", "check the path"))
        return {}
    except IsADirectoryError:
        problems.append(problem(path, "is a directory, not a YAML config file"))
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(problem(path, f"cannot read config file ({exc})"))
        return {}
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_size(node) > MAX_YAML_NODES:
            problems.append(
                problem(
                    path,
                    f"expands to more than {MAX_YAML_NODES:,} values through its aliases "
                    "(&anchor / *alias): refused, as a guard against alias bombs",
                    "write the values out instead of nesting aliases",
                )
            )
            return {}
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        where = f"{path}:{exc.problem_mark.line + 1}" if exc.problem_mark else path
        what = f"invalid YAML: {exc.problem}"
        if exc.context and exc.context_mark:
            what += f" ({exc.context} at line {exc.context_mark.line + 1})"
        problems.append(problem(where, what))
        return {}
    except yaml.YAMLError as exc:
        problems.append(problem(path, f"invalid YAML: {exc}"))
        return {}
    finally:
        loader.dispose()
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(
            problem(
                path,
                f"the top level must be a mapping of sections ({', '.join(_sections())}), "
                f"not a {type(data).__name__}",
            )
        )
        return {}
    _record_lines(node, "", path, sources, problems)
    return data


def _expanded_size(root: yaml.Node) -> int:
    """How many nodes the document has with every alias expanded, counted in time linear in
    its written size (each shared node once, memoised), stopping once past the cap."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        sizes[id(node)] = MAX_YAML_NODES + 1  # a cycle counts as too big
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > MAX_YAML_NODES:
                break
        sizes[id(node)] = total
        return total

    return size(root)


# Keys holding local paths that a YAML file names relative to itself. A relative path that
# exists beside the file resolves against the file's folder, so a config means the same from
# any working directory; one that does not (a hub id, a file not made yet, a path from the
# working directory as older configs were written) is kept as written. train.output_dir is
# not among them: like --output, a run folder is made where the command runs, and
# `config show` output loads back to the same config.
PATH_KEYS = ("model.name_or_path", "data.train", "data.validation", "data.media_cache_dir")


def _resolve_paths(data: dict[Any, Any], folder: Path) -> None:
    """Make the file's relative paths that exist beside it absolute (see PATH_KEYS)."""
    for key in PATH_KEYS:
        section, name = key.split(".")
        values = data.get(section)
        if not isinstance(values, dict) or name not in values:
            continue
        value = values[name]
        if isinstance(value, list):
            values[name] = [_resolve(item, folder) for item in value]
        else:
            values[name] = _resolve(value, folder)


def _resolve(value: Any, folder: Path) -> Any:
    if not isinstance(value, str) or not value or "://" in value:
        return value
    path = Path(value).expanduser()
    if path.is_absolute() or folder.resolve() == Path.cwd().resolve():
        return value
    beside = folder / path
    if beside.exists() or _glob_exists(beside):
        return os.path.abspath(beside)
    return value


def _glob_exists(path: Path) -> bool:
    import glob

    return any(ch in str(path) for ch in "*?[") and bool(glob.glob(str(path), recursive=True))


def _record_lines(
    node: yaml.Node, prefix: str, path: str, sources: dict[str, str], problems: list[str]
) -> None:
    """Map every dotted key of a mapping node to `path:line`; flag duplicate keys.

    PyYAML silently keeps the last of two equal keys, which hides typos in long files.
    """
    if not isinstance(node, yaml.MappingNode):
        return
    for key_node, value_node in node.value:
        key = f"{prefix}{key_node.value}"
        where = f"{path}:{key_node.start_mark.line + 1}"
        if key in sources:
            problems.append(
                problem(where, f"{key}: duplicate key (also at {sources[key]})", "keep one")
            )
        sources[key] = where
        _record_lines(value_node, f"{key}.", path, sources, problems)


def _parse_override(text: str, problems: list[str]) -> tuple[str, Any] | None:
    """`section.field=value` -> (dotted key, value); the value is read as a YAML scalar/list."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        problems.append(
            problem(
                COMMAND_LINE,
                f"{text!r} is not a section.field=value override",
                "write it as e.g. train.lr=1e-4",
            )
        )
        return None
    info = config_fields().get(key)
    if info is not None and _is_text(info) and not raw.lstrip().startswith("["):
        # Text fields take the raw text, so `model.revision=1234567` stays a string (YAML
        # would make it an int) and paths like `@data.jsonl` need no shell quoting. A field
        # that also takes a list (data.train) reads `[a, b]` as YAML.
        return key, (None if raw.strip() in _NULLS else raw)
    try:
        return key, yaml.load(raw, Loader=_Loader)
    except yaml.YAMLError as exc:
        what = getattr(exc, "problem", None) or str(exc)
        problems.append(problem(COMMAND_LINE, f"{key}: cannot parse value {raw!r} ({what})"))
        return None


def _is_text(info: FieldInfo) -> bool:
    """True for `str`, `str | None` and `str | list[str]` fields (not Literal choices or
    numbers)."""
    types = [t for t in (get_args(info.annotation) or (info.annotation,)) if t is not type(None)]
    return str in types and all(t is str or get_origin(t) is list for t in types)


def _set(
    data: dict[Any, Any],
    dotted: str,
    value: Any,
    where: str,
    sources: dict[str, str],
    problems: list[str],
) -> None:
    """Set data[a][b] = value for `a.b`, creating sections as needed; record the source."""
    *parents, leaf = dotted.split(".")
    node = data
    for depth, part in enumerate(parents):
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            parent = ".".join(parents[: depth + 1])
            problems.append(problem(where, f"cannot set {dotted}: {parent} is not a mapping"))
            return
    node[leaf] = value
    # The file's lines for keys under a replaced value no longer describe it.
    for key in [k for k in sources if k.startswith(f"{dotted}.")]:
        del sources[key]
    sources[dotted] = where


def _explain(err: Mapping[str, Any], sources: dict[str, str], path: str | None) -> str:
    """One readable line for one pydantic error: where, which key, what value, what is allowed."""
    loc = [str(part) for part in err["loc"]]
    key = ".".join(loc)
    where = next(
        (
            sources[".".join(loc[:n])]
            for n in range(len(loc), 0, -1)
            if ".".join(loc[:n]) in sources
        ),
        path or COMMAND_LINE,
    )
    if err["type"] == "extra_forbidden":
        kind = "unknown key" if len(loc) > 1 else "unknown section"
        return problem(where, f"{key}: {kind}; {_suggest(key)}")
    if err["type"] in ("model_type", "dict_type"):
        return problem(where, f"{key}: must be a mapping of {key}.* settings, not {_show(err)}")
    # Pydantic says "Input should be ..."; the key and value are already named in front.
    allowed = re.sub(r"^Input should be\b", "must be", err["msg"])
    return problem(where, f"{key}: invalid value {_show(err)}: {allowed}")


def _show(err: Mapping[str, Any]) -> str:
    text = repr(err.get("input"))
    return text if len(text) <= 60 else f"{text[:57]}..."


# Names other tools (transformers' TrainingArguments, PEFT, axolotl, Unsloth) use for our
# settings: a key that means the same is a better suggestion than one that is spelled alike
# (learning_rate is lr, not warmup_ratio).
ALIASES = {
    "learning_rate": "train.lr",
    "lr_scheduler_type": "train.scheduler",
    "lr_scheduler": "train.scheduler",
    "num_epochs": "train.epochs",
    "num_train_epochs": "train.epochs",
    "max_epochs": "train.epochs",
    "steps": "train.max_steps",
    "num_steps": "train.max_steps",
    "train_steps": "train.max_steps",
    "micro_batch_size": "train.batch_size",
    "per_device_train_batch_size": "train.batch_size",
    "gradient_accumulation_steps": "train.grad_accum",
    "gradient_accumulation": "train.grad_accum",
    "warmup": "train.warmup_steps",
    "grad_clip": "train.max_grad_norm",
    "clip_grad_norm": "train.max_grad_norm",
    "output": "train.output_dir",
    "save_steps": "train.save_every",
    "eval_steps": "train.eval_every",
    "logging_steps": "train.log_every",
    "resume_from_checkpoint": "train.resume",
    "seq_len": "data.max_seq_length",
    "sequence_len": "data.max_seq_length",
    "max_length": "data.max_seq_length",
    "max_len": "data.max_seq_length",
    "cutoff_len": "data.max_seq_length",
    "sample_packing": "data.packing",
    "dataset": "data.train",
    "datasets": "data.train",
    "train_file": "data.train",
    "val_file": "data.validation",
    "eval_file": "data.validation",
    "validation_file": "data.validation",
    "val_set_size": "data.val_fraction",
    "lora_r": "lora.r",
    "rank": "lora.r",
    "lora_alpha": "lora.alpha",
    "lora_dropout": "lora.dropout",
    "target_modules": "lora.targets",
    "lora_target_modules": "lora.targets",
    "use_rslora": "lora.rslora",
    "use_dora": "lora.dora",
    "base_model": "model.name_or_path",
    "model_name_or_path": "model.name_or_path",
    "model_name": "model.name_or_path",
    "model": "model.name_or_path",
    "path": "model.name_or_path",
    "torch_dtype": "model.dtype",
    "load_in_4bit": "model.quantize",
    "bf16": "model.dtype",
}


def _suggest(key: str) -> str:
    """'did you mean X?' for an unknown dotted key (by meaning first: ALIASES, then by
    spelling), else the valid keys at its level."""
    keys = list(config_fields())
    section, _, name = key.rpartition(".")
    if name in ALIASES:
        return f"did you mean {ALIASES[name]}?"
    # A field written under the wrong section (train.max_seq_length) is the commonest slip.
    moved = [k for k in keys if k.rpartition(".")[2] == name and k != key]
    if moved:
        return f"did you mean {moved[0]}?"
    candidates = keys if section else _sections()
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]}?"
    if section in _sections():
        names = [k.rpartition(".")[2] for k in keys if k.startswith(f"{section}.")]
        return f"valid keys in {section}: {', '.join(names)}"
    return f"valid sections: {', '.join(_sections())}"
