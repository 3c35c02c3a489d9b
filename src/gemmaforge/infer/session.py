"""One base model in memory with any number of LoRA adapters, switched per request.

`generate`, `chat` and `serve` all start here. An adapter is named by a run folder (which
also names its base model and the base's sha256, checked against the model loaded) or by a
bare PEFT adapter folder. Adapters load lazily, on first use, into one `PeftModel` (PEFT
multi-adapter: `load_adapter` + `set_adapter`), so a server with ten adapters starts as fast
as one with none and holds only those that were asked for. The base model answers inside
`disable_adapter()`, so it is never loaded twice.

`use()` holds a lock for as long as its caller generates: the active adapter is state of the
shared model, so callers must not interleave. The server's engine (`engine.py`) holds the
same lock while it has rows, and picks adapters per row instead (PEFT's `adapter_names`).
The session notes when the lock was taken and when the holder last made progress
(`progress()`, a token), so a server can tell a wedged generator (`stalled_for`) from a busy
one, and a waiter can give up when the server stops.

Images and audio go through training's own path: `render_prompt_example` splices each part's
soft tokens into the prompt (with the model's processor, via `MediaEncoder`), and training's
batch builder turns that one example into the pixel / audio features and modality ids the
model's `generate` takes next to the ids.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gemmaforge.config import DataConfig, ModelConfig
from gemmaforge.data.examples.render import render_prompt_example
from gemmaforge.errors import UserError, problem
from gemmaforge.models.families import text_config
from gemmaforge.models.load import load_model
from gemmaforge.models.peft_compat import quiet_checkpointing_probe
from gemmaforge.runs import Run, RunFolder, check_base, open_run

ADAPTER_CONFIG = "adapter_config.json"
TOWERS = {"image": "vision", "audio": "audio"}
"""The encoder each media kind needs."""
WAIT_POLL_SECONDS = 0.25
"""How often a request waiting for the model checks whether it should give up."""


class Abandoned(RuntimeError):
    """Raised to a request still waiting for the model when its server stops."""


@dataclass(frozen=True)
class AdapterSource:
    """Where an adapter's weights are, and what it says about its base model."""

    name: str
    dir: Path
    run: Run | None
    """The run that produced it, when given as (or inside) a run folder: its base is checked."""

    @property
    def base(self) -> str | None:
        """The base model this adapter implies: the run's, else the adapter config's."""
        if self.run is not None:
            from gemmaforge.models.bases import run_base

            return run_base(self.run)
        config = json.loads((self.dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        return config.get("base_model_name_or_path")


def find_adapter(path: str | Path, name: str = "adapter") -> AdapterSource:
    """The adapter in `path`: a run folder, its `adapter/` folder, a bare PEFT adapter, or
    `hub://NS/NAME[@V]` (pulled into the hub cache and verified first)."""
    if str(path).startswith("hub://"):
        from gemmaforge.hub.client.api import HubClient
        from gemmaforge.hub.client.pull import pull

        path = pull(HubClient(), str(path)).folder
    folder = Path(path)
    if RunFolder(folder).record.is_file():
        run = open_run(folder)
        return AdapterSource(name, run.adapter_dir, run)
    if (folder / ADAPTER_CONFIG).is_file():
        run = open_run(folder.parent) if RunFolder(folder.parent).record.is_file() else None
        return AdapterSource(name, folder, run)
    raise UserError(
        problem(
            str(folder),
            "is neither a run folder nor a PEFT adapter folder "
            "(it holds no run.json or adapter_config.json)",
            "pass the --output folder of `gemmaforge train`, or a PEFT adapter folder",
        )
    )


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt: its ids, and the other inputs `model.generate` takes with them."""

    ids: list[int]
    inputs: dict[str, Any] = field(default_factory=dict)
    """Modality type ids and pixel / audio features (batch of one, on the model's device);
    empty for text-only models."""


class Session:
    """A loaded base model plus named adapters; see the module docstring."""

    def __init__(
        self,
        loaded: Any,
        adapters: list[AdapterSource],
        base_name: str,
        data: DataConfig | None = None,
    ):
        from gemmaforge.data.examples.multimodal import media_encoder

        self.loaded = loaded
        self.model = loaded.model
        self.base_name = base_name
        self.adapters = {source.name: source for source in adapters}
        # `data` carries a run's image budget and audio policy, so media is encoded as trained.
        self.media = media_encoder(loaded, data or DataConfig())
        self._lock = threading.Lock()
        self._active: set[str] = set()
        self._held_since: float | None = None
        self._progress_at = 0.0

    @property
    def names(self) -> list[str]:
        """Every model name a request may ask for: the base first."""
        return [self.base_name, *self.adapters]

    def prompt(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> Prompt:
        """The prompt for a conversation ending with a user turn (a UserError if it cannot be
        rendered), exactly as training rendered it. Media parts are
        `{"type": "image" | "audio", "ref": path}`; they are read now, so their files may go
        once this returns."""
        self._check_towers(messages)
        loaded = self.loaded
        example = render_prompt_example(
            messages, loaded.family, loaded.tokenizer, media=self.media, tools=tools
        )
        if self.media is None:
            return Prompt(example.input_ids)
        from gemmaforge.infer.generate import media_inputs

        inputs = media_inputs(example, self.media, loaded.dtype, loaded.device)
        return Prompt(example.input_ids, inputs)

    def _check_towers(self, messages: list[dict[str, Any]]) -> None:
        """Refuse media on a text-only model with what is missing, not a rendering error."""
        if self.media is not None:
            return
        parts = [m["content"] for m in messages if isinstance(m.get("content"), list)]
        kind = next((p["type"] for ps in parts for p in ps if p["type"] != "text"), None)
        if kind is not None:
            raise UserError(
                problem(
                    None,
                    f"this model has no {TOWERS[kind]} tower (it is text-only), so it cannot "
                    f"take {kind} input",
                    "use a multimodal base (Gemma 3n, Gemma 4, Gemma 3 4B and up), or send "
                    "text only",
                )
            )

    @property
    def context_length(self) -> int | None:
        """Longest sequence (prompt + reply) the model was built for, if its config says."""

        return getattr(text_config(self.model.config), "max_position_embeddings", None)

    def progress(self) -> None:
        """The holder of the model made progress (a new token)."""
        self._progress_at = time.monotonic()

    def stalled_for(self) -> float:
        """Seconds the model has been held with no progress (0 while it is free)."""
        held = self._held_since
        if held is None:
            return 0.0
        return time.monotonic() - max(held, self._progress_at)

    @contextmanager
    def hold(self, give_up: threading.Event | None = None) -> Iterator[None]:
        """Hold the model exclusively until the block ends (the serving engine holds it while
        it has rows). While waiting for it, `give_up` being set raises `Abandoned` (a server
        that stops must not wait for a wedged holder)."""
        while not self._lock.acquire(timeout=WAIT_POLL_SECONDS):
            if give_up is not None and give_up.is_set():
                raise Abandoned("the server is shutting down")
        self._held_since = time.monotonic()
        try:
            yield
        finally:
            self._held_since = None
            self._lock.release()

    @contextmanager
    def use(self, name: str, give_up: threading.Event | None = None) -> Iterator[Any]:
        """The model with adapter `name` active (the base model for `base_name`), held
        exclusively until the block ends (see `hold`)."""
        if name not in self.names:
            raise KeyError(name)
        with self.hold(give_up):
            if name == self.base_name:
                if self._active:
                    with self.model.disable_adapter():
                        yield self.model
                else:
                    yield self.model
                return
            self.load(name)
            self.model.set_adapter(name)
            yield self.model

    def load(self, name: str) -> Any:
        """The model with adapter `name` loaded (a no-op for the base and for adapters loaded
        before); call it while holding the model. The first adapter wraps the base in a
        `PeftModel`, so callers take the model from here, not from before."""
        from peft import PeftModel

        from gemmaforge.models.lora_precision import compute_adapters_in_input_dtype

        if name == self.base_name or name in self._active:
            return self.model
        source = self.adapters[name]
        quiet_checkpointing_probe()
        if not self._active:
            self.model = PeftModel.from_pretrained(self.model, source.dir, adapter_name=name)
        else:
            self.model.load_adapter(source.dir, adapter_name=name)
        # Each adapter computes exactly as it did in training (bf16 on a bf16 base); once
        # per load, not per request.
        compute_adapters_in_input_dtype(self.model)
        self._active.add(name)
        self.model.eval()
        return self.model


def open_session(
    model: str | None,
    adapters: list[tuple[str, str | Path]],
    base_name: str | None = None,
    device: str = "auto",
) -> Session:
    """Load the base model (`model`, else the base the first run adapter was trained on) and
    check every run adapter against it. `adapters` is (name, path) pairs."""

    names = [name for name, _ in adapters]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise UserError(
            problem(None, f"adapter name(s) given twice: {', '.join(twice)}", "name each once")
        )
    sources = [find_adapter(path, name) for name, path in adapters]
    runs = [source.run for source in sources if source.run is not None]
    if model is None:
        implied = next((source.base for source in sources if source.base), None)
        if implied is None:
            raise UserError(
                problem(None, "no base model given", "pass --model (a folder or .gguf file)")
            )
        model = implied
    # A run remembers how its base was loaded (revision, download permission): reuse that.
    settings = runs[0].config.model if runs else ModelConfig()
    cfg = settings.model_copy(update={"name_or_path": model, "device": device})
    loaded = load_model(cfg, for_training=False)
    for run in runs:
        check_base(run, loaded)
    data = runs[0].config.data if runs else None
    session = Session(loaded, sources, base_name or Path(model).name, data)
    if session.base_name in session.adapters:
        raise UserError(
            problem(
                session.base_name,
                "names both the base model and an adapter",
                "give the adapter another name (NAME=PATH) or the base another --base-name",
            )
        )
    return session
