"""Row formats: detect which one a file uses and turn each row into a conversation.

A conversation is a list of `{"role", "content"}` messages with roles system / user /
assistant (content: a string, or a list of text / image / audio / video parts), or, for the
completion format, a single plain text in which every token is trained, or, for axolotl's
input_output format, raw text segments each trained or not. Column names come from
DataConfig. Whether the turns can be rendered (order, roles, empty replies) is checked by
`render`, which owns the chat format.

Besides `role` and `content`, a message may carry (kept under our own keys):
- `train` (bool): whether its tokens carry labels, from OpenAI's `weight`, axolotl's `train` /
  `training`, LLaMA-Factory's `loss_weight` (0 or 1; fractional weights are refused). Text
  parts may carry `train` too (axolotl).
- `thinking` (str): the reasoning before the reply, from `reasoning_content`, `thinking` or
  `reasoning` (or a LLaMA-Factory v1 `reasoning` part); rendered into the thinking channel of
  families that have one, refused by the others.

Peer tools' conventions read as they are (docs/data.md lists them): LLaMA-Factory's
`<image>` / `<audio>` / `<video>` placeholders with `images` / `audios` / `videos` lists, and
its v1 `{"type": ..., "value": ...}` parts; TRL's bare `{"type": "image"}` parts with an
`images` column and its prompt/completion rows; OpenAI's `image_url` / `input_audio` parts and
`developer` role; axolotl's `input_output` segments. What gemmaforge cannot train as
a chat (preference and KTO rows) is refused with the reason, never dropped.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gemmaforge.config import DataConfig
from gemmaforge.data.read import media_cache
from gemmaforge.data.read.media_files import resolve_media_path
from gemmaforge.data.read.records import Record
from gemmaforge.errors import UserError, problem

Message = dict[str, Any]

SHAREGPT_ROLES = {"human": "user", "gpt": "assistant"}
"""ShareGPT speaker names that differ from ours; user/assistant/model/system pass through."""

ROLE_ALIASES = {**SHAREGPT_ROLES, "developer": "system"}
"""Role names of other tools, as ours (OpenAI's `developer` is the system prompt)."""

MEDIA_KEYS = {
    "image": ("path", "url", "image"),
    "audio": ("path", "url", "audio"),
    "video": ("path", "url", "video"),
}
"""Media part types, and the keys that may hold their file path or URL."""

MEDIA_LISTS = {"image": "images", "audio": "audios", "video": "videos"}
"""Row columns holding a row's media in order (LLaMA-Factory, TRL)."""

EXAMPLE_SUFFIX = {"image": "jpg", "audio": "wav", "video": "mp4"}
"""A typical file extension per media kind, for examples in error messages."""

PLACEHOLDER = re.compile(r"<(image|audio|video)>")
"""LLaMA-Factory's media placeholders in message text."""

THINKING_FIELDS = ("reasoning_content", "thinking", "reasoning")
"""Message fields holding the reasoning before a reply (OpenAI-style, TRL/Harmony, others)."""

LOSS_FIELDS = ("weight", "train", "training", "loss_weight")
"""Per-message / per-part loss flags: OpenAI, axolotl (two names), LLaMA-Factory v1."""

TOOL_ROLES = ("tool_call", "tool_result")
"""Roles of tool turns that no supported convention uses (refused by name)."""

MAX_INLINE_MEDIA_BYTES = 64 << 20
"""Largest image or clip read from a data: URL or a base64 field (decoded size)."""

PREFERENCE_FIX = (
    "train it with a preference objective: train.objective=dpo (or orpo, simpo; kto for "
    "rows labelled good or bad; docs/preference.md); for supervised fine-tuning keep the "
    "preferred answers as a messages file and drop the rejected ones"
)


@dataclass(frozen=True)
class Conversation:
    """One training example before tokenisation."""

    where: str
    """file:line of the row, for error messages."""
    messages: list[Message]
    """Chat turns; empty for the completion and input_output formats."""
    text: str | None = None
    """Completion format: the text, trained on every token (no chat turns)."""
    segments: tuple[tuple[str, bool], ...] | None = None
    """input_output format: (text, trained) pieces, concatenated with no template."""
    tools: list[dict[str, Any]] | None = None
    """Tool declarations (OpenAI style: {"type": "function", "function": {...}})."""


def format_columns(cfg: DataConfig) -> dict[str, tuple[str, ...]]:
    """The columns that identify each format, as configured."""
    return {
        "messages": (cfg.messages_column,),
        "alpaca": ("instruction", "output"),
        "sharegpt": ("conversations",),
        "instruction": (cfg.prompt_column, cfg.response_column),
        "completion": (cfg.text_column,),
        "prompt_completion": (cfg.prompt_column, "completion"),
        "input_output": ("segments",),
        **{fmt: _shortcut_columns(spec(cfg)) for fmt, spec in MEDIA_SHORTCUTS.items()},
    }


def _shortcut_columns(spec: tuple[dict[str, str], str | None, str]) -> tuple[str, ...]:
    kinds, prompt_column, reply_column = spec
    return (*kinds.values(), *([prompt_column] if prompt_column else []), reply_column)


def detect_format(record: Record, cfg: DataConfig) -> str:
    """The one format whose columns the row has; a UserError if none or several match."""
    _refuse_unsupported_rows(record)
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


def _refuse_unsupported_rows(record: Record) -> None:
    """Preference and KTO rows: a UserError saying so (training them as plain chats would
    teach the rejected answers, or the ones labelled bad)."""
    row = record.row
    pairs = [(a, b) for a, b in PREFERENCE_PAIRS if a in row and b in row]
    if pairs:
        chosen, rejected = pairs[0]
        raise UserError(
            problem(
                record.where,
                f"this is preference data ({chosen!r} / {rejected!r} columns: DPO/ORPO style)",
                PREFERENCE_FIX,
            )
        )
    if isinstance(row.get("label"), bool) and any(k in row for k in KTO_COLUMNS):
        raise UserError(
            problem(
                record.where,
                "this is preference data (KTO: a boolean 'label' marks each answer good or "
                "bad); trained as a chat, the answers marked false would be learned too",
                PREFERENCE_FIX.replace(
                    "dpo (or orpo, simpo; kto for rows labelled good or bad;", "kto ("
                ).replace("drop the rejected ones", "drop the rows labelled false"),
            )
        )


PREFERENCE_PAIRS = (
    ("chosen", "rejected"),
    ("chosen_messages", "rejected_messages"),
    ("chosen_response", "rejected_response"),
)
KTO_COLUMNS = ("completion", "messages", "conversations", "output", "response")


def to_conversation(record: Record, fmt: str, cfg: DataConfig) -> Conversation:
    """Convert one row; a UserError naming the row and its missing columns or bad field."""
    _refuse_unsupported_rows(record)
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
    tools = _tools(record)
    conv = CONVERTERS[fmt](record, cfg)
    if conv.messages:
        media = _MediaQueue.of(record, fmt, cfg)
        messages = [_place_media(record, i, m, media, cfg) for i, m in enumerate(conv.messages)]
        media.check_used(record, fmt)
        conv = Conversation(
            where=conv.where, messages=_fold_tool_turns(record, messages, fmt), tools=tools
        )
    if cfg.redact_pii:
        # Here, where every reader of rows (train, data check, eval) passes, so all agree.
        from gemmaforge.data.examples.pii import redact_conversation

        return redact_conversation(conv)
    return conv


def _tools(record: Record) -> list[dict[str, Any]] | None:
    """The row's tool declarations (`tools`: a list, or LLaMA-Factory's JSON string), each as
    `{"type": "function", "function": {"name", "description", "parameters"}}`."""
    # OpenAI's legacy fine-tuning rows call them `functions`.
    tools = record.row.get("tools") or record.row.get("functions")
    if isinstance(tools, str):
        try:
            tools = json.loads(tools) if tools.strip() else None
        except json.JSONDecodeError:
            raise UserError(
                problem(
                    record.where,
                    "'tools' is a string but not JSON",
                    'write the tools as a JSON list: [{"type": "function", "function": {...}}]',
                )
            ) from None
    if not tools:
        return None
    tools = tools if isinstance(tools, list) else [tools]
    out = []
    for i, tool in enumerate(tools):
        function = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise UserError(
                problem(
                    record.where,
                    f"tools[{i}] is not a function declaration with a 'name'",
                    'write {"type": "function", "function": {"name": ..., "description": ..., '
                    '"parameters": {JSON schema}}}',
                )
            )
        out.append({"type": "function", "function": function})
    return out


def _tool_calls(record: Record, key: str, calls: Any) -> list[dict[str, Any]]:
    """OpenAI `tool_calls` (or ShareGPT's `function_call` JSON) as [{"id", "name",
    "arguments": dict}]."""
    calls = calls if isinstance(calls, list) else [calls]
    out = []
    for i, call in enumerate(calls):
        function = call.get("function", call) if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        arguments = function.get("arguments", {}) if isinstance(function, dict) else None
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError:
                arguments = None
        if not isinstance(name, str) or not isinstance(arguments, dict):
            raise UserError(
                problem(
                    record.where,
                    f"{key}[{i}] is not a tool call with a 'name' and JSON-object 'arguments'",
                    'write {"type": "function", "function": {"name": "f", "arguments": '
                    '{"x": 1}}} (arguments as an object or a JSON string of one)',
                )
            )
        call_id = call.get("id") if isinstance(call, dict) else None
        out.append({"id": call_id, "name": name, "arguments": arguments})
    return out


def _tool_result(record: Record, key: str, item: dict, content: Any) -> Message:
    """A tool result message. Text stays text, JSON or not: the official template writes a
    string result as `response:NAME{value:<|"|>TEXT<|"|>}` (OpenAI clients send results as
    strings), and an object (a row that holds one) as `response:NAME{key:value}`."""
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    value = content if isinstance(content, dict) else _text(record, f"{key}.content", content)
    return {
        "role": "tool",
        "content": "",
        "response": value,
        "name": item.get("name"),
        "tool_call_id": item.get("tool_call_id"),
        "key": key,
    }


def _fold_tool_turns(record: Record, messages: list[Message], fmt: str) -> list[Message]:
    """Tool calls, their results and the reply that follows them become one model turn with
    `tool_steps` [{"calls", "responses", "thinking"}], the way Gemma 4 writes them (the model
    calls, stops at `<|tool_response>`, reads the result and goes on in the same turn)."""
    out: list[Message] = []
    for message in messages:
        role = message["role"]
        last = out[-1] if out else None
        steps = last.get("tool_steps") if last else None
        if role == "tool":
            if not steps:
                raise UserError(
                    problem(
                        record.where,
                        f"{message['key']} is a tool result with no tool call before it "
                        f"({fmt} format)",
                        "put the assistant message with the tool_calls before it",
                    )
                )
            step = steps[-1]
            name = message["name"] or _call_name(step["calls"], message["tool_call_id"])
            step["responses"].append({"name": name, "response": message["response"]})
            continue
        calls = message.get("tool_calls")
        if (
            ROLE_ALIASES.get(role, role) in ("assistant", "model")
            and steps
            and (steps[-1]["responses"])
        ):
            if _text_of(last["content"]).strip():
                raise UserError(
                    problem(
                        record.where,
                        "an assistant message has text besides tool calls that got results; "
                        "Gemma 4 writes a turn's text after its tool calls",
                        "move the text into the reply after the tool results",
                    )
                )
            # The reply (or the next call) after a tool result continues the same turn.
            merged = {**last, "content": message["content"]}
            if calls:
                merged["tool_steps"] = [
                    *steps,
                    {"calls": calls, "responses": [], "thinking": message.get("thinking")},
                ]
            else:
                merged["final_thinking"] = message.get("thinking")
            out[-1] = merged
            continue
        if calls:
            thinking = message.get("thinking")
            message = {k: v for k, v in message.items() if k not in ("tool_calls", "thinking")}
            message["tool_steps"] = [{"calls": calls, "responses": [], "thinking": thinking}]
        out.append(message)
    return out


def _call_name(calls: list[dict[str, Any]], call_id: Any) -> str:
    """The function a tool result answers: by its tool_call_id, else the only call."""
    named = [c["name"] for c in calls if call_id is not None and c.get("id") == call_id]
    if named:
        return named[0]
    return calls[0]["name"] if len(calls) == 1 else "unknown"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if p.get("type") == "text")


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
    items = _list(record, column, record.row[column])
    turns = [_message(record, f"{column}[{i}]", item, "messages") for i, item in enumerate(items)]
    return Conversation(where=record.where, messages=turns)


