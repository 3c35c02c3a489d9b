"""Gemma 4's tool-calling syntax: tool declarations, calls and responses as text, and calls
parsed back out of generated text.

Gemma 4 writes structured values in its own notation, not JSON: strings between `<|"|>`
tokens, object keys sorted case-insensitively, no spaces (`{location:<|"|>Paris<|"|>,days:3}`).
The functions here reproduce what the official chat template (Jinja; the revision llama.cpp
keeps as models/templates/google-gemma-4-31B-it.jinja) writes for a tool declaration
(`<|tool>declaration:NAME{...}<tool|>`), a call (`<|tool_call>call:NAME{...}<tool_call|>`) and
a response (`<|tool_response>response:NAME{...}<tool_response|>`), including its quirks (an
unclosed `parameters:{` without a `type`), so that training renders exactly what the model is
prompted with. They are written here rather than by running the template because rendering
is done piece by piece (see render.py); tests/test_formats_peers.py compares both on the same
conversations.
"""

from __future__ import annotations

import json
import re
from typing import Any

QUOTE = '<|"|>'
STANDARD_KEYS = ("description", "type", "properties", "required", "nullable")


def _sorted(mapping: dict[str, Any]) -> list[tuple[str, Any]]:
    # Jinja's dictsort: case-insensitive by key.
    return sorted(mapping.items(), key=lambda item: str(item[0]).lower())


def format_value(value: Any, escape_keys: bool = True) -> str:
    """A value in Gemma 4's notation (the template's `format_argument`)."""
    if isinstance(value, str):
        return f"{QUOTE}{value}{QUOTE}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        items = (f"{QUOTE}{k}{QUOTE}:" if escape_keys else f"{k}:" for k, _ in _sorted(value))
        parts = [
            key + format_value(v, escape_keys)
            for key, (_, v) in zip(items, _sorted(value), strict=True)
        ]
        return "{" + ",".join(parts) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(format_value(v, escape_keys) for v in value) + "]"
    if value is None:
        return "None"  # what Jinja prints for a Python None
    return str(value)


def _type_of(value: dict[str, Any]) -> str:
    kind = value.get("type")
    if isinstance(kind, list):
        kind = kind[0] if kind else ""
    return str(kind or "").upper()


def _required(items: Any) -> str:
    return ",".join(f"{QUOTE}{item}{QUOTE}" for item in items or [])


def _parameters(properties: dict[str, Any]) -> str:
    """The template's `format_parameters`: each non-standard property as `name:{...}`, its
    fields in the template's order (description, enum or items, nullable, nested properties
    and required, type)."""
    out = []
    for key, value in _sorted(properties):
        if key in STANDARD_KEYS:
            continue
        value = value if isinstance(value, dict) else {}
        fields = []
        if value.get("description"):
            fields.append(f"description:{QUOTE}{value['description']}{QUOTE}")
        kind = _type_of(value)
        if kind == "STRING" and value.get("enum"):
            fields.append("enum:" + format_value(value["enum"]))
        elif kind == "ARRAY" and isinstance(value.get("items"), dict) and value["items"]:
            fields.append("items:{" + _items(value["items"]) + "}")
        if value.get("nullable"):
            fields.append("nullable:true")
        if kind == "OBJECT":
            nested = value.get("properties")
            fields.append(
                "properties:{" + _parameters(nested if isinstance(nested, dict) else value) + "}"
            )
            if value.get("required"):
                fields.append("required:[" + _required(value["required"]) + "]")
        fields.append(f"type:{QUOTE}{kind}{QUOTE}")
        out.append(f"{key}:{{{','.join(fields)}}}")
    return ",".join(out)


def _items(items: dict[str, Any]) -> str:
    out = []
    for key, value in _sorted(items):
        if value is None:
            continue
        if key == "properties":
            nested = _parameters(value) if isinstance(value, dict) else ""
            out.append("properties:{" + nested + "}")
        elif key == "required":
            out.append("required:[" + _required(value) + "]")
        elif key == "type":
            kind = value.upper() if isinstance(value, str) else [str(v).upper() for v in value]
            out.append("type:" + format_value(kind))
        else:
            out.append(f"{key}:{format_value(value)}")
    return ",".join(out)


def format_declaration(tool: dict[str, Any]) -> str:
    """`declaration:NAME{...}` of an OpenAI-style tool (`{"type": "function", "function":
    {"name", "description", "parameters"}}`), between `<|tool>` and `<tool|>`."""
    function = tool["function"]
    text = f"declaration:{function['name']}{{description:{QUOTE}"
    text += f"{function.get('description') or ''}{QUOTE}"
    params = function.get("parameters")
    if params:
        text += ",parameters:{"
        if params.get("properties"):
            text += "properties:{" + _parameters(params["properties"]) + "},"
        if params.get("required"):
            text += "required:[" + _required(params["required"]) + "],"
        if params.get("type"):
            text += f"type:{QUOTE}{str(params['type']).upper()}{QUOTE}}}"
    if "response" in function:
        response = function["response"] or {}
        text += ",response:{"
        if response.get("description"):
            text += f"description:{QUOTE}{response['description']}{QUOTE},"
        if str(response.get("type", "")).upper() == "OBJECT":
            text += f"type:{QUOTE}OBJECT{QUOTE}}}"
    return (text + "}").strip()


