"""The hub gate on real tiny adapters and hand-made hostile files: what it accepts (a tiny
run's adapter against its own base, for every family and tower), and what it refuses, with
the message a user sees."""

from __future__ import annotations

import json
import pickle
import shutil
import struct
import time

import pytest

from gemmaforge import signing
from gemmaforge.errors import UserError
from gemmaforge.hub import gate
from gemmaforge.hub.bases import BaseModel, read_base
from gemmaforge.hub.gate import (
    check_adapter_folder,
    check_files,
    check_fits,
    check_relative_path,
    read_safetensors_header,
)

REV = "0123456789abcdef0123456789abcdef01234567"


def train_tiny(model_dir, folder, towers=("text",), dora=False):
    """One optimizer step of LoRA on a tiny model: a real PEFT adapter folder in seconds."""
    from gemmaforge.config import Config
    from gemmaforge.train.trainer import train
    from mm_tasks import write_task
    from test_multimodal_train import write_mixed

    folder.mkdir(parents=True, exist_ok=True)
    if towers == ("text",):
        row = {
            "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
        }
        data = folder / "train.jsonl"
        data.write_text((json.dumps(row) + "\n") * 4)
    elif "audio" in towers:
        data = write_mixed(folder, 2)
    else:
        data = write_task(folder, "image", 4, seed=0)
    cfg = Config.model_validate(
        {
            "model": {"name_or_path": str(model_dir)},
            "data": {"train": str(data), "val_fraction": 0.0},
            "lora": {"r": 4, "alpha": 8, "towers": list(towers), "dora": dora},
            "train": {"output_dir": str(folder / "run"), "max_steps": 1, "batch_size": 2},
        }
    )
    return train(cfg).run_dir


@pytest.fixture(scope="module")
def runs(tiny_dir, tmp_path_factory):
    """`runs(family, towers=("text",), dora=False) -> run folder`, trained once per module."""
    built = {}

    def build(family, towers=("text",), dora=False):
        key = (family, tuple(towers), dora)
        if key not in built:
            folder = tmp_path_factory.mktemp(f"run-{family}")
            built[key] = train_tiny(tiny_dir(family), folder, tuple(towers), dora)
        return built[key]

    return build


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return signing.keygen(tmp_path_factory.mktemp("keys") / "publisher")


def base_of(tiny_dir, family) -> BaseModel:
    return read_base(tiny_dir(family), f"google/tiny-{family}", REV, "gemma")


def publishable(run, base, private, folder):
    """What `hub publish` makes of a run: its adapter folder, naming the base, signed."""
    shutil.copytree(run / "adapter", folder)
    gate.name_base(folder, base.id, base.revision)
    signing.sign(folder, private)
    return folder


# --- accepted --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "family,towers,expected",
    [
        ("gemma3", ("text",), ["text"]),
        ("gemma3n", ("text", "vision", "audio"), ["text", "vision", "audio"]),
        ("gemma4", ("text", "vision", "audio"), ["text", "vision", "audio"]),
        ("gemma4", ("text", "audio"), ["text", "audio"]),
        # transformers 5.23 saves multimodal Gemma 3 in the pre-4.52 layout
        # (`language_model.model.*`): the fit goes through CHECKPOINT_LAYOUTS.
        ("gemma3-vision", ("text", "vision"), ["text", "vision"]),
    ],
    ids=["gemma3-text", "gemma3n-all", "gemma4-all", "gemma4-text-audio", "gemma3-vision"],
)
def test_a_run_adapter_passes_against_its_own_base(
    family, towers, expected, runs, tiny_dir, keys, tmp_path
):
    run = runs(family, towers)
    base = base_of(tiny_dir, family)
    assert base.matches_run(json.loads((run / "run.json").read_text())["base_sha256"])
    folder = publishable(run, base, keys[0], tmp_path / "adapter")
    assert check_adapter_folder(folder, base, keys[1]) == []
    assert gate.modalities(folder) == expected
    assert gate.check_licence("gemma", base) == []


