"""Multimodal training end to end on tiny Gemma 3n / Gemma 4: every media format, mixed
datasets, tower LoRA, unused encoders released, checkpointing, and media validated up front."""

from __future__ import annotations

import json

import pytest

from gemmaforge.config import Config
from gemmaforge.errors import UserError
from gemmaforge.train.trainer import train
from mm_tasks import write_csv_formats, write_task
from test_train import losses


def config(model_dir, train_file, out, **settings) -> Config:
    train_settings = {"max_steps": 8, "batch_size": 4, "lr": 1e-2, "seed": 0}
    train_settings.update(settings.pop("train", {}))
    return Config.model_validate(
        {
            "model": {"name_or_path": str(model_dir)},
            "data": {"train": str(train_file), "val_fraction": 0.0, **settings.pop("data", {})},
            "lora": {"r": 8, "alpha": 16, **settings.pop("lora", {})},
            "train": {"output_dir": str(out), **train_settings},
        }
    )


@pytest.fixture(scope="module")
def csv_files(tmp_path_factory):
    return write_csv_formats(tmp_path_factory.mktemp("csv"), rows=16)


@pytest.mark.parametrize("fmt", ["caption", "vqa", "transcription", "audio_qa", "audiovisual"])
def test_every_media_format_trains(fmt, csv_files, tiny_dir, tmp_path):
    result = train(config(tiny_dir("gemma4"), csv_files[fmt], tmp_path / "run"))
    report = json.loads((result.run_dir / "data_report.json").read_text())
    assert report["files"][0]["format"] == fmt
    expected_images = 16 if fmt in ("caption", "vqa", "audiovisual") else 0
    assert report["images"] == expected_images
    assert report["audio_clips"] == (
        16 if fmt in ("transcription", "audio_qa", "audiovisual") else 0
    )
    curve = losses(result.run_dir)
    assert sum(curve[-3:]) / 3 < 0.7 * curve[0], curve


def write_mixed(folder, kind_rows=8):
    """Text-only, image and audio rows in one JSONL."""
    image = write_task(folder, "image", kind_rows, seed=3).read_text().splitlines()
    audio = write_task(folder, "audio", kind_rows, seed=4).read_text().splitlines()
    text = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "Say hi."},
                    {"role": "assistant", "content": "hi"},
                ]
            }
        )
    ] * kind_rows
    path = folder / "mixed.jsonl"
    path.write_text(
        "\n".join(x for trio in zip(image, audio, text, strict=True) for x in trio) + "\n"
    )
    return path


@pytest.mark.parametrize("family", ["gemma3n", "gemma4"])
@pytest.mark.parametrize("towers", [["text"], ["text", "vision", "audio"]], ids=["text", "all"])
def test_mixed_dataset_with_and_without_tower_lora(family, towers, tiny_dir, tmp_path):
    data = write_mixed(tmp_path)
    cfg = config(
        tiny_dir(family),
        data,
        tmp_path / "run",
        lora={"towers": towers},
        train={"gradient_checkpointing": True, "max_steps": 10},
    )
    result = train(cfg)
    names = [n for n, p in result.model.named_parameters() if p.requires_grad]
    for tower in ("vision", "audio"):
        adapted = [n for n in names if f"{tower}_tower" in n or f"embed_{tower}" in n]
        assert bool(adapted) == (tower in towers), (tower, adapted[:3])
    assert not [n for n in names if "Clippable" in n]
    curve = losses(result.run_dir)
    assert sum(curve[-3:]) / 3 < curve[0], curve


