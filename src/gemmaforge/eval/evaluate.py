"""`gemmaforge eval`: score a run's adapter against its base model on held-out data.

The data is, by default, what training held out: the run's validation file, or else the same
seeded split of the training file (`data.dataset.split_indices` with the run's seed, so the
rows are exactly the ones the trainer never trained on; a training file that changed since
is refused). `--data` scores any file in the run's data format.

The model is loaded once: the adapter's replies come from the PEFT model, the base model's
from the same weights inside `disable_adapter()`. Each side gets greedy, batched replies to
every prompt (the conversation without its last reply, which is the reference), scored by
the task's metrics (`eval/tasks.py`), and a perplexity from the loss on the references (the
last reply; every token for completion-format text), computed as training computes its
validation loss. Rows with images or audio go through training's media path (the run's image
budget and audio policy); their replies are generated one row at a time.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from gemmaforge.data.batches.collate import collator_for
from gemmaforge.data.examples.dataset import read_rows, split_indices
from gemmaforge.data.examples.formats import Conversation, detect_format, to_conversation
from gemmaforge.data.examples.multimodal import media_encoder
from gemmaforge.data.examples.render import render, render_text
from gemmaforge.data.examples.skiplog import SkipLog
from gemmaforge.data.examples.tools import parse_calls
from gemmaforge.data.read.records import raise_if_problems
from gemmaforge.data.read.sources import open_sources, resolve_sources
from gemmaforge.errors import UserError, problem
from gemmaforge.eval.report import write_report
from gemmaforge.eval.tasks import TASKS, pick_task
from gemmaforge.infer.generate import generate
from gemmaforge.infer.load import load_run
from gemmaforge.progress import Tracker, log_console
from gemmaforge.runs import Run, open_run
from gemmaforge.train.loss import mean_loss

SIDES = ("base", "adapter")


@dataclass(frozen=True)
class EvalData:
    conversations: list[Conversation]
    source: str
    """Where the rows came from, in words, for the report."""


def eval_data(run: Run, data: str | None = None, limit: int | None = None) -> EvalData:
    """The rows to score: `data`, else the run's validation file, else its held-out split."""
    cfg = run.config.data
    rows, source = eval_rows(run, data)
    fmt = cfg.format if cfg.format != "auto" else detect_format(rows[0], cfg)
    problems, conversations = [], []
    for record in rows[:limit]:
        try:
            conversations.append(to_conversation(record, fmt, cfg))
        except UserError as err:
            problems.extend(err.problems)
    raise_if_problems(problems)
    return EvalData(conversations, source)


def eval_rows(run: Run, data: str | None = None) -> tuple[list, str]:
    """(rows, where they came from in words): `data`, else the run's validation file, else
    the rows its seeded split held out."""
    cfg = run.config.data
    validation = None
    if data:
        path, sources = data, resolve_sources(data, cfg.storage_options)
    else:
        opened = open_sources(cfg)
        validation = opened.validation_spec
        path, sources = validation or cfg.train, opened.validation or opened.train
    # Rows the run skipped as unreadable (data.on_error=skip) are skipped here too, so the
    # held-out split indexes the same rows training split.
    files, problems = [], []
    rows = read_rows(sources, cfg, files, problems, SkipLog())
    raise_if_problems(problems)
    if data:
        source = f"{data} (--data)"
    elif validation:
        source = f"{path} (the run's validation file)"
    else:
        _check_unchanged(run, files)
        seed = run.config.train.seed
        keep = split_indices(len(rows), cfg.val_fraction, cfg.val_max_rows, seed)
        if not keep:
            raise UserError(
                problem(
                    str(run.dir),
                    "the run held out no validation rows (data.val_fraction is 0)",
                    "pass --data FILE with rows to score",
                )
            )
        rows = [rows[i] for i in keep]
        source = f"{path}: the {len(keep)} rows training held out (seed {seed})"
    return rows, source


