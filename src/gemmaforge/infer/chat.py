"""`gemmaforge generate` and `gemmaforge chat`: replies streamed to the terminal.

Both render the conversation with `Session.prompt` (training's renderer, images and audio
included) and stream the reply to stdout as it is produced; notices go to stderr, so stdout
holds only replies and can be piped. `chat` keeps the history (multi-turn), drops the oldest
exchanges when the conversation outgrows the model's context, and reads one message per line:
`/reset` clears the history, `/exit` or end of input (Ctrl-D, or the end of a pipe) ends it, and
Ctrl-C stops the reply being written without leaving the chat.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from gemmaforge.errors import UserError, problem
from gemmaforge.infer.generate import stop_token_ids
from gemmaforge.infer.session import Session
from gemmaforge.infer.stream import Reply, ReplyStream, Sampling

Messages = list[dict[str, Any]]

HELP = (
    "/image PATH and /audio PATH attach a file to your next message, /reset clears the "
    "history, /exit or Ctrl-D ends the chat."
)
MEDIA_COMMANDS = {"/image": "image", "/audio": "audio"}


def stream_reply(
    session: Session,
    name: str,
    messages: Messages,
    sampling: Sampling,
    out: TextIO,
    tools: list[dict] | None = None,
) -> Reply:
    """Write the reply of model `name` to `messages` to `out` as it is generated."""
    prompt = session.prompt(messages, tools)
    stops = stop_token_ids(session.loaded.tokenizer, session.loaded.family)
    tokenizer = session.loaded.tokenizer
    with (
        session.use(name) as model,
        ReplyStream(model, tokenizer, prompt.ids, stops, sampling, prompt.inputs) as stream,
    ):
        for delta in stream:
            out.write(delta)
            out.flush()
    return stream.reply


def generate_once(
    session: Session,
    name: str,
    prompt: str,
    system: str | None,
    sampling: Sampling,
    out: TextIO = sys.stdout,
    media: Sequence[tuple[str, str]] = (),
    tools: list[dict] | None = None,
) -> Reply:
    """One reply to `prompt` (with an optional system prompt), streamed to `out`.

    `media` is (kind, path) pairs, "image" or "audio": they open the user turn, before the
    text, as the training formats place them. With `tools` (Gemma 4), the reply's tool calls
    follow it as one JSON line `{"tool_calls": [{"name", "arguments"}]}`.
    """
    if not prompt.strip():
        raise UserError(
            problem(None, "the prompt is empty", "pass it as an argument or on standard input")
        )
    messages = [{"role": "system", "content": system}] if system else []
    content: str | list[dict[str, str]] = prompt
    if media:
        parts = [{"type": kind, "ref": ref} for kind, ref in media]
        content = [*parts, {"type": "text", "text": prompt}]
    reply = stream_reply(
        session, name, [*messages, {"role": "user", "content": content}], sampling, out, tools
    )
    out.write("\n")
    if tools and reply.ids:
        from gemmaforge.data.examples.tools import split_reply

        _, _, calls = split_reply(session.loaded.tokenizer.decode(reply.ids))
        if calls:
            out.write(json.dumps({"tool_calls": calls}) + "\n")
    return reply


def chat_loop(
    session: Session,
    name: str,
    system: str | None,
    sampling: Sampling,
    stdin: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> Messages:
    """Chat with model `name` until /exit or the end of `stdin`; returns the history."""
    interactive = stdin.isatty()
    if interactive:
        import readline  # noqa: F401  (line editing and history for input())
    start: Messages = [{"role": "system", "content": system}] if system else []
    history = list(start)
    pending: list[dict[str, str]] = []
    """Media parts attached (/image, /audio) to the next message."""
    err.write(f"Chatting with {name}. {HELP}\n")
    while (line := _read_line(stdin, interactive)) is not None:
        text = line.strip()
        if not text:
            continue
        if text == "/exit":
            break
        if text == "/reset":
            history, pending = list(start), []
            err.write("(history cleared)\n")
            continue
        command, _, argument = text.partition(" ")
        if command in MEDIA_COMMANDS:
            part = _media_part(MEDIA_COMMANDS[command], argument.strip(), err)
            if part is not None:
                pending.append(part)
            continue
        if text.startswith("/"):
            err.write(f"(unknown command {text}; {HELP})\n")
            continue
        content: str | list[dict[str, str]] = text
        if pending:
            # Media first, then the text: the order training renders and `generate` uses.
            content, pending = [*pending, {"type": "text", "text": text}], []
        history.append({"role": "user", "content": content})
        _fit_context(session, history, len(start), sampling.max_new_tokens, err)
        try:
            reply = stream_reply(session, name, history, sampling, out)
        except UserError as exc:
            history.pop()
            err.write("".join(f"error: {line}\n" for line in exc.problems))
            continue
        except KeyboardInterrupt:
            history.pop()
            err.write("\n(stopped; that message is not kept)\n")
            continue
        out.write("\n")
        out.flush()
        if reply.text.strip():
            history.append({"role": "assistant", "content": reply.text})
        else:
            # An empty reply cannot be rendered as a turn; without it the user turn would
            # leave two user turns in a row, so both go.
            history.pop()
            err.write("(empty reply; that exchange is not kept)\n")
    return history


def _media_part(kind: str, path: str, err: TextIO) -> dict[str, str] | None:
    """The part for `/image PATH` or `/audio PATH`, or None (and why, on `err`)."""
    from pathlib import Path

    if not path:
        err.write(f"(give a file: /{kind} PATH)\n")
        return None
    file = Path(path).expanduser()
    if not file.is_file():
        err.write(f"(no such file: {path}; nothing attached)\n")
        return None
    err.write(f"({kind} {path} attached to your next message)\n")
    return {"type": kind, "ref": str(file)}


def _read_line(stdin: TextIO, interactive: bool) -> str | None:
    """The next line, or None at the end of input."""
    if interactive:
        try:
            return input("> ")
        except EOFError:
            return None
    line = stdin.readline()
    return line or None


def _fit_context(
    session: Session, history: Messages, keep: int, reply_tokens: int, err: TextIO
) -> None:
    """Drop the oldest user/assistant exchanges (never the system prompt or the new message)
    until the prompt and a full-length reply fit the model's context."""
    limit = session.context_length
    if limit is None:
        return
    dropped = 0
    while len(history) > keep + 1 and len(session.prompt(history).ids) + reply_tokens > limit:
        del history[keep : keep + 2]
        dropped += 1
    if dropped:
        err.write(
            f"(the conversation outgrew the context: dropped the {dropped} oldest exchanges)\n"
        )
