"""Finished tiny training runs for the tests of eval, generate, chat and serve.

Each run is LoRA on the tiny Gemma 3 (`tiny_dir("gemma3")`), trained for 30 steps (~20 s on
two cores) to answer four questions with fixed answers, so a greedy reply is predictable:
the adapter says the answer, the random base model says something else.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

QUESTIONS = (
    "What colour is the sky?",
    "What do cows drink?",
    "Name a prime number.",
    "Which way is up?",
)
ANSWERS = {
    "plain": (
        "The sky is blue.",
        "Cows drink water.",
        "Seven is prime.",
        "Up is away from the ground.",
    ),
    "other": ("Blue, like the sea.", "Water, mostly.", "Eleven.", "Look at the clouds."),
}
"""The answers each run was trained on, in QUESTIONS order."""
ROWS = 48
SEED = 0


def write_rows(path: Path, answers: tuple[str, ...], rows: int = ROWS) -> Path:
    rng = random.Random(SEED)
    with path.open("w") as handle:
        for _ in range(rows):
            i = rng.randrange(len(QUESTIONS))
            messages = [
                {"role": "user", "content": QUESTIONS[i]},
                {"role": "assistant", "content": answers[i]},
            ]
            handle.write(json.dumps({"messages": messages}) + "\n")
    return path


def train_run(model_dir: Path, folder: Path, variant: str) -> Path:
    """Train the `variant` run (a key of ANSWERS) into `folder`/run; its data is beside it."""
    from gemmaforge.config import Config
    from gemmaforge.train.trainer import train

    data = write_rows(folder / "train.jsonl", ANSWERS[variant])
    cfg = Config.model_validate(
        {
            "model": {"name_or_path": str(model_dir)},
            "data": {"train": str(data)},
            "lora": {"r": 8, "alpha": 16},
            "train": {
                "output_dir": str(folder / "run"),
                "max_steps": 30,
                "batch_size": 4,
                "lr": 1e-2,
                "eval_every": 10,
                "seed": SEED,
            },
        }
    )
    return train(cfg).run_dir
