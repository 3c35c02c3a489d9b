"""Memory-efficient causal-LM loss: the [tokens x vocab] logits are never built in full.

Gemma's vocabulary has 262,144 entries, so one token's fp32 logits take 1 MiB. We run the
decoder to its last hidden state, keep only the positions that carry a label, and compute the
LM head, the final-logit soft-cap and the cross-entropy chunk by chunk. Each chunk's gradient
is computed in the same pass, while its logits exist (softmax minus one-hot, through the
soft-cap, back through the head), and only the [tokens x hidden] input gradient is kept for
the backward pass: no chunk's logits are stored or recomputed. This is the fused linear
cross-entropy of Liger-Kernel and Apple's Cut Cross-Entropy, in plain PyTorch so it runs on
CPU, CUDA and MPS alike.
"""

from __future__ import annotations

import torch

from gemmaforge.data.examples.render import IGNORE_INDEX
from gemmaforge.models.structure import model_parts


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `rows @ weight.T` (soft-capped) against `targets`, with the
    gradients of `rows` (and of `weight`, when it is trained) computed in the forward pass.

    Every elementwise step runs in place in buffers allocated once per call ([chunk x vocab]:
    the matmul's output in the weights' dtype, its fp32 copy, and the tanh for the soft-cap),
    not once per chunk: a fresh 64 MiB tensor per chunk costs page faults, and each extra pass
    over it memory bandwidth (docs/performance.md has the measurements). `log_softmax` writes
    into its own input: it reduces a row (max, then sum of exponentials) before it writes it.
    """

    @staticmethod
    def forward(ctx, rows, weight, targets, softcap, chunk_size):
        want_rows, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_rows = torch.empty_like(rows) if want_rows else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if want_weight else None
        total = torch.zeros((), dtype=torch.float32, device=rows.device)
        logits, logits32, tanh32 = _chunk_buffers(rows, weight, chunk_size, softcap)
        for start in range(0, rows.shape[0], chunk_size):
            h = rows[start : start + chunk_size]
            t = targets[start : start + chunk_size]
            count = h.shape[0]
            picked = torch.arange(count, device=t.device)
            low, grad = logits[:count], logits32[:count]
            torch.mm(h, weight.T, out=low)
            grad.copy_(low)
            if softcap:
                capped = torch.tanh(grad.div_(softcap), out=tanh32[:count])
                torch.mul(capped, softcap, out=grad)
            torch.log_softmax(grad, dim=-1, out=grad)  # log-probabilities
            total -= grad[picked, t].sum()
            if not (want_rows or want_weight):
                continue
            grad.exp_()  # softmax
            grad[picked, t] -= 1
            if softcap:
                grad.mul_(capped.square_().neg_().add_(1))  # d tanh = 1 - tanh^2
            if want_weight:
                grad_weight.addmm_(grad.T, h.float())
            if want_rows:
                low.copy_(grad)
                torch.mm(low, weight, out=grad_rows[start : start + chunk_size])
        ctx.save_for_backward(
            *(g if g is not None else torch.empty(0) for g in (grad_rows, grad_weight))
        )
        ctx.wanted = (want_rows, want_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_rows, grad_weight = ctx.saved_tensors
        want_rows, want_weight = ctx.wanted
        return (
            grad_rows * grad_output.to(grad_rows.dtype) if want_rows else None,
            (grad_weight * grad_output).to(ctx.weight_dtype) if want_weight else None,
            None,
            None,
            None,
        )


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
    keep = targets != IGNORE_INDEX
    rows = hidden[:, :-1][keep]
    targets = targets[keep]
    total = _LinearCrossEntropy.apply(rows, weight, targets, softcap, chunk_size)
    return total, int(targets.numel())


def batch_loss(model, batch: dict, chunk_size: int = 1024) -> tuple[torch.Tensor, int]:
    """Summed loss over the batch's labelled tokens, and their count."""
    decoder, head, softcap = model_parts(model)
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    hidden = decoder(**inputs, use_cache=False).last_hidden_state
    return chunked_cross_entropy(hidden, head.weight, batch["labels"], softcap, chunk_size)


class LossModule(torch.nn.Module):
    """The model and its fused loss as one module: `forward(batch)` is the batch's summed loss.

    A distributed wrapper (DDP, or FSDP through Accelerate) must see every training forward to
    synchronise gradients in the backward pass; the fused loss calls the decoder and the head
    itself, so the wrapper goes around both.
    """

    def __init__(self, model, chunk_size: int):
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size

    def forward(self, batch: dict) -> torch.Tensor:
        return batch_loss(self.model, batch, self.chunk_size)[0]


