"""`gemmaforge data check`: every problem planted in a dataset built to be broken is found,
with its file:row, and the exit code follows the severity.

Media checks run the real CLI with tiny Gemma 4 / Gemma 3n processors (their token counts),
text checks the library with the real Gemma 3 tokenizer, and one run uses the default (the
bundled Gemma 3 270M tokenizer) as a user without a model would.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import soundfile
from typer.testing import CliRunner

from gemmaforge.cli import app
from gemmaforge.config import Config, DataConfig
from gemmaforge.data.check.scan import check_dataset
from gemmaforge.models.families import GEMMA3
from gemmaforge.models.load import LoadedTokenizer
from mm_tasks import colour_image, tone

LONG = " ".join(["word"] * 700)


def chat(user, reply: str) -> str:
    return json.dumps(
        {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}
    )


def media(kind: str, path: str, text: str = "What is this?") -> list[dict]:
    return [{"type": kind, "path": path}, {"type": "text", "text": text}]


def write_broken(folder: Path) -> dict[str, tuple[str, str]]:
    """A folder of data that is broken on purpose, and a validation file next to it.

    Returns each planted problem as name -> (kind, "file:row")."""
    data = folder / "data"
    data.mkdir(parents=True)
    rng = random.Random(0)
    colour_image(data / "red.png", (220, 30, 30), rng)
    colour_image(data / "blue.png", (30, 60, 220), rng)
    tone(data / "low.wav", 220.0, rng)
    whole = (data / "red.png").read_bytes()
    (data / "cut.png").write_bytes(whole[: len(whole) // 2])
    tone(data / "cut.wav", 660.0, rng)
    whole = (data / "cut.wav").read_bytes()
    (data / "cut.wav").write_bytes(whole[: len(whole) // 2])
    (data / "empty.wav").write_bytes(b"")
    lines = [
        chat("What colour is the sky?", "blue"),  # 1
        "BAD",  # 2: replaced by a non-UTF-8 line below
        '{"messages": [',  # 3: invalid JSON
        chat(media("image", "gone.png"), "red"),  # 4: missing image
        chat(media("image", "cut.png"), "red"),  # 5: corrupt (truncated) image
        chat(media("audio", "cut.wav"), "low"),  # 6: truncated WAV
        chat(media("audio", "empty.wav"), "low"),  # 7: zero-length WAV
        chat("Say nothing.", "  "),  # 8: empty assistant text
        chat("What colour is the sky?", "blue"),  # 9: duplicate of row 1
        chat(LONG, "long"),  # 10: over-long
        chat(media("image", "red.png"), "red"),  # 11: fine
        chat(media("audio", "low.wav"), "low"),  # 12: fine
        chat("Is grass green?", "yes"),  # 13: also in the validation file
    ]
    encoded = [line.encode() for line in lines]
    encoded[1] = b'{"messages": "caf\xe9"}'
    (data / "chat.jsonl").write_bytes(b"\n".join(encoded) + b"\n")
    (data / "qa.csv").write_text("prompt,response\nIs it cold?,no\nIs it hot?,yes,really\n")
    (folder / "val.jsonl").write_text(chat("Is grass green?", "yes") + "\n")
    jsonl, csv = f"{data}/chat.jsonl", f"{data}/qa.csv"
    return {
        "bad utf-8": ("unreadable_row", f"{jsonl}:2"),
        "invalid json": ("unreadable_row", f"{jsonl}:3"),
        "missing image": ("missing_media", f"{jsonl}:4"),
        "corrupt image": ("unreadable_media", f"{jsonl}:5"),
        "truncated wav": ("unreadable_media", f"{jsonl}:6"),
        "zero-length wav": ("unreadable_media", f"{jsonl}:7"),
        "empty reply": ("empty_text", f"{jsonl}:8"),
        "duplicate": ("duplicate", f"{jsonl}:9"),
        "over-long": ("overlong_dropped", f"{jsonl}:10"),
        "in validation": ("train_val_overlap", f"{folder}/val.jsonl:1"),
        "wrong column count": ("unreadable_row", f"{csv}:3"),
    }


def run_check(*args: str):
    return CliRunner().invoke(app, ["data", "check", *map(str, args)])


def test_every_planted_problem_is_found(tiny_dir, tmp_path):
    planted = write_broken(tmp_path)
    config = tmp_path / "check.yaml"
    config.write_text(
        f"model:\n  name_or_path: {tiny_dir('gemma4')}\n"
        f"data:\n  train: {tmp_path / 'data'}\n  validation: {tmp_path / 'val.jsonl'}\n"
        "  max_seq_length: 600\n"
    )
    result = run_check(config, "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    found = {(f["kind"], f["where"]) for f in report["findings"]}
    for name, expected in planted.items():
        assert expected in found, f"{name}: {expected} not in {sorted(found)}"
    # Nothing else: the good rows raise nothing.
    assert len(found) == len(planted), sorted(found - set(planted.values()))
    bad_utf8 = next(f for f in report["findings"] if f["where"] == planted["bad utf-8"][1])
    assert "not valid UTF-8" in bad_utf8["message"] and "Fix:" in bad_utf8["message"]
    assert bad_utf8["severity"] == "error" and bad_utf8["row"] == 2
    assert report["ok"] is False and report["errors"] == 8 and report["warnings"] == 3
    assert report["counts"]["unreadable_row"] == 3
    assert report["tokenizer"] == {
        "source": str(tiny_dir("gemma4")),
        "family": "gemma4",
        "default": False,
        "media_tokens": True,
    }
    assert [
        (s["path"].rsplit("/", 1)[1], s["rows"], s["unreadable"], s["format"])
        for s in report["sources"]
    ] == [
        ("chat.jsonl", 13, 2, "messages"),
        ("qa.csv", 2, 1, "instruction"),
        ("val.jsonl", 1, 0, "messages"),
    ]
    # Usable: rows 1, 9, 10, 11, 12, 13 and the first CSV row; the validation row. Token
    # lengths cover both splits.
    assert report["examples"] == {"train": 7, "validation": 1, "rows_read": 16}
    tokens = report["tokens"]
    assert set(tokens) == {"text", "image", "audio"}
    assert tokens["text"]["count"] == 6 and tokens["text"]["dropped"] == 1
    assert tokens["text"]["max"] > 600 and tokens["image"]["count"] == 1
    assert tokens["audio"]["count"] == 1 and tokens["audio"]["untokenized"] == 0
    # Decoded media facts, of the files that decode (rows 11 and 12).
    assert report["media"]["images"]["count"] == 1
    assert report["media"]["audio"]["count"] == 1
    assert 0.5 < report["media"]["audio"]["seconds"]["max"] <= 1.0
    assert report["overlap"] == {"validation": "file", "rows": 1}
    assert report["duplicates"] == {"rows": 1}


def test_terminal_report_lists_and_counts(tiny_dir, tmp_path):
    write_broken(tmp_path)
    result = run_check(
        tmp_path / "data",
        "--val-data",
        tmp_path / "val.jsonl",
        "--model",
        tiny_dir("gemma4"),
        "--show",
        "1",
        "data.max_seq_length=600",
    )
    assert result.exit_code == 1, result.output
    out = " ".join(result.stdout.split())  # rich wraps long lines
    assert "x rows that cannot be read (encoding, JSON, CSV fields): 3" in out
    assert "... and 2 more (--json lists them all)" in out
    assert "x missing images, audio or video: 1" in out and "gone.png' does not exist" in out
    assert "! duplicate examples: 1" in out
    assert "errors: 8, warnings: 3" in out


def test_clean_media_dataset_exits_0(tiny_dir, tmp_path):
    rng = random.Random(1)
    lines = []
    for i, (colour, rgb) in enumerate([("red", (220, 30, 30)), ("blue", (30, 60, 220))]):
        colour_image(tmp_path / f"{colour}.png", rgb, rng)
        tone(tmp_path / f"{i}.wav", 220.0 * (i + 1), rng)
        lines.append(chat(media("image", f"{colour}.png", "Colour?"), colour))
        lines.append(chat(media("audio", f"{i}.wav", "Pitch?"), ["low", "high"][i]))
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    result = run_check(tmp_path / "train.jsonl", "--model", tiny_dir("gemma3n"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["findings"] == []
    # Gemma 3n: a fixed number of soft tokens per image, so both image examples match.
    image = report["tokens"]["image"]
    assert image["count"] == 2 and image["min"] == image["max"] > 4
    assert report["media"]["images"]["formats"] == {".png": 2}
    assert report["media"]["audio"]["formats"] == {".wav": 2}
    assert report["labels"]["distinct"] == 4
    assert report["overlap"]["validation"] == "split"


def test_text_checks_with_the_real_gemma3_tokenizer(gemma3_tokenizer, tmp_path):
    """Exact token counts from the real tokenizer decide over-long; label statistics, the
    seeded split's overlap and CSV problems; warnings pass unless strict."""
    rows = [("Is the sky blue?", "yes")] * 2 + [(f"Question {i}?", "yes") for i in range(18)]
    rows += [("Is fire cold?", "no"), ("Tell me everything. " * 40, "yes")]
    train = tmp_path / "train.csv"
    lines = ["prompt,response", *(f'"{p}",{r}' for p, r in rows)]
    train.write_text("\n".join(lines) + "\n")
    cfg = Config(data=DataConfig(train=str(train), max_seq_length=64, overlong="truncate"))
    tok = LoadedTokenizer(gemma3_tokenizer, None, GEMMA3, "gemma-3-270m")
    report = check_dataset(cfg, tok).to_dict()
    kinds = {(f["kind"], f["where"]) for f in report["findings"]}
    # The long prompt is cut: the reply is lost and nothing trained is left, so it is dropped.
    assert ("overlong_dropped", f"{train}:23") in kinds
    assert ("duplicate", f"{train}:3") in kinds
    assert ("label_imbalance", str(train)) in kinds
    assert report["errors"] == 0 and report["labels"]["classification_like"]
    assert report["labels"]["top"] == [{"reply": "yes", "count": 21}, {"reply": "no", "count": 1}]
    ids = gemma3_tokenizer("Tell me everything. " * 40, add_special_tokens=False)["input_ids"]
    assert report["tokens"]["text"]["max"] > len(ids) > 64
    # 22 rows: the seeded split holds out 2 (val_fraction 0.1).
    assert report["examples"] == {"train": 20, "validation": 2, "rows_read": 22}
    assert check_dataset(cfg, tok).exit_code() == 0
    assert check_dataset(cfg, tok).exit_code(strict=True) == 1


def test_default_tokenizer_names_itself(tmp_path):
    rng = random.Random(2)
    colour_image(tmp_path / "red.png", (220, 30, 30), rng)
    soundfile.write(tmp_path / "long.wav", [0.0] * 16000 * 31, 16000)
    lines = [chat("Hello?", "Hi."), chat(media("image", "red.png"), "red")]
    lines.append(chat(media("audio", "long.wav"), "silence"))
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    result = run_check(tmp_path / "train.jsonl")
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "the bundled Gemma 3 270M tokenizer" in out
    assert "token counts for images, audio and video need a multimodal --model" in out
    assert "long audio training would cut: 1" in out and "31.0 s long" in out


def test_a_missing_file_is_one_error_before_the_tokenizer_loads(tmp_path, monkeypatch):
    """One clear error, no empty report, and no minute spent loading a tokenizer first."""
    import time

    import gemmaforge.data.check.scan as scan

    def no_tokenizer(cfg):
        raise AssertionError("the tokenizer was loaded before the data was found missing")

    monkeypatch.setattr(scan, "check_tokenizer", no_tokenizer)
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["data", "check", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "nope.jsonl: not found" in errors[0]
    assert result.stdout == ""
    assert time.perf_counter() - started < 10
