"""`gemmaforge eval --task preference`: how often base and adapter rate the chosen reply of a
held-out pair above the rejected one.

Pairs come from the same rows `eval` always scores (`--data`, else the run's validation file,
else the split training held out), in any preference format (docs/preference.md). Each side
scores every pair's two replies by their summed log-probability (the fused chunked head, as
training computes it; no generation): `preference_accuracy` is the fraction of pairs where the
chosen reply is the more likely. `reward_accuracy` is DPO's implicit reward accuracy: the
adapter raised the chosen reply's log-probability relative to the base more than the
rejected one's.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

from gemmaforge.data.batches.collate import collator_for
from gemmaforge.data.batches.pairs import PairCollator
from gemmaforge.data.examples.multimodal import media_encoder
from gemmaforge.data.examples.preference import render_preference, to_preference
from gemmaforge.data.read.records import raise_if_problems
from gemmaforge.errors import UserError, problem
from gemmaforge.eval.evaluate import SIDES, eval_rows
from gemmaforge.eval.report import write_report
from gemmaforge.infer.load import load_run
from gemmaforge.runs import Run
from gemmaforge.train.loss import row_log_probs


def evaluate_preference(run: Run, data, batch_size: int, limit, device, console) -> dict:
    import torch

    rows, source = eval_rows(run, data)
    if console is not None:
        console.print(f"Loading {run.base_model} with the adapter of {run.dir} ...")
    loaded, model = load_run(run, device=device)
    media = media_encoder(loaded, run.config.data)
    problems, examples = [], []
    for record in rows[:limit]:
        try:
            pref = to_preference(record, run.config.data)
            if pref.rejected is None:
                raise UserError(
                    problem(
                        record.where,
                        "a KTO row has no rejected reply to compare",
                        "score preference pairs (prompt/chosen/rejected) with --data",
                    )
                )
            examples.append(render_preference(pref, loaded.family, loaded.tokenizer, media))
        except UserError as err:
            problems.extend(err.problems)
    raise_if_problems(problems)
    collate = PairCollator(collator_for(loaded, media))
    chunk = run.config.train.loss_chunk_size
    logps: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    model.eval()
    for side in SIDES:
        start = time.perf_counter()
        parts = []
        with torch.no_grad(), model.disable_adapter() if side == "base" else nullcontext():
            for at in range(0, len(examples), batch_size):
                batch = collate.examples(examples[at : at + batch_size], loaded.device)
                inputs = {k: v for k, v in batch.items() if k != "pairs"}
                values = row_log_probs(model, inputs, chunk)[0].cpu()
                pairs = int(batch["pairs"])
                parts.append(torch.stack([values[:pairs], values[pairs:]], dim=1))
        logps[side] = torch.cat(parts)
        seconds[side] = round(time.perf_counter() - start, 1)
    metrics = {side: _metrics(logps[side]) for side in SIDES}
    ratio = logps["adapter"] - logps["base"]
    report = {
        "run": str(run.dir),
        "base_model": run.base_model,
        "base_sha256": run.base_sha256,
        "data": source,
        "examples_scored": len(examples),
        "task": "preference",
        "headline": "preference_accuracy",
        "lower_is_better": False,
        "max_new_tokens": None,
        "metrics": metrics,
        "reward_accuracy": float((ratio[:, 0] > ratio[:, 1]).float().mean()),
        "seconds": seconds,
        "examples": [],
    }
    folder = write_report(run.dir, report)
    if console is not None:
        console.print(f"Report: {folder / 'report.md'}")
    return report


def _metrics(logps) -> dict[str, float]:
    chosen, rejected = logps[:, 0], logps[:, 1]
    return {
        "preference_accuracy": float((chosen > rejected).float().mean()),
        "logp_chosen": float(chosen.mean()),
        "logp_rejected": float(rejected.mean()),
        "logp_margin": float((chosen - rejected).mean()),
    }