def _check_unchanged(run: Run, files: list) -> None:
    """A changed training file would give another split: its rows may have been trained on."""
    import json

    report = json.loads(run.folder.data_report.read_text(encoding="utf-8"))
    recorded = {f["path"]: f["fingerprint"] for f in report["files"]}
    for file in files:
        expected = recorded.get(file.path)
        if expected is None or expected == file.fingerprint:
            continue
        raise UserError(
            problem(
                file.path,
                "changed since the run trained on it, so its held-out split is not the one "
                "training held out",
                "pass --data with a held-out file",
            )
        )


def evaluate(
    run_dir: str | Path,
    data: str | None = None,
    task: str = "auto",
    max_new_tokens: int | None = None,
    batch_size: int = 16,
    limit: int | None = None,
    device: str = "auto",
    console=None,
    base: str | None = None,
) -> dict:
    """Score base and adapter; write RUN/eval/N/report.{md,json} and loss_curve.png (N: one
    more than the last evaluation's) and the same as the latest in RUN/eval/; return the
    report."""

    console = console or log_console()
    if task != "auto" and task not in TASKS:
        raise UserError(
            problem(None, f"unknown task {task!r}", f"choose auto or one of {', '.join(TASKS)}")
        )
    run = open_run(run_dir)
    if task == "preference" or (task == "auto" and run.config.train.objective != "sft"):
        from gemmaforge.eval.preference import evaluate_preference

        return evaluate_preference(run, data, batch_size, limit, device, console)
    rows = eval_data(run, data, limit)
    chats = [c for c in rows.conversations if c.text is None]
    calling = task == "tool_calls" or (task == "auto" and _calls_tools(chats))
    if calling:
        chats = _tool_chats(chats, rows.source)
        references = [_calls_reference(c) for c in chats]
    else:
        references = [c.messages[-1]["content"] for c in chats] if chats else None
    chosen = TASKS["tool_calls"] if calling else pick_task(task, references)
    if chosen.corpus is not None and references is None:
        raise UserError(
            problem(
                rows.source,
                "completion-format rows have no reply to generate",
                "use --task perplexity",
            )
        )
    console.print(f"Loading {base or run.base_model} with the adapter of {run.dir} ...")
    loaded, model = load_run(run, base=base, device=device)
    media = media_encoder(loaded, run.config.data)
    examples = _render(rows.conversations, loaded, media)
    # A tool_calls eval asks for the last reply's calls: the turns before it are the prompt.
    prompts = [c.messages[:-1] for c in chats]
    if max_new_tokens is None and references:
        max_new_tokens = _reply_budget(loaded.tokenizer, references)

    replies: dict[str, list[str]] = {}
    metrics: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    for side in SIDES:
        start = time.perf_counter()
        with model.disable_adapter() if side == "base" else nullcontext():
            perplexity = _perplexity(model, loaded, run, examples, batch_size, media)
            metrics[side] = {"perplexity": perplexity}
            if chosen.corpus is not None:
                with Tracker(f"{side} replies", len(prompts), console=console) as bar:
                    replies[side] = _generate(
                        model,
                        loaded,
                        prompts,
                        max_new_tokens,
                        batch_size,
                        media,
                        chats,
                        calling,
                        bar.advance,
                    )
                metrics[side] = {**chosen.corpus(replies[side], references), **metrics[side]}
        seconds[side] = round(time.perf_counter() - start, 1)

    report = {
        "run": str(run.dir),
        "base_model": run.base_model,
        "base_sha256": run.base_sha256,
        "data": rows.source,
        "examples_scored": len(rows.conversations),
        "task": chosen.name,
        "headline": chosen.headline,
        "lower_is_better": chosen.lower_is_better,
        "max_new_tokens": max_new_tokens if chosen.corpus else None,
        "metrics": metrics,
        "seconds": seconds,
        "examples": _per_example(chats, replies, chosen, references) if chosen.corpus else [],
    }
    folder = write_report(run.dir, report)
    console.print(
        f"Report: {folder.parent / 'report.md'} (kept as {folder / 'report.md'}; each "
        "evaluation gets its own numbered folder)"
    )
    return report


