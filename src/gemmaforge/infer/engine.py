"""The serving scheduler: one thread owns the model and decodes every request in one batch.

Continuous batching: a request is a row (`decode.Row`) handed to `Engine.submit`; between two
decode steps the scheduler drops rows that finished (a stop token, `max_tokens`) or whose
reader left (a client that went away, a stop string), then admits waiting rows, up to
`max_batch`, each prefilled on its own and merged into the running batch. Rows of one batch
may ask for different adapters: each loads on first use (`Session.load`) and PEFT runs every
adapter on its own rows in the same forward (`adapter_names`; see decode.py).

A row that cannot start (an unusable seed, an adapter that fails to load) gets its error
alone; the others go on. A step that fails fails the rows in it (it cannot tell whose fault
it was) and the scheduler goes on with the next requests. The scheduler holds the session's
lock while it has rows, so `/health` sees a stalled batch as it saw a stalled request, and
`chat`-style users of `Session.use` still take turns with it.

`max_batch=1` is the one-at-a-time server: the same code, a batch of one.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

from gemmaforge.infer.decode import BASE, END, Batch, Row
from gemmaforge.infer.session import Abandoned, Session
from gemmaforge.infer.stream import ReplyStream

MAX_BATCH = 16
"""Rows decoded together by default (`serve --max-batch`)."""
IDLE_POLL_SECONDS = 0.25
"""How often an idle scheduler checks whether it should stop."""


class Engine:
    """The scheduler thread of a server (see the module docstring); start it with `start`."""

    def __init__(self, session: Session, max_batch: int = MAX_BATCH):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.session = session
        self.max_batch = max_batch
        self.closing = threading.Event()
        self._waiting: collections.deque[Row] = collections.deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self.peak = 0
        """The most rows decoded together so far (tests and `bench serve` read it)."""

    def stream(self, name: str, tokenizer: Any, prompt: Any, stops: list[int], sampling: Any):
        """A reply stream for model `name` (base or adapter) whose tokens come from the batch."""
        return EngineStream(self, name, tokenizer, prompt, stops, sampling)

    def submit(self, row: Row) -> None:
        if self.closing.is_set():  # the scheduler may be gone: nobody would end the row
            _end(row, Abandoned("the server is shutting down"))
            return
        with self._wake:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="gemmaforge-engine")
                self._thread.daemon = True  # a wedged model must not keep the process alive
                self._thread.start()
            self._waiting.append(row)
            self._wake.notify()

    def stop(self) -> None:
        """Stop admitting; rows still waiting end at once (the running ones are cancelled by
        their readers, see serve.py)."""
        self.closing.set()
        with self._wake:
            self._wake.notify()

    def _run(self) -> None:
        while not self.closing.is_set():
            with self._wake:
                if not self._waiting:
                    self._wake.wait(IDLE_POLL_SECONDS)
                    continue
            try:
                with self.session.hold(give_up=self.closing):
                    self._serve_until_idle()
            except Abandoned:
                break
        with self._wake:
            while self._waiting:
                _end(self._waiting.popleft(), Abandoned("the server is shutting down"))

    def _serve_until_idle(self) -> None:
        batch = Batch(self.session.model)
        while True:
            self._admit(batch)
            if not batch.rows:
                with self._wake:
                    if not self._waiting:
                        return
                continue
            self.peak = max(self.peak, len(batch.rows))
            try:
                batch.step()
            except Exception as err:
                for row in batch.rows:
                    _end(row, err)
                batch.drop(list(batch.rows))
                continue
            self.session.progress()
            finished = [row for row in batch.rows if row.done]
            for row in finished:
                _end(row)
            batch.drop(finished)

    def _admit(self, batch: Batch) -> None:
        while len(batch.rows) < self.max_batch:
            with self._wake:
                if not self._waiting:
                    return
                row = self._waiting.popleft()
            if row.cancel.is_set():
                _end(row)
                continue
            try:
                # The first adapter wraps the base model: the batch takes the model anew.
                batch.model = self._load(row.adapter)
                batch.add(row)
            except Exception as err:
                _end(row, err)
                continue
            if row.done:  # one token was all it needed
                batch.drop([row])
                _end(row)

    def _load(self, adapter: str | None) -> Any:
        if adapter not in (None, BASE):
            return self.session.load(adapter)
        return self.session.model


def _end(row: Row, error: BaseException | None = None) -> None:
    if error is not None:
        row.out.put(error)
    row.out.put(END)


class EngineStream(ReplyStream):
    """A `ReplyStream` whose tokens come from the engine's batch instead of its own thread."""

    def __init__(self, engine: Engine, name: str, tokenizer, prompt, stops, sampling):
        session = engine.session
        super().__init__(session.model, tokenizer, prompt.ids, stops, sampling, prompt.inputs)
        self.progress = session.progress
        self.engine = engine
        self.adapter = BASE if name == session.base_name else name

    def _start(self) -> None:
        self.engine.submit(self.row(self.adapter))