def test_a_dora_adapter_fits_with_its_magnitude_vectors(runs, tiny_dir):
    run = runs("gemma3", dora=True)
    modules = gate.adapter_modules(run / "adapter")
    q = modules["model.layers.0.self_attn.q_proj"]
    assert (q.kind, q.lora_a, q.lora_b, q.magnitude) == ("linear", (4, 64), (64, 4), (64,))
    assert check_fits(run / "adapter", base_of(tiny_dir, "gemma3")) == []


def test_adapter_modules_reads_every_lora_pair(runs):
    modules = gate.adapter_modules(runs("gemma4", ("text", "vision", "audio")) / "adapter")
    # Gemma 4's tower linears are adapted inside their clippable wrapper (`.linear`).
    proj = modules["model.vision_tower.encoder.layers.0.self_attn.q_proj.linear"]
    assert proj.rank == 4 and proj.lora_b == (32, 4)
    down = modules["model.language_model.layers.0.mlp.down_proj"]
    assert (down.lora_a, down.lora_b) == ((4, 128), (64, 4))


# --- fit -------------------------------------------------------------------------------------


def test_gemma3_adapter_claimed_for_gemma4_is_refused_naming_the_modules(runs, tiny_dir):
    problems = check_fits(runs("gemma3") / "adapter", base_of(tiny_dir, "gemma4"))
    text = "\n".join(problems)
    assert problems[0].startswith("model.layers.0.mlp.down_proj: is adapted (lora_A [4, 128])")
    assert "base google/tiny-gemma4@" in problems[0]
    assert "no model.layers.0.mlp.down_proj.weight in its checkpoint" in problems[0]
    assert "... and 18 more modules that do not fit" in text  # 28 modules, 10 listed
    assert "its tokenizer vocabulary" in text and "its chat template" in text


def test_shape_mismatch_names_the_module_and_both_shapes(runs, tiny_dir):
    """Gemma 4's double-wide MLP on its KV-shared layers meets Gemma 3n's plain one."""
    problems = check_fits(runs("gemma4") / "adapter", base_of(tiny_dir, "gemma3n"))
    assert (
        "model.language_model.layers.2.mlp.down_proj: lora_A [4, 256] and lora_B [64, 4] need "
        "a base weight of shape [64, 256], but base google/tiny-gemma3n@"
    ) in "\n".join(problems)
    assert "has model.language_model.layers.2.mlp.down_proj.weight of shape [64, 128]" in (
        "\n".join(problems)
    )


def test_one_changed_base_shape_is_the_only_problem(runs, tiny_dir):
    base = base_of(tiny_dir, "gemma3")
    base.shapes["model.layers.1.self_attn.v_proj.weight"] = [48, 64]
    assert check_fits(runs("gemma3") / "adapter", base) == [
        f"model.layers.1.self_attn.v_proj: lora_A [4, 64] and lora_B [32, 4] need a base weight "
        f"of shape [32, 64], but base google/tiny-gemma3@{REV} has "
        "model.layers.1.self_attn.v_proj.weight of shape [48, 64]. Fix: claim the base the "
        "adapter was trained on"
    ]


