"""Preference rows: chosen/rejected pairs (DPO, ORPO, SimPO) and labelled replies (KTO).

Formats read (docs/preference.md has examples):
- TRL standard: `prompt`, `chosen`, `rejected` strings;
- TRL conversational: `prompt`, `chosen`, `rejected` message lists, or, with no `prompt`
  (implicit prompt), `chosen` and `rejected` full conversations whose shared leading
  messages are the prompt;
- TRL unpaired (KTO): `prompt`, `completion`, `label` (true: desirable), strings or lists;
- LLaMA-Factory ShareGPT: `conversations` (the prompt turns) with `chosen` / `rejected`
  turns `{"from": "gpt", "value": ...}`; Alpaca: `instruction` (+ `input`), `chosen`,
  `rejected`; v1: `chosen_messages` / `rejected_messages` full conversations.
Images and audio belong to the prompt and are shared by both replies: as content parts with a
path, or as `{"type": "image"}` placeholders (and `<image>` / `<audio>` markers in text) filled
in order from the row's `images` / `audios` lists.

Each pair renders as two sequences with the same prompt ids; only the reply (and the
end-of-turn token after it) carries labels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from gemmaforge.config import DataConfig
from gemmaforge.data.examples.dataset import (
    FileReport,
    _all_too_long,
    fit_one,
    read_rows,
    split_indices,
    summarise,
)
from gemmaforge.data.examples.formats import SHAREGPT_ROLES, _content, _list, _text
from gemmaforge.data.examples.media import MediaDropped
from gemmaforge.data.examples.render import RenderedExample, render
from gemmaforge.data.examples.skiplog import SkipLog
from gemmaforge.data.read.records import Record, raise_if_problems
from gemmaforge.errors import UserError, problem

PAIR_KEYS = (("chosen_messages", "rejected_messages"), ("chosen", "rejected"))
"""Column pairs that mark a row as a preference pair."""
UNPAIRED_KEYS = ("completion", "label")
"""Columns that mark a row as an unpaired (KTO) reply."""
MEDIA_LISTS = {"image": "images", "audio": "audios"}
"""Per-row lists of media files that fill the prompt's placeholders."""


def preference_kind(row: dict) -> str | None:
    """ "pair" or "unpaired" when the row is preference data, else None (for `data check`'s
    suggestion and the SFT formats' refusal)."""
    if any(all(key in row for key in keys) for keys in PAIR_KEYS):
        return "pair"
    if all(key in row for key in UNPAIRED_KEYS):
        return "unpaired"
    return None


@dataclass(frozen=True)
class PreferenceRow:
    """One converted row before tokenisation."""

    where: str
    prompt: list[dict]
    """Prompt turns, ending with a user turn."""
    chosen: list[dict]
    """The preferred reply (one assistant message); for KTO, the reply."""
    rejected: list[dict] | None
    """The dispreferred reply; None for KTO rows."""
    desirable: bool | None = None
    """KTO label."""


@dataclass(frozen=True)
class PreferenceExample:
    """A rendered pair (or KTO reply) as the batcher and the preference collator see it."""

    chosen: RenderedExample
    rejected: RenderedExample | None = None
    desirable: bool | None = None
    where: str | None = None
    ref_logps: tuple[float, ...] | None = None
    """Reference log-probabilities (chosen[, rejected]) when precomputed."""

    @property
    def sequences(self) -> tuple[RenderedExample, ...]:
        return (self.chosen,) if self.rejected is None else (self.chosen, self.rejected)

    @property
    def input_ids(self) -> list[int]:
        """Every token the example costs (both sequences), for batching and throughput."""
        return [i for seq in self.sequences for i in seq.input_ids]

    @property
    def media(self) -> tuple:
        return self.chosen.media

    @property
    def num_trained(self) -> int:
        return sum(seq.num_trained for seq in self.sequences)


def to_preference(record: Record, cfg: DataConfig) -> PreferenceRow:
    """Convert one preference or KTO row; a UserError naming the row and field."""
    row = record.row
    kind = preference_kind(row)
    if kind is None:
        keys = ", ".join(repr(k) for k in row) or "none"
        raise UserError(
            problem(
                record.where,
                f"not a preference row (keys found: {keys})",
                "give prompt/chosen/rejected (pairs) or prompt/completion/label (KTO) columns "
                "(docs/preference.md), or train with train.objective=sft",
            )
        )
    if kind == "unpaired":
        label = row["label"]
        if not isinstance(label, bool):
            raise UserError(
                problem(record.where, "'label' must be true or false", "write a JSON boolean")
            )
        prompt = _prompt(record, "prompt")
        reply = _reply(record, "completion", row["completion"])
        return PreferenceRow(record.where, _with_media(record, prompt), reply, None, label)
    if "chosen_messages" in row and "rejected_messages" in row:
        prompt, chosen, rejected = _implicit(record, "chosen_messages", "rejected_messages")
    elif "conversations" in row:
        turns = _list(record, "conversations", row["conversations"])
        prompt = [_sharegpt_turn(record, f"conversations[{i}]", t) for i, t in enumerate(turns)]
        chosen = _reply(record, "chosen", row["chosen"])
        rejected = _reply(record, "rejected", row["rejected"])
    elif "instruction" in row:
        text = _text(record, "instruction", row["instruction"])
        extra = _text(record, "input", row.get("input") or "")
        text = f"{text}\n\n{extra}" if extra.strip() else text
        prompt = [{"role": "user", "content": text}]
        chosen = _reply(record, "chosen", row["chosen"])
        rejected = _reply(record, "rejected", row["rejected"])
    elif "prompt" in row:
        prompt = _prompt(record, "prompt")
        chosen = _reply(record, "chosen", row["chosen"])
        rejected = _reply(record, "rejected", row["rejected"])
    else:
        prompt, chosen, rejected = _implicit(record, "chosen", "rejected")
    return PreferenceRow(record.where, _with_media(record, prompt), chosen, rejected)


