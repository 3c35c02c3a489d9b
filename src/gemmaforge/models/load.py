"""Load a Gemma base model and its tokenizer/processor: local folder, GGUF file, or hub id.

Offline by default: a hub id is only fetched with `allow_download`. The dtype policy is bf16
where the device computes it natively, else fp32 — never fp16 (it overflows in Gemma 3n's conv
weights and gives NaN in Gemma 3/4 attention).

A model folder never runs code: its family is read from config.json's `model_type` as plain
JSON before transformers sees the folder (a folder with `auto_map` and an unknown type would
otherwise make transformers offer to run the folder's Python), and every transformers call
passes `trust_remote_code=False`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from gemmaforge.config import ModelConfig
from gemmaforge.errors import UserError, problem
from gemmaforge.models import gguf_cache
from gemmaforge.models.bases import WEIGHT_SUFFIXES as WEIGHT_SUFFIXES
from gemmaforge.models.bases import base_sha256
from gemmaforge.models.families import Family, family_of
from gemmaforge.progress import stage


@dataclass
class LoadedModel:
    """A base model ready for LoRA, with everything downstream needs to describe it."""

    model: Any
    tokenizer: Any
    processor: Any | None
    family: Family
    source: str
    """What the user passed (path or hub id)."""
    source_sha256: str
    """sha256 over the weight files (or the pinned hub revision), for model cards and checks."""
    device: Any
    dtype: Any
    source_path: str | None = None
    """The base's absolute path (None for a hub id), so a run finds it from any folder."""


@dataclass
class LoadedTokenizer:
    """A model's tokenizer and processor without its weights: enough to render data exactly
    as training will (`data check`), in seconds instead of the minutes weights can take."""

    tokenizer: Any
    processor: Any | None
    family: Family
    source: str


def resolve_device(preference: str = "auto"):
    import os

    import torch

    # Under a distributed launcher (torchrun, accelerate launch) each process takes its own GPU.
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if preference in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if preference == "auto":
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise UserError(
            problem(
                "model.device",
                "cuda was asked for but no CUDA GPU is visible",
                "use model.device=auto or cpu",
            )
        )
    if preference == "mps" and not torch.backends.mps.is_available():
        raise UserError(
            problem(
                "model.device",
                "mps was asked for but MPS is not available",
                "use model.device=auto or cpu",
            )
        )
    return torch.device(preference)


