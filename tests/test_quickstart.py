"""The quickstart: its bundled data, its safety checks, and (slow) the whole run."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from gemmaforge.errors import UserError
from gemmaforge.quickstart import RESULT_FILE, dataset_path, quickstart_config, run_quickstart

SCRIPT = Path(__file__).resolve().parent.parent / "tools" / "make_quickstart_data.py"


def rows(split: str) -> list[dict]:
    return [json.loads(line) for line in dataset_path(split).read_text().splitlines()]


def test_bundled_data_is_what_the_script_makes():
    spec = importlib.util.spec_from_file_location("make_quickstart_data", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for name, made in script.build().items():
        bundled = (dataset_path("train").parent / name).read_text(encoding="utf-8")
        assert bundled == script.to_jsonl(made), f"{name} is stale: rerun {SCRIPT.name}"


def test_test_rows_name_people_and_cities_never_seen_in_training():
    train_text = "\n".join(row["messages"][0]["content"] for row in rows("train"))
    test = [json.loads(row["messages"][-1]["content"]) for row in rows("test")]
    assert len(test) == 48
    assert len(rows("train")) == 800
    for answer in test:
        assert answer["name"].split()[0] not in train_text
        assert answer["city"] is None or answer["city"] not in train_text


def test_refuses_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty and does not hold an earlier run"):
        run_quickstart(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_replaces_an_earlier_run_only(tmp_path):
    assert not quickstart_config(tmp_path / "new").train.overwrite
    (tmp_path / RESULT_FILE).write_text("{}")
    cfg = quickstart_config(tmp_path)
    assert cfg.train.overwrite
    assert cfg.train.output_dir == str(tmp_path)
    assert cfg.model.name_or_path.endswith(".gguf")


@pytest.mark.slow
def test_quickstart_improves_exact_match(tmp_path, capsys):
    """The real 270M, trained for the quickstart's default steps (~4-10 minutes on 2 cores)."""
    output = tmp_path / "quickstart"
    summary = run_quickstart(output)

    last = capsys.readouterr().out.strip().splitlines()[-1]
    found = re.fullmatch(r"before: (\S+)  after: (\S+)  \((.+)\)", last)
    assert found, last
    assert float(found[1]) == pytest.approx(summary["before"], abs=1e-3)
    assert float(found[2]) == pytest.approx(summary["after"], abs=1e-3)
    assert summary["after"] >= 0.8
    assert summary["after"] - summary["before"] >= 0.5

    saved = json.loads((output / RESULT_FILE).read_text())
    assert saved["before"] == summary["before"]
    assert saved["after"] == summary["after"]
    assert len(saved["predictions"]) == 48
    assert (output / "adapter" / "adapter_config.json").exists()
    assert saved["after"] == sum(p["after_correct"] for p in saved["predictions"]) / 48
