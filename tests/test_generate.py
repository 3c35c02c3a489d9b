"""Batched greedy generation on the real, pretrained Gemma 3 270M (no download)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from gemmaforge.config import LoraConfig
from gemmaforge.infer.generate import Generation, generate, stop_token_ids
from gemmaforge.models.lora import apply_lora

# Different lengths, so a batch of them is left-padded; one has a system prompt and one is a
# multi-turn conversation.
PROMPTS = [
    [{"role": "user", "content": "Say hi."}],
    [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "What colour is the sky on a clear day?"},
    ],
    [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris"},
        {"role": "user", "content": "Capital of Italy?"},
        {"role": "assistant", "content": "Rome"},
        {"role": "user", "content": "Capital of Germany?"},
    ],
]


@contextmanager
def end_of_turn_after(model, tokenizer, tokens: int):
    """Make `<end_of_turn>` the next token once `tokens` tokens have been generated.

    The pretrained (not instruction-tuned) 270M never ends a turn by itself: `<end_of_turn>`
    ranks around 10,000th where a reply should stop. So the test takes that decision in the
    model's place, the way a fine-tuned model would, by raising the token's logit. `generate`
    computes the LM head once per new token, so counting calls counts tokens.
    """
    end = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    calls = 0

    def force(module, inputs, logits):
        nonlocal calls
        calls += 1
        if calls == tokens + 1:
            logits = logits.clone()
            logits[:, -1, end] = 1e4
        return logits

    handle = model.get_output_embeddings().register_forward_hook(force)
    try:
        yield
    finally:
        handle.remove()


def test_stop_tokens_are_the_families(gemma3_270m):
    tokenizer = gemma3_270m.tokenizer
    assert stop_token_ids(tokenizer, gemma3_270m.family) == [
        tokenizer.convert_tokens_to_ids("<end_of_turn>"),
        tokenizer.eos_token_id,
    ]


def test_reply_is_only_new_tokens_and_ends_at_end_of_turn(gemma3_270m):
    model, tokenizer, family = gemma3_270m.model, gemma3_270m.tokenizer, gemma3_270m.family
    free = generate(model, tokenizer, family, PROMPTS, max_new_tokens=3)
    with end_of_turn_after(model, tokenizer, 3):
        stopped = generate(model, tokenizer, family, PROMPTS, max_new_tokens=10)

    for reply in free:
        assert not reply.stopped
        assert reply.num_tokens == 3
        # Three new tokens at most: the prompt (dozens of tokens, turn markers included) is out.
        assert 0 < len(tokenizer(reply.text, add_special_tokens=False)["input_ids"]) <= 3
    # Generation ended at <end_of_turn> well before max_new_tokens, and the text is the same
    # three tokens without the stop token.
    assert stopped == [Generation(r.text, num_tokens=4, stopped=True, raw=r.raw) for r in free]


def test_batched_equals_one_by_one(gemma3_270m):
    model, tokenizer, family = gemma3_270m.model, gemma3_270m.tokenizer, gemma3_270m.family
    model.train()
    try:
        batched = generate(model, tokenizer, family, PROMPTS, max_new_tokens=12, batch_size=3)
        single = [
            generate(model, tokenizer, family, [prompt], max_new_tokens=12)[0] for prompt in PROMPTS
        ]
        assert model.training, "generate must restore the caller's train/eval mode"
    finally:
        model.eval()
    assert batched == single
    assert all(reply.num_tokens == 12 and reply.text for reply in batched)


def test_peft_model_generates_like_its_base(gemma3_270m):
    """A fresh LoRA adapter is a no-op (B = 0), so the wrapped model must answer identically."""
    model, tokenizer, family = gemma3_270m.model, gemma3_270m.tokenizer, gemma3_270m.family
    bare = generate(model, tokenizer, family, PROMPTS[:2], max_new_tokens=6)
    peft_model, _ = apply_lora(model, LoraConfig(r=4))
    try:
        wrapped = generate(peft_model, tokenizer, family, PROMPTS[:2], max_new_tokens=6)
    finally:
        peft_model.unload()
    assert wrapped == bare


def test_conversation_must_end_with_a_user_turn(gemma3_270m):
    from gemmaforge.errors import UserError

    conversation = [*PROMPTS[0], {"role": "assistant", "content": "Hi!"}]
    with pytest.raises(UserError, match="must end with a user message"):
        generate(gemma3_270m.model, gemma3_270m.tokenizer, gemma3_270m.family, [conversation])