def _message(record: Record, key: str, item: Any, fmt: str) -> Message:
    """One `{"role", "content", ...}` message (OpenAI / TRL / axolotl / LLaMA-Factory v1)."""
    if not isinstance(item, dict) or "role" not in item or "content" not in item:
        raise UserError(
            problem(
                record.where,
                f"{key} must be an object with 'role' and 'content'",
                'write each message as {"role": "user", "content": "..."}',
            )
        )
    role = _text(record, f"{key}.role", item["role"])
    if role in ("tool", "function", "ipython"):
        return _tool_result(record, key, item, item["content"])
    _refuse_tool_turn(record, key, role, item, fmt)
    calls = item.get("tool_calls") or item.get("function_call")
    raw = item["content"] if item["content"] is not None or not calls else ""
    message = {"role": ROLE_ALIASES.get(role, role), "content": _content(record, key, raw)}
    if calls:
        message["tool_calls"] = _tool_calls(record, f"{key}.tool_calls", calls)
    return _with_fields(record, key, item, message)


def _refuse_tool_turn(record: Record, key: str, role: str, item: dict, fmt: str) -> None:
    if role in TOOL_ROLES and role not in ("function_call", "observation"):
        raise UserError(
            problem(
                record.where,
                f"{key} has role {role!r} ({fmt} format), which gemmaforge does not read",
                "write tool results as role 'tool' (OpenAI) or ShareGPT 'observation' turns",
            )
        )


