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

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from gemmaforge.data.examples.tools import format_call, format_declaration, format_response
from gemmaforge.errors import UserError, problem
from gemmaforge.models.families import Family

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from gemmaforge.data.examples.multimodal import MediaEncoder, MediaRef

IGNORE_INDEX = -100
"""Label of a token that is not trained (the value PyTorch's cross-entropy skips)."""

Content = str | list[dict[str, Any]]
"""A message's content: text, or text / image / audio parts (see data/examples/formats.py)."""

ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "model": "assistant",
}
"""Accepted message roles and what they mean; "model" is Gemma's name for the assistant,
"developer" OpenAI's for the system prompt."""


@dataclass(frozen=True)
class RenderedExample:
    """Token ids and labels of one example, labels aligned with ids (-100: not trained)."""

    input_ids: list[int]
    labels: list[int]
    where: str | None = None
    """file:line of the source row, for error messages and reports."""
    token_types: list[int] | None = None
    """Per-token modality ids from the processor (0 text); None for text-only examples."""
    media: tuple[MediaRef, ...] = ()
    """The example's images and audio clips, in token order."""
    media_end: int = 0
    """Index just past the last media token: truncating before it would orphan features."""

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
    media: MediaEncoder | None = None
    channel_start: int | None = None
    channel_end: int | None = None
    think: int | None = None

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_typed(self, text: str, where: str | None) -> list[int]:
        """`encode` for text a person or a data file wrote: refused if it holds special tokens."""
        ids = self.encode(text)
        check_typed_specials(ids, self.tokenizer, where)
        return ids

    def header(self, role: str) -> list[int]:
        return [self.turn_start, *self.encode(f"{role}\n")]

    def thinking(
        self, text: str | None, out: _Sequence, train: bool, where: str | None = None
    ) -> None:
        """`<|channel>thought\n{text}\n<channel|>`, when there is reasoning (as the official
        template writes it)."""
        if not text:
            return
        out.add([self.channel_start], train=train)
        out.add(self.encode_typed(f"thought\n{text}\n", where), train=train)
        out.add([self.channel_end], train=train)

    def tool_step(self, step: dict[str, Any], out: _Sequence, train: bool) -> None:
        """The model's calls (trained), then the results (not trained, except the first
        `<|tool_response>`: generating it is how the model stops to wait for the result)."""

        calls = "".join(
            f"<|tool_call>{format_call(c['name'], c['arguments'])}<tool_call|>"
            for c in step["calls"]
        )
        out.add(self.encode(calls), train=train)
        for i, response in enumerate(step["responses"]):
            text = f"{format_response(response['name'], response['response'])}<tool_response|>"
            if i == 0:
                out.add([self.tokenizer.convert_tokens_to_ids("<|tool_response>")], train=train)
            else:
                text = f"<|tool_response>{text}"
            out.add(self.encode(text))

    def content(
        self, content: Content, where: str | None, out: _Sequence, train: bool = False
    ) -> bool:
        """Add the content's ids, labelled when `train` (or a text part's own `train` flag);
        whether its last piece was trained (the turn end that follows is labelled alike)."""
        if isinstance(content, str):
            out.add(self.encode_typed(content, where), train=train)
            return train
        last = train
        for part in content:
            if part["type"] == "text":
                last = part.get("train", train)
                out.add(self.encode_typed(part["text"], where), train=last)
                continue
            from gemmaforge.data.examples.multimodal import MediaRef

            ref = MediaRef(part["type"], part["ref"], where, part.get("key"))
            if self.media is None:
                raise UserError(
                    problem(
                        where,
                        f"the example has {part['type']} but the model is text-only",
                        "train a multimodal checkpoint (Gemma 3n, Gemma 4, Gemma 3 4B+; video: "
                        "Gemma 4), or remove the media parts",
                    )
                )
            ids, types = self.media.segment(ref)
            out.add(ids, types=types, media=ref)
            last = train
        return last


