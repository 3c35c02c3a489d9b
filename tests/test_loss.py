"""The chunked loss equals the plain full-logits cross-entropy, in value and in gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gemmaforge.train.loss import chunked_cross_entropy


def reference(hidden, weight, labels, softcap):
    logits = (hidden @ weight.T).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    targets = labels[:, 1:].reshape(-1)
    flat = logits[:, :-1].reshape(-1, logits.shape[-1])
    return F.cross_entropy(flat, targets, ignore_index=-100, reduction="sum")


@pytest.mark.parametrize("vocab", [7, 300, 4099])
@pytest.mark.parametrize("chunk", [1, 5, 64, 4096])
@pytest.mark.parametrize("softcap", [None, 30.0, 2.0])
def test_chunked_loss_matches_reference(vocab, chunk, softcap):
    torch.manual_seed(vocab + chunk)
    hidden = torch.randn(3, 11, 16, dtype=torch.float32, requires_grad=True)
    weight = torch.randn(vocab, 16, dtype=torch.float32, requires_grad=True)
    labels = torch.randint(0, vocab, (3, 11))
    labels[0, :4] = -100  # a prompt
    labels[2, 7:] = -100  # padding
    expected = reference(hidden, weight, labels, softcap)
    expected_grads = torch.autograd.grad(expected, (hidden, weight))

    got, count = chunked_cross_entropy(hidden, weight, labels, softcap, chunk)
    grads = torch.autograd.grad(got, (hidden, weight))

    assert count == int((labels[:, 1:] != -100).sum())
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, expected_grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)


def test_no_labels_gives_zero_loss_and_no_tokens():
    hidden = torch.randn(1, 4, 8, requires_grad=True)
    weight = torch.randn(10, 8)
    loss, count = chunked_cross_entropy(hidden, weight, torch.full((1, 4), -100))
    assert count == 0 and loss.item() == 0.0