def test_gemma4_clippable_linear_needs_the_inner_linear_workaround(tiny_dir):
    """PEFT refuses Gemma4ClippableLinear itself, which is why towers target `.linear`."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_dir("gemma4"))
    wrapper = next(
        n for n, m in model.named_modules() if type(m).__name__ == "Gemma4ClippableLinear"
    )
    with pytest.raises(ValueError, match="not supported"):
        get_peft_model(model, LoraConfig(target_modules=[wrapper]))


def test_unused_encoders_are_released_for_text_only_data(tiny_dir, tmp_path, capsys):
    data = tmp_path / "text.jsonl"
    row = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    data.write_text((json.dumps(row) + "\n") * 8)
    result = train(config(tiny_dir("gemma4"), data, tmp_path / "run", train={"max_steps": 2}))
    inner = result.model.get_base_model().model
    assert inner.vision_tower is None and inner.audio_tower is None
    err = capsys.readouterr().err
    assert "vision encoder unused by this data: released" in err
    assert "audio encoder unused by this data: released" in err


def test_a_tower_the_model_lacks_is_an_error(tiny_dir, tmp_path):
    data = write_task(tmp_path, "image", 4, seed=0)
    cfg = config(tiny_dir("gemma4-moe"), data, tmp_path / "run", lora={"towers": ["audio"]})
    with pytest.raises(UserError, match="audio: no layer to adapt"):
        train(cfg)


def test_broken_media_fail_before_training_naming_row_and_file(tiny_dir, tmp_path):
    data = write_task(tmp_path, "image", 4, seed=0)
    (tmp_path / "image-0-1.png").write_bytes(b"")
    (tmp_path / "image-0-2.png").write_bytes(b"RIFF....WAVEfmt ")
    (tmp_path / "image-0-3.png").unlink()
    with pytest.raises(UserError) as err:
        train(config(tiny_dir("gemma4"), data, tmp_path / "run"))
    message = str(err.value)
    for line, name in [(2, "image-0-1.png"), (3, "image-0-2.png"), (4, "image-0-3.png")]:
        assert f"{data}:{line}" in message and name in message
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_media_tokens_are_never_truncated(tiny_dir, tmp_path):
    data = write_task(tmp_path, "image", 6, seed=0)
    cfg = config(
        tiny_dir("gemma4"),
        data,
        tmp_path / "run",
        data={"max_seq_length": 40, "overlong": "truncate"},
    )
    with pytest.raises(UserError, match="no training example is left") as err:
        train(cfg)
    assert f"{data}:1: dropped, its image/audio tokens need max_seq_length >=" in str(err.value)


def test_gemma4_image_budget_is_used_and_kept_with_the_run(tiny_dir, tmp_path):
    from gemmaforge.infer.load import load_run
    from gemmaforge.runs import open_run

    data = write_task(tmp_path, "image", 4, seed=0)
    tokens = {}
    for budget in (70, 140):
        cfg = config(
            tiny_dir("gemma4"),
            data,
            tmp_path / f"run{budget}",
            data={"image_budget": budget},
            train={"max_steps": 1},
        )
        result = train(cfg)
        report = json.loads((result.run_dir / "data_report.json").read_text())
        tokens[budget] = report["train_tokens"]
    assert tokens[140] > tokens[70]
    loaded, _ = load_run(open_run(tmp_path / "run140"))
    assert loaded.processor.image_processor.max_soft_tokens == 140


@pytest.mark.parametrize(
    "fmt,towers", [("caption", ["text"]), ("vqa", ["text", "vision"])], ids=["text", "vision"]
)
def test_gemma3_vision_trains_and_reloads(fmt, towers, csv_files, tiny_dir, tmp_path):
    """Gemma 3 4B+ (SigLIP tower, <start_of_image> expanded by Gemma3Processor) end to end."""
    import torch

    from gemmaforge.data.batches.collate import collate
    from gemmaforge.data.examples.multimodal import media_encoder
    from gemmaforge.data.examples.render import render
    from gemmaforge.infer.load import load_run
    from gemmaforge.runs import open_run
    from gemmaforge.train.loss import batch_loss

    cfg = config(
        tiny_dir("gemma3-vision"),
        csv_files[fmt],
        tmp_path / "run",
        lora={"towers": towers},
        train={"max_steps": 12},
    )
    result = train(cfg)
    assert result.loaded.family.name == "gemma3"
    assert type(result.loaded.processor).__name__ == "Gemma3Processor"
    names = [n for n, p in result.model.named_parameters() if p.requires_grad]
    assert bool([n for n in names if "vision_tower" in n]) == ("vision" in towers)
    curve = losses(result.run_dir)
    assert sum(curve[-3:]) / 3 < 0.7 * curve[0], curve

    # The adapter reloads onto a fresh base and scores an image example the same way.
    loaded, reloaded = load_run(open_run(result.run_dir))
    image = next(csv_files[fmt].parent.glob(f"{fmt}-0.png"))
    messages = [
        {"role": "user", "content": [{"type": "image", "ref": str(image)}]},
        {"role": "assistant", "content": "A red square."},
    ]
    encoder = media_encoder(loaded, cfg.data)
    example = render(messages, loaded.family, loaded.tokenizer, media=encoder)
    assert example.input_ids.count(loaded.tokenizer.image_token_id) == 16
    batch = collate([[example]], 0, encoder.type_key, encoder)
    batch["pixel_values"] = batch["pixel_values"].to(loaded.dtype)
    with torch.no_grad():
        got, _ = batch_loss(reloaded, batch)
        expected, _ = batch_loss(result.model, batch)
        with reloaded.disable_adapter():
            base, _ = batch_loss(reloaded, batch)
    assert torch.allclose(got, expected, rtol=1e-3), (got, expected)
    assert not torch.allclose(got, base, rtol=1e-2)
