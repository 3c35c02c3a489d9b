"""The tokenizer section of a GGUF file, read from wherever the base model keeps its vocabulary.

llama.cpp tokenizes Gemma with its SentencePiece tokenizer ("llama"): every piece with its
score (merge priority) and type (normal, control, user-defined, byte, unused). Those three
lists cannot be rebuilt from a Hugging Face `tokenizer.json` (it keeps merges, not scores), so
they come from the base itself:

- a `.gguf` base (the quickstart's Gemma 3 270M): its tokenizer lists are copied unchanged;
- a folder with `tokenizer.model` (Google's checkpoints ship one): read with SentencePiece;
- a byte-level BPE `tokenizer.json` (the tiny test models): llama.cpp's "gpt2" tokenizer,
  with the merges and GPT-2's pre-tokenizer, which is what tokenizers' ByteLevel applies.

Anything else is refused with the list above. Special ids come from the run's tokenizer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gemmaforge.errors import UserError, problem

# llama.cpp's token types; SentencePiece's ModelProto uses the same numbers.
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5


@dataclass
class Vocab:
    """Everything GGUF's `tokenizer.ggml.*` keys hold about the vocabulary itself."""

    model: str
    """llama.cpp tokenizer: "llama" (SentencePiece) or "gpt2" (byte-level BPE)."""
    pre: str
    """llama.cpp pre-tokenizer name."""
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    merges: list[str] | None = None

    def pad_to(self, size: int) -> None:
        """Give every embedding row a token, as llama.cpp requires (rows past the tokenizer's
        vocabulary are never produced by it, so they are marked unused)."""
        for i in range(len(self.tokens), size):
            self.tokens.append(f"[PAD{i}]")
            self.types.append(UNUSED)
            if self.scores is not None:
                self.scores.append(-1000.0)


def read_vocab(source: str, tokenizer) -> Vocab:
    """The vocabulary of the base model at `source` (a .gguf file or a folder)."""
    path = Path(source).expanduser()
    if path.suffix == ".gguf":
        return _from_gguf(path)
    if (path / "tokenizer.model").is_file():
        return _from_sentencepiece(path / "tokenizer.model", tokenizer)
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    if _is_byte_level_bpe(spec):
        return _from_byte_level_bpe(spec)
    raise UserError(
        problem(
            str(path),
            "its tokenizer cannot be written to GGUF: it is neither a .gguf file, nor a folder "
            "with a SentencePiece tokenizer.model, nor a byte-level BPE tokenizer.json",
            "put the checkpoint's tokenizer.model (Google's Gemma releases ship one) next to "
            "config.json and export again",
        )
    )


def write_vocab(writer, vocab: Vocab, tokenizer, family, chat_template: str) -> None:
    """Add the tokenizer section to a `gguf.GGUFWriter`."""
    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
        # Gemma puts no space before the first word; llama.cpp's SentencePiece default does.
        writer.add_add_space_prefix(False)
    if vocab.merges is not None:
        writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    if tokenizer.unk_token_id is not None:
        writer.add_unk_token_id(tokenizer.unk_token_id)
    if tokenizer.pad_token_id is not None:
        writer.add_pad_token_id(tokenizer.pad_token_id)
    # End of turn is what ends a chat reply; llama.cpp stops on it and on <eos>.
    writer.add_eot_token_id(tokenizer.convert_tokens_to_ids(family.turn_end))
    # Every Gemma sequence starts with <bos>, and nothing is appended.
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(chat_template)


def _from_gguf(path: Path) -> Vocab:
    from gguf import GGUFReader

    fields = GGUFReader(path).fields

    def value(key: str):
        return fields[key].contents() if key in fields else None

    return Vocab(
        model=value("tokenizer.ggml.model"),
        pre=value("tokenizer.ggml.pre") or "default",
        tokens=list(value("tokenizer.ggml.tokens")),
        types=list(value("tokenizer.ggml.token_type")),
        scores=value("tokenizer.ggml.scores"),
        merges=value("tokenizer.ggml.merges"),
    )


def _from_sentencepiece(path: Path, tokenizer) -> Vocab:
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    vocab = Vocab(
        model="llama",
        pre="default",
        tokens=[p.piece for p in proto.pieces],
        types=[p.type for p in proto.pieces],
        scores=[p.score for p in proto.pieces],
    )
    # Tokens added on top of the SentencePiece model (multimodal markers) follow its pieces.
    added = sorted(tokenizer.added_tokens_decoder.items())
    for token_id, token in added:
        if token_id >= len(vocab.tokens):
            vocab.pad_to(token_id)
            vocab.tokens.append(token.content)
            vocab.types.append(CONTROL if token.special else USER_DEFINED)
            vocab.scores.append(0.0)
    return vocab


def _is_byte_level_bpe(spec: dict) -> bool:
    model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    # llama.cpp's "gpt2" tokenizer splits with GPT-2's regex and adds no leading space.
    plain = [
        s
        for s in steps
        if s.get("type") == "ByteLevel" and s.get("use_regex", True) and not s["add_prefix_space"]
    ]
    return model.get("type") == "BPE" and len(steps) == 1 and bool(plain)


def _from_byte_level_bpe(spec: dict) -> Vocab:
    pieces = spec["model"]["vocab"]
    tokens = [""] * (max(pieces.values()) + 1)
    for piece, token_id in pieces.items():
        tokens[token_id] = piece
    types = [NORMAL] * len(tokens)
    for added in spec.get("added_tokens", []):
        while added["id"] >= len(tokens):
            tokens.append("")
            types.append(NORMAL)
        tokens[added["id"]] = added["content"]
        types[added["id"]] = CONTROL if added["special"] else USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    # "gpt-2" is llama.cpp's name for GPT-2's split regex, the one ByteLevel(use_regex) uses.
    return Vocab(model="gpt2", pre="gpt-2", tokens=tokens, types=types, merges=merges)
