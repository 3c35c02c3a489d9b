"""`POST /v1/completions`: plain prompt completion (the OpenAI legacy endpoint), whole or
streamed as server-sent events.

The prompt is continued as text: no chat template, the tokenizer's own special tokens (the
`<bos>` Gemma expects) in front, generation ending at the family's stop tokens, `stop`
strings or `max_tokens` (default 16, as in the OpenAI API). Sampling is the chat endpoint's
(`temperature` default 1, `top_p`, `top_k`, `seed`); it shares the model lock, the API key
and the body limit with it (`serve.create_app` registers this route).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gemmaforge.infer import serve
from gemmaforge.infer.api import ApiError
from gemmaforge.infer.serve import _Completion, _event, _usage, failure_event
from gemmaforge.infer.session import Prompt, Session

DEFAULT_MAX_TOKENS = 16
"""As in the OpenAI API's completions endpoint."""


class StreamOptions(BaseModel):
    include_usage: bool = False


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    prompt: str | list[str]
    max_tokens: int | None = Field(DEFAULT_MAX_TOKENS, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    max_completion_tokens: int | None = None
    """Not in this endpoint's API; present so the chat endpoint's helpers read it as unset."""

    @property
    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


def parse_completion(body: bytes) -> CompletionRequest:
    try:
        data = json.loads(body)
    except ValueError as err:
        raise ApiError(400, f"the request body is not valid JSON ({err})") from None
    try:
        request = CompletionRequest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ApiError(400, f"{where}: {first['msg']}", param=where or None) from None
    if isinstance(request.prompt, list) and len(request.prompt) != 1:
        raise ApiError(400, "prompt: give one prompt (a string)", param="prompt")
    return request


def register(
    app: FastAPI, session: Session, authorize, max_request_bytes: int, stops, live
) -> None:
    """Add `POST /v1/completions` to `app` (see the module docstring)."""

    @app.post("/v1/completions", dependencies=[Depends(authorize)])
    async def completions(request: Request):
        body = await serve._read_body(request, max_request_bytes)
        completion_request = parse_completion(body)
        serve._check_model(session, completion_request.model)
        ids = session.loaded.tokenizer(completion_request.text).input_ids
        limit = session.context_length
        wanted = len(ids) + serve._max_tokens(completion_request)
        if limit is not None and wanted > limit:
            raise ApiError(
                400,
                f"the prompt ({len(ids)} tokens) and max_tokens exceed the model's context of "
                f"{limit} tokens",
                "context_length_exceeded",
                "prompt",
            )
        completion = TextCompletion(session, completion_request, Prompt(ids), stops, live)
        if completion_request.stream:
            return serve._EventStream(completion.events())
        return JSONResponse(await serve._unless_disconnected(request, completion))


class TextCompletion(_Completion):
    """The chat completion's engine, with the completions endpoint's objects."""

    def __init__(self, *args):
        super().__init__(*args)
        self.id = f"cmpl-{self.id.removeprefix('chatcmpl-')}"

    def whole(self) -> dict:
        with self._generating() as stream:
            for _ in stream:
                pass
        reply = stream.reply
        choice = {"text": reply.text, "index": 0, "logprobs": None}
        choice["finish_reason"] = reply.finish_reason
        return {**self._head("text_completion"), "choices": [choice], "usage": _usage(reply)}

    def events(self) -> Iterator[str]:
        try:
            with self._generating() as stream:
                for delta in stream:
                    yield self._text_chunk(delta, None)
        except Exception as err:
            yield failure_event(err)
            return
        yield self._text_chunk("", stream.reply.finish_reason)
        if self.chat.stream_options and self.chat.stream_options.include_usage:
            usage = _usage(stream.reply)
            yield _event({**self._head("text_completion"), "choices": [], "usage": usage})
        yield "data: [DONE]\n\n"

    def _text_chunk(self, text: str, finish_reason: str | None) -> str:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
        return _event({**self._head("text_completion"), "choices": [choice]})
