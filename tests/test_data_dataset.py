"""Loading data files end to end: formats, over-long examples, the seeded split, the report."""

from __future__ import annotations

import hashlib
import json

import pytest

from gemmaforge.config import DataConfig
from gemmaforge.data.examples.dataset import load_datasets, split_indices
from gemmaforge.data.examples.render import IGNORE_INDEX, render
from gemmaforge.data.read.sources import open_sources
from gemmaforge.errors import UserError
from gemmaforge.models.families import GEMMA4


@pytest.fixture(scope="module")
def tokenizer():
    from gemmaforge.models.tiny import tiny_tokenizer

    return tiny_tokenizer("gemma4")


def chat(user: str, reply: str) -> dict:
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    }


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def load(tokenizer, seed=0, **cfg):
    data = DataConfig(**cfg)
    return load_datasets(data, open_sources(data), GEMMA4, tokenizer, seed)


def test_messages_file_with_auto_split(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "train.jsonl", [chat(f"q{i}", f"a{i}") for i in range(10)])
    train, val, report = load(tokenizer, train=str(path), val_fraction=0.2)
    assert (len(train), len(val)) == (8, 2)
    assert report.validation == "split"
    assert report.rows_read == 10
    assert (report.train_examples, report.val_examples) == (8, 2)
    assert (report.dropped_overlong, report.truncated) == (0, 0)
    assert report.train_tokens == sum(len(ex.input_ids) for ex in train)
    assert report.trained_tokens == sum(ex.num_trained for ex in train)
    (file,) = report.files
    assert file.fingerprint == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert (file.path, file.rows, file.format) == (str(path), 10, "messages")
    # Every row lands on exactly one side, tagged with its line.
    lines = sorted(int(ex.where.rsplit(":", 1)[1]) for ex in train + val)
    assert lines == list(range(1, 11))
    assert "10 rows read; 8 train / 2 validation (split)" in report.summary()


def test_split_is_seeded_and_sized():
    assert split_indices(100, 0.1, 200, seed=1) == split_indices(100, 0.1, 200, seed=1)
    assert split_indices(100, 0.1, 200, seed=1) != split_indices(100, 0.1, 200, seed=2)
    assert len(split_indices(100, 0.1, 200, seed=1)) == 10
    assert len(split_indices(1000, 0.5, 7, seed=1)) == 7  # capped at val_max_rows
    assert len(split_indices(2, 0.01, 200, seed=1)) == 1  # at least one row
    assert len(split_indices(3, 0.9, 200, seed=1)) == 2  # never every row
    assert split_indices(1, 0.5, 200, seed=1) == []
    assert split_indices(100, 0.0, 200, seed=1) == []


def test_same_seed_same_split_through_load(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "t.jsonl", [chat(f"q{i}", f"a{i}") for i in range(30)])
    first = load(tokenizer, seed=5, train=str(path))[1]
    again = load(tokenizer, seed=5, train=str(path))[1]
    other = load(tokenizer, seed=6, train=str(path))[1]
    assert [ex.where for ex in first] == [ex.where for ex in again]
    assert [ex.where for ex in first] != [ex.where for ex in other]


def test_validation_file_disables_split(tmp_path, tokenizer):
    train_path = write_jsonl(tmp_path / "t.jsonl", [chat("q", "a")] * 3)
    val_path = tmp_path / "v.csv"
    val_path.write_text("prompt,response\nq,a\n", encoding="utf-8")
    train, val, report = load(tokenizer, train=str(train_path), validation=str(val_path))
    assert (len(train), len(val), report.validation) == (3, 1, "file")
    assert [(f.rows, f.format) for f in report.files] == [(3, "messages"), (1, "instruction")]
    assert report.rows_read == 4


def test_no_split_for_a_single_row(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "t.jsonl", [chat("q", "a")])
    train, val, report = load(tokenizer, train=str(path))
    assert (len(train), len(val), report.validation) == (1, 0, "none")


def overlong_rows(tokenizer):
    """A short row, one whose reply runs past the limit, one whose prompt fills the limit."""
    short = chat("hi", "ok")
    limit = len(render(short["messages"], GEMMA4, tokenizer).input_ids) + 4
    long_reply = chat("hi", "the reply goes on " * 20)
    long_prompt = chat("the prompt goes on " * 20, "ok")
    return [short, long_reply, long_prompt], limit


def test_overlong_drop(tmp_path, tokenizer):
    rows, limit = overlong_rows(tokenizer)
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    train, _, report = load(tokenizer, train=str(path), max_seq_length=limit, val_fraction=0)
    assert [ex.where.rsplit(":", 1)[1] for ex in train] == ["1"]
    assert (report.dropped_overlong, report.truncated) == (2, 0)


