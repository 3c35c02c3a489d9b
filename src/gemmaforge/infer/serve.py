"""`gemmaforge serve`: an OpenAI-compatible HTTP server for a base model and its adapters.

Endpoints: `GET /v1/models`, `GET /v1/models/{id}`, `POST /v1/chat/completions` (plain, or
`stream: true` as server-sent events: `data: {chunk}` lines, then `data: [DONE]`),
`POST /v1/completions` (plain prompt completion, streamed too: `completions.py`) and an
unauthenticated `GET /health`. The `model` field picks the base model (by its name) or an
adapter (by the name given on the command line); adapters load on first use (see
`session.py`), and requests run one at a time because they share one model.

Images (`image_url` data URLs) and audio (`input_audio`) go to multimodal models through the
same prompt building as `generate` (see `api.py` and `session.py`).

Safe defaults: loopback only unless `--host` says otherwise, an optional API key
(`Authorization: Bearer KEY`, else 401), request bodies capped (413), and every error is an
OpenAI-style JSON body with the server still running.
"""

from __future__ import annotations

import hmac
import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from gemmaforge.errors import UserError
from gemmaforge.infer.api import ApiError, ChatRequest, parse_request, to_messages
from gemmaforge.infer.generate import stop_token_ids
from gemmaforge.infer.session import Prompt, Session
from gemmaforge.infer.stream import ReplyStream, Sampling

DEFAULT_MAX_TOKENS = 512
"""Reply length when a request sets no max_tokens."""
DEFAULT_TEMPERATURE = 1.0
"""As in the OpenAI API: a request that sets no temperature is sampled."""


def create_app(
    session: Session,
    api_key: str | None = None,
    allow_media_paths: bool = False,
    max_request_bytes: int = 20 * 2**20,
) -> FastAPI:
    """The ASGI app serving `session` (run it with uvicorn, or see `serve`)."""
    app = FastAPI(title="gemmaforge", docs_url=None, redoc_url=None, openapi_url=None)
    created = int(time.time())
    stops = stop_token_ids(session.loaded.tokenizer, session.loaded.family)

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise ApiError(
                401, "missing or wrong API key (Authorization: Bearer KEY)", "invalid_api_key"
            )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse(ApiError(err.status_code, str(err.detail)).body(), err.status_code)

    @app.exception_handler(Exception)
    async def crash(request: Request, err: Exception) -> JSONResponse:
        error = ApiError(500, f"internal error: {type(err).__name__}: {err}", kind="server_error")
        return JSONResponse(error.body(), status_code=500)

    def card(name: str) -> dict:
        return {"id": name, "object": "model", "created": created, "owned_by": "gemmaforge"}

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    def list_models() -> dict:
        return {"object": "list", "data": [card(name) for name in session.names]}

    @app.get("/v1/models/{name:path}", dependencies=[Depends(authorize)])
    def get_model(name: str) -> dict:
        _check_model(session, name)
        return card(name)

    @app.post("/v1/chat/completions", dependencies=[Depends(authorize)])
    async def chat_completions(request: Request):
        request_body = await _read_body(request, max_request_bytes)
        chat = parse_request(request_body)
        _check_model(session, chat.model)
        # Decoding and encoding media is real work: off the event loop, like generation.
        prompt = await run_in_threadpool(_prompt, session, chat, allow_media_paths)
        completion = _Completion(session, chat, prompt, stops)
        if chat.stream:
            return _EventStream(completion.events())
        return JSONResponse(await run_in_threadpool(completion.whole))

    from gemmaforge.infer import completions  # /v1/completions: plain prompt completion

    completions.register(app, session, authorize, max_request_bytes, stops)
    return app


def serve(session: Session, host: str, port: int, **options) -> None:
    """Serve `session` on host:port until interrupted (options: see `create_app`)."""
    import uvicorn

    uvicorn.run(create_app(session, **options), host=host, port=port, log_level="info")


def _check_model(session: Session, name: str) -> None:
    if name not in session.names:
        raise ApiError(
            404,
            f"the model {name!r} does not exist; this server has {', '.join(session.names)}",
            "model_not_found",
            "model",
        )


