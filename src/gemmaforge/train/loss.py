"""Memory-efficient causal-LM loss: the [tokens x vocab] logits are never built in full.

Gemma's vocabulary has 262,144 entries, so one token's fp32 logits take 1 MiB. We run the
decoder to its last hidden state, keep only the positions that carry a label, and compute the
LM head, the final-logit soft-cap and the cross-entropy chunk by chunk. Each chunk is
checkpointed, so the backward pass recomputes its logits instead of keeping them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from gemmaforge.models.families import text_config

IGNORE = -100


def _chunk_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, softcap):
    logits = (hidden @ weight.T).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits, labels, reduction="sum")


def chunked_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    softcap: float | None = None,
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy and the number of labelled tokens.

    hidden: [batch, seq, dim] last hidden states; weight: [vocab, dim] LM head; labels:
    [batch, seq] aligned with the inputs (-100 where not trained). Position t predicts t+1.
    """
    targets = labels[:, 1:]
    keep = targets != IGNORE
    rows = hidden[:, :-1][keep]
    targets = targets[keep]
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, rows.shape[0], chunk_size):
        part = slice(start, start + chunk_size)
        if torch.is_grad_enabled():
            total = total + checkpoint(
                _chunk_loss, rows[part], weight, targets[part], softcap, use_reentrant=False
            )
        else:
            total = total + _chunk_loss(rows[part], weight, targets[part], softcap)
    return total, int(targets.numel())


def model_parts(model):
    """(decoder, lm_head, softcap) of a transformers Gemma model, bare or PEFT-wrapped.

    `model.model` runs the towers and the decoder and stops before the head for every Gemma
    class (Gemma3ForCausalLM, Gemma3n/Gemma4ForConditionalGeneration).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    softcap = getattr(text_config(base.config), "final_logit_softcapping", None)
    return base.model, base.lm_head, softcap


def batch_loss(model, batch: dict, chunk_size: int = 1024) -> tuple[torch.Tensor, int]:
    """Summed loss over the batch's labelled tokens, and their count."""
    decoder, head, softcap = model_parts(model)
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    hidden = decoder(**inputs, use_cache=False).last_hidden_state
    return chunked_cross_entropy(hidden, head.weight, batch["labels"], softcap, chunk_size)
