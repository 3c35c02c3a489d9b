"""Row formats: detect which one a file uses and turn each row into a conversation.

A conversation is a list of `{"role", "content"}` messages with roles system / user /
assistant (content: a string, or a list of text / image / audio parts), or, for the
completion format, a single plain text in which every token is trained. Column names come
from DataConfig. Whether the turns can be rendered (order, roles, empty replies) is checked
by `render`, which owns the chat format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gemmaforge.config import DataConfig
from gemmaforge.data.read.records import Record
from gemmaforge.errors import UserError, problem

Message = dict[str, Any]

SHAREGPT_ROLES = {"human": "user", "gpt": "assistant"}
"""ShareGPT speaker names that differ from ours; user/assistant/model/system pass through."""

MEDIA_KEYS = {"image": ("path", "url", "image"), "audio": ("path", "url", "audio")}
"""Media part types, and the keys that may hold their file path or URL."""


@dataclass(frozen=True)
class Conversation:
    """One training example before tokenisation."""

    where: str
    """file:line of the row, for error messages."""
    messages: list[Message]
    """Chat turns; empty for the completion format."""
    text: str | None = None
    """Completion format: the text, trained on every token (no chat turns)."""


def format_columns(cfg: DataConfig) -> dict[str, tuple[str, ...]]:
    """The columns that identify each format, as configured."""
    return {
        "messages": (cfg.messages_column,),
        "alpaca": ("instruction", "output"),
        "sharegpt": ("conversations",),
        "instruction": (cfg.prompt_column, cfg.response_column),
        "completion": (cfg.text_column,),
        **{fmt: _shortcut_columns(spec(cfg)) for fmt, spec in MEDIA_SHORTCUTS.items()},
    }


def _shortcut_columns(spec: tuple[dict[str, str], str | None, str]) -> tuple[str, ...]:
    kinds, prompt_column, reply_column = spec
    return (*kinds.values(), *([prompt_column] if prompt_column else []), reply_column)


def detect_format(record: Record, cfg: DataConfig) -> str:
    """The one format whose columns the row has; a UserError if none or several match."""
    columns = format_columns(cfg)
    matches = [name for name, needed in columns.items() if all(c in record.row for c in needed)]
    # A row with (audio, prompt, response) also fits instruction: the format whose columns
    # include another match's is the one meant.
    matches = [
        name
        for name in matches
        if not any(set(columns[name]) < set(columns[other]) for other in matches)
    ]
    if len(matches) == 1:
        return matches[0]
    found = ", ".join(repr(key) for key in record.row) or "none"
    if matches:
        raise UserError(
            problem(
                record.where,
                f"the row fits several formats ({', '.join(matches)}); keys found: {found}",
                f"set data.format to one of {', '.join(matches)}",
            )
        )
    expected = "; ".join(f"{name}: {', '.join(needed)}" for name, needed in columns.items())
    raise UserError(
        problem(
            record.where,
            f"cannot tell the data format from the keys found ({found})",
            f"rename the columns to fit one format ({expected}), or set data.format and the "
            "data.*_column names",
        )
    )


def to_conversation(record: Record, fmt: str, cfg: DataConfig) -> Conversation:
    """Convert one row; a UserError naming the row and its missing columns or bad field."""
    missing = [c for c in format_columns(cfg)[fmt] if c not in record.row]
    if fmt == "instruction" and cfg.system_column and cfg.system_column not in record.row:
        missing.append(cfg.system_column)
    if missing:
        keys = ", ".join(repr(key) for key in record.row)
        raise UserError(
            problem(
                record.where,
                f"missing column(s) {', '.join(map(repr, missing))} for the {fmt} format "
                f"(keys found: {keys})",
                "add the column, or point data.*_column / data.format at the right names",
            )
        )
    conv = CONVERTERS[fmt](record, cfg)
    if cfg.redact_pii:
        # Here, where every reader of rows (train, data check, eval) passes, so all agree.
        from gemmaforge.data.examples.pii import redact_conversation

        return redact_conversation(conv)
    return conv


def _text(record: Record, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise UserError(
            problem(
                record.where,
                f"{key!r} must be a string, got {type(value).__name__}",
                "write the value as a JSON string",
            )
        )
    return value


def _list(record: Record, key: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise UserError(
            problem(
                record.where,
                f"{key!r} must be a list of messages, got {type(value).__name__}",
                'write it as a JSON list like [{"role": "user", "content": "..."}]',
            )
        )
    return value


def _messages(record: Record, cfg: DataConfig) -> Conversation:
    column = cfg.messages_column
    turns = []
    for i, item in enumerate(_list(record, column, record.row[column])):
        key = f"{column}[{i}]"
        if not isinstance(item, dict) or "role" not in item or "content" not in item:
            raise UserError(
                problem(
                    record.where,
                    f"{key} must be an object with 'role' and 'content'",
                    'write each message as {"role": "user", "content": "..."}',
                )
            )
        role = _text(record, f"{key}.role", item["role"])
        turns.append({"role": role, "content": _content(record, key, item["content"])})
    return Conversation(where=record.where, messages=turns)


def _content(record: Record, key: str, content: Any) -> str | list[dict[str, str]]:
    """A message's content: a string, or its parts.

    Text-only part lists are joined as written (Gemma's chat templates concatenate text parts
    without a separator; so do we, so the prompt trained on is the prompt served). With image
    or audio parts, the content stays a list of `{"type": "text", "text"}` and
    `{"type": "image" | "audio", "ref"}` parts, refs resolved against the data file's folder.
    """
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return _text(record, f"{key}.content", content)
    parts = [_part(record, f"{key}.content[{i}]", part) for i, part in enumerate(content)]
    if all(part["type"] == "text" for part in parts):
        return "".join(part["text"] for part in parts)
    return parts


def _part(record: Record, key: str, part: Any) -> dict[str, str]:
    from gemmaforge.data.read.media_files import resolve_media_path

    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text" and "text" in part:
        return {"type": "text", "text": _text(record, f"{key}.text", part["text"])}
    if kind in MEDIA_KEYS:
        ref = next((part[k] for k in MEDIA_KEYS[kind] if isinstance(part.get(k), str)), None)
        if ref:
            return {"type": kind, "ref": resolve_media_path(ref, record.base)}
    shapes = "{'type': 'text', 'text': ...}, {'type': 'image', 'path' | 'url': ...}, or "
    shapes += "{'type': 'audio', 'path' | 'url': ...}"
    raise UserError(
        problem(record.where, f"{key} is not a content part gemmaforge reads", f"write {shapes}")
    )


def _alpaca(record: Record, cfg: DataConfig) -> Conversation:
    row = record.row
    prompt = _text(record, "instruction", row["instruction"])
    extra = _text(record, "input", row.get("input") or "")
    # The Alpaca convention: the optional input follows the instruction after a blank line.
    if extra.strip():
        prompt = f"{prompt}\n\n{extra}"
    reply = _text(record, "output", row["output"])
    return Conversation(
        where=record.where,
        messages=[{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}],
    )


def _sharegpt(record: Record, cfg: DataConfig) -> Conversation:
    turns = []
    for i, item in enumerate(_list(record, "conversations", record.row["conversations"])):
        key = f"conversations[{i}]"
        if not isinstance(item, dict) or "from" not in item or "value" not in item:
            raise UserError(
                problem(
                    record.where,
                    f"{key} must be an object with 'from' and 'value'",
                    'write each turn as {"from": "human", "value": "..."}',
                )
            )
        speaker = _text(record, f"{key}.from", item["from"])
        content = _text(record, f"{key}.value", item["value"])
        turns.append({"role": SHAREGPT_ROLES.get(speaker, speaker), "content": content})
    return Conversation(where=record.where, messages=turns)


def _instruction(record: Record, cfg: DataConfig) -> Conversation:
    row = record.row
    turns = []
    if cfg.system_column:
        system = _text(record, cfg.system_column, row[cfg.system_column] or "")
        # An empty system cell means "no system prompt" (CSV has no null).
        if system.strip():
            turns.append({"role": "system", "content": system})
    turns.append(
        {"role": "user", "content": _text(record, cfg.prompt_column, row[cfg.prompt_column])}
    )
    reply = _text(record, cfg.response_column, row[cfg.response_column])
    turns.append({"role": "assistant", "content": reply})
    return Conversation(where=record.where, messages=turns)


def _completion(record: Record, cfg: DataConfig) -> Conversation:
    text = _text(record, cfg.text_column, record.row[cfg.text_column])
    if not text.strip():
        raise UserError(
            problem(record.where, f"{cfg.text_column!r} is empty", "remove the row or add text")
        )
    return Conversation(where=record.where, messages=[], text=text)


def _media_shortcut(fmt: str) -> Callable[[Record, DataConfig], Conversation]:
    """Converter for one media shortcut format: a user turn (media, then the prompt) and the
    reply, every column named by DataConfig."""

    def convert(record: Record, cfg: DataConfig) -> Conversation:
        from gemmaforge.data.read.media_files import resolve_media_path

        kinds, prompt_column, reply_column = MEDIA_SHORTCUTS[fmt](cfg)
        parts = []
        for kind, column in kinds.items():
            ref = _text(record, column, record.row[column]).strip()
            if not ref:
                raise UserError(
                    problem(record.where, f"{column!r} is empty", f"give the {kind} file's path")
                )
            parts.append({"type": kind, "ref": resolve_media_path(ref, record.base)})
        if prompt_column:
            prompt = _text(record, prompt_column, record.row[prompt_column])
        else:
            prompt = cfg.caption_prompt if "image" in kinds else cfg.transcription_prompt
        parts.append({"type": "text", "text": prompt})
        answer = _text(record, reply_column, record.row[reply_column])
        messages = [{"role": "user", "content": parts}, {"role": "assistant", "content": answer}]
        return Conversation(where=record.where, messages=messages)

    return convert


MEDIA_SHORTCUTS: dict[str, Callable[[DataConfig], tuple[dict[str, str], str | None, str]]] = {
    # format: cfg -> ({media kind: column}, prompt column (None: the configured prompt), reply)
    "caption": lambda c: ({"image": c.image_column}, None, c.caption_column),
    "vqa": lambda c: ({"image": c.image_column}, c.question_column, c.answer_column),
    "transcription": lambda c: ({"audio": c.audio_column}, None, c.text_column),
    "audio_qa": lambda c: ({"audio": c.audio_column}, c.prompt_column, c.response_column),
    "audiovisual": lambda c: (
        {"image": c.image_column, "audio": c.audio_column},
        c.prompt_column,
        c.response_column,
    ),
}


CONVERTERS: dict[str, Callable[[Record, DataConfig], Conversation]] = {
    "messages": _messages,
    "alpaca": _alpaca,
    "sharegpt": _sharegpt,
    "instruction": _instruction,
    "completion": _completion,
    **{fmt: _media_shortcut(fmt) for fmt in MEDIA_SHORTCUTS},
}
