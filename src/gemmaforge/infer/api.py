"""The OpenAI chat-completions request, read strictly, and OpenAI-style errors.

A request is validated in full before any model work starts, and every problem becomes an
`ApiError` that the server answers as `{"error": {"message", "type", "param", "code"}}`
with the matching HTTP status, so a client sees what to fix and the server keeps running.
Fields that would change the meaning of the answer but that this server does not implement
(tools, logprobs, JSON mode, n > 1) are refused, not ignored.

Images and audio: `image_url` parts (a base64 data URL, or a file path when the server runs
with `--allow-media-paths`; never a remote URL, the server does not go online) and
`input_audio` parts (base64 data). Each is checked and written to a file in a folder the
caller owns for the request, so the prompt is built by the same code as in training, which
reads media by reference; a broken image is answered with a 400 before any model work.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import stat
from io import BytesIO
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gemmaforge import limits
from gemmaforge.errors import UserError

MAX_DEPTH = 64
"""Deepest JSON nesting accepted in a request (a real one is under 10 levels)."""
_BRACKETS = re.compile(rb"[\[\]{}]+")
MAX_STOP_STRINGS = 4
"""As in the OpenAI API."""

UNSUPPORTED = ("functions", "function_call", "logprobs", "top_logprobs")
"""Request fields refused when set: answering without them would silently mislead."""


class ApiError(Exception):
    """An HTTP error answered with an OpenAI-style JSON body."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        kind: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.kind = (
            status,
            message,
            code,
            param,
            kind,
        )

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


class _Lenient(BaseModel):
    # Clients add fields (an image's `detail`, a message's `name`) that change nothing here.
    model_config = ConfigDict(extra="ignore")


class ImageUrl(_Lenient):
    url: str


class InputAudio(_Lenient):
    data: str
    format: str | None = None


class ContentPart(_Lenient):
    type: Literal["text", "image_url", "input_audio"]
    text: str | None = None
    image_url: ImageUrl | None = None
    input_audio: InputAudio | None = None