def render(
    messages: list[dict],
    family: Family,
    tokenizer: PreTrainedTokenizerBase,
    train_on: Literal["all", "last"] = "all",
    where: str | None = None,
    media: MediaEncoder | None = None,
    train_thinking: bool = True,
    tools: list[dict] | None = None,
) -> RenderedExample:
    """Render a conversation that ends with an assistant reply, for training.

    `train_on="last"` trains only the final reply (earlier replies become context); a
    message's own `train` flag (and a text part's) overrides that. Reasoning (`thinking`) of
    the replies after the last user turn goes into the family's thinking channel, trained
    when `train_thinking`; earlier replies' reasoning is left out, as the official template
    leaves it out of the history at inference. `tools` are declared in the system turn; a
    reply's `tool_steps` (calls and their results, formats.py) are written in the family's
    tool tokens, the calls trained and the results not. Image and audio parts are expanded
    by `media` (the model's processor) into their token runs.
    """
    _raise(where, check_turns(messages, family, for_prompt=False))
    turns = _turns(messages, family, thinking=True)
    thinks = any(_has_thinking(t) for t in turns)
    _raise(where, _tool_problems(turns, tools, family))
    vocab = _vocab(tokenizer, family, media, thinking=thinks)
    last_reply = max(i for i, t in enumerate(turns) if t.role == family.assistant_role)
    out = _Sequence([vocab.bos], [IGNORE_INDEX])
    if (thinks or tools) and turns[0].role != "system":
        # The official template opens a system turn just for the thinking switch and tools.
        turns = [_Turn("system", ""), *turns]
        last_reply += 1
    for i, turn in enumerate(turns):
        default = turn.role == family.assistant_role and (train_on == "all" or i == last_reply)
        trained = default if turn.train is None else turn.train
        out.add(vocab.header(turn.role))
        if i == 0 and turn.role == "system" and (thinks or tools):
            _system_body(vocab, turn, out, thinks, tools or [], where)
            continue
        think = trained and train_thinking
        vocab.thinking(turn.thinking, out, think, where)
        for step in turn.steps:
            vocab.thinking(step.get("thinking"), out, think, where)
            vocab.tool_step(step, out, trained)
        vocab.thinking(turn.final_thinking, out, think, where)
        last = vocab.content(turn.content, where, out, train=trained)
        if _open(turn):
            continue  # the template leaves such a turn open
        out.add([vocab.turn_end], train=last)
        out.add(vocab.encode("\n"))
    example = out.example(where)
    if not example.num_trained:
        _raise(
            where,
            [
                problem(
                    None,
                    "no token of the conversation is trained: every reply has a loss flag of 0 "
                    "/ false",
                    "set weight / train to 1 on the replies to learn, or remove the row",
                )
            ],
        )
    return example


def _system_body(
    vocab: _Vocab, turn: _Turn, out: _Sequence, thinks: bool, tools: list[dict], where
) -> None:
    """The system turn's body when it carries the thinking switch or tool declarations:
    `<|think|>\n`, the system prompt, `<|tool>declaration:...<tool|>` per tool."""

    content = turn.content
    if thinks:
        out.add([vocab.think])
        # Gemma 4's current template writes the switch as `<|think|>\n` (the first release
        # wrote no newline); the newline and the prompt are one piece of template text.
        content = (
            f"\n{content}"
            if isinstance(content, str)
            else [{"type": "text", "text": "\n"}, *content]
        )
    vocab.content(content, where, out)
    for tool in tools:
        out.add(vocab.encode(f"<|tool>{format_declaration(tool)}<tool|>"))
    out.add([vocab.turn_end, *vocab.encode("\n")])


def _has_thinking(turn: _Turn) -> bool:
    return bool(turn.thinking or turn.final_thinking or any(s.get("thinking") for s in turn.steps))


def _tool_problems(turns: list[_Turn], tools: list[dict] | None, family: Family) -> list[str]:
    if (tools or any(t.steps for t in turns)) and not family.tool_calling:
        return [
            problem(
                None,
                f"the conversation has tool declarations or tool calls, but {family.name} has "
                "no tool-calling tokens to render them in",
                "use a Gemma 4 model (model.name_or_path; `data check --model`), or write the "
                "calls as plain text in the replies (docs/data.md, 'Tool calling')",
            )
        ]
    return []


def render_segments(
    segments: tuple[tuple[str, bool], ...],
    family: Family,
    tokenizer: PreTrainedTokenizerBase,
    where: str | None = None,
) -> RenderedExample:
    """Render axolotl input_output segments: `<bos>`, then each segment's text as written (no
    template, no turn or end tokens added), labelled where the segment says so.

    A leading `<bos>` written in the first segment is not doubled.
    """
    vocab = _vocab(tokenizer, family)
    out = _Sequence([vocab.bos], [IGNORE_INDEX])
    for i, (text, trained) in enumerate(segments):
        if i == 0:
            text = text.removeprefix(family.bos)
        out.add(vocab.encode(text), train=trained)
    if not out.example(where).num_trained:
        _raise(where, [problem(None, "no labelled segment has text", "label a segment true")])
    return out.example(where)


def render_prompt(
    messages: list[dict],
    family: Family,
    tokenizer: PreTrainedTokenizerBase,
    where: str | None = None,
) -> list[int]:
    """Ids of a text conversation ending with a user turn, plus the assistant header.

    They are exactly the prefix `render` produces for the same turns, so a model is prompted
    the way it was trained.
    """
    return render_prompt_example(messages, family, tokenizer, where).input_ids