def _prompt(session: Session, chat: ChatRequest, allow_media_paths: bool) -> Prompt:
    """The request's prompt, or an ApiError if it cannot be built or does not fit."""
    try:
        # The prompt holds the media features once built, so the request's files can go.
        with tempfile.TemporaryDirectory(prefix="gemmaforge-media-") as media_dir:
            prompt = session.prompt(to_messages(chat, allow_media_paths, Path(media_dir)))
    except UserError as err:
        raise ApiError(400, "; ".join(err.problems), param="messages") from None
    limit = session.context_length
    wanted = len(prompt.ids) + _max_tokens(chat)
    if limit is not None and wanted > limit:
        raise ApiError(
            400,
            f"the prompt ({len(prompt.ids)} tokens) and max_tokens ({_max_tokens(chat)}) exceed "
            f"the model's context of {limit} tokens: shorten the messages or lower max_tokens",
            "context_length_exceeded",
            "messages",
        )
    return prompt


def _max_tokens(chat: ChatRequest) -> int:
    return chat.max_completion_tokens or chat.max_tokens or DEFAULT_MAX_TOKENS


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    too_large = ApiError(413, f"the request body exceeds {limit} bytes", "request_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


class _EventStream(StreamingResponse):
    """Server-sent events that always close their generator when the response ends.

    The generator holds the model while it streams. A client that leaves mid-way ends the
    response with the generator suspended, and waiting for the garbage collector to close it
    could keep every other request waiting; closing it here stops generation at once.
    """

    def __init__(self, events: Iterator[str]):
        super().__init__(events, media_type="text/event-stream")
        self.events = events

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Shielded: a cancelled request must still let go of the model.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.events.close)


class _Completion:
    """One chat completion: generated whole or as a stream of chunks."""

    def __init__(self, session: Session, chat: ChatRequest, prompt: Prompt, stops: list[int]):
        self.session, self.chat, self.prompt, self.stops = session, chat, prompt, stops
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        temperature = DEFAULT_TEMPERATURE if chat.temperature is None else chat.temperature
        self.sampling = Sampling(
            max_new_tokens=_max_tokens(chat),
            temperature=temperature,
            top_p=1.0 if chat.top_p is None else chat.top_p,
            top_k=chat.top_k or 0,
            stop=chat.stop_strings,
            seed=chat.seed,
        )

    def _stream(self, model) -> ReplyStream:
        tokenizer, prompt = self.session.loaded.tokenizer, self.prompt
        return ReplyStream(model, tokenizer, prompt.ids, self.stops, self.sampling, prompt.inputs)

    def _head(self, kind: str) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.chat.model}

    def whole(self) -> dict:
        with self.session.use(self.chat.model) as model, self._stream(model) as stream:
            for _ in stream:
                pass
        reply = stream.reply
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": reply.text},
            "finish_reason": reply.finish_reason,
            "logprobs": None,
        }
        return {**self._head("chat.completion"), "choices": [choice], "usage": _usage(reply)}

    def events(self) -> Iterator[str]:
        """Server-sent events, produced in a worker thread (Starlette runs sync iterators in
        its thread pool); the model is held until the last one, or until `close()`."""
        yield self._chunk({"role": "assistant", "content": ""}, None)
        with self.session.use(self.chat.model) as model, self._stream(model) as stream:
            try:
                for delta in stream:
                    yield self._chunk({"content": delta}, None)
            except Exception as err:
                # The status line is already sent: the error can only travel in the stream.
                message = f"generation failed: {type(err).__name__}: {err}"
                yield _event(ApiError(500, message, kind="server_error").body())
                return
        yield self._chunk({}, stream.reply.finish_reason)
        if self.chat.stream_options and self.chat.stream_options.include_usage:
            yield _event(
                {
                    **self._head("chat.completion.chunk"),
                    "choices": [],
                    "usage": _usage(stream.reply),
                }
            )
        yield "data: [DONE]\n\n"

    def _chunk(self, delta: dict, finish_reason: str | None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return _event({**self._head("chat.completion.chunk"), "choices": [choice]})


def _event(data: dict) -> str:
    return f"data: {json.dumps(data)}\n\n"


def _usage(reply) -> dict:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }
