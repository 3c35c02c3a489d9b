"""Preference objectives (DPO, IPO, hinge, ORPO, SimPO, KTO) with the fused chunked head.

A batch of preference pairs holds the chosen replies in its first P rows and the rejected ones
in the next P (one forward for both); a KTO batch holds one labelled reply per row. Each row's
summed log-probability comes from `row_log_probs` (train/loss.py): the [tokens x vocab]
logits never exist in full. The reference model is the base model itself, run with the LoRA
adapter disabled (PEFT's `disable_adapter()`), under no_grad: no second copy of the weights.
With `train.precompute_ref_logps` those reference values are computed once before training
and travel with the examples instead.

The loss formulas follow TRL (DPOTrainer, CPOTrainer for SimPO, ORPOTrainer, KTOTrainer); the
differences are listed in docs/preference.md. The loop (train/loop.py) reaches all of this
through `loss_module`, `loss_units`, `take_stats` and `step_metrics`: for `sft` they are the
plain token-normalised cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gemmaforge.config import TrainConfig
from gemmaforge.data.batches.epochs import MemoryExamples
from gemmaforge.data.examples.preference import with_ref
from gemmaforge.data.examples.render import IGNORE_INDEX
from gemmaforge.files import write_json_atomic
from gemmaforge.train.loss import LossModule, row_log_probs
from gemmaforge.train.options import trim_host_memory

PAIRED = ("dpo", "orpo", "simpo")
"""Objectives trained on chosen/rejected pairs."""
REFERENCE = ("dpo", "kto")
"""Objectives that compare against the reference (adapter-disabled) model."""
EXTRA_KEYS = ("pairs", "desirable", "ref_logps")
"""Batch keys the preference collator adds; never passed to the model."""
STATS = (
    "preference_accuracy",
    "reward_chosen",
    "reward_rejected",
    "reward_accuracy",
    "reward_margin",
    "logp_chosen",
    "logp_rejected",
)
"""Per-step metrics of the preference objectives (means; see docs/preference.md)."""


def is_preference(cfg: TrainConfig) -> bool:
    return cfg.objective != "sft"


class PreferenceLoss(torch.nn.Module):
    """The model and a preference loss as one module (see LossModule for why one module):
    `forward(batch)` is the batch's summed loss over pairs (KTO: rows). The metric sums of
    each forward wait in `stats` for the loop to take."""

    def __init__(self, model, cfg: TrainConfig):
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.stats: dict[str, float] = {}

    def forward(self, batch: dict) -> torch.Tensor:
        if batch["input_ids"].device.type == "cpu":
            trim_host_memory()  # the last step's freed activations leave the resident set
        inputs = {key: value for key, value in batch.items() if key not in EXTRA_KEYS}
        chunk = self.cfg.loss_chunk_size
        ref = batch.get("ref_logps")
        if ref is None and self.cfg.objective in REFERENCE:
            ref = reference_log_probs(self.model, inputs, chunk)
        logps, counts = row_log_probs(self.model, inputs, chunk)
        losses, stats = objective_losses(self.cfg, logps, counts, ref, batch)
        self.stats = stats
        return losses.sum()


def reference_log_probs(model, inputs: dict, chunk_size: int) -> torch.Tensor:
    """Each row's summed log-probability under the base model (the adapter switched off)."""
    with torch.no_grad(), model.disable_adapter():
        return row_log_probs(model, inputs, chunk_size)[0]