class Message(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    """The newer name of max_tokens; wins when both are given."""
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    """Not in the OpenAI API; vLLM, llama.cpp and Ollama servers take it (0: off)."""
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    """torch seeds are int64: anything else would fail inside the generation worker."""
    tools: list[dict[str, Any]] | None = None
    """Function declarations (OpenAI style), rendered in the family's tool tokens."""
    tool_choice: str | dict[str, Any] | None = None

    @property
    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


def parse_request(body: bytes) -> ChatRequest:
    """The request in `body`, or an ApiError (400) saying what is wrong with it."""
    _check_depth(body)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise ApiError(400, f"the request body is not valid JSON ({err})") from None
    except RecursionError:
        raise ApiError(400, f"the request body nests deeper than {MAX_DEPTH} levels") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        request = ChatRequest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ApiError(400, f"{where}: {first['msg']}", param=where or None) from None
    for name in UNSUPPORTED:
        if (request.model_extra or {}).get(name):
            raise ApiError(400, f"{name} is not supported by this server", param=name)
    response_format = (request.model_extra or {}).get("response_format")
    if response_format and response_format != {"type": "text"}:
        raise ApiError(400, "only response_format text is supported", param="response_format")
    if request.tool_choice not in (None, "auto"):
        # "none", "required" and a named function would need constrained decoding.
        raise ApiError(400, "only tool_choice auto is supported", param="tool_choice")
    if request.n not in (None, 1):
        raise ApiError(400, "n must be 1: this server returns one choice", param="n")
    if len(request.stop_strings) > MAX_STOP_STRINGS:
        raise ApiError(400, f"stop takes at most {MAX_STOP_STRINGS} strings", param="stop")
    return request


def _check_depth(body: bytes) -> None:
    """A 400 for JSON nested deeper than MAX_DEPTH, found before parsing: the parser and the
    validator recurse, and a few thousand `[` would otherwise end in a RecursionError.
    Brackets inside strings count too, which only makes the bound stricter for odd bodies
    whose strings hold runs of brackets; plain text never comes near."""
    depth = 0
    # Counting per run of brackets keeps this linear and fast on large bodies.
    for match in _BRACKETS.finditer(body):
        run = match.group(0)
        depth += run.count(b"[") + run.count(b"{") - run.count(b"]") - run.count(b"}")
        if depth > MAX_DEPTH:
            raise ApiError(400, f"the request body nests deeper than {MAX_DEPTH} levels")


def to_messages(
    request: ChatRequest, allow_media_paths: bool, media_dir: Path
) -> list[dict[str, Any]]:
    """The request's messages as gemmaforge conversation turns; media parts become
    `{"type": "image" | "audio", "ref": path}`, data written into `media_dir`."""
    from gemmaforge.data.examples.formats import fold_tool_messages

    messages = []
    for i, message in enumerate(request.messages):
        role = "system" if message.role == "developer" else message.role
        content = _content(message, i, allow_media_paths, media_dir)
        turn: dict[str, Any] = {"role": role, "content": content}
        if message.tool_calls:
            turn["tool_calls"] = message.tool_calls
        if role == "tool":
            turn.update(tool_call_id=message.tool_call_id, name=message.name)
        messages.append(turn)
    try:
        return fold_tool_messages(messages, "request")
    except UserError as err:
        raise ApiError(400, "; ".join(err.problems), param="messages") from None


def _content(
    message: Message, index: int, allow_media_paths: bool, media_dir: Path
) -> str | list[dict[str, str]]:
    content = message.content
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for j, part in enumerate(content):
        param = f"messages.{index}.content.{j}"
        if part.type == "text" and parts and parts[-1]["type"] == "text":
            # OpenAI joins a message's adjacent text parts; a newline keeps words apart.
            parts[-1]["text"] += "\n" + (part.text or "")
        elif part.type == "text":
            parts.append({"type": "text", "text": part.text or ""})
        elif part.type == "image_url":
            if part.image_url is None:
                raise ApiError(400, "an image_url part needs image_url.url", param=param)
            ref = _image_ref(part.image_url.url, allow_media_paths, media_dir / param, param)
            parts.append({"type": "image", "ref": ref})
        else:
            if part.input_audio is None:
                raise ApiError(400, "an input_audio part needs input_audio.data", param=param)
            path = media_dir / param
            path.write_bytes(_decode_base64(part.input_audio.data, "audio", param))
            parts.append({"type": "audio", "ref": str(path)})
    if len(parts) == 1 and parts[0]["type"] == "text":
        return parts[0]["text"]
    return parts


def _image_ref(url: str, allow_paths: bool, spill: Path, param: str) -> str:
    """The path of the image `url` names, or an ApiError unless it is an image this server
    may read and can decode. A data URL's bytes are written to `spill`."""
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if not header.endswith(";base64"):
            raise ApiError(
                400,
                "an image data URL must be base64 (data:image/png;base64,...)",
                "invalid_image",
                param,
            )
        data = _decode_base64(payload, "image", param)
        _check_image(data, param)
        spill.write_bytes(data)
        return str(spill)
    if url.startswith(("http://", "https://")):
        raise ApiError(
            400,
            "image URLs are not fetched (the server never goes online): send a data URL",
            "invalid_image_url",
            param,
        )
    if not allow_paths:
        raise ApiError(
            400,
            "image file paths are refused: send a data URL, or start the server with "
            "--allow-media-paths",
            "media_paths_disabled",
            param,
        )
    path = Path(url.removeprefix("file://"))
    # One answer for every failure (missing, unreadable, a device, too big, not an image), so
    # a request cannot probe which files exist on the server; at most the byte cap is read.
    refused = ApiError(
        400,
        "the image path cannot be used (no readable image file of at most "
        "data.max_media_bytes there)",
        "invalid_image",
        param,
    )

    cap = limits.current().max_media_bytes
    try:
        with path.open("rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise refused
            data = handle.read(cap + 1)
    except OSError:
        raise refused from None
    if len(data) > cap:
        raise refused
    try:
        _check_image(data, param)
    except ApiError:
        raise refused from None
    return str(path)


def _check_image(data: bytes, param: str) -> None:
    """An ApiError (400) unless `data` decodes as an image."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    cap = limits.current().max_image_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(BytesIO(data))
            width, height = image.size
            if width * height > cap:
                raise ApiError(
                    400,
                    f"the image is {width} x {height} pixels, more than the limit of {cap:,}",
                    "invalid_image",
                    param,
                )
            image.verify()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(
            400, "the image is too large to decode safely", "invalid_image", param
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ApiError(
            400, f"the image cannot be decoded ({err})", "invalid_image", param
        ) from None


def _decode_base64(payload: str, what: str, param: str) -> bytes:
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"the {what} is not valid base64", f"invalid_{what}", param) from None
