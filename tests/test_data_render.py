"""Rendering conversations to ids + labels, checked against hand-written token pieces.

Gemma 3 uses the real 262k-token tokenizer; Gemma 3n and Gemma 4 the tiny offline ones.
Each expectation is a list of (piece, trained) pairs written out by hand from the chat
format, so the renderer is compared with the format itself, not with its own code.
"""

from __future__ import annotations

import re

import pytest

from gemmaforge.data.examples.render import IGNORE_INDEX, render, render_prompt, render_text
from gemmaforge.errors import UserError
from gemmaforge.models.families import GEMMA3, GEMMA4, family_by_name

SPECIAL = {"<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<|turn>", "<turn|>"}

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "  And 3+3? "},  # surrounding whitespace is stripped
    {"role": "model", "content": "6."},
]

# (piece, trained) as the Gemma 3 / 3n format lays out CONVERSATION.
GEMMA3_PIECES = [
    ("<bos>", False),
    ("<start_of_turn>", False), ("user\n", False), ("You are terse.\n\nWhat is 2+2?", False),
    ("<end_of_turn>", False), ("\n", False),
    ("<start_of_turn>", False), ("model\n", False), ("4.", True), ("<end_of_turn>", True),
    ("\n", False),
    ("<start_of_turn>", False), ("user\n", False), ("And 3+3?", False),
    ("<end_of_turn>", False), ("\n", False),
    ("<start_of_turn>", False), ("model\n", False), ("6.", True), ("<end_of_turn>", True),
    ("\n", False),
]  # fmt: skip

GEMMA4_PIECES = [
    ("<bos>", False),
    ("<|turn>", False), ("system\n", False), ("You are terse.", False), ("<turn|>", False),
    ("\n", False),
    ("<|turn>", False), ("user\n", False), ("What is 2+2?", False), ("<turn|>", False),
    ("\n", False),
    ("<|turn>", False), ("model\n", False), ("4.", True), ("<turn|>", True), ("\n", False),
    ("<|turn>", False), ("user\n", False), ("And 3+3?", False), ("<turn|>", False),
    ("\n", False),
    ("<|turn>", False), ("model\n", False), ("6.", True), ("<turn|>", True), ("\n", False),
]  # fmt: skip

PIECES = {"gemma3": GEMMA3_PIECES, "gemma3n": GEMMA3_PIECES, "gemma4": GEMMA4_PIECES}


@pytest.fixture(scope="module")
def tiny_tokenizers():
    from gemmaforge.models.tiny import tiny_tokenizer

    return {name: tiny_tokenizer(name) for name in ("gemma3n", "gemma4")}


@pytest.fixture(params=["gemma3", "gemma3n", "gemma4"])
def case(request, tiny_tokenizers):
    """(family, tokenizer) for each family; Gemma 3 with its real tokenizer."""
    name = request.param
    if name == "gemma3":
        return family_by_name(name), request.getfixturevalue("gemma3_tokenizer")
    return family_by_name(name), tiny_tokenizers[name]


def piece_ids(tokenizer, piece: str) -> list[int]:
    if piece in SPECIAL:
        return [tokenizer.convert_tokens_to_ids(piece)]
    return tokenizer(piece, add_special_tokens=False)["input_ids"]


def expected(tokenizer, pieces) -> tuple[list[int], list[int]]:
    ids, labels = [], []
    for piece, trained in pieces:
        part = piece_ids(tokenizer, piece)
        ids += part
        labels += part if trained else [IGNORE_INDEX] * len(part)
    return ids, labels


def trained_text(tokenizer, example) -> str:
    kept = [i for i, label in zip(example.input_ids, example.labels, strict=True) if label != -100]
    return tokenizer.decode(kept)


def test_exact_ids_and_labels(case):
    family, tokenizer = case
    example = render(CONVERSATION, family, tokenizer)
    ids, labels = expected(tokenizer, PIECES[family.name])
    assert example.input_ids == ids
    assert example.labels == labels
    assert example.num_trained == sum(label != IGNORE_INDEX for label in labels)


def test_decodes_to_the_chat_format(case):
    family, tokenizer = case
    text = tokenizer.decode(render(CONVERSATION, family, tokenizer).input_ids)
    assert text == "".join(piece for piece, _ in PIECES[family.name])


def test_exactly_one_bos_even_though_the_tokenizer_adds_one(case):
    family, tokenizer = case
    assert tokenizer("x")["input_ids"][0] == tokenizer.convert_tokens_to_ids("<bos>")
    ids = render(CONVERSATION, family, tokenizer).input_ids
    bos = tokenizer.convert_tokens_to_ids("<bos>")
    assert ids[0] == bos
    assert ids.count(bos) == 1