def _with_fields(record: Record, key: str, item: dict, message: Message) -> Message:
    """Add the message's loss flag (`train`) and reasoning (`thinking`), if it has them."""
    train = _loss_flag(record, key, item)
    if train is not None:
        message["train"] = train
    fields = [f for f in THINKING_FIELDS if item.get(f) not in (None, "")]
    if len(fields) > 1:
        raise UserError(
            problem(
                record.where,
                f"{key} has reasoning in several fields ({', '.join(fields)})",
                "keep one of them",
            )
        )
    if fields:
        message["thinking"] = _text(record, f"{key}.{fields[0]}", item[fields[0]])
    return message


def _loss_flag(record: Record, key: str, item: dict) -> bool | None:
    """True / False from the item's loss flag, None without one; fractional ones refused."""
    for name in LOSS_FIELDS:
        if name not in item or item[name] is None:
            continue
        value = item[name]
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        raise UserError(
            problem(
                record.where,
                f"{key}.{name} is {value!r}: gemmaforge trains a token fully or not at all, "
                "so loss weights must be 0 or 1 (true / false)",
                f"set {name} to 0 (not trained) or 1 (trained), or duplicate rows to weigh "
                "them more",
            )
        )
    return None


def _content(record: Record, key: str, content: Any) -> str | list[dict[str, Any]]:
    """A message's content: a string, or its parts.

    Parts are `{"type": "text", "text"}` (with `train` if the part has a loss flag),
    `{"type": "image" | "audio", "ref"}` (refs resolved against the data file's folder; None
    for a bare part that takes the next item of the row's list), or `{"type": "thinking",
    "text"}` for a LLaMA-Factory v1 reasoning part (moved to the message by `_place_media`).
    """
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return _text(record, f"{key}.content", content)
    return [_part(record, f"{key}.content[{i}]", part) for i, part in enumerate(content)]


