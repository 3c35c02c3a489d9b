"""A registered base model as plain data: what the hub needs to judge an adapter against it.

`read_base` reads a local checkpoint (a folder of safetensors, single or sharded, or a Gemma 3
GGUF file) without loading any weight: per-tensor shapes come from safetensors headers or GGUF
tensor infos. With them go the canonical id and revision the hub names the base by, hashes of
the tokenizer's vocabulary, of the chat template and of the weight files (the same sha256 as a
run's `base_sha256`, so a run finds its base), and the licence adapters inherit.

Hash definitions (the adapter side is hashed the same way, in `gate.py`):
- tokenizer: sha256 of the vocabulary, the token string of every id in id order (JSON, spaces
  written as SentencePiece's `▁`), read from tokenizer.json (model vocab + added tokens), else
  tokenizer.model (SentencePiece), or from GGUF `tokenizer.ggml.tokens`. Padding / truncation
  settings and file formatting, which `save_pretrained` changes, do not count; neither do BPE
  merges or normalizer settings (a limit: two tokenizers with one vocabulary but different
  merges hash the same).
- chat template: sha256 of the template text without surrounding whitespace, from
  chat_template.jinja, chat_template.json, processor_config.json or tokenizer_config.json
  (first found), or GGUF `tokenizer.chat_template`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

from gemmaforge.errors import UserError, problem
from gemmaforge.files import sha256_files
from gemmaforge.hub.header import header_problems
from gemmaforge.models.families import family_of

# The files models/load.py hashes into a folder's `source_sha256`: the same rule, so a run's
# `base_sha256` finds its base.
from gemmaforge.models.load import WEIGHT_SUFFIXES


@dataclass
class BaseModel:
    """A base model the hub knows, by canonical id and revision."""

    id: str
    """Canonical id, `org/name` (as on the Hugging Face Hub)."""
    revision: str
    """The revision (commit) the shapes and hashes were read from."""
    family: str
    """gemma3, gemma3n or gemma4."""
    model_type: str
    """config.model_type of the checkpoint."""
    shapes: dict[str, list[int]]
    """Checkpoint tensor name -> shape, as stored (e.g. `model.layers.0.self_attn.q_proj.weight`
    -> [out, in]); GGUF names are mapped back to Hugging Face names."""
    tokenizer_sha256: str | None
    """sha256 of the vocabulary (see the module docstring); None if the checkpoint has none."""
    template_sha256: str | None
    """sha256 of the chat template text; None if the checkpoint has none."""
    weights_sha256: str
    """sha256 over the weight files: a run's `base_sha256` when trained on this checkpoint."""
    licence: str
    """The base's licence: `gemma` (Gemma Terms of Use) or an SPDX id, lower case."""
    format: str = "safetensors"
    """Where the shapes came from: safetensors or gguf."""
    extra: dict = field(default_factory=dict)
    """Anything else worth keeping (e.g. the GGUF architecture)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BaseModel:
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | dict) -> BaseModel:
        return cls.from_dict(json.loads(text) if isinstance(text, str) else text)

    def matches_run(self, base_sha256: str) -> bool:
        """True if a run whose run.json says `base_sha256` was trained on this base: the weight
        files hash the same, or it was loaded from the hub as this id at this revision."""
        return base_sha256 in (self.weights_sha256, f"hub:{self.id}@{self.revision}")


def read_base(path: Path, id: str, revision: str, licence: str) -> BaseModel:
    """Describe the checkpoint at `path` (folder or .gguf) without loading its weights."""
    path = Path(path).expanduser()
    licence = (licence or "").strip().lower()
    found = base_reference_problems(id, revision) + licence_problems(licence, "base licence")
    if found:
        raise UserError(found)
    if path.is_file() and path.suffix == ".gguf":
        return _read_gguf(path, id, revision, licence)
    if not path.is_dir():
        raise UserError(
            problem(
                str(path),
                "is neither a model folder nor a .gguf file",
                "pass a folder with config.json and safetensors weights, or a .gguf file",
            )
        )
    config = _read_json(path / "config.json", "a model folder needs config.json")
    family = family_of(SimpleNamespace(model_type=config.get("model_type")), str(path))
    weight_files = [p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES]
    return BaseModel(
        id=id,
        revision=revision,
        family=family.name,
        model_type=config["model_type"],
        shapes=_safetensors_shapes(path),
        tokenizer_sha256=tokenizer_sha256(path),
        template_sha256=template_sha256(path),
        weights_sha256=sha256_files(weight_files),
        licence=licence,
    )


def _read_json(path: Path, fix: str) -> dict:
    if not path.is_file():
        raise UserError(problem(str(path), "is missing", fix))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise UserError(problem(str(path), f"is not valid JSON ({err!r:.200})")) from err
    if not isinstance(data, dict):
        raise UserError(problem(str(path), "is not a JSON object"))
    return data


def _safetensors_shapes(folder: Path) -> dict[str, list[int]]:
    """Shapes from every shard's header; a sharded checkpoint's index must agree with them."""
    index_path = folder / "model.safetensors.index.json"
    if index_path.is_file():
        weight_map = _read_json(index_path, "").get("weight_map")
        if not isinstance(weight_map, dict):
            raise UserError(problem(str(index_path), "has no weight_map"))
        files = sorted({folder / name for name in weight_map.values() if "/" not in name})
    else:
        weight_map = None
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        found = ", ".join(sorted(p.name for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES))
        raise UserError(
            problem(
                str(folder),
                f"has no safetensors weights to read shapes from (found: {found or 'none'})",
                "convert the checkpoint to safetensors (pickle .bin files are never opened)",
            )
        )
    shapes, found = {}, []
    for file in files:
        if not file.is_file():
            found.append(problem(str(index_path), f"names shard {file.name}, which is missing"))
            continue
        tensors, file_problems = header_problems(file)
        found += file_problems
        for name, info in tensors.items():
            if weight_map is not None and weight_map.get(name) != file.name:
                found.append(problem(str(file), f"holds {name}, which the index places elsewhere"))
            shapes[name] = list(info.shape)
    if weight_map is not None:
        missing = sorted(set(weight_map) - set(shapes))
        if missing:
            found.append(
                problem(
                    str(index_path),
                    f"lists {len(missing)} tensors no shard holds (first: {missing[0]})",
                )
            )
    if found:
        raise UserError(found)
    return shapes


# Gemma 3's text decoder, by Hugging Face name (Gemma3ForCausalLM), the way export/gguf_model.py
# writes it to GGUF. Reversing through the same `gguf` table keeps the two directions in step.
_GEMMA3_GLOBAL = ("model.embed_tokens", "model.norm", "lm_head")
_GEMMA3_LAYER = (
    "input_layernorm",
    "post_attention_layernorm",
    "pre_feedforward_layernorm",
    "post_feedforward_layernorm",
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "self_attn.q_norm",
    "self_attn.k_norm",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


def gguf_to_hf_names(block_count: int) -> dict[str, str]:
    """GGUF tensor name -> Hugging Face name for a Gemma 3 text model of `block_count` layers."""
    import gguf

    table = gguf.TensorNameMap(gguf.MODEL_ARCH.GEMMA3, block_count)
    hf_names = list(_GEMMA3_GLOBAL) + [
        f"model.layers.{i}.{part}" for i in range(block_count) for part in _GEMMA3_LAYER
    ]
    reverse = {}
    for hf in hf_names:
        name = table.get_name(hf)
        if name is not None:
            reverse[f"{name}.weight"] = f"{hf}.weight"
    return reverse


def _read_gguf(path: Path, id: str, revision: str, licence: str) -> BaseModel:
    import gguf

    where = str(path)
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError) as err:
        raise UserError(problem(where, f"is not a readable GGUF file ({err})")) from err
    arch = _gguf_field(reader, "general.architecture")
    if arch != "gemma3":
        raise UserError(
            problem(
                where,
                f"is a GGUF of architecture {arch!r}; only gemma3 GGUF files map back to "
                "Hugging Face tensor names",
                "register the safetensors checkpoint instead",
            )
        )
    names = gguf_to_hf_names(int(_gguf_field(reader, "gemma3.block_count")))
    shapes, unknown = {}, []
    for tensor in reader.tensors:
        hf = names.get(tensor.name)
        if hf is None:
            unknown.append(tensor.name)
            continue
        # GGUF lists dimensions innermost first; Hugging Face outermost first.
        shapes[hf] = [int(d) for d in reversed(tensor.shape.tolist())]
    if unknown:
        raise UserError(
            problem(where, f"has tensors with no Gemma 3 name: {', '.join(unknown[:5])}")
        )
    tokens = _gguf_field(reader, "tokenizer.ggml.tokens")
    template = _gguf_field(reader, "tokenizer.chat_template")
    return BaseModel(
        id=id,
        revision=revision,
        family="gemma3",
        model_type="gemma3_text",
        shapes=shapes,
        tokenizer_sha256=vocabulary_sha256(tokens) if tokens else None,
        template_sha256=text_sha256(template) if template else None,
        weights_sha256=sha256_files([path]),
        licence=licence,
        format="gguf",
        extra={"gguf_architecture": arch},
    )


def _gguf_field(reader, key: str):
    """A metadata value: a str or number, or a list for arrays; None when absent."""
    found = reader.fields.get(key)
    return None if found is None else found.contents()


def vocabulary_sha256(tokens: list[str | None]) -> str:
    """sha256 of a vocabulary given as the token string of each id (None for an unused id).

    Spaces count as SentencePiece's `▁`: GGUF stores Gemma's whitespace-run tokens with
    spaces, and transformers' GGUF conversion writes them with `▁` (measured on Gemma 3 270M:
    30 such tokens, the only difference between the two vocabularies).
    """
    normalised = [None if t is None else t.replace(" ", "\u2581") for t in tokens]
    text = json.dumps(normalised, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()


MAX_VOCABULARY = 1 << 22
"""Largest token id accepted (Gemma's vocabulary is 262,144)."""


def tokenizer_sha256(folder: Path) -> str | None:
    """The vocabulary hash of the tokenizer in `folder` (None if it has no tokenizer file)."""
    folder = Path(folder)
    if (folder / "tokenizer.json").is_file():
        return vocabulary_sha256(_tokenizer_json_vocabulary(folder / "tokenizer.json"))
    if (folder / "tokenizer.model").is_file():
        return vocabulary_sha256(_sentencepiece_vocabulary(folder / "tokenizer.model"))
    return None


def _tokenizer_json_vocabulary(path: Path) -> list[str | None]:
    data = _read_json(path, "")
    try:
        vocab = data["model"]["vocab"]
        by_id: dict[int, str] = {}
        if isinstance(vocab, dict):  # BPE, WordPiece, WordLevel: token -> id
            by_id.update({int(i): token for token, i in vocab.items()})
        else:  # Unigram: [token, score] in id order
            by_id.update({i: entry[0] for i, entry in enumerate(vocab)})
        for added in data.get("added_tokens", []):
            by_id[int(added["id"])] = added["content"]
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise UserError(
            problem(str(path), f"has no vocabulary gemmaforge can read ({err})")
        ) from err
    size = max(by_id, default=-1) + 1
    if min(by_id, default=0) < 0 or size > MAX_VOCABULARY:
        # The list below has one entry per id: a hostile file must not size it.
        raise UserError(
            problem(str(path), f"has token ids outside 0..{MAX_VOCABULARY:,} (MAX_VOCABULARY)")
        )
    return [by_id.get(i) for i in range(size)]


def _sentencepiece_vocabulary(path: Path) -> list[str | None]:
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.LoadFromSerializedProto(path.read_bytes())
    except (RuntimeError, OSError) as err:
        raise UserError(problem(str(path), f"is not a SentencePiece model ({err})")) from err
    return [processor.IdToPiece(i) for i in range(processor.GetPieceSize())]


def template_sha256(folder: Path) -> str | None:
    """The chat template hash of `folder` (None if it has no chat template)."""
    folder = Path(folder)
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return text_sha256(jinja.read_text(encoding="utf-8"))
    for name in ("chat_template.json", "processor_config.json", "tokenizer_config.json"):
        path = folder / name
        if path.is_file():
            template = _read_json(path, "").get("chat_template")
            if template:
                return text_sha256(_template_text(template))
    return None


def _template_text(template) -> str:
    """A template string; of a list of named templates, the default one (else all, as JSON)."""
    if isinstance(template, str):
        return template
    if isinstance(template, list):
        for entry in template:
            if isinstance(entry, dict) and entry.get("name") == "default":
                return str(entry.get("template", ""))
    return json.dumps(template, sort_keys=True)


# Hugging Face repo id rules: org/name, letters, digits, `-`, `_`, `.`, at most 96 each.
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")
_WINDOWS_DRIVE = re.compile(r"[A-Za-z]:")


def base_reference_problems(base_id: str | None, revision: str | None) -> list[str]:
    """Problems with naming a base by `base_id` at `revision` (empty when fine).

    A base is named by its canonical `org/name` id and a revision, never by a path: a path
    (absolute, `./`, `~`, a Windows drive, or any name that exists as a file or folder here)
    means nothing on another machine, and transformers would load the local folder instead of
    the hub's model if both existed.
    """
    found = []
    where = f"base {base_id!r}"
    if not base_id:
        found.append(
            problem(
                "base",
                "no base model id given",
                "name the base by its canonical id, e.g. google/gemma-4-E2B-it",
            )
        )
    elif _is_local(base_id):
        found.append(
            problem(
                where,
                "is a local path, not a canonical model id (nobody else can resolve it)",
                "name the base by its Hugging Face id, e.g. google/gemma-4-E2B-it, and pin "
                "--revision",
            )
        )
    elif not _REPO_ID.fullmatch(base_id) or ".." in base_id or "--" in base_id:
        found.append(
            problem(
                where,
                "is not an org/name model id",
                "use the id as on the Hugging Face Hub, e.g. google/gemma-4-E2B-it",
            )
        )
    if not revision:
        found.append(
            problem(
                where,
                "has no revision: the same id can later name other weights",
                "pin the revision (the base's commit hash), e.g. --revision 0123abc...",
            )
        )
    elif not _REVISION.fullmatch(revision) or ".." in revision:
        found.append(
            problem(
                f"revision {revision!r}",
                "is not a commit hash, tag or branch name",
                "pass the base's commit hash",
            )
        )
    return found


def _is_local(name: str) -> bool:
    return (
        name.startswith(("/", ".", "~"))
        or "\\" in name
        or "://" in name
        or bool(_WINDOWS_DRIVE.match(name))
        or Path(name).exists()
    )


GEMMA_LICENCE = "gemma"
"""Licence id for the Gemma Terms of Use (as the Hugging Face Hub spells it)."""

SHARE_ALIKE_PREFIXES = ("gpl-", "lgpl-", "agpl-", "cc-by-sa-", "cc-by-nc-sa-", "mpl-", "eupl-")
"""Licences whose derivatives must keep the same licence."""


def licence_problems(licence: str | None, where: str = "licence") -> list[str]:
    """Problems with a licence id: it must be `gemma` or one SPDX licence id (any case)."""
    if not licence:
        return [
            problem(
                where,
                "no licence given",
                "pass --licence gemma (the Gemma Terms of Use) or an SPDX id such as apache-2.0",
            )
        ]
    if licence.lower() == GEMMA_LICENCE or licence.lower() in _spdx_ids():
        return []
    return [
        problem(
            f"{where} {licence!r}",
            "is neither `gemma` nor an SPDX licence id",
            "use gemma for Gemma-derived weights, or an id from https://spdx.org/licenses/",
        )
    ]


def _spdx_ids() -> frozenset[str]:
    from license_expression import get_spdx_licensing

    symbols = get_spdx_licensing().known_symbols.values()
    return frozenset(
        s.key.lower() for s in symbols if not s.is_exception and not s.key.startswith("LicenseRef-")
    )