@torch.no_grad()
def mean_loss(model, examples: list, collate, batch_size: int, device, chunk_size: int) -> float:
    """Mean loss per labelled token over `examples` (validation during training, perplexity in
    eval), in batches of `batch_size`; the model is left in the mode it was in."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = collate.examples(examples[start : start + batch_size], device)
        loss_sum, tokens = batch_loss(model, batch, chunk_size)
        total, count = total + loss_sum.item(), count + tokens
    model.train(was_training)
    return total / max(count, 1)


class _LinearTokenLogProbs(torch.autograd.Function):
    """Log-probability of each `targets` token under `rows @ weight.T` (soft-capped), one value
    per row of `rows`, chunk by chunk: the preference objectives' per-sequence sums are built
    from these without the [tokens x vocab] logits ever existing in full.

    A token's log-probability depends only on its own hidden row, so its gradient with respect
    to that row, d logp / d h = (onehot - softmax) @ W (through the soft-cap), is computed in
    the forward pass while the chunk's logits exist, and the backward pass only scales each row
    by the incoming per-token gradient: exact, with no logits stored or recomputed. The LM
    head's gradient (when it is trained) sums over tokens with those per-token weights, so it
    is accumulated in the backward pass, recomputing each chunk's logits once.
    """

    @staticmethod
    def forward(ctx, rows, weight, targets, softcap, chunk_size):
        want_rows, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        out = torch.empty(rows.shape[0], dtype=torch.float32, device=rows.device)
        unit = torch.empty_like(rows) if want_rows else None
        # As in _LinearCrossEntropy: every step in place in [chunk x vocab] buffers allocated
        # once per call (the matmul's output in the weights' dtype, its fp32 copy, the tanh),
        # not a fresh tensor per step and chunk: half the head's transient memory.
        logits, logits32, tanh32 = _chunk_buffers(rows, weight, chunk_size, softcap)
        for start in range(0, rows.shape[0], chunk_size):
            h = rows[start : start + chunk_size]
            t = targets[start : start + chunk_size]
            count = h.shape[0]
            low, grad = logits[:count], logits32[:count]
            torch.mm(h, weight.T, out=low)
            grad.copy_(low)
            capped = None
            if softcap:
                capped = torch.tanh(grad.div_(softcap), out=tanh32[:count])
                torch.mul(capped, softcap, out=grad)
            torch.log_softmax(grad, dim=-1, out=grad)
            picked = torch.arange(count, device=t.device)
            out[start : start + count] = grad[picked, t]
            if want_rows:
                _onehot_minus_softmax(grad, picked, t, capped)
                low.copy_(grad)
                torch.mm(low, weight, out=unit[start : start + count])
        ctx.save_for_backward(
            unit if want_rows else torch.empty(0),
            rows if want_weight else torch.empty(0),
            weight if want_weight else torch.empty(0),
            targets if want_weight else torch.empty(0),
        )
        ctx.wanted = (want_rows, want_weight)
        ctx.softcap, ctx.chunk_size = softcap, chunk_size
        return out

    @staticmethod
    def backward(ctx, grad_output):
        unit, rows, weight, targets = ctx.saved_tensors
        want_rows, want_weight = ctx.wanted
        grad_rows = unit * grad_output.to(unit.dtype)[:, None] if want_rows else None
        grad_weight = None
        if want_weight:
            grad_weight = torch.zeros_like(weight, dtype=torch.float32)
            for start in range(0, rows.shape[0], ctx.chunk_size):
                h = rows[start : start + ctx.chunk_size]
                t = targets[start : start + ctx.chunk_size]
                grad, capped = _chunk_log_softmax(h, weight, ctx.softcap)
                picked = torch.arange(h.shape[0], device=t.device)
                _onehot_minus_softmax(grad, picked, t, capped)
                grad.mul_(grad_output[start : start + ctx.chunk_size, None])
                grad_weight.addmm_(grad.T, h.float())
            grad_weight = grad_weight.to(weight.dtype)
        return grad_rows, grad_weight, None, None, None


def _chunk_log_softmax(h, weight, softcap):
    """fp32 log-softmax of one chunk's (soft-capped) logits, and the tanh of the cap."""
    logits = torch.mm(h, weight.T).float()
    capped = None
    if softcap:
        capped = torch.tanh(logits / softcap)
        logits = capped * softcap
    return torch.log_softmax(logits, dim=-1), capped


def _onehot_minus_softmax(logp, picked, targets, capped) -> None:
    """In place: log-probabilities -> d logp[target] / d (pre-cap) logits."""
    logp.exp_().neg_()
    logp[picked, targets] += 1
    if capped is not None:
        logp.mul_(capped.square_().neg_().add_(1))


def row_log_probs(model, batch: dict, chunk_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of the batch: the summed log-probability of its labelled tokens (fp32, with
    gradients) and how many there are. One example per row (no packing)."""
    decoder, head, softcap = model_parts(model)
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    hidden = decoder(**inputs, use_cache=False).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    token_logps = _LinearTokenLogProbs.apply(
        hidden[:, :-1][keep], head.weight, targets[keep], softcap, chunk_size
    )
    row_of = keep.nonzero()[:, 0]
    sums = torch.zeros(keep.shape[0], dtype=torch.float32, device=token_logps.device)
    return sums.index_add(0, row_of, token_logps), keep.sum(dim=1)


def _chunk_buffers(rows, weight, chunk_size: int, softcap) -> tuple:
    """The [chunk x vocab] buffers a head reuses for every chunk: the matmul's output in the
    weights' dtype, its fp32 copy (the same tensor for fp32 weights), and the tanh's."""
    size = (min(chunk_size, rows.shape[0]), weight.shape[0])
    logits32 = torch.empty(size, dtype=torch.float32, device=rows.device)
    same = weight.dtype == torch.float32
    logits = logits32 if same else torch.empty(size, dtype=weight.dtype, device=rows.device)
    return logits, logits32, torch.empty_like(logits32) if softcap else None