def _part(record: Record, key: str, part: Any) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("text", "input_text", "reasoning") and isinstance(
        part.get("text", part.get("value")), str
    ):
        text = part.get("text", part.get("value"))
        out: dict[str, Any] = {"type": "thinking" if kind == "reasoning" else "text", "text": text}
        train = _loss_flag(record, key, part)
        if train is not None:
            out["train"] = train
        return out
    if kind in ("image_url", "audio_url", "video_url", "input_audio"):
        kind, ref = _url_part(record, key, part, kind)
        return _media_part(record, key, kind, ref)
    if kind in ("tool_call", "tool_calls", "tool_result", "function_call"):
        raise UserError(
            problem(
                record.where,
                f"{key} is a {kind} part: tool calls are not trained by gemmaforge yet",
                "remove the tool-calling rows from this file",
            )
        )
    if kind in MEDIA_KEYS:
        if isinstance(part.get("base64"), str):
            return {"type": kind, "ref": _decode_inline(record, key, kind, part["base64"], None)}
        ref = next((part[k] for k in MEDIA_KEYS[kind] if isinstance(part.get(k), str)), None)
        if ref or not any(part.get(k) for k in (*MEDIA_KEYS[kind], "base64")):
            return _media_part(record, key, kind, ref)
    shapes = (
        "{'type': 'text', 'text' | 'value': ...}, {'type': 'image', 'path' | 'url' | "
        "'base64': ...}, {'type': 'image_url', 'image_url': {'url': ...}}, {'type': 'audio' | "
        "'video', 'path' | 'url': ...}, {'type': 'input_audio', 'input_audio': {'data', "
        "'format'}}, or a bare {'type': 'image' | 'video'} with an 'images' / 'videos' column"
    )
    raise UserError(
        problem(record.where, f"{key} is not a content part gemmaforge reads", f"write {shapes}")
    )