def _prompt(record: Record, key: str) -> list[dict]:
    value = record.row.get(key)
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return _raw_messages(record, key, value)


def _raw_messages(record: Record, key: str, value: Any) -> list[dict]:
    """Messages with their content as written (media placeholders still unfilled)."""
    out = []
    for i, item in enumerate(_list(record, key, value)):
        if isinstance(item, dict) and "from" in item and "value" in item:
            out.append(_sharegpt_turn(record, f"{key}[{i}]", item))
            continue
        if not isinstance(item, dict) or "role" not in item or "content" not in item:
            raise UserError(
                problem(
                    record.where,
                    f"{key}[{i}] must be an object with 'role' and 'content'",
                    'write each message as {"role": "user", "content": "..."}',
                )
            )
        role = _text(record, f"{key}[{i}].role", item["role"])
        out.append({"role": role, "content": item["content"]})
    return out


def _sharegpt_turn(record: Record, key: str, item: Any) -> dict:
    if not isinstance(item, dict) or "from" not in item or "value" not in item:
        raise UserError(
            problem(
                record.where,
                f"{key} must be an object with 'from' and 'value'",
                'write each turn as {"from": "human", "value": "..."}',
            )
        )
    speaker = _text(record, f"{key}.from", item["from"])
    return {"role": SHAREGPT_ROLES.get(speaker, speaker), "content": item["value"]}


def _reply(record: Record, key: str, value: Any) -> list[dict]:
    """A reply: a string, a ShareGPT turn, or a list holding one assistant message."""
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    if isinstance(value, dict):
        return [_sharegpt_turn(record, key, value)]
    messages = _raw_messages(record, key, value)
    return [
        {**m, "content": _content(record, f"{key}[{i}]", m["content"])}
        for i, m in enumerate(messages)
    ]


def _implicit(record: Record, chosen_key: str, rejected_key: str):
    """Implicit prompt: the messages both conversations start with."""
    chosen = _raw_messages(record, chosen_key, record.row[chosen_key])
    rejected = _raw_messages(record, rejected_key, record.row[rejected_key])
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0 or shared in (len(chosen), len(rejected)):
        raise UserError(
            problem(
                record.where,
                f"{chosen_key!r} and {rejected_key!r} must start with the same prompt messages "
                "and then differ in the reply",
                "give both conversations the same user turns, or use explicit prompt / chosen /"
                " rejected columns",
            )
        )
    prompt = chosen[:shared]
    replies = [
        [{**m, "content": _content(record, key, m["content"])} for m in conv[shared:]]
        for key, conv in ((chosen_key, chosen), (rejected_key, rejected))
    ]
    return prompt, replies[0], replies[1]


_MARKER = re.compile(r"(<image>|<audio>)")


def _with_media(record: Record, prompt: list[dict]) -> list[dict]:
    """The prompt with placeholders filled from the row's `images` / `audios` lists (leftover
    files open the first user turn) and every content parsed."""
    pending = {}
    for kind, column in MEDIA_LISTS.items():
        files = record.row.get(column) or []
        pending[kind] = list(_list(record, column, files))
    out = []
    for message in prompt:
        content = message["content"]
        if isinstance(content, str) and _MARKER.search(content) and any(pending.values()):
            content = [
                {"type": piece[1:-1]}
                if _MARKER.fullmatch(piece)
                else {"type": "text", "text": piece}
                for piece in _MARKER.split(content)
                if piece
            ]
        if isinstance(content, list):
            content = [_fill(record, part, pending) for part in content]
        out.append({"role": message["role"], "content": content})
    leftover = [{"type": k, "path": f} for k, files in pending.items() for f in files]
    if leftover:
        first = next((m for m in out if m["role"] == "user"), None)
        if first is None:
            raise UserError(
                problem(record.where, "the prompt has no user turn for its media", "add one")
            )
        text = first["content"]
        first["content"] = [*leftover, *(text if isinstance(text, list) else [_as_part(text)])]
    return [
        {"role": m["role"], "content": _content(record, f"prompt[{i}]", m["content"])}
        for i, m in enumerate(out)
    ]


def _as_part(text: str) -> dict:
    return {"type": "text", "text": text}


