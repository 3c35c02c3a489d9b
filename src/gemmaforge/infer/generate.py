"""Batched greedy generation for chat conversations, on a bare or a PEFT-wrapped model.

Prompts are rendered by `render_prompt`, the same function training renders with, so a model
is asked exactly the way it was trained. Batches are left-padded (a decoder continues from the
last position of every row) and built from prompts of similar length, which keeps padding
small; results come back in the caller's order. Only the new tokens are decoded, up to the
family's first stop token. A conversation with images or audio is rendered by training's media
path (`MediaEncoder`) and generated on its own, with its pixel / audio features.

Replies do not depend on how prompts are batched, up to floating-point noise: in bf16, a
near-tie between two tokens can resolve differently for another batch shape (fp32 outputs
match exactly; tests/test_generate.py checks that).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gemmaforge.data.batches.collate import Collator
from gemmaforge.data.examples.render import RenderedExample, render_prompt_example
from gemmaforge.models.families import Family

Messages = list[dict[str, Any]]

PROMPT_KEYS = ("input_ids", "attention_mask", "labels")
"""Batch keys that `generate` builds itself (labels are training's only)."""


@dataclass(frozen=True)
class Generation:
    """One reply: its text and how generation ended."""

    text: str
    """Decoded new tokens before the stop token, special tokens removed."""
    num_tokens: int
    """New tokens generated, the stop token included."""
    stopped: bool
    """True if a stop token ended the reply; False if it ran into max_new_tokens."""
    raw: str = ""
    """The same new tokens decoded with their special tokens (Gemma 4's tool calls and
    thinking channel are written in them; see data/examples/tools.py)."""


def stop_token_ids(tokenizer: Any, family: Family) -> list[int]:
    """Ids of the family's stop tokens that this tokenizer knows."""
    ids = [tokenizer.convert_tokens_to_ids(token) for token in family.stop_tokens]
    return [i for i in ids if i is not None and i != tokenizer.unk_token_id]


def media_inputs(example: RenderedExample, media: Any, dtype: Any, device: Any) -> dict:
    """The inputs besides ids and mask that one rendered prompt needs on a multimodal model
    (modality type ids, pixel / audio features), built by training's own batch code."""

    # One prompt, no padding: the pad id is never used.
    collator = Collator(pad_id=0, type_key=media.type_key, media=media, dtype=dtype)
    batch = collator.examples([example], device)
    return {key: value for key, value in batch.items() if key not in PROMPT_KEYS}


def generate(
    model: Any,
    tokenizer: Any,
    family: Family,
    conversations: Sequence[Messages],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 16,
    media: Any = None,
    tools: Sequence[list[dict] | None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Generation]:
    """Greedy replies to `conversations` (each ending with a user turn), in their order.

    `media` (a MediaEncoder) lets conversations carry images and audio; each of those is
    generated alone. `progress` is called with the number of replies each batch finished
    (a `progress.Tracker.advance`). The model is put in eval mode for the call and restored
    afterwards, so this can run in the middle of training.
    """
    tools = tools or [None] * len(conversations)
    examples = [
        render_prompt_example(list(messages), family, tokenizer, media=media, tools=declared)
        for messages, declared in zip(conversations, tools, strict=True)
    ]
    return generate_rendered(
        model,
        tokenizer,
        family,
        examples,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        media=media,
        progress=progress,
    )


def generate_rendered(
    model: Any,
    tokenizer: Any,
    family: Family,
    examples: Sequence[RenderedExample],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 16,
    media: Any = None,
    progress: Callable[[int], None] | None = None,
) -> list[Generation]:
    """`generate` for prompts already rendered (each ending with the assistant's header), e.g.
    the prompt part of a validation example during training."""
    prompts = [example.input_ids for example in examples]
    stops = stop_token_ids(tokenizer, family)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    # Similar lengths share a batch, so little compute goes to padding; longest first, so a
    # batch too big for memory fails at once rather than after the short ones have run.
    order = sorted(
        (i for i in range(len(prompts)) if not examples[i].media), key=lambda i: -len(prompts[i])
    )
    results: dict[int, Generation] = {}
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        # One at a time: rows' media differ in count and shape (Gemma 4 images vary in
        # patches), and one row keeps feature order trivially that of its tokens.
        for i in (i for i in range(len(prompts)) if examples[i].media):
            inputs = media_inputs(examples[i], media, model.dtype, device)
            reply = _generate_batch(model, [prompts[i]], pad, stops, max_new_tokens, inputs)[0]
            results[i] = _decode(tokenizer, reply, stops)
            if progress:
                progress(1)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            replies = _generate_batch(
                model, [prompts[i] for i in chunk], pad, stops, max_new_tokens
            )
            for i, reply in zip(chunk, replies, strict=True):
                results[i] = _decode(tokenizer, reply, stops)
            if progress:
                progress(len(chunk))
    finally:
        model.train(was_training)
    return [results[i] for i in range(len(prompts))]


def _generate_batch(
    model: Any,
    prompts: list[list[int]],
    pad: int,
    stops: list[int],
    max_new_tokens: int,
    inputs: dict | None = None,
) -> list[list[int]]:
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    device = next(model.parameters()).device
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=stops,
            pad_token_id=pad,
            **(inputs or {}),
        )
    return out[:, width:].tolist()


def _decode(tokenizer: Any, new_ids: list[int], stops: list[int]) -> Generation:
    end = next((i for i, token in enumerate(new_ids) if token in stops), None)
    if end is None:
        # A row that never stopped ran the full max_new_tokens, so it holds no padding.
        text = tokenizer.decode(new_ids, skip_special_tokens=True)
        raw = tokenizer.decode(new_ids, skip_special_tokens=False)
        return Generation(text, len(new_ids), False, raw)
    text = tokenizer.decode(new_ids[:end], skip_special_tokens=True)
    raw = tokenizer.decode(new_ids[:end], skip_special_tokens=False)
    return Generation(text, end + 1, True, raw)