def objective_losses(
    cfg: TrainConfig, logps: torch.Tensor, counts: torch.Tensor, ref, batch: dict
) -> tuple[torch.Tensor, dict[str, float]]:
    """(per-pair or per-row losses, metric sums) for `cfg.objective`."""
    if cfg.objective == "kto":
        return kto_losses(cfg, logps, ref, batch["desirable"])
    pairs = int(batch["pairs"])
    chosen, rejected = logps[:pairs], logps[pairs:]
    n_c, n_r = counts[:pairs].clamp(min=1), counts[pairs:].clamp(min=1)
    if cfg.objective == "dpo":
        ref_c, ref_r = ref[:pairs], ref[pairs:]
        if cfg.dpo_loss == "ipo":
            # IPO works on mean per-token log-probabilities (as TRL does).
            chosen, rejected, ref_c, ref_r = chosen / n_c, rejected / n_r, ref_c / n_c, ref_r / n_r
        margin = (chosen - ref_c) - (rejected - ref_r)
        if cfg.dpo_loss == "sigmoid":
            losses = -F.logsigmoid(cfg.beta * margin)
        elif cfg.dpo_loss == "ipo":
            losses = (margin - 1 / (2 * cfg.beta)) ** 2
        else:
            losses = torch.relu(1 - cfg.beta * margin)
        reward_c = cfg.beta * (chosen - ref_c).detach()
        reward_r = cfg.beta * (rejected - ref_r).detach()
    elif cfg.objective == "simpo":
        mean_c, mean_r = chosen / n_c, rejected / n_r
        losses = -F.logsigmoid(cfg.simpo_beta * (mean_c - mean_r) - cfg.simpo_gamma)
        reward_c, reward_r = cfg.simpo_beta * mean_c.detach(), cfg.simpo_beta * mean_r.detach()
    else:  # orpo
        mean_c, mean_r = chosen / n_c, rejected / n_r
        log_odds = (mean_c - mean_r) - (_log1mexp(mean_c) - _log1mexp(mean_r))
        # The supervised half is the chosen reply's mean token cross-entropy, per pair.
        losses = -mean_c - cfg.orpo_lambda * F.logsigmoid(log_odds)
        reward_c, reward_r = cfg.orpo_lambda * mean_c.detach(), cfg.orpo_lambda * mean_r.detach()
    stats = {
        "reward_chosen": reward_c.sum().item(),
        "reward_rejected": reward_r.sum().item(),
        "reward_accuracy": (reward_c > reward_r).float().sum().item(),
        "reward_margin": (reward_c - reward_r).sum().item(),
        "logp_chosen": logps[:pairs].detach().sum().item(),
        "logp_rejected": logps[pairs:].detach().sum().item(),
        # The model itself (not the implicit reward) rates the chosen reply more likely.
        "preference_accuracy": (logps[:pairs] > logps[pairs:]).float().sum().item(),
        "units": float(pairs),
    }
    return losses, stats


def kto_losses(cfg: TrainConfig, logps, ref, desirable) -> tuple[torch.Tensor, dict[str, float]]:
    """KTO (Ethayarajh et al. 2024) on labelled replies.

    The reference point z is the micro-batch's mean policy/reference log-ratio over every
    process (as TRL gathers its KL estimate), detached and clamped at 0. TRL estimates it from
    mismatched prompt/reply pairs, which costs another forward of the whole batch; the batch
    mean is the cheaper estimate (docs/preference.md)."""
    ratio = logps - ref
    z = _mean_over_processes(ratio.detach()).clamp(min=0)
    good = desirable.bool()
    losses = torch.where(
        good,
        cfg.kto_desirable_weight * (1 - torch.sigmoid(cfg.beta * (ratio - z))),
        cfg.kto_undesirable_weight * (1 - torch.sigmoid(cfg.beta * (z - ratio))),
    )
    rewards = cfg.beta * ratio.detach()
    d = logps.detach()
    stats = {
        "reward_chosen": rewards[good].sum().item(),
        "reward_rejected": rewards[~good].sum().item(),
        "logp_chosen": d[good].sum().item(),
        "logp_rejected": d[~good].sum().item(),
        "desirable": float(good.sum()),
        "undesirable": float((~good).sum()),
        "units": float(len(good)),
    }
    return losses, stats


def _mean_over_processes(values: torch.Tensor) -> torch.Tensor:
    """The mean of `values` over the rows of every process (this process's alone when there
    is one): every process then uses the same KTO reference point, the one a single process
    training the whole batch would use."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values.mean()
    total = torch.stack([values.sum(), torch.tensor(float(values.numel()), device=values.device)])
    dist.all_reduce(total)
    return total[0] / total[1]


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable (as TRL's ORPO computes it: log1p(-exp(x)))."""
    return torch.log1p(-torch.exp(x).clamp(max=1 - 1e-7))


# --- The loop's hooks -----------------------------------------------------------------------


def loss_module(model, cfg: TrainConfig) -> torch.nn.Module:
    """The module the loop trains through: summed token cross-entropy (sft) or summed
    preference losses."""
    if is_preference(cfg):
        return PreferenceLoss(model, cfg)
    return LossModule(model, cfg.loss_chunk_size)


def loss_units(cfg: TrainConfig, batch: dict) -> int:
    """What a step's loss is normalised by: labelled tokens (sft), pairs, or KTO rows."""
    if not is_preference(cfg):
        return labelled_tokens(batch)
    if cfg.objective == "kto":
        return int(batch["desirable"].numel())
    return int(batch["pairs"])