def _fill(record: Record, part: Any, pending: dict[str, list]) -> Any:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in MEDIA_LISTS and not any(k in part for k in ("path", "url", kind)):
        if not pending[kind]:
            raise UserError(
                problem(
                    record.where,
                    f"the prompt has more {kind} placeholders than {MEDIA_LISTS[kind]!r} holds",
                    f"list one file per placeholder in {MEDIA_LISTS[kind]!r}",
                )
            )
        file = pending[kind].pop(0)
        if isinstance(file, dict):  # datasets' Image feature written as {"path": ...}
            file = file.get("path")
        return {"type": kind, "path": file}
    return part


def render_preference(pref: PreferenceRow, family, tokenizer, media=None) -> PreferenceExample:
    """Both replies rendered after the same prompt; labels only on each reply."""
    sequences = []
    for name, reply in (("chosen", pref.chosen), ("rejected", pref.rejected)):
        if reply is None:
            continue
        if len(reply) != 1 or reply[0].get("role") not in ("assistant", "model"):
            raise UserError(
                problem(
                    pref.where,
                    f"the {name} reply must be one assistant message",
                    "put earlier turns in the prompt",
                )
            )
        messages = [*pref.prompt, *reply]
        sequences.append(render(messages, family, tokenizer, "last", pref.where, media))
    chosen, rejected = sequences[0], sequences[1] if len(sequences) > 1 else None
    if rejected is not None and chosen.input_ids == rejected.input_ids:
        raise UserError(
            problem(pref.where, "the chosen and rejected replies are the same", "remove the row")
        )
    return PreferenceExample(chosen, rejected, pref.desirable, pref.where)


def unpair(examples: list[PreferenceExample]) -> list[PreferenceExample]:
    """Pairs as KTO replies: each chosen reply desirable, each rejected one undesirable (as
    TRL's `unpair_preference_dataset` does); KTO replies pass through."""
    out = []
    for ex in examples:
        if ex.rejected is None:
            out.append(ex)
            continue
        out.append(PreferenceExample(ex.chosen, None, True, ex.where))
        out.append(PreferenceExample(ex.rejected, None, False, ex.where))
    return out


def with_ref(example: PreferenceExample, values: tuple[float, ...]) -> PreferenceExample:
    return replace(example, ref_logps=values)


def load_preference_datasets(
    cfg: DataConfig, sources, family, tokenizer, seed: int, objective: str, media=None, skips=None
):
    """`load_datasets` for preference data: (train examples, validation examples, report).

    Rows are converted and rendered as pairs (KTO: labelled replies; pairs are unpaired for
    it); a pair is dropped when either sequence is too long for `data.max_seq_length`."""

    skips = skips if skips is not None else SkipLog()
    problems: list[str] = []
    files: list[FileReport] = []
    train_rows = read_rows(sources.train, cfg, files, problems, skips)
    val_rows = read_rows(sources.validation, cfg, files, problems, skips)
    validation = "file" if sources.validation else "none"
    if not sources.validation:
        held = set(split_indices(len(train_rows), cfg.val_fraction, cfg.val_max_rows, seed))
        validation = "split" if held else "none"
        val_rows = [r for i, r in enumerate(train_rows) if i in held]
        train_rows = [r for i, r in enumerate(train_rows) if i not in held]
    files[:] = [replace(f, format="preference") for f in files]

    def render_rows(rows):
        out, dropped, cut = [], 0, 0
        for record in rows:
            try:
                pref = to_preference(record, cfg)
                if objective != "kto" and pref.rejected is None:
                    raise UserError(
                        problem(
                            record.where,
                            f"a KTO row (prompt/completion/label) cannot train {objective}, "
                            "which needs chosen/rejected pairs",
                            "set train.objective=kto, or give chosen and rejected replies",
                        )
                    )
                example = render_preference(pref, family, tokenizer, media)
            except MediaDropped as err:
                skips.add(record.where, "audio_too_long", "; ".join(err.problems))
                continue
            except UserError as err:
                if cfg.on_error == "fail":
                    problems.extend(err.problems)
                else:
                    skips.add(record.where, "invalid", "; ".join(err.problems), record.row)
                continue
            fitted = [fit_one(seq, cfg) for seq in example.sequences]
            if any(seq is None for seq, _ in fitted):
                why = next(w for seq, w in fitted if seq is None)
                skips.add(record.where, "too_long", why)
                dropped += 1
                continue
            cut += any(why == "truncated" for _, why in fitted)
            seqs = [seq for seq, _ in fitted]
            out.append(
                replace(example, chosen=seqs[0], rejected=seqs[1] if len(seqs) > 1 else None)
            )
        return (unpair(out) if objective == "kto" else out), dropped, cut

    train, train_dropped, train_cut = render_rows(train_rows)
    val, val_dropped, val_cut = render_rows(val_rows)
    raise_if_problems(problems)
    if not train:
        raise UserError(_all_too_long(cfg))
    report = summarise(
        files, train, val, validation, train_dropped + val_dropped, train_cut + val_cut, skips
    )
    return train, val, report