def bf16_supported(device) -> bool:
    """True where bf16 runs natively; emulated bf16 on old CPUs is slower than fp32."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "mps":
        try:
            torch.ones(1, dtype=torch.bfloat16, device=device).sum().item()
            return True
        except (RuntimeError, TypeError):
            return False
    return _cpu_has_native_bf16()


def _cpu_has_native_bf16() -> bool:
    import platform

    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        flags = cpuinfo.read_text(errors="ignore")
        return "avx512_bf16" in flags or "amx_bf16" in flags
    # Apple M2 and later have bf16 instructions; macOS exposes no cpuinfo, so trust arm64.
    return platform.machine() == "arm64" and platform.system() == "Darwin"


def resolve_dtype(preference: str, device):
    import torch

    if preference == "fp32":
        return torch.float32
    if preference == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError(
                problem(
                    "model.dtype",
                    "bf16 is not supported by this GPU",
                    "use model.dtype=fp32 (fp16 is never used: it overflows)",
                )
            )
        return torch.bfloat16
    return torch.bfloat16 if bf16_supported(device) else torch.float32


def load_model(cfg: ModelConfig, *, for_training: bool = True) -> LoadedModel:
    """Load the base model named by `cfg` onto its device, frozen, in the policy dtype."""
    _require_model(cfg)
    device = resolve_device(cfg.device)
    check_quantize(cfg, device)
    dtype = resolve_dtype(cfg.dtype, device)
    path = Path(cfg.name_or_path).expanduser()
    quantize = _quantization(cfg, dtype, device)
    if path.is_file() and path.suffix == ".gguf":
        loaded = _load_gguf(path, dtype)
    elif path.is_dir():
        loaded = _load_folder(
            str(path), None, dtype, local_only=True, where=str(path), quantize=quantize
        )
        loaded["sha256"] = base_sha256(path)
    elif path.exists():
        raise _neither(path)
    else:
        loaded = _load_hub(cfg, dtype, quantize)
    # A 4-bit model is placed on the GPU as it loads (device_map); bitsandbytes refuses .to().
    model = loaded["model"] if quantize else loaded["model"].to(device)
    model.requires_grad_(False)
    model.train(for_training)
    return LoadedModel(
        model=model,
        tokenizer=loaded["tokenizer"],
        processor=loaded["processor"],
        family=loaded["family"],
        source=cfg.name_or_path,
        source_sha256=loaded["sha256"],
        device=device,
        dtype=dtype,
        source_path=str(path.resolve()) if path.exists() else None,
    )


def load_tokenizer(cfg: ModelConfig) -> LoadedTokenizer:
    """The tokenizer, processor and family of the model `cfg` names, without loading weights.

    Sources resolve as in `load_model` (folder, .gguf, hub id only with allow_download).
    """
    _require_model(cfg)
    path = Path(cfg.name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        from gemmaforge.models import gguf_cache

        cached = gguf_cache.lookup(base_sha256(path))
        if cached is not None:
            return _cached_gguf_tokenizer(cached, path)
        return _gguf_tokenizer(path)
    if path.is_dir():
        return _folder_tokenizer(str(path), None, local_only=True, where=str(path))
    if path.exists():
        raise _neither(path)
    _require_download(cfg)
    return _folder_tokenizer(
        cfg.name_or_path, cfg.revision, local_only=False, where=cfg.name_or_path
    )


def _require_model(cfg: ModelConfig) -> None:
    if not cfg.name_or_path:
        raise UserError(
            problem(
                "model.name_or_path",
                "no base model given",
                "pass --model PATH (a local folder or .gguf file)",
            )
        )


def _neither(path: Path) -> UserError:
    return UserError(
        problem(
            str(path),
            "is neither a model folder nor a .gguf file",
            "pass a folder with config.json and weights, or a .gguf file",
        )
    )


def _gguf_tokenizer(path: Path) -> LoadedTokenizer:
    from transformers import AutoConfig, AutoTokenizer

    where = str(path)
    try:
        config = AutoConfig.from_pretrained(
            str(path.parent), gguf_file=path.name, trust_remote_code=False
        )
    except (ValueError, KeyError, OSError) as err:
        raise UserError(
            problem(
                where, f"cannot read this GGUF file ({err})", "pass a GGUF of a Gemma 3 text model"
            )
        ) from err
    family = family_of(config, where)
    tokenizer = AutoTokenizer.from_pretrained(
        str(path.parent), gguf_file=path.name, trust_remote_code=False
    )
    return LoadedTokenizer(tokenizer=tokenizer, processor=None, family=family, source=where)


def _load_gguf(path: Path, dtype) -> dict:
    """A GGUF's model, dequantised: from the cache of dequantised bases when this file (by
    hash) was read before, else converted (minutes for a large file) and cached."""
    from transformers import AutoModelForCausalLM, GgufConfig

    sha = base_sha256(path)
    cached = gguf_cache.lookup(sha, dtype)
    if cached is not None:
        parts = _cached_gguf_tokenizer(cached, path)
        model = AutoModelForCausalLM.from_pretrained(
            str(cached), dtype=dtype, local_files_only=True, trust_remote_code=False
        )
    else:
        size = f"{path.stat().st_size / 2**20:,.0f} MiB"
        with stage(f"reading {path.name} ({size}: tokenizer, then dequantising; once per file)"):
            parts = _gguf_tokenizer(path)
            # Always dequantise: LoRA trains against dense weights, and transformers otherwise
            # keeps packed blocks whenever the optional `kernels` package happens to be
            # installed.
            model = AutoModelForCausalLM.from_pretrained(
                str(path.parent),
                gguf_file=path.name,
                dtype=dtype,
                quantization_config=GgufConfig(gguf_file=path.name, dequantize=True),
                trust_remote_code=False,
            )
            _drop_quantization_marker(model)
            gguf_cache.store(model, parts.tokenizer, sha, dtype)
    return {
        "model": model,
        "tokenizer": parts.tokenizer,
        "processor": None,
        "family": parts.family,
        "sha256": sha,
    }


def _cached_gguf_tokenizer(cached: Path, path: Path) -> LoadedTokenizer:
    """The tokenizer of a GGUF from its cached folder. Read as the generic tokenizers backend:
    `AutoTokenizer` would rebuild a GemmaTokenizer's normaliser and pre-tokeniser from its
    class (SentencePiece-style) instead of the GGUF's own, and tokenise differently."""
    from transformers import AutoConfig
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    family = family_of(AutoConfig.from_pretrained(str(cached), local_files_only=True), str(path))
    tokenizer = TokenizersBackend.from_pretrained(str(cached), local_files_only=True)
    return LoadedTokenizer(tokenizer=tokenizer, processor=None, family=family, source=str(path))


