"""Images and audio at inference (`generate --image/--audio`, `Session.prompt`) on the tiny
random Gemma 4, with its real processor; and the refusals on a text-only model."""

from __future__ import annotations

import io
import random
import subprocess
import sys

import pytest

from gemmaforge.data.examples.multimodal import MediaRef
from gemmaforge.infer.chat import generate_once
from gemmaforge.infer.session import open_session
from gemmaforge.infer.stream import Sampling
from mm_tasks import COLOURS, colour_image, tone


def gemmaforge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gemmaforge", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    rng = random.Random(0)
    return {
        "red": colour_image(folder / "red.png", COLOURS["red"], rng),
        "blue": colour_image(folder / "blue.png", COLOURS["blue"], rng),
        "tone": tone(folder / "tone.wav", 660.0, rng),
        "broken": folder / "broken.png",
    }


@pytest.fixture(scope="module")
def session(tiny_dir):
    return open_session(str(tiny_dir("gemma4")), [])


def user(*parts: dict) -> list[dict]:
    return [{"role": "user", "content": [*parts, {"type": "text", "text": "What is this?"}]}]


def test_the_prompt_holds_the_soft_tokens_and_the_features(session, media):
    text = session.prompt(user())
    image = session.prompt(user({"type": "image", "ref": str(media["red"])}))
    soft, _ = session.media.segment(MediaRef("image", str(media["red"]), None))
    assert len(image.ids) == len(text.ids) + len(soft)
    assert "pixel_values" in image.inputs and "pixel_values" not in text.inputs
    types = image.inputs[session.media.type_key]
    assert types.shape == (1, len(image.ids)) and types.sum() > 0
    audio = session.prompt(user({"type": "audio", "ref": str(media["tone"])}))
    assert len(audio.ids) > len(text.ids) and "input_features" in audio.inputs


def test_the_reply_depends_on_the_image(session, media):
    def reply(name: str) -> str:
        out = io.StringIO()
        part = [("image", str(media[name]))]
        generate_once(session, session.base_name, "What is this?", None, Sampling(8), out, part)
        return out.getvalue()

    assert reply("red") != reply("blue")


def test_generate_with_an_image_and_audio(tiny_dir, media):
    model = str(tiny_dir("gemma4"))
    both = ["--image", str(media["red"]), "--audio", str(media["tone"])]
    proc = gemmaforge("generate", "Describe it.", "--model", model, "--max-new-tokens", "6", *both)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


def test_generate_refuses_a_broken_image_and_a_text_only_model(tiny_dir, media):
    media["broken"].write_bytes(b"not an image at all")
    model = str(tiny_dir("gemma4"))
    proc = gemmaforge("generate", "hi", "--model", model, "--image", str(media["broken"]))
    assert proc.returncode == 2
    assert str(media["broken"]) in proc.stderr and "Traceback" not in proc.stderr

    text_only = str(tiny_dir("gemma3"))
    proc = gemmaforge("generate", "hi", "--model", text_only, "--image", str(media["red"]))
    assert proc.returncode == 2
    assert "no vision tower" in proc.stderr


def test_eval_scores_rows_with_images(tiny_dir, tmp_path):
    from gemmaforge.config import Config
    from gemmaforge.eval.evaluate import evaluate
    from gemmaforge.train.trainer import train
    from mm_tasks import write_task

    data = write_task(tmp_path / "data", "image", 8, seed=0)
    settings = {
        "model": {"name_or_path": str(tiny_dir("gemma4"))},
        "data": {"train": str(data), "val_fraction": 0.25},
        "lora": {"r": 8, "alpha": 16},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 2, "batch_size": 2},
    }
    run = train(Config.model_validate(settings)).run_dir
    report = evaluate(run, batch_size=2, max_new_tokens=4)
    assert report["examples_scored"] == 2
    for example in report["examples"]:
        assert example["prompt"].startswith("[image: image-0-")
        assert isinstance(example["base"], str) and isinstance(example["adapter"], str)
    assert all(report["metrics"][side]["perplexity"] > 0 for side in ("base", "adapter"))