def test_rank_must_agree_with_adapter_config(runs, tmp_path, tiny_dir):
    folder = tmp_path / "adapter"
    shutil.copytree(runs("gemma3") / "adapter", folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["r"] = 8
    (folder / "adapter_config.json").write_text(json.dumps(config))
    problems = check_fits(folder, base_of(tiny_dir, "gemma3"))
    assert "has rank 4 (lora_A [4, 128]) but adapter_config.json says r=8" in problems[0]
    config["rank_pattern"] = {"down_proj": 4, r"layers\.\d+\.(self_attn|mlp)\.\w+": 4}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    assert check_fits(folder, base_of(tiny_dir, "gemma3")) == []


def test_tokenizer_of_another_base_is_refused(runs, tiny_dir, tmp_path):
    folder = tmp_path / "adapter"
    shutil.copytree(runs("gemma4") / "adapter", folder)
    shutil.copy(tiny_dir("gemma3n") / "tokenizer.json", folder / "tokenizer.json")
    (problem,) = check_fits(folder, base_of(tiny_dir, "gemma4"))
    assert "its tokenizer vocabulary (sha256" in problem
    assert "differs from the base google/tiny-gemma4@" in problem


@pytest.mark.parametrize("family", ["gemma3", "gemma3-vision", "gemma3n", "gemma4"])
def test_every_adaptable_module_maps_to_its_checkpoint_weight(family, tiny_dir):
    """PEFT names modules as the transformers class does; the checkpoint may name the weight
    otherwise (transformers 5.23 still saves multimodal Gemma 3 as `language_model.model.*` and
    `vision_tower.*` while the class says `model.language_model.*`). Every Linear and Embedding
    of every tiny family's class must find its weight, with the module's shape."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    auto = AutoModelForCausalLM if family == "gemma3" else AutoModelForImageTextToText
    model = auto.from_pretrained(tiny_dir(family))
    base = base_of(tiny_dir, family)
    modules = {
        name: list(module.weight.shape)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear | torch.nn.Embedding)
    }
    assert len(modules) > 20
    for name, shape in modules.items():
        weight = gate.checkpoint_weight(name, base.shapes)
        assert weight is not None and base.shapes[weight] == shape, (name, weight)
    if family == "gemma3-vision":
        assert gate.checkpoint_weight("model.language_model.layers.0.mlp.up_proj", base.shapes) == (
            "language_model.model.layers.0.mlp.up_proj.weight"
        )


def test_lm_head_lora_finds_the_tied_embedding(tiny_dir):
    shapes = base_of(tiny_dir, "gemma3").shapes
    assert "lm_head.weight" not in shapes
    assert gate.checkpoint_weight("lm_head", shapes) == "model.embed_tokens.weight"


def test_unknown_adapter_tensors_are_refused(tmp_path, runs):
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "adapter"
    shutil.copytree(runs("gemma3") / "adapter", folder)
    save_file(
        {"base_model.model.lm_head.weight": torch.zeros(4, 4)},
        folder / "adapter_model.safetensors",
    )
    with pytest.raises(
        UserError, match=r"'base_model\.model\.lm_head\.weight', which is not a LoRA"
    ):
        gate.adapter_modules(folder)


# --- files -----------------------------------------------------------------------------------


def test_pickle_renamed_safetensors_is_refused(tmp_path):
    import torch

    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(pickle.dumps({"w": [1, 2]}, protocol=4))
    torch.save({"w": torch.zeros(2)}, folder / "weights.safetensors")
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps([1], protocol=2))
    problems = "\n".join(check_files(folder))
    assert "adapter_model.safetensors: is a pickle (protocol 4), not safetensors" in problems
    assert "weights.safetensors: is a zip archive (PyTorch .pt/.bin files are zip" in problems
    assert "pytorch_model.bin: is not a file the hub accepts (it is a pickle (protocol 2))" in (
        problems
    )


def test_executables_archives_and_scripts_are_refused_whatever_their_name(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "README.md").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(100))
    (folder / "notes.txt").write_text("#!/bin/sh\nrm -rf ~\n")
    (folder / "config.json").write_bytes(b"MZ\x90\x00")
    (folder / "card.png").write_bytes(b"PK\x03\x04" + bytes(40))
    (folder / "tokenizer.model").write_bytes(b"\x1f\x8b\x08" + bytes(20))
    (folder / "run.sh").write_text("echo hi\n")
    problems = "\n".join(check_files(folder))
    assert "README.md: is an ELF executable, not text" in problems
    assert "notes.txt: is a script (it starts with #!), not text" in problems
    assert "config.json: is a Windows executable" in problems
    assert "card.png: is not a PNG image" in problems
    assert "tokenizer.model: is a gzip archive, not a SentencePiece model" in problems
    assert "run.sh: is not a file the hub accepts" in problems


def test_symlinks_hidden_and_deep_files_are_refused(tmp_path):
    folder = tmp_path / "adapter"
    (folder / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "secret.json").write_text("{}")
    (folder / "link.json").symlink_to(tmp_path / "secret.json")
    (folder / "linkdir").symlink_to(tmp_path)
    (folder / ".env").write_text("TOKEN=x\n")
    (folder / "a" / "b" / "c" / "deep.json").write_text("{}")
    (folder / "a" / "b" / "ok.json").write_text("{}")
    problems = "\n".join(check_files(folder))
    assert f"link.json: is a symbolic link (to {tmp_path / 'secret.json'})" in problems
    assert "linkdir: is a symbolic link" in problems
    assert "file name '.env': is or lies in a hidden file or folder" in problems
    assert "file name 'a/b/c/deep.json': is nested 4 deep, over the limit of 3" in problems
    assert "ok.json" not in problems


@pytest.mark.parametrize(
    "name,what",
    [
        ("../adapter_config.json", "contains a `..` or `.` component"),
        ("eval/../../x.json", "contains a `..` or `.` component"),
        ("/etc/passwd", "is an absolute path"),
        ("C:/Windows/x.json", "is an absolute path"),
        ("eval\\x.json", "contains a backslash"),
        ("./x.json", "contains a `..` or `.` component"),
        (".git/config", "is or lies in a hidden file or folder"),
        ("a//b.json", "has an empty part"),
        ("x;rm.json", "characters other than letters"),
        ("", "is empty"),
    ],
)
def test_unsafe_file_names_are_refused(name, what):
    (problem,) = check_relative_path(name)
    assert what in problem


def test_safe_file_names_pass():
    for name in ("adapter_model.safetensors", "eval/report.json", "a/b/card-1.png", "_x.md"):
        assert check_relative_path(name) == []


def test_size_caps_are_named(tmp_path, monkeypatch):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "big.json").write_text(json.dumps("x" * 2000))
    monkeypatch.setattr(gate, "MAX_JSON_BYTES", 1000)
    monkeypatch.setattr(gate, "MAX_TOTAL_BYTES", 1500)
    problems = "\n".join(check_files(folder))
    assert "big.json: is 2,002 bytes, over the 1,000-byte limit (MAX_JSON_BYTES)" in problems
    assert "holds 2,002 bytes, over the limit of 1,500 (MAX_TOTAL_BYTES)" in problems


def test_allowed_kinds_pass(tmp_path, tiny_dir):
    from PIL import Image

    folder = tmp_path / "adapter"
    (folder / "eval").mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(tiny_dir("gemma4") / name, folder / name)
    Image.new("RGB", (4, 4)).save(folder / "card.png")
    (folder / "README.md").write_text("---\nlicense: gemma\n---\n# Card\n")
    (folder / "config.yaml").write_text("lora:\n  r: 4\n")
    (folder / "eval" / "metrics.jsonl").write_text('{"loss": 1}\n{"loss": 0.5}\n')
    assert check_files(folder) == []


def test_a_real_sentencepiece_model_passes(tmp_path):
    import sentencepiece

    text = tmp_path / "text.txt"
    text.write_text("\n".join(f"the cow drinks water number {i}" for i in range(200)))
    sentencepiece.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(tmp_path / "sp"), vocab_size=40, minloglevel=2
    )
    folder = tmp_path / "adapter"
    folder.mkdir()
    shutil.copy(tmp_path / "sp.model", folder / "tokenizer.model")
    assert check_files(folder) == []


# --- the strict safetensors parse ------------------------------------------------------------


def write_safetensors(path, header: dict, data: bytes):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def refused(path) -> str:
    with pytest.raises(UserError) as caught:
        read_safetensors_header(path)
    return str(caught.value)


def test_a_file_saved_by_safetensors_reads_back_exactly(tmp_path):
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    tensors = {
        "a": torch.zeros(3, 5),
        "b": torch.ones(7, dtype=torch.bfloat16),
        "c": torch.zeros(2, 2, dtype=torch.int8),
        "d": torch.zeros(0, 4),
        "e": torch.zeros(4, dtype=torch.float8_e4m3fn),
    }
    path = tmp_path / "x.safetensors"
    save_file(tensors, path, metadata={"format": "pt"})
    infos = read_safetensors_header(path)
    assert {n: (i.dtype, i.shape) for n, i in infos.items()} == {
        "a": ("F32", (3, 5)),
        "b": ("BF16", (7,)),
        "c": ("I8", (2, 2)),
        "d": ("F32", (0, 4)),
        "e": ("F8_E4M3", (4,)),
    }
    with safe_open(path, "pt") as handle:
        assert all(handle.get_tensor(n).shape == tensors[n].shape for n in tensors)


def test_a_10_gb_declared_header_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 10 * 1024**3) + b'{"a": {"dtype": "F32"')
    start = time.perf_counter()
    message = refused(path)
    assert time.perf_counter() - start < 0.5
    assert "declares a 10,737,418,240-byte safetensors header, over the 104,857,600-byte" in (
        message
    )
    assert "not read" in message


def test_overlapping_offsets_are_refused(tmp_path):
    header = {
        "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
    }
    path = write_safetensors(tmp_path / "x.safetensors", header, bytes(24))
    assert "tensor 'b' bytes [8, 24) overlap tensor 'a' (which ends at 16)" in refused(path)


def test_trailing_bytes_and_gaps_are_refused(tmp_path):
    header = {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    path = write_safetensors(tmp_path / "x.safetensors", header, bytes(16) + b"hidden")
    assert "has 6 trailing bytes after the last tensor" in refused(path)
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}
    path = write_safetensors(tmp_path / "y.safetensors", header, bytes(16))
    assert "has 8 unused bytes before 'a'" in refused(path)


def test_offsets_past_the_end_are_refused(tmp_path):
    header = {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    path = write_safetensors(tmp_path / "x.safetensors", header, bytes(8))
    assert "past its end (8): truncated" in refused(path)


@pytest.mark.parametrize(
    "entry,what",
    [
        ({"dtype": "U32", "shape": [1], "data_offsets": [0, 4]}, "has dtype 'U32', not one of"),
        ({"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}, "spans 16 bytes but F32 [3]"),
        ({"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}, "not a list of non-negative"),
        ({"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}, "not [start, end] with start"),
        ({"dtype": "F32", "shape": [4]}, "must have exactly dtype, shape and data_offsets"),
        ({"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}, "not a list of non-neg"),
    ],
)
def test_bad_tensor_entries_are_refused(entry, what, tmp_path):
    path = write_safetensors(tmp_path / "x.safetensors", {"a": entry}, bytes(16))
    assert what in refused(path)


def test_bad_metadata_duplicates_and_non_json_are_refused(tmp_path):
    ok = {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}
    path = write_safetensors(tmp_path / "m.safetensors", {"__metadata__": {"a": 1}, "x": ok}, b"!")
    assert "__metadata__ must map strings to strings" in refused(path)
    raw = b'{"x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "x": {}}'
    path = tmp_path / "d.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"!")
    assert "duplicate key(s) x" in refused(path)
    path.write_bytes(struct.pack("<Q", 3) + b"abc")
    assert "is not valid JSON" in refused(path)
    path.write_bytes(b"\x01\x00")
    assert "too short for a safetensors file" in refused(path)


# --- the whole folder ------------------------------------------------------------------------


def test_the_whole_gate_refuses_an_unsigned_or_altered_or_misnamed_adapter(
    runs, tiny_dir, keys, tmp_path
):
    run, base = runs("gemma3"), base_of(tiny_dir, "gemma3")
    private, public = keys
    # As trained: names its base by a local path, not signed.
    raw = tmp_path / "raw"
    shutil.copytree(run / "adapter", raw)
    problems = "\n".join(check_adapter_folder(raw, base, public))
    assert "is not signed (no model.sig)" in problems
    assert "adapter_config.json: base " in problems and "is a local path" in problems
    # name_base points PEFT's card at the canonical id too; a card that disagrees is refused.
    folder = publishable(run, base, private, tmp_path / "published")
    card = (folder / "README.md").read_text()
    assert f"base_model: {base.id}\n" in card and f"base_model:adapter:{base.id}" in card
    (folder / "README.md").write_text(card.replace(f"base_model: {base.id}", "base_model: x/y"))
    signing.sign(folder, private)
    (problem,) = check_adapter_folder(folder, base, public)
    assert "its front matter names base_model 'x/y', but adapter_config.json names" in problem
    (folder / "README.md").write_text(card)
    signing.sign(folder, private)
    assert check_adapter_folder(folder, base, public) == []
    # One byte of the weights changed after signing: the signature names the file.
    weights = folder / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    (problem,) = check_adapter_folder(folder, base, public)
    assert "adapter_model.safetensors: was changed after signing" in problem
    # Claimed for another base than the one it names.
    other = BaseModel.from_dict({**base.to_dict(), "id": "google/other"})
    assert any(
        "names base google/tiny-gemma3@" in p and "not the claimed google/other@" in p
        for p in check_adapter_folder(folder, other, None)
    )


def test_the_whole_gate_stops_at_a_pickled_adapter(tmp_path, tiny_dir):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(pickle.dumps(object, protocol=5))
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4}')
    (problem,) = check_adapter_folder(folder, base_of(tiny_dir, "gemma3"), None)
    assert "adapter_model.safetensors: is a pickle (protocol 5), not safetensors" in problem


def test_licence_policy(tiny_dir):
    gemma = base_of(tiny_dir, "gemma3")
    assert gate.check_licence("gemma", gemma) == []
    (problem,) = gate.check_licence("apache-2.0", gemma)
    assert "is under the Gemma Terms of Use" in problem and "--licence gemma" in problem
    assert "no licence given" in gate.check_licence("", gemma)[0]
    apache = BaseModel.from_dict({**gemma.to_dict(), "licence": "apache-2.0"})
    assert gate.check_licence("mit", apache) == []
    gpl = BaseModel.from_dict({**gemma.to_dict(), "licence": "gpl-3.0-only"})
    assert "share-alike licence gpl-3.0-only" in gate.check_licence("mit", gpl)[0]
    assert gate.check_licence("GPL-3.0-only", gpl) == []


def test_check_base_reference_refuses_local_paths():
    assert "is a local path" in gate.check_base_reference("./runs/base", REV)[0]
    assert gate.check_base_reference("google/gemma-4-E2B-it", REV) == []


def test_hostile_json_and_case_collisions_are_problems_not_crashes(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "deep.json").write_text("[" * 100_000)
    (folder / "card.md").write_text("a\n")
    (folder / "Card.md").write_text("b\n")
    problems = "\n".join(check_files(folder))
    assert "deep.json: is not valid JSON" in problems
    assert "differs from Card.md only by case" in problems or "differs from card.md" in problems
    raw = b"[" * 100_000
    path = tmp_path / "deep.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    assert "its safetensors header is not valid JSON" in refused(path)


def test_unusable_rank_pattern_is_a_problem(runs, tmp_path):
    folder = tmp_path / "adapter"
    shutil.copytree(runs("gemma3") / "adapter", folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["rank_pattern"] = {"q_proj(": 4}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="rank_pattern: is unusable"):
        gate.adapter_modules(folder)


def test_a_tokenizer_with_a_huge_token_id_is_a_problem(runs, tiny_dir, tmp_path):
    folder = tmp_path / "adapter"
    shutil.copytree(runs("gemma3") / "adapter", folder)
    data = json.loads((folder / "tokenizer.json").read_text())
    data["added_tokens"].append({"id": 10**12, "content": "<boom>"})
    (folder / "tokenizer.json").write_text(json.dumps(data))
    (problem,) = check_fits(folder, base_of(tiny_dir, "gemma3"))
    assert "has token ids outside 0..4,194,304 (MAX_VOCABULARY)" in problem


def test_too_many_files_stops_the_walk(tmp_path, monkeypatch):
    folder = tmp_path / "adapter"
    folder.mkdir()
    for i in range(6):
        (folder / f"f{i}.json").write_text("{}")
    monkeypatch.setattr(gate, "MAX_FILES", 4)
    assert check_files(folder) == [f"{folder}: holds more than 4 files, the limit (MAX_FILES)"]
