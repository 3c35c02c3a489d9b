"""A decode batch: the rows being generated together, one KV cache for them all, one step.

Every reply, whether served alone or with fifteen others, is generated here: `Batch.add`
prefills one new row on its own (its prompt, with its images or audio) and merges the row's
KV cache into the batch's; `Batch.step` feeds each row's last token through the model at once
and picks each row's next one; `Batch.drop` takes finished and cancelled rows out. The
serving scheduler (`engine.py`) calls these between steps, so requests join and leave a
running batch (continuous batching); `run_alone` is the same batch with one row, for `chat`.

The batch's cache is the model's own `DynamicCache`, left-padded: row i's real tokens are its
last columns, the 2-D attention mask marks the padding, and `position_ids` count each row's
real tokens. That is exactly the layout of `model.generate` on a left-padded batch, so every
layer type transformers builds for the model keeps working: full layers, and Gemma's
sliding-window layers (which keep the last `window - 1` columns and are told the total column
count, `cumulative_length`, from which the mask offsets follow). Merging two caches pads the
shorter one on the left; dropping rows trims columns that have become padding for every row.

Why our own loop rather than transformers' continuous batching (`generate_batch`,
`ContinuousBatchingManager`): it packs every request into one row of a paged cache, while
PEFT serves several adapters in one forward only by batch row (`adapter_names=`, one name per
row). Rows of one batch may use different adapters here: `adapter_names` is PEFT's own,
kept and tested mixed-batch path (each adapted layer runs each adapter on its rows only);
gathering LoRA weights per row (Punica/S-LoRA kernels) would be faster on a GPU with many
adapters but is our own code to keep, for a gain CPUs do not show.

Rows pick tokens independently: greedy (argmax) or sampled with the row's own temperature,
top-k, top-p and seeded generator, so one row's settings never change another's reply.
torch is imported inside functions: `stream.py` (and so the CLI) imports this module.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

BASE = "__base__"
"""PEFT's name for "no adapter" in a mixed-adapter batch."""
END = object()
"""Queue marker: the row will get no more tokens."""


@dataclass(eq=False)
class Row:
    """One reply being generated: its request, and where its tokens go."""

    prompt_ids: list[int]
    stop_ids: list[int]
    sampling: Any
    """A `stream.Sampling`."""
    out: queue.Queue
    """Receives each new token id, an exception if the row failed, then `END` (the engine
    puts `END`; `run_alone`'s caller does)."""
    cancel: threading.Event
    """Set by the reader to drop the row before the next step."""
    inputs: dict[str, Any] = field(default_factory=dict)
    """Prefill-only inputs besides the ids (a multimodal prompt's features and type ids)."""
    adapter: str | None = None
    """PEFT adapter name for this row (`BASE` for the base model), or None: the model as it
    is set (one row at a time, `Session.use`)."""
    generated: int = 0
    length: int = 0
    """Real tokens of this row in the cache: the position of the next one."""
    last: int = 0
    """The token picked last, fed at the next step."""
    generator: torch.Generator | None = None

    @property
    def done(self) -> bool:
        return (
            self.cancel.is_set()
            or self.generated >= self.sampling.max_new_tokens
            or (self.generated > 0 and self.last in self.stop_ids)
        )