def _url_part(record: Record, key: str, part: dict, kind: str) -> tuple[str, str | None]:
    """(media kind, ref) of an OpenAI / LLaMA-Factory v1 URL part."""
    if kind == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
            raise UserError(
                problem(
                    record.where,
                    f"{key}.input_audio must be {{'data': BASE64, 'format': 'wav'}}",
                    "write the clip as base64 in 'data' and its format in 'format'",
                )
            )
        fmt = str(audio.get("format") or "wav")
        return "audio", f"data:audio/{fmt};base64,{audio['data']}"
    media = kind.removesuffix("_url")
    value = part.get(kind, part.get("value", part.get("url")))
    if isinstance(value, dict):
        value = value.get("url")
    if not isinstance(value, str) or not value:
        raise UserError(
            problem(
                record.where,
                f"{key} has no URL",
                f"write {{'type': '{kind}', '{kind}': {{'url': PATH_OR_URL}}}}",
            )
        )
    return media, value


def _media_part(record: Record, key: str, kind: str, ref: str | None) -> dict[str, Any]:
    if ref is None:
        return {"type": kind, "ref": None, "key": key}
    # A video keeps the field it came from: only Gemma 4 takes video, and the refusal on other
    # families (found when rendering, where the family is known) names the field.
    field = {"key": key} if kind == "video" else {}
    if ref.startswith("data:"):
        return {"type": kind, "ref": _decode_data_url(record, key, kind, ref), **field}
    return {"type": kind, "ref": resolve_media_path(ref, record.base), **field}


def _decode_data_url(record: Record, key: str, kind: str, url: str) -> str:
    header, comma, payload = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise UserError(
            problem(
                record.where,
                f"{key}: the {kind} data URL is not base64 ({short_ref(url)})",
                f"write it as data:{kind}/png;base64,... (only base64 data URLs are read)",
            )
        )
    mime = header.removeprefix("data:").removesuffix(";base64")
    suffix = "." + mime.split("/", 1)[1] if "/" in mime else ""
    return _decode_inline(record, key, kind, payload, suffix)


