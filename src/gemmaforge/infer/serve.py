"""`gemmaforge serve`: an OpenAI-compatible HTTP server for a base model and its adapters.

Endpoints: `GET /v1/models`, `GET /v1/models/{id}`, `POST /v1/chat/completions` (plain, or
`stream: true` as server-sent events: `data: {chunk}` lines, then `data: [DONE]`),
`POST /v1/completions` (plain prompt completion, streamed too: `completions.py`) and an
unauthenticated `GET /health`. The `model` field picks the base model (by its name) or an
adapter (by the name given on the command line); adapters load on first use (see
`session.py`). Requests are decoded together, continuously batched: one scheduler thread owns
the model, new requests join the running batch between decode steps, and rows of one batch
may use different adapters (`engine.py`, `decode.py`; `max_batch=1` answers one at a time).

Images (`image_url` data URLs) and audio (`input_audio`) go to multimodal models through the
same prompt building as `generate` (see `api.py` and `session.py`).

Safe defaults: loopback only unless `--host` says otherwise, an optional API key
(`Authorization: Bearer KEY`, else 401), without a key no cross-origin or foreign-Host
requests (403), request bodies capped (413), and every error is an OpenAI-style JSON body
with the server still running. No request can wedge it: the generation worker always ends
its stream, `/health` answers 503 for a generator stalled past `stall_seconds`, a client
that leaves cancels its generation, and SIGTERM stops the server (see docs/security.md).
"""

from __future__ import annotations

import hmac
import json
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from gemmaforge import limits
from gemmaforge.data.examples.tools import split_partial, split_reply
from gemmaforge.errors import UserError
from gemmaforge.infer.api import ApiError, ChatRequest, parse_request, to_messages
from gemmaforge.infer.engine import MAX_BATCH, Engine
from gemmaforge.infer.generate import stop_token_ids
from gemmaforge.infer.session import Abandoned, Prompt, Session
from gemmaforge.infer.stream import ReplyStream, Sampling, first_stop, held_back

DEFAULT_MAX_TOKENS = 512
"""Reply length when a request sets no max_tokens."""
DEFAULT_TEMPERATURE = 1.0
"""As in the OpenAI API: a request that sets no temperature is sampled."""
STALL_SECONDS = 300.0
"""/health answers 503 once the model has been held this long with no new token."""
DISCONNECT_POLL_SECONDS = 0.5
"""How often a plain (not streamed) request checks whether its client is still there."""
SHUTDOWN_SECONDS = 10.0
"""How long a stopping server waits for requests in flight before cancelling them."""