def test_overlong_truncate(tmp_path, tokenizer):
    rows, limit = overlong_rows(tokenizer)
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    train, _, report = load(
        tokenizer, train=str(path), max_seq_length=limit, overlong="truncate", val_fraction=0
    )
    # The long reply is cut and keeps some trained tokens; the long prompt leaves none: dropped.
    assert [ex.where.rsplit(":", 1)[1] for ex in train] == ["1", "2"]
    assert (report.dropped_overlong, report.truncated) == (1, 1)
    cut = train[1]
    assert len(cut.input_ids) == len(cut.labels) == limit
    assert cut.num_trained > 0


def test_everything_too_long(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "t.jsonl", [chat("hello there " * 10, "ok")])
    with pytest.raises(UserError) as info:
        load(tokenizer, train=str(path), max_seq_length=8)
    message = str(info.value)
    assert "no training example is left after removing over-long ones" in message
    assert "raise data.max_seq_length (now 8) or set data.overlong=truncate" in message


def test_train_on_last_from_config(tmp_path, tokenizer):
    row = {"messages": chat("q1", "a1")["messages"] + chat("q2", "a2")["messages"]}
    path = write_jsonl(tmp_path / "t.jsonl", [row])
    (every,), _, _ = load(tokenizer, train=str(path), train_on="all")
    (last,), _, _ = load(tokenizer, train=str(path), train_on="last")
    assert tokenizer.decode([i for i in every.labels if i != IGNORE_INDEX]) == "a1<turn|>a2<turn|>"
    assert tokenizer.decode([i for i in last.labels if i != IGNORE_INDEX]) == "a2<turn|>"


def test_completion_format_trains_every_token(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "hello world"}])
    (example,), _, report = load(tokenizer, train=str(path))
    assert report.files[0].format == "completion"
    assert example.labels[0] == IGNORE_INDEX
    assert example.labels[1:] == example.input_ids[1:]
    assert tokenizer.decode(example.input_ids) == "<bos>hello world<eos>"


def test_every_bad_row_of_every_file_in_one_error(tmp_path, tokenizer):
    train_path = write_jsonl(
        tmp_path / "t.jsonl",
        [
            chat("q", "a"),
            {"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "q"}]},
            {"prompt": "wrong format"},
            chat("q", ""),
        ],
    )
    val_path = tmp_path / "v.csv"
    val_path.write_text("prompt,response\nq,a,extra\n", encoding="utf-8")
    with pytest.raises(UserError) as info:
        load(tokenizer, train=str(train_path), validation=str(val_path))
    wheres = [p.split(": ")[0] for p in info.value.problems]
    # Unreadable rows (the CSV one) are found while reading, before any row is rendered.
    assert sorted(wheres) == [
        f"{train_path}:2",
        f"{train_path}:3",
        f"{train_path}:4",
        f"{val_path}:2",
    ]
    assert "missing column(s) 'messages'" in info.value.problems[2]
    assert "message 2 (assistant) is empty" in info.value.problems[3]


def test_explicit_format_is_used(tmp_path, tokenizer):
    # The row also has a "text" column, which alone would make detection ambiguous.
    path = write_jsonl(tmp_path / "t.jsonl", [{**chat("q", "a"), "text": "x"}])
    with pytest.raises(UserError, match="fits several formats"):
        load(tokenizer, train=str(path))
    (example,), _, _ = load(tokenizer, train=str(path), format="messages")
    assert example.num_trained == len(tokenizer("a", add_special_tokens=False)["input_ids"]) + 1


def test_no_training_file(tokenizer):
    with pytest.raises(UserError, match=r"set data\.train"):
        load(tokenizer)


def test_missing_file_is_a_user_error(tmp_path, tokenizer):
    with pytest.raises(UserError, match=r"missing\.jsonl: not found"):
        load(tokenizer, train=str(tmp_path / "missing.jsonl"))


def test_rows_read_counts_unreadable_rows_as_data_check_does(tokenizer, tmp_path):
    """`train` and `data check` report the same number of rows read for one file: 42 good
    rows and one broken line are 43 rows read (one skipped), in both."""
    from gemmaforge.config import Config
    from gemmaforge.data.check.scan import check_dataset
    from gemmaforge.models.load import LoadedTokenizer

    path = tmp_path / "d.jsonl"
    lines = [json.dumps(chat(f"q{i}", f"a{i}")) for i in range(42)]
    lines.insert(7, '{"messages": [')
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    _, _, report = load(tokenizer, train=str(path), on_error="skip")
    cfg = Config.model_validate({"data": {"train": str(path), "on_error": "skip"}})
    checked = check_dataset(cfg, LoadedTokenizer(tokenizer, None, GEMMA4, "tiny"))
    assert report.rows_read == 43
    assert checked.to_dict()["examples"]["rows_read"] == 43
    assert report.train_examples + report.val_examples == 42
