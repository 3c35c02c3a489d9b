"""Synthetic training data for benchmarks: chat rows whose rendered length is exactly the
sequence length, with a chosen share of trained (assistant) tokens, optionally with one
image or audio clip per row.

Rows are made of single-token words so that the token count is known before rendering; every
row is then rendered with gemmaforge's own `render` (and the model's processor for media) and
checked to be exactly `seq_len` tokens, so both sides of a benchmark train on the same number
of tokens and throughput is simply steps x batch x seq_len / time.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from gemmaforge.data.examples.render import render
from gemmaforge.errors import UserError, problem

_WORDS = (
    "the of and to in is that for it as with was on be by at this from have or not are but "
    "his they which one you all were her she there would their we him been has when who will "
    "more no if out so said what up its about into than them can only other new some time "
    "could these two may then do first any my now such like our over man me even most made "
    "after also did many before must through back years where much your way well down should "
    "because each just those people how too little state good very make world still own see "
    "men work long get here between both life being under never day same another know while "
    "last might us great old year off come since against go came right used take three"
)


def single_token_words(tokenizer) -> list[str]:
    """Words that the tokenizer encodes as one token when preceded by a space."""
    words = [
        w
        for w in _WORDS.split()
        if len(tokenizer(" " + w, add_special_tokens=False).input_ids) == 1
    ]
    if len(words) < 20:
        raise ValueError(f"only {len(words)} single-token words in this tokenizer")
    return words


def colour_image(path: Path, rgb: tuple[int, int, int], rng: random.Random, size=48) -> Path:
    """A noisy square of one colour (fixed size, so every image gives the same token count)."""
    from PIL import Image

    noise = np.array([rng.gauss(0, 12) for _ in range(size * size * 3)]).reshape(size, size, 3)
    pixels = np.clip(np.array(rgb, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def tone(path: Path, hz: float, rng: random.Random, seconds: float = 1.0) -> Path:
    """A noisy sine tone at 16 kHz (fixed duration, so every clip gives the same token count)."""
    import soundfile

    t = np.arange(int(16000 * seconds)) / 16000
    wave = 0.5 * np.sin(2 * np.pi * hz * t + rng.uniform(0, 6.28))
    wave = wave + np.array([rng.gauss(0, 0.01) for _ in t])
    soundfile.write(path, wave.astype(np.float32), 16000)
    return path


def write_chat_rows(
    folder: Path,
    family,
    tokenizer,
    seq_len: int,
    rows: int,
    *,
    trained_fraction: float = 0.5,
    media_kind: str | None = None,
    media=None,
    seed: int = 0,
) -> Path:
    """Write `rows` chat rows to folder/train.jsonl, each rendering to exactly `seq_len` tokens
    with about `trained_fraction` of them in the (trained) assistant reply.

    `media_kind` ("image" or "audio") adds one such part per row; `media` is the model's
    MediaEncoder, which decides how many tokens it takes.
    """

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    words = single_token_words(tokenizer)
    reply = max(1, round(trained_fraction * seq_len) - 1)  # the end-of-turn token is trained too

    def messages(user_words: int, media_path: Path | None, *, internal: bool) -> list[dict]:
        # Render strips each message, so its first word has no space before it and may take
        # more than one token: the first word is always the same one, its count fixed.
        text = words[0] + "".join(" " + rng.choice(words) for _ in range(user_words - 1))
        answer = words[0] + "".join(" " + rng.choice(words) for _ in range(reply - 1))
        content: str | list = text
        if media_path is not None:
            key = "ref" if internal else "path"
            part = {"type": media_kind, key: str(media_path if internal else media_path.name)}
            content = [part, {"type": "text", "text": text}]
        return [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]

    lines = []
    for i in range(rows):
        media_path = None
        if media_kind == "image":
            media_path = colour_image(folder / f"image-{i}.png", (200, 40, 40), rng)
        elif media_kind == "audio":
            media_path = tone(folder / f"audio-{i}.wav", 440.0, rng)
        state = rng.getstate()
        probe = render(messages(1, media_path, internal=True), family, tokenizer, media=media)
        user_words = seq_len - len(probe.input_ids) + 1
        if user_words < 1:
            raise UserError(
                problem(
                    "bench",
                    f"a row needs {len(probe.input_ids)} tokens with its reply and media, more "
                    f"than the sequence length {seq_len}",
                    "use a longer sequence length",
                )
            )
        rng.setstate(state)
        row = messages(user_words, media_path, internal=False)
        rng.setstate(state)
        rendered = render(
            messages(user_words, media_path, internal=True), family, tokenizer, media=media
        )
        if len(rendered.input_ids) != seq_len:
            raise ValueError(f"row {i} renders to {len(rendered.input_ids)} tokens, not {seq_len}")
        lines.append(json.dumps({"messages": row}))
    path = folder / "train.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_preference_rows(folder: Path, family, tokenizer, seq_len: int, rows: int) -> Path:
    """Preference pairs for the DPO benchmark, in TRL's conversational format: the chat rows
    of `write_chat_rows`, each reply chosen and the same words reversed rejected (single-token
    words: both replies have the same length, so every sequence is exactly `seq_len`)."""
    chats = write_chat_rows(folder, family, tokenizer, seq_len, rows)
    lines = []
    for line in chats.read_text(encoding="utf-8").splitlines():
        user, reply = json.loads(line)["messages"]
        words = reply["content"].split(" ")
        # The first word stays first: render strips it of its space (see write_chat_rows).
        rejected = " ".join([words[0], *reversed(words[1:])])
        if rejected == reply["content"]:
            rejected = " ".join([words[0], words[0], *words[2:]])
        pair = {
            "prompt": [user],
            "chosen": [reply],
            "rejected": [{"role": "assistant", "content": rejected}],
        }
        lines.append(json.dumps(pair))
    path = folder / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_alpaca_rows(folder: Path, rows: int, seed: int = 0) -> Path:
    """Alpaca-style chat rows with a real spread of lengths, made deterministically from
    `seed` (no download): an instruction of 4-40 words, an input of 0-120 words on about
    half the rows, and a response whose length is log-normal (median ~60 words, from 3 to
    ~400), as instruction-tuning sets have. Lengths differ row to row, so padding and packing
    matter, which the equal rows of `write_chat_rows` cannot show."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    words = _WORDS.split()

    def text(count: int) -> str:
        return " ".join(rng.choice(words) for _ in range(count)).capitalize() + "."

    lines = []
    for _ in range(rows):
        instruction = text(rng.randint(4, 40))
        if rng.random() < 0.5:
            instruction += "\n\n" + text(rng.randint(1, 120))
        reply = text(max(3, min(400, round(rng.lognormvariate(4.1, 0.8)))))
        messages = [
            {"role": "user", "content": instruction},
            {"role": "assistant", "content": reply},
        ]
        lines.append(json.dumps({"messages": messages}))
    path = folder / "alpaca.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
