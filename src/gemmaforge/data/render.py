"""Render a conversation to token ids and labels in a family's chat format.

Ids are built piece by piece, never by re-tokenising a rendered template string: exactly one
`<bos>` starts every sequence, special tokens are inserted by id, and each text piece is
tokenised with `add_special_tokens=False` (the GGUF tokenizer would otherwise add a second
`<bos>`). Turn tokens and role names come from the family table, so there is no branching on
family names. The layout, for a family with a system turn (Gemma 4):

    <bos><|turn>system\\n{system}<turn|>\\n<|turn>user\\n{user}<turn|>\\n<|turn>model\\n{reply}<turn|>\\n

and without one (Gemma 3 / 3n) the system prompt opens the first user turn:

    <bos><start_of_turn>user\\n{system}\\n\\n{user}<end_of_turn>\\n<start_of_turn>model\\n{reply}<end_of_turn>\\n

Labels line up with `input_ids` (the loss shifts them): a reply's tokens and the turn-end
token after it are trained, so the model learns to stop; the role header and the newline
after turn-end are not. Message content is stripped of surrounding whitespace, as Gemma's
chat templates do, so the prompt trained on is the prompt served.

Turns must alternate user / assistant after an optional leading system message. Two user
messages in a row are an error, not merged: a chat template at inference would refuse the
same conversation, and silent merging would invent a separator the user never chose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from gemmaforge.errors import UserError, problem
from gemmaforge.models.families import Family

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
"""Label of a token that is not trained (the value PyTorch's cross-entropy skips)."""

ROLES = {"system": "system", "user": "user", "assistant": "assistant", "model": "assistant"}
"""Accepted message roles and what they mean; "model" is Gemma's name for the assistant."""


@dataclass(frozen=True)
class RenderedExample:
    """Token ids and labels of one example, labels aligned with ids (-100: not trained)."""

    input_ids: list[int]
    labels: list[int]
    where: str | None = None
    """file:line of the source row, for error messages and reports."""

    @property
    def num_trained(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


@dataclass(frozen=True)
class _Vocab:
    """A tokenizer bound to one family's special tokens."""

    tokenizer: PreTrainedTokenizerBase
    bos: int
    eos: int
    turn_start: int
    turn_end: int

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def header(self, role: str) -> list[int]:
        return [self.turn_start, *self.encode(f"{role}\n")]

    def turn(self, role: str, content: str) -> tuple[list[int], list[int], list[int]]:
        """(header, body, tail) of one turn; only the body (text + turn end) is ever trained."""
        return self.header(role), [*self.encode(content), self.turn_end], self.encode("\n")


def render(
    messages: list[dict[str, str]],
    family: Family,
    tokenizer: PreTrainedTokenizerBase,
    train_on: Literal["all", "last"] = "all",
    where: str | None = None,
) -> RenderedExample:
    """Render a conversation that ends with an assistant reply, for training.

    `train_on="last"` trains only the final reply (earlier replies become context).
    """
    _raise(where, check_turns(messages, family, for_prompt=False))
    vocab = _vocab(tokenizer, family)
    turns = _turns(messages, family)
    last_reply = max(i for i, (role, _) in enumerate(turns) if role == family.assistant_role)
    ids, labels = [vocab.bos], [IGNORE_INDEX]
    for i, (role, content) in enumerate(turns):
        trained = role == family.assistant_role and (train_on == "all" or i == last_reply)
        header, body, tail = vocab.turn(role, content)
        ids += header + body + tail
        labels += [IGNORE_INDEX] * len(header)
        labels += body if trained else [IGNORE_INDEX] * len(body)
        labels += [IGNORE_INDEX] * len(tail)
    return RenderedExample(input_ids=ids, labels=labels, where=where)


def render_prompt(
    messages: list[dict[str, str]],
    family: Family,
    tokenizer: PreTrainedTokenizerBase,
    where: str | None = None,
) -> list[int]:
    """Ids of a conversation ending with a user turn, plus the assistant header, to generate.

    The result is exactly the prefix `render` produces for the same turns, so a model is
    prompted the way it was trained.
    """
    _raise(where, check_turns(messages, family, for_prompt=True))
    vocab = _vocab(tokenizer, family)
    ids = [vocab.bos]
    for role, content in _turns(messages, family):
        header, body, tail = vocab.turn(role, content)
        ids += header + body + tail
    return ids + vocab.header(family.assistant_role)


def render_text(
    text: str, family: Family, tokenizer: PreTrainedTokenizerBase, where: str | None = None
) -> RenderedExample:
    """Render plain text (the completion format): `<bos>` text `<eos>`, every token trained.

    `<bos>` is the first input and never a target; `<eos>` is trained so generation stops.
    """
    if not text.strip():
        _raise(where, [problem(None, "the text is empty", "remove the row or add text")])
    vocab = _vocab(tokenizer, family)
    body = [*vocab.encode(text), vocab.eos]
    return RenderedExample(input_ids=[vocab.bos, *body], labels=[IGNORE_INDEX, *body], where=where)


def check_turns(messages: list[dict[str, str]], family: Family, for_prompt: bool) -> list[str]:
    """Every reason the conversation cannot be rendered (empty if it can).

    For training it must end with an assistant reply; for a prompt, with a user turn.
    """
    if not messages:
        return [
            problem(None, "the conversation has no messages", "add a user and an assistant message")
        ]
    problems = [p for i, m in enumerate(messages) for p in _message_problems(i, m, family)]
    if problems:
        return problems
    roles = [ROLES[m["role"]] for m in messages]
    return _order_problems(roles, for_prompt)


def _message_problems(index: int, message: dict[str, str], family: Family) -> list[str]:
    name = f"message {index + 1}"
    role = message.get("role")
    if role not in ROLES:
        return [
            problem(
                None,
                f"{name} has unknown role {role!r}",
                f"use one of {', '.join(ROLES)} (ShareGPT: human, gpt, system)",
            )
        ]
    content = message.get("content")
    if not isinstance(content, str) or not content.strip():
        return [problem(None, f"{name} ({role}) is empty", "write its text, or remove the message")]
    controls = [
        t for t in (family.bos, family.eos, family.turn_start, family.turn_end) if t in content
    ]
    if controls:
        return [
            problem(
                None,
                f"{name} ({role}) contains the control token(s) {', '.join(controls)}, which would "
                "break the turn structure",
                "remove them from the text; gemmaforge adds turn tokens itself",
            )
        ]
    return []


def _order_problems(roles: list[str], for_prompt: bool) -> list[str]:
    if "system" in roles[1:]:
        at = roles.index("system", 1) + 1
        return [
            problem(
                None, f"message {at} is a system message but not the first", "move it to the start"
            )
        ]
    offset = 1 if roles[0] == "system" else 0
    for i, role in enumerate(roles[offset:]):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            return [_alternation_problem(i + offset + 1, role, i == 0)]
    last = roles[-1]
    if for_prompt and last != "user":
        return [problem(None, "a prompt must end with a user message", "remove the trailing reply")]
    if not for_prompt and "assistant" not in roles:
        return [
            problem(None, "the conversation has no assistant reply to train on", "add the reply")
        ]
    if not for_prompt and last != "assistant":
        return [
            problem(
                None,
                "the conversation ends with a user message that has no reply to train on",
                "add the assistant's reply, or remove the last user message",
            )
        ]
    return []


def _alternation_problem(number: int, role: str, first: bool) -> str:
    if first:
        return problem(
            None,
            f"message {number} is an assistant turn before any user turn",
            "add the user message it answers",
        )
    return problem(
        None,
        f"message {number} is a second {role} turn in a row; turns must alternate user/assistant",
        f"merge the consecutive {role} messages into one, or add the missing turn between them",
    )


def _turns(messages: list[dict[str, str]], family: Family) -> list[tuple[str, str]]:
    """(format role name, stripped content) per turn, with the system prompt placed per family."""
    turns = [(ROLES[m["role"]], m["content"].strip()) for m in messages]
    if turns[0][0] == "system" and not family.system_turn:
        system, (_, first_user) = turns[0][1], turns[1]
        turns = [("user", f"{system}\n\n{first_user}"), *turns[2:]]
    return [(family.assistant_role if r == "assistant" else r, c) for r, c in turns]


def _vocab(tokenizer: PreTrainedTokenizerBase, family: Family) -> _Vocab:
    return _Vocab(
        tokenizer=tokenizer,
        bos=_token_id(tokenizer, family, family.bos),
        eos=_token_id(tokenizer, family, family.eos),
        turn_start=_token_id(tokenizer, family, family.turn_start),
        turn_end=_token_id(tokenizer, family, family.turn_end),
    )


def _token_id(tokenizer: PreTrainedTokenizerBase, family: Family, token: str) -> int:
    """The id of a special token; a UserError if the tokenizer lacks it (maps it to unk)."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or (token_id == tokenizer.unk_token_id and token != tokenizer.unk_token):
        raise UserError(
            problem(
                None,
                f"the tokenizer has no {token} token, so it cannot render {family.name} chats",
                f"use the tokenizer that ships with the {family.name} model",
            )
        )
    return token_id


def _raise(where: str | None, problems: list[str]) -> None:
    if problems:
        raise UserError([f"{where}: {p}" if where else p for p in problems])