def _decode_inline(record: Record, key: str, kind: str, payload: str, suffix: str | None) -> str:
    """Decode base64 media into the media cache's blob store; the blob's path."""

    if len(payload) * 3 // 4 > MAX_INLINE_MEDIA_BYTES:
        raise UserError(
            problem(
                record.where,
                f"{key}: the inline {kind} is over {MAX_INLINE_MEDIA_BYTES >> 20} MB",
                "save it as a file and give its path",
            )
        )
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise UserError(
            problem(
                record.where,
                f"{key}: the inline {kind} is not valid base64 ({short_ref(payload)})",
                "re-encode the file with base64 (no line breaks), or give its path",
            )
        ) from None
    clean = suffix if suffix and suffix[1:].isalnum() and len(suffix) <= 6 else ""
    return media_cache.store_blob(data, clean)


def short_ref(ref: str, limit: int = 80) -> str:
    """A media reference short enough to print (data URLs and base64 are cut)."""
    return ref if len(ref) <= limit else f"{ref[: limit - 20]}... ({len(ref)} characters)"


class _MediaQueue:
    """The row's media lists (`images`, `audios`, `videos`), handed out in order to the
    placeholders and bare parts that stand for them."""

    def __init__(self, lists: dict[str, list[Any]], placeholders: bool):
        self.lists, self.used = lists, dict.fromkeys(lists, 0)
        self.placeholders = placeholders

    @classmethod
    def of(cls, record: Record, fmt: str, cfg: DataConfig) -> _MediaQueue:
        lists = {}
        for kind, column in MEDIA_LISTS.items():
            value = record.row.get(column)
            if value is None:
                continue
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list):
                raise UserError(
                    problem(
                        record.where,
                        f"{column!r} must be a list of {kind} paths, got {type(value).__name__}",
                        f'write it as ["a.{EXAMPLE_SUFFIX[kind]}", ...]',
                    )
                )
            lists[kind] = value
        return cls(lists, cfg.media_placeholders)

    def take(self, record: Record, key: str, kind: str, what: str) -> dict[str, Any]:
        column = MEDIA_LISTS[kind]
        items = self.lists.get(kind)
        if items is None or self.used[kind] >= len(items):
            have = "no" if items is None else f"only {len(items)}"
            raise UserError(
                problem(
                    record.where,
                    f"{key} has {what} but the row has {have} {column!r} item(s) for it",
                    f"give one {column!r} entry per {what}, in order"
                    + (
                        f", or set data.media_placeholders: false if <{kind}> is plain text"
                        if items is None and what.startswith("an <")
                        else ""
                    ),
                )
            )
        item = items[self.used[kind]]
        self.used[kind] += 1
        where = f"{column}[{self.used[kind] - 1}]"
        if isinstance(item, dict):
            if isinstance(item.get("bytes"), bytes):
                from gemmaforge.data.read import media_cache

                ref = media_cache.store_blob(item["bytes"], "")
                return {"type": kind, "ref": ref, **({"key": where} if kind == "video" else {})}
            item = item.get("path") or item.get("url")
        if not isinstance(item, str) or not item:
            raise UserError(
                problem(record.where, f"{where} is not a file path or URL", "give a path")
            )
        return _media_part(record, where, kind, item)

    def check_used(self, record: Record, fmt: str) -> None:
        for kind, items in self.lists.items():
            if self.used[kind] != len(items):
                column = MEDIA_LISTS[kind]
                raise UserError(
                    problem(
                        record.where,
                        f"the row has {len(items)} {column!r} item(s) but {self.used[kind]} "
                        f"<{kind}> placeholder(s) / {kind} part(s) in its messages ({fmt} format)",
                        f"put one <{kind}> in the text (or a {{'type': '{kind}'}} part) where "
                        f"each {kind} goes",
                    )
                )