class Batch:
    """Rows decoded together on `model` (see the module docstring)."""

    def __init__(self, model: Any):

        self.model = model
        self.rows: list[Row] = []
        self.cache: Any = None
        self.mask: torch.Tensor | None = None
        self.device = next(model.parameters()).device
        self._type_keys: set[str] = set()

    def add(self, row: Row) -> None:
        """Prefill `row` alone, pick its first token and put it in the batch. Raises (and the
        batch is unchanged) if the row cannot run, e.g. an unusable seed."""
        import torch

        s = row.sampling
        if s.temperature > 0:
            row.generator = torch.Generator(device=self.device)
            if s.seed is not None:
                row.generator.manual_seed(s.seed)
            else:
                row.generator.seed()
        ids = torch.tensor([row.prompt_ids], device=self.device)
        with torch.inference_mode():
            out = self.model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                use_cache=True,
                logits_to_keep=1,
                **row.inputs,
                **self._adapters([row]),
            )
        token = _pick(out.logits[:, -1], [row])[0]
        row.length = len(row.prompt_ids)
        self._merge(out.past_key_values, torch.ones_like(ids))
        # Type ids (Gemma 3n/4 "which modality is this token") go with every step's ids.
        self._type_keys |= {key for key in row.inputs if key.endswith("token_type_ids")}
        self.rows.append(row)
        _deliver(row, token)

    def step(self) -> None:
        """One new token for every row."""
        import torch

        rows = self.rows
        ids = torch.tensor([[row.last] for row in rows], device=self.device)
        positions = torch.tensor([[row.length] for row in rows], device=self.device)
        self.mask = torch.cat([self.mask, torch.ones_like(ids)], dim=1)
        extra = {key: torch.zeros_like(ids) for key in self._type_keys}
        with torch.inference_mode():
            out = self.model(
                input_ids=ids,
                attention_mask=self.mask,
                position_ids=positions,
                past_key_values=self.cache,
                use_cache=True,
                logits_to_keep=1,
                **extra,
                **self._adapters(rows),
            )
        self.cache = out.past_key_values
        for row, token in zip(rows, _pick(out.logits[:, -1], rows), strict=True):
            row.length += 1
            _deliver(row, token)

    def drop(self, gone: list[Row]) -> None:
        """Take `gone` out of the batch (their cache rows with them)."""
        import torch

        keep = [i for i, row in enumerate(self.rows) if row not in gone]
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache = self.mask = None
            self._type_keys = set()
            return
        index = torch.tensor(keep, device=self.device)
        self.mask = self.mask.index_select(0, index)
        # Columns that are padding in every remaining row hold nothing: trim them.
        lead = int(self.mask.any(dim=0).int().argmax())
        self.mask = self.mask[:, lead:]
        total = self.mask.shape[1]
        for layer in _filled(self.cache):
            keys = layer.keys.index_select(0, index)
            values = layer.values.index_select(0, index)
            stored = _stored(layer, total)
            layer.keys, layer.values = keys[:, :, -stored:], values[:, :, -stored:]
            if hasattr(layer, "cumulative_length"):
                layer.cumulative_length = total

    def _merge(self, cache: Any, mask: torch.Tensor) -> None:
        import torch

        if self.cache is None:
            self.cache, self.mask = cache, mask
            return
        total = max(self.mask.shape[1], mask.shape[1])
        for mine, theirs in zip(_filled(self.cache), _filled(cache), strict=True):
            stored = _stored(mine, total)
            mine.keys = torch.cat([_pad_left(mine.keys, stored), _pad_left(theirs.keys, stored)])
            mine.values = torch.cat(
                [_pad_left(mine.values, stored), _pad_left(theirs.values, stored)]
            )
            if hasattr(mine, "cumulative_length"):
                mine.cumulative_length = total
        self.mask = torch.cat([_pad_left(self.mask, total), _pad_left(mask, total)])

    def _adapters(self, rows: list[Row]) -> dict[str, Any]:
        names = [row.adapter for row in rows]
        if None in names or not hasattr(self.model, "peft_config"):
            return {}
        return {"adapter_names": names}


def run_alone(model: Any, row: Row) -> None:
    """Generate `row` to its end on `model` as it is set: a batch of one."""
    batch = Batch(model)
    batch.add(row)
    while not row.done:
        batch.step()


def _deliver(row: Row, token: int) -> None:
    row.generated += 1
    row.last = token
    row.out.put(token)


def _filled(cache: Any) -> list[Any]:
    """The cache's layers that hold tensors (KV-sharing layers of Gemma 3n/4 hold none)."""
    return [layer for layer in cache.layers if getattr(layer, "keys", None) is not None]


def _stored(layer: Any, total: int) -> int:
    """Columns a layer keeps for `total` columns: all, or a sliding window's last ones."""
    window = getattr(layer, "sliding_window", None)
    return total if window is None else min(total, window - 1)


def _pad_left(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """`tensor` with zero columns in front up to `width` (dim 1 of a mask, dim 2 of a KV)."""
    import torch

    dim = 1 if tensor.dim() == 2 else 2
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _pick(logits: torch.Tensor, rows: list[Row]) -> list[int]:
    """Each row's next token from its last logits, by its own sampling settings."""
    import torch

    logits = logits.float()
    picked = logits.argmax(dim=-1).tolist()
    for i, row in enumerate(rows):
        s = row.sampling
        if s.temperature <= 0:
            continue
        # As transformers' warpers, in their order: temperature, top-k, top-p.
        scores = logits[i] / s.temperature
        if s.top_k and s.top_k < scores.numel():
            kth = torch.topk(scores, s.top_k).values[-1]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if s.top_p < 1.0:
            ordered, order = torch.sort(scores)
            cumulative = ordered.softmax(-1).cumsum(-1)
            drop = cumulative <= 1 - s.top_p
            drop[-1] = False  # always keep the most likely token
            scores = scores.masked_fill(drop.scatter(0, order, drop), float("-inf"))
        probs = scores.softmax(-1)
        picked[i] = int(torch.multinomial(probs, 1, generator=row.generator))
    return picked