def render_prompt_example(
    messages: list[dict],
    family: Family,
    tokenizer: PreTrainedTokenizerBase,
    where: str | None = None,
    media: MediaEncoder | None = None,
    tools: list[dict] | None = None,
) -> RenderedExample:
    """`render_prompt` with image/audio parts expanded by `media`, and their references.

    With `tools`, they are declared in the system turn; earlier tool calls and results are
    written as training writes them. A conversation that ends in tool results (a model turn
    whose last tool step has its results and no text yet) is left open for the model to go
    on in the same turn, as Gemma 4 does; otherwise the model's turn header ends the prompt.
    """
    _raise(where, check_turns(messages, family, for_prompt=True))
    turns = _turns(messages, family, thinking=False)
    _raise(where, _tool_problems(turns, tools, family))
    vocab = _vocab(tokenizer, family, media)
    out = _Sequence([vocab.bos], [IGNORE_INDEX])
    if tools and turns[0].role != "system":
        turns = [_Turn("system", ""), *turns]
    for i, turn in enumerate(turns):
        out.add(vocab.header(turn.role))
        if i == 0 and turn.role == "system" and tools:
            _system_body(vocab, turn, out, False, tools, where)
            continue
        for step in turn.steps:
            vocab.tool_step(step, out, False)
        vocab.content(turn.content, where, out)
        if _open(turn):
            return out.example(where)
        out.add([vocab.turn_end, *vocab.encode("\n")])
    out.add(vocab.header(family.assistant_role))
    return out.example(where)


def _open(turn: _Turn | dict) -> bool:
    """A model turn that ends with tool results and no text: the model goes on in it."""
    steps = turn.steps if isinstance(turn, _Turn) else turn.get("tool_steps", ())
    content = turn.content if isinstance(turn, _Turn) else turn.get("content")
    return bool(steps and steps[-1]["responses"] and not content)


@dataclass
class _Sequence:
    """Ids and labels being built, with media bookkeeping."""

    ids: list[int]
    labels: list[int]
    types: list[int] | None = None
    media: list[MediaRef] = field(default_factory=list)
    media_end: int = 0

    def add(
        self, ids: list[int], types: list[int] | None = None, media=None, train: bool = False
    ) -> None:
        if types is not None and self.types is None:
            self.types = [0] * len(self.ids)
        if self.types is not None:
            self.types += types if types is not None else [0] * len(ids)
        if media is not None:
            self.media.append(media)
            self.media_end = len(self.ids) + len(ids)
        self.ids += ids
        self.labels += ids if train else [IGNORE_INDEX] * len(ids)

    def example(self, where: str | None) -> RenderedExample:
        return RenderedExample(
            input_ids=self.ids,
            labels=self.labels,
            where=where,
            token_types=self.types,
            media=tuple(self.media),
            media_end=self.media_end,
        )


def render_text(
    text: str, family: Family, tokenizer: PreTrainedTokenizerBase, where: str | None = None
) -> RenderedExample:
    """Render plain text (the completion format): `<bos>` text `<eos>`, every token trained.

    `<bos>` is the first input and never a target; `<eos>` is trained so generation stops.
    """
    if not text.strip():
        _raise(where, [problem(None, "the text is empty", "remove the row or add text")])
    vocab = _vocab(tokenizer, family)
    body = [*vocab.encode_typed(text, where), vocab.eos]
    return RenderedExample(input_ids=[vocab.bos, *body], labels=[IGNORE_INDEX, *body], where=where)


_SPECIAL_IDS: dict[int, tuple[Any, dict[int, str]]] = {}


def check_typed_specials(ids: list[int], tokenizer: Any, where: str | None) -> None:
    """A UserError if text typed as text became special tokens (`<|image|>`, turn markers,
    `<bos>`...): they would fake a turn or a media slot with no media behind it (a
    token/feature mismatch). Shared by training, `data check` and serving, so all three
    refuse the same text."""
    cached = _SPECIAL_IDS.get(id(tokenizer))
    if cached is None or cached[0] is not tokenizer:
        special = {
            i: token.content
            for i, token in getattr(tokenizer, "added_tokens_decoder", {}).items()
            if getattr(token, "special", False)
        }
        special.update(zip(tokenizer.all_special_ids, tokenizer.all_special_tokens, strict=False))
        cached = _SPECIAL_IDS[id(tokenizer)] = (tokenizer, special)
    found = sorted({cached[1][i] for i in ids if i in cached[1]})
    if found:
        raise UserError(
            problem(
                where,
                f"the text holds the special token(s) {', '.join(found)} typed as text; they "
                "would be read as control tokens (a turn or media marker), not as text",
                "remove them from the text; send images, audio and video as media parts",
            )
        )


def check_turns(messages: list[dict], family: Family, for_prompt: bool) -> list[str]:
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
    if for_prompt and roles[-1] == "assistant" and _open(messages[-1]):
        return _order_problems(roles, for_prompt=False)
    return _order_problems(roles, for_prompt)