def summary_line(report: dict) -> str:
    """`exact_match: base 0.000 -> adapter 0.938 (48 examples, json)`."""
    name = report["headline"]
    base, tuned = report["metrics"]["base"][name], report["metrics"]["adapter"][name]
    return (
        f"{name}: base {base:.3f} -> adapter {tuned:.3f} "
        f"({report['examples_scored']} examples, task {report['task']})"
    )


def _render(conversations: list[Conversation], loaded, media) -> list:
    """Rendered examples whose labels are the reference (the last reply, or all the text)."""

    problems, examples = [], []
    for c in conversations:
        try:
            if c.text is not None:
                examples.append(render_text(c.text, loaded.family, loaded.tokenizer, c.where))
            else:
                examples.append(
                    render(
                        c.messages,
                        loaded.family,
                        loaded.tokenizer,
                        "last",
                        c.where,
                        media,
                        tools=c.tools,
                    )
                )
        except UserError as err:
            problems.extend(err.problems)
    raise_if_problems(problems)
    return examples


def _reply_budget(tokenizer, references: list[str]) -> int:
    """Room for the longest reference and a margin, so a wrong answer can show itself."""
    longest = max(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in references)
    return math.ceil(1.25 * longest) + 16


def _generate(
    model,
    loaded,
    prompts,
    max_new_tokens: int,
    batch_size: int,
    media,
    chats,
    calling: bool,
    progress=None,
) -> list[str]:

    replies = generate(
        model,
        loaded.tokenizer,
        loaded.family,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        media=media,
        tools=[c.tools for c in chats],
        progress=progress,
    )
    if calling:
        return [json.dumps(parse_calls(reply.raw), sort_keys=True) for reply in replies]
    return [reply.text for reply in replies]


def _calls_tools(chats: list[Conversation]) -> bool:
    return bool(chats) and any(c.messages[-1].get("tool_steps") for c in chats)


def _tool_chats(chats: list[Conversation], source: str) -> list[Conversation]:
    """The conversations whose last reply calls tools (the ones a tool_calls eval scores)."""
    kept = [c for c in chats if c.messages[-1].get("tool_steps")]
    if not kept:
        raise UserError(
            problem(
                source,
                "no conversation ends with a reply that calls a tool",
                "evaluate data whose last assistant turns have tool_calls, or pick another task",
            )
        )
    return kept


def _calls_reference(conv: Conversation) -> str:
    """The first tool step of the last reply, as the JSON list a prediction is compared to."""
    calls = conv.messages[-1]["tool_steps"][0]["calls"]
    return json.dumps(
        [{"name": c["name"], "arguments": c["arguments"]} for c in calls], sort_keys=True
    )


def _perplexity(model, loaded, run: Run, examples: list, batch_size: int, media) -> float:
    """exp(mean loss per reference token), with training's own validation-loss code."""

    collate = collator_for(loaded, media)
    chunk = run.config.train.loss_chunk_size
    return math.exp(mean_loss(model, examples, collate, batch_size, loaded.device, chunk))


def _per_example(
    chats: list[Conversation], replies: dict[str, list[str]], task, references: list[str]
) -> list[dict]:
    rows = []
    for i, c in enumerate(chats):
        reference = references[i]
        prompt = _prompt_text(c.messages[-2]["content"])
        row = {"where": c.where, "prompt": prompt, "reference": reference}
        for side in SIDES:
            row[side] = replies[side][i]
            row[f"{side}_score"] = task.example(replies[side][i], reference)
        rows.append(row)
    return rows


def _prompt_text(content) -> str:
    """A prompt for the report: its text, with a marker naming each image or clip."""
    if isinstance(content, str):
        return content
    return " ".join(
        part["text"] if part["type"] == "text" else f"[{part['type']}: {Path(part['ref']).name}]"
        for part in content
    )
