"""The one way into the data: every documented form of `data.train` / `data.validation`
trains, is checked by `data check` with the same row count, and is predicted by `plan`.

These forms once passed `data check` and then failed in `train` (a list crashed with a
traceback; a glob and a DatasetDict `folder#split` said "file not found"), and a list of
remote files was not streamed: `train`, `plan` and `eval` each read `data.train` as one path.
"""

from __future__ import annotations

import json

import pytest

from gemmaforge.config import Config, DataConfig
from gemmaforge.data.read.sources import open_sources
from gemmaforge.errors import UserError

QA = [
    ("What colour is the sky?", "Blue."),
    ("What do cows drink?", "Water."),
    ("Name a prime.", "Seven."),
]


def rows(n: int, offset: int = 0) -> list[dict]:
    out = []
    for i in range(n):
        question, answer = QA[(i + offset) % len(QA)]
        out.append(
            {
                "messages": [
                    {"role": "user", "content": f"{question} #{i + offset}"},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    return out


def write_jsonl(path, items) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in items))
    return str(path)


@pytest.fixture
def forms(tmp_path):
    """data.train in each documented form, each naming 24 rows in all."""
    from datasets import Dataset, DatasetDict

    a = write_jsonl(tmp_path / "a.jsonl", rows(12))
    b = write_jsonl(tmp_path / "b.jsonl", rows(12, 12))
    parts = tmp_path / "parts"
    parts.mkdir()
    write_jsonl(parts / "p1.jsonl", rows(12))
    write_jsonl(parts / "p2.jsonl", rows(12, 12))
    as_table = {"messages": [r["messages"] for r in rows(24)]}
    DatasetDict(
        {"train": Dataset.from_dict(as_table), "validation": Dataset.from_dict(as_table)}
    ).save_to_disk(tmp_path / "dsdict")
    return {
        "list": [a, b],
        "glob": str(parts / "*.jsonl"),
        "folder": str(parts),
        "dataset_split": f"{tmp_path / 'dsdict'}#train",
    }


@pytest.mark.parametrize("form", ["list", "glob", "folder", "dataset_split"])
def test_every_form_trains_and_checks_alike(form, forms, tiny_dir, tmp_path):
    from gemmaforge.data.check.scan import check_dataset, check_tokenizer
    from gemmaforge.train.trainer import train

    cfg = Config.model_validate(
        {
            "model": {"name_or_path": str(tiny_dir("gemma3"))},
            "data": {"train": forms[form], "val_fraction": 0.0},
            "train": {"output_dir": str(tmp_path / "run"), "max_steps": 2, "batch_size": 4},
        }
    )
    result = train(cfg)
    report = json.loads((result.run_dir / "data_report.json").read_text())
    assert report["rows_read"] == 24
    assert report["train_examples"] == 24

    tok, default = check_tokenizer(cfg)
    checked = check_dataset(cfg, tok, default)
    assert checked.examples["rows_read"] == 24
    assert checked.exit_code() == 0


def test_a_list_of_remote_files_streams(s3):
    urls = [s3.put(f"entry/part{i}.jsonl", b'{"text": "hi"}\n') for i in range(2)]
    sources = open_sources(DataConfig(train=urls, storage_options=s3.storage_options))
    assert sources.streaming and sources.remote
    assert [s.path for s in sources.train] == urls


def test_local_data_does_not_stream_unless_asked(forms):
    assert not open_sources(DataConfig(train=forms["list"])).streaming
    assert open_sources(DataConfig(train=forms["list"], streaming="on")).streaming


def test_every_missing_entry_is_named_at_once(tmp_path):
    with pytest.raises(UserError) as caught:
        open_sources(
            DataConfig(
                train=[str(tmp_path / "gone.jsonl"), str(tmp_path / "*.none")],
                validation=f"{tmp_path}#test",
            )
        )
    text = "\n".join(caught.value.problems)
    assert "data.train: " in text and "gone.jsonl: not found" in text
    assert "*.none: matches no files" in text
    assert "data.validation: " in text


def test_plan_reads_a_list_and_a_glob(forms, tiny_dir):
    from gemmaforge.data.examples.dataset import media_per_row
    from gemmaforge.perf.plan import make_plan

    for form in ("list", "glob"):
        cfg = Config.model_validate(
            {"model": {"name_or_path": str(tiny_dir("gemma3"))}, "data": {"train": forms[form]}}
        )
        media = media_per_row(cfg.data)
        assert len(media) == 24 and not any(media)
        assert make_plan(cfg, media).prediction.peak_bytes > 0