def _message_problems(index: int, message: dict, family: Family) -> list[str]:
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
    if isinstance(content, list):
        media = [p["type"] for p in content if p["type"] != "text"]
        if media and ROLES[role] != "user":
            return [
                problem(
                    None,
                    f"{name} ({role}) has {media[0]} parts; only user turns may carry media",
                    "move the image or audio into a user message",
                )
            ]
        text = "".join(p["text"] for p in content if p["type"] == "text")
        if not media and not text.strip() and not message.get("tool_steps"):
            return [problem(None, f"{name} ({role}) is empty", "write its text, or remove it")]
    elif isinstance(content, str) and (content.strip() or message.get("tool_steps")):
        text = content
    else:
        return [problem(None, f"{name} ({role}) is empty", "write its text, or remove the message")]
    thinking = message.get("thinking")
    if thinking and ROLES[role] != "assistant":
        return [
            problem(
                None,
                f"{name} ({role}) has reasoning; only assistant replies may",
                "move the reasoning to the reply it belongs to, or remove it",
            )
        ]
    if thinking and not family.channel_start:
        return [
            problem(
                None,
                f"{name} has reasoning (reasoning_content / thinking / reasoning), but "
                f"{family.name} has no thinking channel to train it in",
                "use a Gemma 4 model (model.name_or_path; `data check --model`), or remove the "
                "reasoning fields (or fold the reasoning into the reply text yourself)",
            )
        ]
    controls = [
        t
        for t in (family.bos, family.eos, family.turn_start, family.turn_end)
        if t in text or (thinking and t in thinking)
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


@dataclass(frozen=True)
class _Turn:
    role: str
    """The family's role name (`model` for the assistant)."""
    content: Content
    train: bool | None = None
    """The message's own loss flag (None: train_on decides)."""
    thinking: str | None = None
    steps: tuple[dict[str, Any], ...] = ()
    """Tool calls and their results, in order, before the content (formats.py)."""
    final_thinking: str | None = None
    """Reasoning between the last tool result and the content."""


def _turns(messages: list[dict], family: Family, thinking: bool) -> list[_Turn]:
    """The turns with stripped content, the system prompt placed per family, and (when
    `thinking`) the reasoning of the replies after the last user turn."""
    roles = [ROLES[m["role"]] for m in messages]
    last_user = max((i for i, r in enumerate(roles) if r == "user"), default=-1)

    def kept(text: str | None, i: int) -> str | None:
        return text if thinking and i > last_user and text else None

    turns = [
        _Turn(
            role,
            _strip(m["content"]),
            m.get("train"),
            kept(m.get("thinking"), i),
            tuple(
                {**step, "thinking": kept(step.get("thinking"), i)}
                for step in m.get("tool_steps", ())
            ),
            kept(m.get("final_thinking"), i),
        )
        for i, (role, m) in enumerate(zip(roles, messages, strict=True))
    ]
    if turns[0].role == "system" and not family.system_turn:
        system, first_user = turns[0].content, turns[1]
        if isinstance(first_user.content, str):
            merged = f"{system}\n\n{first_user.content}"
        else:
            merged = [{"type": "text", "text": f"{system}\n\n"}, *first_user.content]
        turns = [replace(first_user, content=merged), *turns[2:]]
    return [replace(t, role=family.assistant_role) if t.role == "assistant" else t for t in turns]


def _strip(content: Content) -> Content:
    """Gemma's templates trim text; for part lists, each text part is trimmed."""
    if isinstance(content, str):
        return content.strip()
    parts = [{**p, "text": p["text"].strip()} if p["type"] == "text" else p for p in content]
    return [p for p in parts if p["type"] != "text" or p["text"]]


def _vocab(
    tokenizer: PreTrainedTokenizerBase,
    family: Family,
    media: MediaEncoder | None = None,
    thinking: bool = False,
) -> _Vocab:
    """The tokenizer bound to the family's tokens (the thinking tokens only when asked: a
    tokenizer without them still renders chats without reasoning)."""
    vocab = _Vocab(
        media=media,
        tokenizer=tokenizer,
        bos=_token_id(tokenizer, family, family.bos),
        eos=_token_id(tokenizer, family, family.eos),
        turn_start=_token_id(tokenizer, family, family.turn_start),
        turn_end=_token_id(tokenizer, family, family.turn_end),
    )
    if thinking and family.channel_start and family.channel_end and family.think_token:
        vocab = replace(
            vocab,
            channel_start=_token_id(tokenizer, family, family.channel_start),
            channel_end=_token_id(tokenizer, family, family.channel_end),
            think=_token_id(tokenizer, family, family.think_token),
        )
    return vocab


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