def format_call(name: str, arguments: dict[str, Any]) -> str:
    """`call:NAME{key:value,...}` (between `<|tool_call>` and `<tool_call|>`)."""
    args = ",".join(f"{k}:{format_value(v, escape_keys=False)}" for k, v in _sorted(arguments))
    return f"call:{name}{{{args}}}"


def format_response(name: str, response: Any) -> str:
    """`response:NAME{...}` (between `<|tool_response>` and `<tool_response|>`)."""
    if isinstance(response, dict):
        body = ",".join(f"{k}:{format_value(v, escape_keys=False)}" for k, v in _sorted(response))
        return f"response:{name}{{{body}}}"
    return f"response:{name}{{value:{format_value(response, escape_keys=False)}}}"


CALL = re.compile(r"<\|tool_call>call:([\w.\-]+)\{(.*?)\}<tool_call\|>", re.S)


def parse_calls(text: str) -> list[dict[str, Any]]:
    """The tool calls in generated text, as OpenAI-style `{"name", "arguments"}` with the
    arguments decoded to Python values; text that is not a well-formed call is skipped."""
    calls = []
    for match in CALL.finditer(text):
        try:
            arguments = _Parser(match.group(2)).object_body()
        except ValueError:
            continue
        calls.append({"name": match.group(1), "arguments": arguments})
    return calls


THOUGHT = re.compile(r"<\|channel>thought\n?(.*?)(?:<channel\|>|$)", re.S)
SPECIAL = re.compile(r"<\|tool_response>|<tool_response\|>|<turn\|>|<eos>|<pad>")


def split_reply(text: str) -> tuple[str, str, list[dict[str, Any]]]:
    """(content, reasoning, tool calls) of a Gemma 4 reply decoded with its special tokens:
    the thinking channel's text is the reasoning, each well-formed call is parsed, and what
    is left (calls and control tokens removed) is the content."""
    content, reasoning, calls = _parts(text)
    return content.strip(), reasoning.strip(), calls


def split_partial(text: str) -> tuple[str, str, list[dict[str, Any]]]:
    """`split_reply` of a reply still being generated, unstripped: a call or a channel that
    has opened but not yet closed far enough to be read is held back (left out of the
    content) until more text comes, so streamed pieces never show call syntax."""
    call = text.rfind("<|tool_call>")
    if call > text.rfind("<tool_call|>"):
        text = text[:call]
    channel = text.rfind("<|channel>")
    if channel > text.rfind("<channel|>") and not text.startswith("<|channel>thought", channel):
        text = text[:channel]
    return _parts(text)


def _parts(text: str) -> tuple[str, str, list[dict[str, Any]]]:
    reasoning = "".join(m.group(1) for m in THOUGHT.finditer(text))
    content = SPECIAL.sub("", CALL.sub("", THOUGHT.sub("", text)))
    return content, reasoning, parse_calls(text)


class _Parser:
    """A recursive-descent reader for Gemma 4's value notation (the inverse of
    `format_value` with bare keys)."""

    def __init__(self, text: str):
        self.text, self.at = text, 0

    def object_body(self) -> dict[str, Any]:
        out = self.pairs(None)
        if self.at != len(self.text):
            raise ValueError("trailing text")
        return out

    def pairs(self, end: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        text = self.text
        while self.at < len(text) and not (end and text.startswith(end, self.at)):
            if text.startswith(QUOTE, self.at):
                key = self.string()
            else:
                colon = text.find(":", self.at)
                if colon < 0:
                    raise ValueError("key without value")
                key, self.at = text[self.at : colon].strip(), colon
            self.expect(":")
            out[key] = self.value()
            if text.startswith(",", self.at):
                self.at += 1
        if end:
            self.expect(end)
        return out

    def expect(self, token: str) -> None:
        if not self.text.startswith(token, self.at):
            raise ValueError(f"expected {token!r} at {self.at}")
        self.at += len(token)

    def string(self) -> str:
        self.expect(QUOTE)
        end = self.text.find(QUOTE, self.at)
        if end < 0:
            raise ValueError("unterminated string")
        value, self.at = self.text[self.at : end], end + len(QUOTE)
        return value

    def value(self) -> Any:
        text = self.text
        if text.startswith(QUOTE, self.at):
            return self.string()
        if text.startswith("{", self.at):
            self.at += 1
            return self.pairs("}")
        if text.startswith("[", self.at):
            self.at += 1
            items = []
            while not text.startswith("]", self.at):
                if self.at >= len(text):
                    raise ValueError("unterminated list")
                items.append(self.value())
                if text.startswith(",", self.at):
                    self.at += 1
            self.at += 1
            return items
        match = re.compile(r"[^,\]}]*").match(text, self.at)
        token = match.group(0)
        self.at = match.end()
        if token in ("true", "false"):
            return token == "true"
        if token in ("None", "null"):
            return None
        try:
            return json.loads(token)
        except json.JSONDecodeError:
            return token