def _place_media(
    record: Record, index: int, message: Message, media: _MediaQueue, cfg: DataConfig
) -> Message:
    """The message with placeholders and bare parts given their media, reasoning parts
    moved to `thinking`, and text-only part lists without loss flags joined."""
    key = f"message {index + 1}"
    content = message["content"]
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
    out: list[dict[str, Any]] = []
    for part in parts:
        if part["type"] == "thinking":
            if message.get("thinking"):
                raise UserError(
                    problem(record.where, f"{key} has reasoning twice", "keep one of them")
                )
            message = {**message, "thinking": part["text"]}
        elif part["type"] == "text" and media.placeholders and PLACEHOLDER.search(part["text"]):
            out.extend(_split_placeholders(record, key, part, media))
        elif part["type"] != "text" and part["ref"] is None:
            out.append(media.take(record, part["key"], part["type"], f"a bare {part['type']} part"))
        else:
            out.append(part)
    if all(p["type"] == "text" and "train" not in p for p in out):
        # Gemma's chat templates concatenate text parts without a separator; so do we, so
        # the prompt trained on is the prompt served.
        return {**message, "content": "".join(p["text"] for p in out)}
    return {**message, "content": out}


def _split_placeholders(
    record: Record, key: str, part: dict[str, Any], media: _MediaQueue
) -> list[dict[str, Any]]:
    out = []
    pieces = PLACEHOLDER.split(part["text"])
    for i, piece in enumerate(pieces):
        if i % 2:
            out.append(media.take(record, key, piece, f"an <{piece}> placeholder"))
        elif piece:
            out.append({**part, "text": piece})
    return out


def _alpaca(record: Record, cfg: DataConfig) -> Conversation:
    row = record.row
    prompt = _text(record, "instruction", row["instruction"])
    extra = _text(record, "input", row.get("input") or "")
    # The Alpaca convention: the optional input follows the instruction after a blank line.
    if extra.strip():
        prompt = f"{prompt}\n\n{extra}"
    reply = _text(record, "output", row["output"])
    turns = [*_system(record, row), *_history(record, row.get("history"))]
    turns += [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]
    return Conversation(where=record.where, messages=turns)


def _system(record: Record, row: dict[str, Any]) -> list[Message]:
    """A `system` column (LLaMA-Factory alpaca / sharegpt) as the leading system message."""
    system = row.get("system")
    if system is None or system == "":
        return []
    return [{"role": "system", "content": _text(record, "system", system)}]


def _history(record: Record, history: Any) -> list[Message]:
    """LLaMA-Factory alpaca's `history`: [[instruction, reply], ...] turns before the last."""
    if not history:
        return []
    turns = []
    for i, pair in enumerate(_list(record, "history", history)):
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            raise UserError(
                problem(
                    record.where,
                    f"history[{i}] must be a [prompt, reply] pair",
                    'write history as [["question", "answer"], ...]',
                )
            )
        turns.append({"role": "user", "content": _text(record, f"history[{i}][0]", pair[0])})
        turns.append({"role": "assistant", "content": _text(record, f"history[{i}][1]", pair[1])})
    return turns


def _sharegpt(record: Record, cfg: DataConfig) -> Conversation:
    turns = _system(record, record.row)
    for i, item in enumerate(_list(record, "conversations", record.row["conversations"])):
        key = f"conversations[{i}]"
        if isinstance(item, dict) and "role" in item and "content" in item:
            turns.append(_message(record, key, item, "sharegpt"))
            continue
        if not isinstance(item, dict) or "from" not in item or "value" not in item:
            raise UserError(
                problem(
                    record.where,
                    f"{key} must be an object with 'from' and 'value'",
                    'write each turn as {"from": "human", "value": "..."}',
                )
            )
        speaker = _text(record, f"{key}.from", item["from"])
        _refuse_tool_turn(record, key, speaker, item, "sharegpt")
        content = _text(record, f"{key}.value", item["value"])
        if speaker == "observation":
            turns.append(_tool_result(record, key, {}, content))
            continue
        if speaker == "function_call":
            # LLaMA-Factory: the model's call(s) as JSON {"name", "arguments"} (or a list).
            try:
                calls = json.loads(content)
            except json.JSONDecodeError:
                calls = None
            message = {"role": "assistant", "content": ""}
            message["tool_calls"] = _tool_calls(record, f"{key}.value", calls)
            turns.append(_with_fields(record, key, item, message))
            continue
        message = {"role": ROLE_ALIASES.get(speaker, speaker), "content": content}
        turns.append(_with_fields(record, key, item, message))
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