def _drop_quantization_marker(model) -> None:
    """A dequantised GGUF model is dense, but keeps `quantization_config`/`hf_quantizer`, which
    makes PEFT and `save_pretrained` treat it as quantised. Its weights are plain tensors now."""
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False


def _load_folder(
    source: str, revision: str | None, dtype, *, local_only: bool, where: str, quantize=None
) -> dict:
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    parts = _folder_tokenizer(source, revision, local_only=local_only, where=where)
    # A processor is loaded exactly for the multimodal checkpoints.
    auto = AutoModelForImageTextToText if parts.processor else AutoModelForCausalLM
    kwargs = {"revision": revision, "local_files_only": local_only, "trust_remote_code": False}
    model = auto.from_pretrained(source, dtype=dtype, **kwargs, **(quantize or {}))
    return {
        "model": model,
        "tokenizer": parts.tokenizer,
        "processor": parts.processor,
        "family": parts.family,
    }


def _folder_tokenizer(
    source: str, revision: str | None, *, local_only: bool, where: str
) -> LoadedTokenizer:
    """The tokenizer of a folder or hub id, and its processor if the checkpoint is multimodal."""
    from transformers import AutoConfig, AutoProcessor, AutoTokenizer

    check_family_first(source, revision, local_only=local_only, where=where)
    kwargs = {"revision": revision, "local_files_only": local_only, "trust_remote_code": False}
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        raise UserError(
            problem(
                where,
                f"not a model folder transformers can read ({err})",
                "pass a folder with config.json and weights",
            )
        ) from err
    family = family_of(config, where)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    multimodal = family.is_multimodal(config)
    processor = AutoProcessor.from_pretrained(source, **kwargs) if multimodal else None
    return LoadedTokenizer(tokenizer=tokenizer, processor=processor, family=family, source=where)


