"""A finished run folder reads back, and refuses a base model it was not trained on."""

from __future__ import annotations

import pytest
import torch

from gemmaforge.errors import UserError
from gemmaforge.infer.load import load_run
from gemmaforge.runs import open_run
from gemmaforge.train.trainer import train
from test_train import run_config, write_task


@pytest.fixture(scope="module")
def finished_run(tiny_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    data = write_task(tmp / "train.jsonl", rows=16)
    return train(run_config(tiny_dir("gemma3"), data, tmp / "run", max_steps=3))


def test_open_and_load_a_run(finished_run):
    run = open_run(finished_run.run_dir)
    assert run.family == "gemma3" and run.config.train.max_steps == 3
    _, model = load_run(run)
    ids = torch.tensor([[2, 20, 21, 22]])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, finished_run.model(input_ids=ids).logits)


def test_another_base_is_refused_with_both_hashes(finished_run, tmp_path):
    from gemmaforge.models.tiny import make_tiny

    other = make_tiny("gemma3", tmp_path / "other", seed=1)
    run = open_run(finished_run.run_dir)
    with pytest.raises(UserError) as err:
        load_run(run, base=str(other))
    assert run.base_sha256 in str(err.value) and "has sha256" in str(err.value)


def test_not_a_run_folder(tmp_path):
    with pytest.raises(UserError, match="no such run folder"):
        open_run(tmp_path / "nope")
    with pytest.raises(UserError, match=r"not a finished run folder \(missing run.json"):
        open_run(tmp_path)


def test_a_moved_run_finds_its_relative_base_by_hash(tiny_dir, tmp_path, monkeypatch):
    """A run trained on `--model base` (relative) still finds its base from another folder,
    after the base moved, and says which option to pass when the base is gone."""
    import json
    import shutil

    from gemmaforge.infer.session import open_session
    from gemmaforge.models.bases import run_base

    monkeypatch.setenv("GEMMAFORGE_CACHE_DIR", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(tiny_dir("gemma3"), work / "base")
    write_task(work / "train.jsonl", rows=8)
    monkeypatch.chdir(work)
    train(run_config("base", "train.jsonl", "run", max_steps=1, eval_every=0))
    record = json.loads((work / "run" / "run.json").read_text())
    assert record["base_model"] == "base"
    assert record["base_path"] == str((work / "base").resolve())
    assert "Base weights at training time" in (work / "run" / "README.md").read_text()

    # From another folder: found at the recorded absolute path.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = open_run(work / "run")
    assert run_base(run) == str((work / "base").resolve())

    # The base moved into the current folder under its own name: found there, and a session
    # opens on it with the run's adapter (the hash is checked as it loads).
    (work / "base").rename(elsewhere / "base")
    assert run_base(run) == str(elsewhere / "base")
    session = open_session(None, [("adapter", str(work / "run"))], device="cpu")
    assert session.loaded.source == str(elsewhere / "base")

    # Moved somewhere gemmaforge has seen it (here: hashed by `export --base`): the index.
    (elsewhere / "base").rename(tmp_path / "models")
    from gemmaforge.models.bases import base_sha256

    base_sha256(tmp_path / "models")
    assert run_base(run) == str(tmp_path / "models")

    # Gone: the error names the verb's own option, never a hub download.
    shutil.rmtree(tmp_path / "models")
    with pytest.raises(UserError) as err:
        run_base(run, "--base")
    text = str(err.value)
    assert "pass --base PATH" in text and "hf download" not in text and "allow" not in text


def test_a_missing_path_is_not_a_hub_id(tmp_path):
    from gemmaforge.config import ModelConfig
    from gemmaforge.models.load import load_model

    with pytest.raises(UserError) as err:
        load_model(ModelConfig(name_or_path=str(tmp_path / "gone")), for_training=False)
    assert "no such file or folder" in str(err.value) and "hf download" not in str(err.value)


def test_base_hash_is_cached_by_size_and_mtime(tmp_path):
    import os

    from gemmaforge.models.bases import base_sha256

    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"abc")
    first = base_sha256(weights)
    stat = weights.stat()
    # Same size and mtime: the cached hash is trusted (the file is not read again).
    weights.write_bytes(b"xyz")
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert base_sha256(weights) == first
    # Another mtime: hashed again.
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert base_sha256(weights) != first


def test_no_checkpointing_deprecation_warning_on_load(finished_run):
    """PEFT's `is_gradient_checkpointing` probe no longer prints transformers' FutureWarning
    on every generate/chat/eval/export (models/peft_compat.py)."""
    import inspect
    import warnings

    import peft.peft_model

    # The workaround is still needed: when PEFT stops probing the old property, drop it.
    assert "is_gradient_checkpointing" in inspect.getsource(peft.peft_model), (
        "PEFT no longer probes is_gradient_checkpointing: remove models/peft_compat.py"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_run(open_run(finished_run.run_dir))
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