def _prompt_completion(record: Record, cfg: DataConfig) -> Conversation:
    """TRL / mlx-lm prompt-completion rows: plain strings become a user turn and the reply;
    conversational ones are message lists (the completion's messages are the replies)."""
    row, column = record.row, cfg.prompt_column
    prompt, completion = row[column], row["completion"]
    if isinstance(prompt, list) and isinstance(completion, list):
        items = [(f"{column}[{i}]", m) for i, m in enumerate(prompt)]
        items += [(f"completion[{i}]", m) for i, m in enumerate(completion)]
        turns = [_message(record, key, m, "prompt_completion") for key, m in items]
        return Conversation(where=record.where, messages=turns)
    turns = [
        {"role": "user", "content": _text(record, column, prompt)},
        {"role": "assistant", "content": _text(record, "completion", completion)},
    ]
    return Conversation(where=record.where, messages=turns)


def _input_output(record: Record, cfg: DataConfig) -> Conversation:
    """axolotl's template-free rows: text segments, each with a `label` (trained or not)."""
    segments = []
    for i, item in enumerate(_list(record, "segments", record.row["segments"])):
        key = f"segments[{i}]"
        if not isinstance(item, dict) or "text" not in item:
            raise UserError(
                problem(
                    record.where,
                    f"{key} must be an object with 'text' and 'label'",
                    'write each segment as {"label": true, "text": "..."}',
                )
            )
        label = item.get("label", True)
        if not isinstance(label, bool):
            raise UserError(
                problem(record.where, f"{key}.label must be true or false", "use a boolean")
            )
        segments.append((_text(record, f"{key}.text", item["text"]), label))
    if not any(trained and text.strip() for text, trained in segments):
        raise UserError(
            problem(
                record.where,
                "no segment has label true: nothing would be trained",
                "label the segments the model should learn to write true",
            )
        )
    return Conversation(where=record.where, messages=[], segments=tuple(segments))


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
        kinds, prompt_column, reply_column = MEDIA_SHORTCUTS[fmt](cfg)
        parts = []
        for kind, column in kinds.items():
            ref = _text(record, column, record.row[column]).strip()
            if not ref:
                raise UserError(
                    problem(record.where, f"{column!r} is empty", f"give the {kind} file's path")
                )
            parts.append(_media_part(record, column, kind, ref))
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
    "prompt_completion": _prompt_completion,
    "input_output": _input_output,
    **{fmt: _media_shortcut(fmt) for fmt in MEDIA_SHORTCUTS},
}


def fold_tool_messages(messages: list[dict[str, Any]], where: str) -> list[Message]:
    """OpenAI-style chat turns (assistant `tool_calls`, `tool` results) as gemmaforge turns,
    for prompts built outside a data file (the server); `where` names them in errors."""
    record = Record(row={}, path=where, line=0)
    out = []
    for i, message in enumerate(messages):
        key = f"messages[{i}]"
        if message["role"] == "tool":
            out.append(_tool_result(record, key, message, message.get("content") or ""))
        elif message.get("tool_calls"):
            calls = _tool_calls(record, f"{key}.tool_calls", message["tool_calls"])
            out.append({**message, "content": message.get("content") or "", "tool_calls": calls})
        else:
            out.append(message)
    return _fold_tool_turns(record, out, "messages")