def test_gemma3_equals_tokenizing_the_template_string(gemma3_tokenizer):
    # What an inference engine gets when it tokenises the rendered chat template.
    text = "".join(piece for piece, _ in GEMMA3_PIECES)
    joint = gemma3_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert render(CONVERSATION, GEMMA3, gemma3_tokenizer).input_ids == joint


def test_gemma3_without_system_prompt(gemma3_tokenizer):
    example = render(CONVERSATION[1:3], GEMMA3, gemma3_tokenizer)
    assert gemma3_tokenizer.decode(example.input_ids) == (
        "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n"
        "<start_of_turn>model\n4.<end_of_turn>\n"
    )


def test_train_on_all_vs_last(case):
    family, tokenizer = case
    end = family.turn_end
    everything = render(CONVERSATION, family, tokenizer, train_on="all")
    last = render(CONVERSATION, family, tokenizer, train_on="last")
    assert trained_text(tokenizer, everything) == f"4.{end}6.{end}"
    assert trained_text(tokenizer, last) == f"6.{end}"
    assert last.input_ids == everything.input_ids


def test_render_prompt_is_the_training_prefix(case):
    family, tokenizer = case
    prompt = render_prompt(CONVERSATION[:4], family, tokenizer)
    full = render(CONVERSATION, family, tokenizer).input_ids
    assert full[: len(prompt)] == prompt
    assert tokenizer.decode(prompt).endswith(
        f"And 3+3?{family.turn_end}\n{family.turn_start}model\n"
    )
    # The reply starts right after the prompt.
    assert full[len(prompt) : len(prompt) + len(piece_ids(tokenizer, "6."))] == piece_ids(
        tokenizer, "6."
    )


def test_render_prompt_single_turn(case):
    family, tokenizer = case
    prompt = render_prompt([{"role": "user", "content": "Hi"}], family, tokenizer)
    expected_text = f"<bos>{family.turn_start}user\nHi{family.turn_end}\n{family.turn_start}model\n"
    assert tokenizer.decode(prompt) == expected_text


def test_render_text_trains_every_token_and_eos(case):
    family, tokenizer = case
    example = render_text("Once upon a time.", family, tokenizer, where="d.jsonl:1")
    body = [*piece_ids(tokenizer, "Once upon a time."), tokenizer.convert_tokens_to_ids("<eos>")]
    assert example.input_ids == [tokenizer.convert_tokens_to_ids("<bos>"), *body]
    assert example.labels == [IGNORE_INDEX, *body]
    assert example.where == "d.jsonl:1"


def u(text):
    return {"role": "user", "content": text}


def a(text):
    return {"role": "assistant", "content": text}


def s(text):
    return {"role": "system", "content": text}


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "the conversation has no messages"),
        ([u("hi"), {"role": "bot", "content": "x"}], "message 2 has unknown role 'bot'"),
        ([u("hi"), a("  ")], "message 2 (assistant) is empty"),
        ([u("hi"), a("yo"), s("late")], "message 3 is a system message but not the first"),
        ([u("hi"), u("again"), a("yo")], "message 2 is a second user turn in a row"),
        ([s("sys"), a("yo")], "message 2 is an assistant turn before any user turn"),
        ([s("sys"), u("hi")], "the conversation has no assistant reply to train on"),
        ([u("hi"), a("yo"), u("more")], "ends with a user message"),
        ([s("sys")], "no assistant reply to train on"),
        ([u("hi<end_of_turn>"), a("yo")], "contains the control token(s) <end_of_turn>"),
    ],
)
def test_unrenderable_conversations(gemma3_tokenizer, messages, message):
    with pytest.raises(UserError) as info:
        render(messages, GEMMA3, gemma3_tokenizer, where="chat.jsonl:12")
    text = str(info.value)
    assert text.startswith("chat.jsonl:12: ")
    assert message in text
    assert "Fix:" in text


def test_render_prompt_must_end_with_user(tiny_tokenizers):
    with pytest.raises(UserError, match="a prompt must end with a user message"):
        render_prompt([u("hi"), a("yo")], GEMMA4, tiny_tokenizers["gemma4"])


def test_tokenizer_without_the_family_tokens(tiny_tokenizers):
    with pytest.raises(UserError, match=re.escape("the tokenizer has no <|turn> token")):
        render([u("hi"), a("yo")], GEMMA4, tiny_tokenizers["gemma3n"])