class _Live:
    """The streams being generated, so a stopping server can cancel them all, and the flag
    that tells requests still waiting for the model to give up."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.closing = engine.closing
        self.streams: set[ReplyStream] = set()

    def stop(self) -> None:
        self.engine.stop()
        for stream in list(self.streams):
            stream.cancel()


def create_app(
    session: Session,
    api_key: str | None = None,
    allow_media_paths: bool = False,
    max_request_bytes: int = 20 * 2**20,
    stall_seconds: float = STALL_SECONDS,
    allow_origins: tuple[str, ...] = (),
    host: str = "127.0.0.1",
    max_batch: int = MAX_BATCH,
) -> FastAPI:
    """The ASGI app serving `session` (run it with uvicorn, or see `serve`).

    Without an API key, only this machine's own clients are answered: a request from a web
    page (an `Origin` header not in `allow_origins`) or for a foreign `Host` (DNS
    rebinding: a page's domain pointed at 127.0.0.1) is refused with 403, so no web page the
    user visits can drive the server. `max_batch` requests are decoded together at most."""
    live = _Live(Engine(session, max_batch))
    hosts = {"localhost", "127.0.0.1", "::1", "[::1]", host.lower()}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        live.stop()

    app = FastAPI(
        title="gemmaforge", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.state.live = live
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

    if api_key is None:
        app.add_middleware(_SameMachineOnly, hosts=hosts, origins=set(allow_origins))

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

    # async: answered on the event loop even when every worker thread waits for the model.
    @app.get("/health")
    async def health():
        stalled = session.stalled_for()
        if stalled > stall_seconds:
            detail = f"the model has been held {stalled:.0f} s without a new token"
            return JSONResponse({"status": "wedged", "detail": detail}, status_code=503)
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
        completion = _Completion(session, chat, prompt, stops, live)
        if chat.stream:
            return _EventStream(completion.events())
        return JSONResponse(await _unless_disconnected(request, completion))

    from gemmaforge.infer import completions  # /v1/completions: plain prompt completion

    completions.register(app, session, authorize, max_request_bytes, stops, live)
    return app


def serve(
    session: Session,
    host: str,
    port: int,
    shutdown_seconds: float = SHUTDOWN_SECONDS,
    **options,
) -> None:
    """Serve `session` on host:port until interrupted or SIGTERM (options: see `create_app`).

    On the signal, requests in flight get `shutdown_seconds` to finish; then they are
    cancelled, and any still waiting for the model give up, so the process ends."""
    import uvicorn

    app = create_app(session, host=host, **options)
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="info",
            timeout_graceful_shutdown=max(1, round(shutdown_seconds)),
        )
    finally:
        app.state.live.stop()


class _SameMachineOnly:
    """ASGI middleware (plain, so request disconnects still reach the endpoints): refuse
    cross-origin requests and requests for a foreign Host with 403."""

    def __init__(self, app, hosts: set[str], origins: set[str]):
        self.app, self.hosts, self.origins = app, hosts, origins

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            origin = headers.get("origin")
            error = None
            if origin is not None and origin not in self.origins:
                error = ApiError(
                    403,
                    "cross-origin requests are refused: start the server with --allow-origin "
                    "ORIGIN (or --api-key)",
                    "origin_not_allowed",
                )
            elif _host_name(headers.get("host", "")) not in self.hosts:
                error = ApiError(
                    403,
                    "this server answers requests for its own address only (Host header); "
                    "use --api-key to serve other names",
                    "host_not_allowed",
                )
            if error is not None:
                await JSONResponse(error.body(), status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _host_name(header: str) -> str:
    """The name in a Host header, without its port ("[::1]:8000" -> "[::1]")."""
    header = header.strip().lower()
    if header.startswith("["):
        return header.partition("]")[0] + "]"
    return header.rpartition(":")[0] if header.count(":") == 1 else header


async def _unless_disconnected(request: Request, completion: _Completion) -> dict:
    """The whole reply, generation cancelled as soon as the client goes away (else the next
    request would wait for a reply nobody reads)."""
    result: dict = {}

    async def generate() -> None:
        result["reply"] = await run_in_threadpool(completion.whole)
        group.cancel_scope.cancel()

    async def watch() -> None:
        while not await request.is_disconnected():
            await anyio.sleep(DISCONNECT_POLL_SECONDS)
        completion.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(generate)
        group.start_soon(watch)
    return result["reply"]


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
    _check_text_size(session, chat)
    try:
        # The prompt holds the media features once built, so the request's files can go.
        with tempfile.TemporaryDirectory(prefix="gemmaforge-media-") as media_dir:
            messages = to_messages(chat, allow_media_paths, Path(media_dir))
            prompt = session.prompt(messages, chat.tools)
    except UserError as err:
        # The request's media sit in a temp folder of the server: name the part, not the path.
        message = "; ".join(err.problems).replace(media_dir + "/", "")
        raise ApiError(400, message, param="messages") from None
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


def _check_text_size(session: Session, chat: ChatRequest) -> None:
    """Refuse text that cannot fit before tokenizing it: tokenizing megabytes takes a worker
    for tens of seconds and GBs, only to find it is too long."""

    limit = session.context_length
    if limit is None:
        return
    chars = 0
    for message in chat.messages:
        if isinstance(message.content, str):
            chars += len(message.content)
        elif message.content is not None:
            chars += sum(len(part.text or "") for part in message.content)
    most = limit * limits.current().max_chars_per_token
    if chars > most:
        raise ApiError(
            400,
            f"the messages hold {chars:,} characters, more than can fit in the model's context "
            f"of {limit} tokens: shorten the messages",
            "context_length_exceeded",
            "messages",
        )


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

    def __init__(
        self, session: Session, chat: ChatRequest, prompt: Prompt, stops: list[int], live: _Live
    ):
        self.session, self.chat, self.prompt, self.stops = session, chat, prompt, stops
        self.live = live
        self.stream: ReplyStream | None = None
        self.cancelled = False
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

    @contextmanager
    def _generating(self) -> Iterator[ReplyStream]:
        """The reply stream, a row of the engine's batch; a 503 if the server stops first."""
        tokenizer, prompt = self.session.loaded.tokenizer, self.prompt
        try:
            if self.live.closing.is_set():
                raise Abandoned("the server is shutting down")
            stream = self.live.engine.stream(
                self.chat.model, tokenizer, prompt, self.stops, self.sampling
            )
            self.live.streams.add(stream)
            self.stream = stream
            if self.cancelled:  # the client left before generation started
                stream.cancel()
            try:
                with stream:
                    yield stream
            finally:
                self.live.streams.discard(stream)
        except Abandoned:
            raise ApiError(503, "the server is shutting down", kind="server_error") from None

    def cancel(self) -> None:
        """Stop generating (the client left); the reply ends where it is."""
        self.cancelled = True
        for stream in list(self.live.streams):
            if stream is self.stream:
                stream.cancel()

    def _tool_calling(self) -> bool:
        return self.session.loaded.family.tool_calling

    def _head(self, kind: str) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.chat.model}

    def whole(self) -> dict:
        with self._generating() as stream:
            for _ in stream:
                pass
        reply = stream.reply
        message, finish = {"role": "assistant", "content": reply.text}, reply.finish_reason
        if self._tool_calling() and reply.ids:
            # Gemma 4 writes reasoning and calls in special tokens, which reply.text drops.
            tokenizer = self.session.loaded.tokenizer
            message, finish = reply_message(tokenizer, reply, self.sampling.stop)
        choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
        return {**self._head("chat.completion"), "choices": [choice], "usage": _usage(reply)}

    def events(self) -> Iterator[str]:
        """Server-sent events, produced in a worker thread (Starlette runs sync iterators in
        its thread pool); the model is held until the last one, or until `close()`."""
        yield self._chunk({"role": "assistant", "content": ""}, None)
        # Gemma 4 writes reasoning and calls in special tokens, which the text deltas drop.
        tokenizer, stops = self.session.loaded.tokenizer, self.sampling.stop
        parts = ReplyDeltas(tokenizer, stops) if self._tool_calling() else None
        try:
            with self._generating() as stream:
                for delta in stream:
                    for piece in parts.update(stream.ids) if parts else [{"content": delta}]:
                        yield self._chunk(piece, None)
                for piece in parts.update(stream.ids, final=True) if parts else []:
                    yield self._chunk(piece, None)
        except Exception as err:
            yield failure_event(err)
            return
        called = parts is not None and parts.calls > 0
        yield self._chunk({}, "tool_calls" if called else stream.reply.finish_reason)
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