def labelled_tokens(batch: dict) -> int:
    """Tokens the batch trains on (`trained_tokens`): labelled positions of every sequence,
    chosen and rejected replies both (for sft, the same as `loss_units`)."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def take_stats(loss, into: dict[str, float], weight: float) -> None:
    """Add the metric sums of `loss`'s last forward, times `weight`, to `into`: a row of
    weight 0 is a padding copy, not data, but its keys are added all the same, so every
    process sums the same list over the processes."""
    module = getattr(loss, "module", loss)
    for key, value in (getattr(module, "stats", None) or {}).items():
        into[key] = into.get(key, 0.0) + value * weight


def step_metrics(cfg: TrainConfig, sums: dict[str, float]) -> dict[str, float]:
    """The metrics.jsonl fields of one step from its summed stats (empty for sft)."""
    if not is_preference(cfg) or not sums:
        return {}
    if cfg.objective == "kto":
        good, bad = max(sums["desirable"], 1.0), max(sums["undesirable"], 1.0)
        return {
            "reward_chosen": sums["reward_chosen"] / good,
            "reward_rejected": sums["reward_rejected"] / bad,
            "reward_margin": sums["reward_chosen"] / good - sums["reward_rejected"] / bad,
            "logp_chosen": sums["logp_chosen"] / good,
            "logp_rejected": sums["logp_rejected"] / bad,
        }
    units = max(sums["units"], 1.0)
    return {key: sums[key] / units for key in STATS}


@torch.no_grad()
def evaluate_pairs(model, examples: list, collate, batch_size: int, device, cfg: TrainConfig):
    """Mean loss and metrics of `cfg.objective` over held-out examples (validation, and
    `eval --task preference`); the model is left in the mode it was in."""
    was_training = model.training
    model.eval()
    module = PreferenceLoss(model, cfg)
    total, units, sums = 0.0, 0.0, {}
    for start in range(0, len(examples), batch_size):
        batch = collate([[ex] for ex in examples[start : start + batch_size]], device)
        total += module(batch).item()
        units += loss_units(cfg, batch)
        take_stats(module, sums, 1.0)
    model.train(was_training)
    return {"loss": total / max(units, 1), **step_metrics(cfg, sums)}


def validation(model, examples, collate, cfg: TrainConfig, device) -> dict:
    """The loop's validation record: eval_loss, and the held-out reward accuracy / margin."""
    metrics = evaluate_pairs(model, examples, collate, cfg.batch_size, device, cfg)
    out = {"eval_loss": metrics["loss"], "eval_reward_margin": metrics["reward_margin"]}
    for key in ("reward_accuracy", "preference_accuracy"):
        if key in metrics:
            out[f"eval_{key}"] = metrics[key]
    return out


def precompute_reference(model, data, cfg: TrainConfig, folder, device) -> None:
    """Reference log-probabilities of every training example, computed once (adapter off) and
    cached in the run folder (`ref_logps.json`, reused on resume when the examples match);
    the batches then carry them and the loss skips the reference forward."""
    import json

    if cfg.objective not in REFERENCE or not isinstance(data.train, MemoryExamples):
        return
    examples = data.train.examples
    cache = folder.root / "ref_logps.json"
    wheres = [ex.where for ex in examples]
    saved = json.loads(cache.read_text()) if cache.exists() else None
    if saved is None or saved.get("where") != wheres:
        was_training = model.training
        model.eval()
        values = []
        for start in range(0, len(examples), cfg.batch_size):
            part = examples[start : start + cfg.batch_size]
            batch = data.collate([[ex] for ex in part], device)
            inputs = {key: value for key, value in batch.items() if key not in EXTRA_KEYS}
            ref = reference_log_probs(model, inputs, cfg.loss_chunk_size).tolist()
            pairs = int(batch["pairs"]) if "pairs" in batch else len(part)
            for i, _ in enumerate(part):
                values.append([ref[i]] + ([ref[pairs + i]] if "pairs" in batch else []))
        model.train(was_training)
        saved = {"where": wheres, "ref_logps": values}
        write_json_atomic(cache, saved)
    data.train.examples = [
        with_ref(ex, tuple(v)) for ex, v in zip(examples, saved["ref_logps"], strict=True)
    ]
