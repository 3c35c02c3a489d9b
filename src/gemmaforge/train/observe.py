"""What a run reports besides its loss, for the dashboard and the experiment trackers.

`facts` adds cheap per-step numbers to each metrics record (gradient norm, process RSS, device
memory, seconds trained, total steps). `attach` hooks observers onto a prepared run for the
length of its loop: greedy sample replies to a few held-out prompts every
`train.sample_every` steps (OUT/samples.jsonl) and the trackers of `train.report_to`
(train/trackers.py). The loop calls `notify` once per step; with no observer it costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from gemmaforge.data.examples.render import IGNORE_INDEX, RenderedExample
from gemmaforge.files import append_jsonl
from gemmaforge.train.artifacts import truncate_metrics
from gemmaforge.train.trackers import Trackers

if TYPE_CHECKING:
    from gemmaforge.train.loop import Training
    from gemmaforge.train.prepare import Prepared

_MIB = 2**20
_process: Any = None


def facts(t: Training, grad_norm: Any) -> dict:
    """Per-step numbers beyond the loss; each read costs microseconds (no device sync other
    than the gradient norm's, which the loss's `.item()` already paid for)."""
    global _process
    import psutil
    import torch

    if _process is None:
        _process = psutil.Process()
    device = t.accelerator.device
    if device.type == "cuda":
        device_mib = torch.cuda.memory_allocated(device) / _MIB
    elif device.type == "mps":
        device_mib = torch.mps.current_allocated_memory() / _MIB
    else:
        device_mib = None
    return {
        "grad_norm": None if grad_norm is None else float(grad_norm),
        "rss_mib": round(_process.memory_info().rss / _MIB, 1),
        "device_mib": None if device_mib is None else round(device_mib, 1),
        "seconds": round(t.state.train_seconds, 3),
        "steps": t.steps,
    }


def notify(t: Training, record: dict) -> None:
    """Hand one step's record to every observer `attach` installed."""
    for observer in t.observers:
        observer(t, record)


@contextmanager
def attach(run: Prepared, console: Any) -> Iterator[None]:
    """Install the run's observers (samples, trackers) for the `with` block, on the main
    process; trackers are flushed and closed when it ends, however it ends."""

    t = run.training
    cfg = run.cfg.train
    if not t.accelerator.is_main_process:
        # On several processes only the main one writes (metrics, samples, trackers).
        yield
        return
    if cfg.resume:
        # Samples past the checkpoint belong to steps the resumed run redoes.
        truncate_metrics(t.folder.samples, t.state.step)
    trackers = Trackers.open(run.cfg, t.folder) if cfg.report_to else None
    if trackers:
        t.observers.append(trackers.observe)
    if cfg.sample_every:
        sampler = Sampler(run)
        if sampler.items:
            t.observers.append(sampler)
        else:
            console.print("samples: no validation examples to sample from (train.sample_every)")
    try:
        yield
    finally:
        t.observers.clear()
        if trackers:
            trackers.close()


class Sampler:
    """Greedy replies to the prompts of the first `train.sample_prompts` validation examples,
    with their references, appended to OUT/samples.jsonl every `train.sample_every` steps."""

    def __init__(self, run: Prepared):
        self.loaded = run.loaded
        self.media = run.training.data.collate.media
        val = run.training.data.val[: run.cfg.train.sample_prompts]
        self.items = [item for item in (self._split(example) for example in val) if item]

    def _split(self, example: RenderedExample) -> dict | None:
        """The example's prompt (everything before its first trained token, which ends with
        the assistant's header) and the reply it was trained on (that first labelled run)."""
        start = next((i for i, label in enumerate(example.labels) if label != IGNORE_INDEX), None)
        if start is None:
            return None
        end = next(
            (i for i in range(start, len(example.labels)) if example.labels[i] == IGNORE_INDEX),
            len(example.labels),
        )
        prompt = RenderedExample(
            input_ids=example.input_ids[:start],
            labels=[IGNORE_INDEX] * start,
            where=example.where,
            token_types=example.token_types[:start] if example.token_types else None,
            media=example.media,
            media_end=example.media_end,
        )
        decode = self.loaded.tokenizer.decode
        return {
            "prompt": prompt,
            "where": example.where,
            "text": decode(prompt.input_ids, skip_special_tokens=True).strip(),
            "reference": decode(example.input_ids[start:end], skip_special_tokens=True).strip(),
            "media": [{"kind": ref.kind, "ref": ref.ref} for ref in example.media],
        }

    def __call__(self, t: Training, record: dict) -> None:
        every = t.cfg.sample_every
        if t.state.step % every and t.state.step != t.steps:
            return
        from gemmaforge.infer.generate import generate_rendered

        replies = generate_rendered(
            t.model,
            self.loaded.tokenizer,
            self.loaded.family,
            [item["prompt"] for item in self.items],
            max_new_tokens=t.cfg.sample_max_tokens,
            batch_size=len(self.items),
            media=self.media,
        )
        for item, reply in zip(self.items, replies, strict=True):
            append_jsonl(
                t.folder.samples,
                {
                    "step": t.state.step,
                    "where": item["where"],
                    "prompt": item["text"],
                    "reply": reply.text,
                    "reference": item["reference"],
                    "media": item["media"],
                },
            )