class ReplyDeltas:
    """A Gemma 4 reply (special tokens kept) as OpenAI chunk deltas while it grows: text as
    `content`, the thinking channel as `reasoning_content`, each tool call as a `tool_calls`
    entry once it has closed. A call or channel still open is held back, so no delta shows
    call syntax; whitespace at the edges is held until more text follows it (`split_reply`
    strips it). A whole reply is the same deltas at once (`reply_message`)."""

    def __init__(self, tokenizer, stops: tuple[str, ...] = ()):
        self.tokenizer = tokenizer
        self.stops = [stop for stop in stops if stop]
        """The request's stop strings: the content ends before the first (as text replies)."""
        self.sent = {"reasoning_content": 0, "content": 0}
        self.calls = 0

    def update(self, ids: list[int], final: bool = False) -> list[dict]:
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        if final:
            content, reasoning, calls = split_reply(text)
        elif text.endswith("\ufffd"):
            return []  # half of a multi-token character: wait for the rest
        else:
            content, reasoning, calls = split_partial(text)
            content, reasoning = _held(content), _held(reasoning)
        cut = first_stop(content, self.stops, 0)
        if cut is not None:
            content = content[:cut]
        elif not final:
            content = content[: len(content) - held_back(content, self.stops)]
        out: list[dict] = []
        for key, value in (("reasoning_content", reasoning), ("content", content)):
            if len(value) > self.sent[key]:
                out.append({key: value[self.sent[key] :]})
                self.sent[key] = len(value)
        for index, call in enumerate(calls[self.calls :], self.calls):
            function = {"name": call["name"], "arguments": json.dumps(call["arguments"])}
            entry = {"index": index, "id": f"call_{uuid.uuid4().hex[:24]}", "type": "function"}
            out.append({"tool_calls": [{**entry, "function": function}]})
        self.calls = len(calls)
        return out


def _held(text: str) -> str:
    """`text` without leading whitespace, and without trailing whitespace that may yet turn
    out to be the end (stripped) rather than the middle."""
    text = text.lstrip()
    return text[: len(text.rstrip())]


def reply_message(tokenizer, reply, stops: tuple[str, ...] = ()) -> tuple[dict, str | None]:
    """The OpenAI message of a Gemma 4 reply: `content`, `reasoning_content` from the thinking
    channel, `tool_calls` parsed from the call tokens; finish_reason `tool_calls` when the
    model called a tool."""
    deltas = ReplyDeltas(tokenizer, stops).update(reply.ids, final=True)
    content = "".join(d.get("content", "") for d in deltas)
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
    calls = [c for d in deltas for c in d.get("tool_calls", [])]
    message: dict = {"role": "assistant", "content": content or (None if calls else "")}
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in calls]
    return message, "tool_calls" if calls else reply.finish_reason


def failure_event(err: Exception) -> str:
    """The event that ends a stream whose generation failed: the status line is already sent,
    so the error can only travel in the stream."""
    if not isinstance(err, ApiError):
        message = f"generation failed: {type(err).__name__}: {err}"
        err = ApiError(500, message, kind="server_error")
    return _event(err.body())


def _event(data: dict) -> str:
    return f"data: {json.dumps(data)}\n\n"


def _usage(reply) -> dict:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }
