"""Stream one reply token by token: the reader side of `chat` and `serve`.

The tokens come from a decode batch (`decode.py`): a batch of one in a worker thread of its
own (`ReplyStream`, for a model held with `Session.use`), or a row of the server's shared
batch (`engine.EngineStream`). Either way each new token goes to a queue and the caller
iterates text deltas as they arrive. Three things end a reply: one of the family's stop tokens
(the model ended its turn), a caller's stop string (OpenAI's `stop`: the reply is cut before
it and never shows any part of it), or `max_new_tokens`. Closing the stream early (a client
that went away, Ctrl-C) stops the worker at its next token instead of letting it run on.

Text is decoded from all the reply's ids each time, not token by token, because one character
can span several tokens (byte-fallback pieces); a delta is released only once it no longer
ends in an incomplete character, and never includes text that could still become the start
of a stop string.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from gemmaforge.infer.decode import END as _END
from gemmaforge.infer.decode import Row, run_alone

POLL_SECONDS = 0.25
"""How often a reader waiting for a token checks whether its stream was abandoned."""
ABANDON_JOIN_SECONDS = 10.0
"""How long an abandoned stream waits for its worker to stop before letting go of it."""
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1
"""The seeds torch takes (int64); anything else is refused where it is read."""


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens and when to stop."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    """0 is greedy decoding; above 0, sampling at that temperature."""
    top_p: float = 1.0
    """Nucleus sampling mass (1.0: off). Only used when sampling."""
    top_k: int = 0
    """Sample among the k most likely tokens only (0: off). Only used when sampling."""
    stop: tuple[str, ...] = ()
    """Strings that end the reply; the reply stops before the first one."""
    seed: int | None = None
    """Seed for sampling, for repeatable samples."""


@dataclass
class Reply:
    """What a finished stream produced."""

    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    """New tokens generated, a stop token included."""
    finish_reason: str | None = None
    """"stop" (stop token or string) or "length" (ran into max_new_tokens)."""
    ids: list[int] | None = None
    """The generated ids, special tokens included (the stop token excluded)."""
    stop_id: int | None = None
    """The stop token that ended the reply, if one did."""


class ReplyStream:
    """Iterate text deltas of one reply to `prompt_ids`; `reply` holds the totals afterwards.

    `inputs` are further `model.generate` arguments that go with the prompt (a multimodal
    model's modality ids and pixel / audio features: `Session.prompt` builds them).

    Use it as a context manager (or call `close`) so the worker thread always ends.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        prompt_ids: Sequence[int],
        stop_ids: Sequence[int],
        sampling: Sampling,
        inputs: dict[str, Any] | None = None,
        progress: Callable[[], None] | None = None,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.progress = progress
        """Called for each new token (a watchdog's heartbeat)."""
        self.prompt_ids, self.stop_ids = list(prompt_ids), list(stop_ids)
        self.sampling = sampling
        self.inputs = inputs or {}
        self.reply = Reply(prompt_tokens=len(self.prompt_ids))
        self.ids: list[int] = []
        """The reply's ids so far, special tokens included (read between deltas)."""
        self._tokens: queue.Queue = queue.Queue()
        self._cancel = threading.Event()
        self._abandoned = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ReplyStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._cancel.set()
        # A stream abandoned by its reader may be garbage-collected on the worker itself.
        if self._thread is not None and self._thread is not threading.current_thread():
            # Normally the worker stops at its next token; an abandoned stream (the server
            # shutting down) does not wait for ever on a worker that no longer answers.
            self._thread.join(ABANDON_JOIN_SECONDS if self._abandoned.is_set() else None)

    def cancel(self) -> None:
        """Stop from another thread: the worker at its next token, the reader at once."""
        self._abandoned.set()
        self._cancel.set()

    def _next_token(self) -> Any:
        while True:
            try:
                return self._tokens.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if self._abandoned.is_set():
                    return _END

    def row(self, adapter: str | None = None) -> Row:
        """This reply as a decode row: its tokens land in this stream's queue."""
        return Row(
            self.prompt_ids,
            self.stop_ids,
            self.sampling,
            self._tokens,
            self._cancel,
            dict(self.inputs),
            adapter,
        )

    def _start(self) -> None:
        """Start producing tokens: here, a batch of one in a worker thread."""
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[str]:
        self._start()
        ids = self.ids
        sent = 0
        stop_strings = [s for s in self.sampling.stop if s]
        while (token := self._next_token()) is not _END:
            if isinstance(token, BaseException):
                raise token
            if self.progress is not None:
                self.progress()
            self.reply.completion_tokens += 1
            if token in self.stop_ids:
                self.reply.finish_reason = "stop"
                self.reply.stop_id = token
                break
            ids.append(token)
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            if text.endswith("\ufffd"):
                continue  # half of a multi-token character: wait for the rest
            cut = first_stop(text, stop_strings, sent)
            if cut is not None:
                self.reply.finish_reason = "stop"
                text = text[:cut]
                break
            ready = len(text) - held_back(text, stop_strings)
            if ready > sent:
                yield text[sent:ready]
                sent = ready
        else:
            self.reply.finish_reason = None if self._abandoned.is_set() else "length"
            text = self.tokenizer.decode(ids, skip_special_tokens=True) if ids else ""
        self.close()
        if len(text) > sent:
            yield text[sent:]
        self.reply.text = text
        self.reply.ids = ids

    def _work(self) -> None:
        # Whatever fails, wherever (a bad seed, a device error), the reader hears of it and
        # is told the worker ended: a reader left waiting would hold the model for good.
        try:
            self._generate()
        except BaseException as err:  # handed to the reading thread, which re-raises it
            self._tokens.put(err)
        finally:
            self._tokens.put(_END)

    def _generate(self) -> None:
        run_alone(self.model, self.row())


def first_stop(text: str, stops: list[str], sent: int) -> int | None:
    """Where the earliest stop string starts in `text`.

    The search starts at `sent`: released text never holds the start of a stop string,
    because a tail that could begin one is held back (`held_back`).
    """
    found = [at for stop in stops if (at := text.find(stop, sent)) != -1]
    return min(found) if found else None


def held_back(text: str, stops: list[str]) -> int:
    """Length of the longest tail of `text` that could still grow into a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if stop.startswith(text[-size:]):
                longest = size
                break
    return longest
