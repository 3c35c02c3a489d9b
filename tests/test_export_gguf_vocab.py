"""The GGUF tokenizer section for a base folder with a SentencePiece `tokenizer.model` (how
Google ships Gemma): pieces, scores and types as SentencePiece has them, so that llama.cpp
tokenizes exactly like SentencePiece; and a clear refusal when no usable vocabulary exists."""

from __future__ import annotations

import importlib.util
import io

import pytest

from gemmaforge.errors import UserError
from gemmaforge.export.gguf_model import write_gguf
from gemmaforge.models.families import GEMMA3

TEXTS = (
    "The quick brown  fox jumps 1234 times.",
    "héllo\n\nwörld ½ 🙂",
    "   leading spaces, then words",
)
CORPUS = """\
The quick brown fox jumps over the lazy dog. A model learns from the data it is given.
Please write a short answer to the question below, and explain your reasoning step by step.
What is the capital of France? The capital of France is Paris, a city on the river Seine.
The patient reported a mild headache and a cough for three days; no fever was measured.
Our records show that the invoice was paid in full on the tenth of March for 1,250 dollars.
Good morning! How are you today? I am fine, thank you. Could you help me with this task?
""".splitlines()


@pytest.fixture(scope="module")
def spm_base(tmp_path_factory):
    """(folder with tokenizer.model, SentencePieceProcessor, a tokenizer with its special ids)
    for a Gemma-like SentencePiece model: BPE, byte fallback, no dummy prefix, digits split."""
    import sentencepiece as spm
    import transformers
    from tokenizers import Tokenizer, models

    folder = tmp_path_factory.mktemp("spm")
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 4),
        model_writer=proto,
        model_type="bpe",
        vocab_size=400,
        byte_fallback=True,
        add_dummy_prefix=False,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        control_symbols=["<start_of_turn>", "<end_of_turn>"],
        user_defined_symbols=["\n"],
        minloglevel=2,
    )
    (folder / "tokenizer.model").write_bytes(proto.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=proto.getvalue())
    # The exporter reads only special ids from the run's tokenizer; the pieces come from
    # tokenizer.model.
    pieces = {sp.id_to_piece(i): i for i in range(sp.vocab_size())}
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(pieces, unk_token="<unk>")),
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    return folder, sp, tokenizer


def tiny_model(vocab_size: int):
    import transformers

    config = transformers.Gemma3TextConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        query_pre_attn_scalar=32,
        vocab_size=vocab_size,
    )
    return transformers.Gemma3ForCausalLM(config)


def spm_gguf(folder, tokenizer, tmp_path):
    """A tiny Gemma 3 with the sentencepiece tokenizer, written as GGUF (448 rows: padded)."""
    path = tmp_path / "m.gguf"
    write_gguf(
        tiny_model(448),
        tokenizer,
        GEMMA3,
        source=str(folder),
        path=path,
        gguf_type="f16",
        name="spm",
    )
    return path


def test_sentencepiece_pieces_scores_and_types(spm_base, tmp_path):
    import gguf

    folder, sp, tokenizer = spm_base
    path = spm_gguf(folder, tokenizer, tmp_path)
    fields = {k: f.contents() for k, f in gguf.GGUFReader(path).fields.items()}
    assert fields["tokenizer.ggml.model"] == "llama"
    assert fields["tokenizer.ggml.add_space_prefix"] is False
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    assert len(tokens) == 448  # padded to the embedding rows
    assert tokens[: sp.vocab_size()] == [sp.id_to_piece(i) for i in range(sp.vocab_size())]
    scores = fields["tokenizer.ggml.scores"][: sp.vocab_size()]
    assert scores == pytest.approx([sp.get_score(i) for i in range(sp.vocab_size())])
    kind = {tokens[i]: types[i] for i in range(len(tokens))}
    assert kind["<bos>"] == kind["<end_of_turn>"] == 3  # control
    assert kind["\n"] == 4  # user-defined
    assert kind["<0x41>"] == 6  # byte
    assert kind["<unk>"] == 2 and kind[tokens[-1]] == 5  # unknown; padding rows unused
    assert fields["tokenizer.ggml.eot_token_id"] == sp.piece_to_id("<end_of_turn>")


@pytest.mark.skipif(not importlib.util.find_spec("llama_cpp"), reason="llama-cpp-python missing")
def test_llama_cpp_tokenizes_like_sentencepiece(spm_base, tmp_path):
    from llama_cpp import Llama

    folder, sp, tokenizer = spm_base
    path = spm_gguf(folder, tokenizer, tmp_path)
    llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
    for text in TEXTS:
        expected = [sp.bos_id(), *sp.encode(text)]
        assert llm.tokenize(text.encode(), add_bos=True) == expected, text
    # Control tokens written in the text are parsed as tokens (SentencePiece leaves that to
    # its caller).
    turn = [
        sp.piece_to_id("<start_of_turn>"),
        *sp.encode("user\nHi"),
        sp.piece_to_id("<end_of_turn>"),
    ]
    assert (
        llm.tokenize(b"<start_of_turn>user\nHi<end_of_turn>", add_bos=False, special=True) == turn
    )


def test_a_base_without_a_usable_vocabulary_is_refused(spm_base, tmp_path):
    _, _, tokenizer = spm_base  # a WordLevel tokenizer.json, and no tokenizer.model next to it
    with pytest.raises(UserError, match=r"SentencePiece tokenizer\.model"):
        write_gguf(
            tiny_model(448),
            tokenizer,
            GEMMA3,
            source=str(tmp_path),
            path=tmp_path / "m.gguf",
            gguf_type="f16",
            name="x",
        )
    assert not (tmp_path / "m.gguf").exists()