def check_family_first(
    source: str, revision: str | None = None, *, local_only: bool = True, where: str | None = None
) -> Family:
    """The family named by `source`'s config.json, read as plain JSON before any transformers
    call that could import the folder's code; a UserError for a type that is not a Gemma."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        config_file = folder / "config.json"
    else:
        from huggingface_hub import hf_hub_download

        try:
            config_file = Path(
                hf_hub_download(
                    source, "config.json", revision=revision, local_files_only=local_only
                )
            )
        except Exception as err:  # any failure is "cannot read its config"
            raise UserError(
                problem(
                    where or source,
                    f"its config.json cannot be fetched ({type(err).__name__})",
                    "check the model id, revision and model.allow_download",
                )
            ) from None
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(
            problem(
                where or source,
                f"is not a model folder: it has no readable config.json ({err})",
                "pass a folder with config.json and weights",
            )
        ) from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    return family_of(SimpleNamespace(model_type=model_type), where or source)


def _load_hub(cfg: ModelConfig, dtype, quantize=None) -> dict:
    _require_download(cfg)
    loaded = _load_folder(
        cfg.name_or_path,
        cfg.revision,
        dtype,
        local_only=False,
        where=cfg.name_or_path,
        quantize=quantize,
    )
    commit = getattr(loaded["model"].config, "_commit_hash", None) or cfg.revision or "unpinned"
    loaded["sha256"] = f"hub:{cfg.name_or_path}@{commit}"
    return loaded


def _require_download(cfg: ModelConfig) -> None:
    """A hub id is only fetched when downloads are allowed; else say how to get it."""
    source = cfg.name_or_path
    if cfg.allow_download:
        from gemmaforge import netguard

        netguard.allow_hub("model.allow_download")
        return
    if _looks_like_path(source):
        # A path that is not there is a missing file, not a hub id: no download hint.
        raise UserError(
            problem(
                source,
                "no such file or folder",
                "check the path (a model folder or .gguf file), or pass the base model's "
                "current location",
            )
        )
    local = f"models/{source.split('/')[-1]}"
    raise UserError(
        problem(
            source,
            "is not a local folder or .gguf file, and downloads are off "
            "(gemmaforge runs offline by default)",
            f"download it once with `hf download {source} --local-dir {local}` and pass "
            f"{local} as the model (training and planning also take --allow-download, or "
            "model.allow_download=true in the config)",
        )
    )


def _looks_like_path(source: str) -> bool:
    """True for text no hub id looks like: absolute or ./ paths, a .gguf name, or more than
    one slash (hub ids are NAME or OWNER/NAME)."""
    return (
        source.startswith(("/", ".", "~"))
        or source.endswith(".gguf")
        or source.count("/") > 1
        or "\\" in source
    )


# Modules never quantised: the towers (small, and their convolutions/clippable linears are not
# plain nn.Linear), their projections, and the LM head (tied to the embeddings, and the loss
# needs it exact). Names are suffixes bitsandbytes matches against every module's path.
KEEP_UNQUANTIZED = (
    "lm_head",
    "vision_tower",
    "audio_tower",
    "embed_vision",
    "embed_audio",
    "multi_modal_projector",
)


def check_quantize(cfg: ModelConfig, device) -> None:
    """Refuse 4-bit QLoRA where it cannot run, naming the device and the fix (before loading)."""
    if cfg.quantize == "none":
        return
    if device.type != "cuda":
        raise UserError(
            problem(
                "model.quantize",
                f"4bit needs an NVIDIA GPU (bitsandbytes NF4 kernels); this run is on "
                f"{device.type}",
                "use model.quantize=none (bf16 LoRA) on CPU and Apple Silicon, or train on a "
                "CUDA machine",
            )
        )
    if Path(cfg.name_or_path or "").suffix == ".gguf":
        raise UserError(
            problem(
                "model.quantize",
                f"{cfg.name_or_path} is a GGUF file: it is dequantised to dense weights on load, "
                "and 4bit quantises transformers checkpoints only",
                "pass the model's transformers folder, or use model.quantize=none",
            )
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise UserError(
            problem(
                "model.quantize",
                "4bit needs the bitsandbytes package, which is not installed",
                "pip install 'gemmaforge[cuda]' (or pip install bitsandbytes)",
            )
        ) from err


def _quantization(cfg: ModelConfig, dtype, device) -> dict | None:
    """from_pretrained arguments for QLoRA: NF4 with double quantisation, computing in the
    run's dtype (bf16 where supported), loaded straight onto the GPU."""
    if cfg.quantize == "none":
        return None
    from transformers import BitsAndBytesConfig

    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
        llm_int8_skip_modules=list(KEEP_UNQUANTIZED),
    )
    return {"quantization_config": config, "device_map": {"": device.index or 0}}
