"""`gemmaforge eval` end to end: on a tiny trained run (seconds), and on the real Gemma 3 270M
(slow): the adapter beats its base model on rows it never trained on."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from typer.testing import CliRunner

from gemmaforge.cli import app
from gemmaforge.errors import UserError
from gemmaforge.eval.evaluate import eval_data, evaluate
from gemmaforge.runs import open_run
from tiny_runs import ANSWERS, QUESTIONS

runner = CliRunner()


def test_eval_verb_scores_base_and_adapter(tiny_run):
    run = tiny_run("plain")
    result = runner.invoke(app, ["eval", str(run), "--batch-size", "3"])
    assert result.exit_code == 0, result.output
    assert "exact_match: base 0.000 -> adapter 1.000" in result.stdout

    report = json.loads((run / "eval" / "report.json").read_text())
    assert report["task"] == "exact"  # plain-text references
    base, tuned = report["metrics"]["base"], report["metrics"]["adapter"]
    assert (base["exact_match"], tuned["exact_match"]) == (0.0, 1.0)
    # The trained replies are near-certain; the random base model's are not.
    assert tuned["perplexity"] < 2 < 100 < base["perplexity"]
    answers = dict(zip(QUESTIONS, ANSWERS["plain"], strict=True))
    for row in report["examples"]:
        assert row["reference"] == answers[row["prompt"]] == row["adapter"]
        assert (row["base_score"], row["adapter_score"]) == (0.0, 1.0)

    page = (run / "eval" / "report.md").read_text()
    assert "| exact_match | 0.000 | 1.000 | +1.000 |" in page
    assert "![training and validation loss](loss_curve.png)" in page
    assert (run / "eval" / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Training drew its own loss plot; each evaluation is kept, the latest also on top.
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = int((run / "eval" / "latest").read_text())
    assert (run / "eval" / str(first) / "report.json").read_text() == json.dumps(
        report, indent=2
    ) + "\n"
    again = runner.invoke(app, ["eval", str(run), "--batch-size", "3", "--limit", "1"])
    assert again.exit_code == 0, again.output
    assert int((run / "eval" / "latest").read_text()) == first + 1
    assert json.loads((run / "eval" / str(first) / "report.json").read_text()) == report
    assert json.loads((run / "eval" / "report.json").read_text())["examples_scored"] == 1


def test_default_rows_are_the_ones_training_held_out(tiny_run):
    from gemmaforge.data.examples.dataset import load_datasets
    from gemmaforge.data.read.sources import open_sources
    from gemmaforge.models.families import GEMMA3

    run = open_run(tiny_run("plain"))
    tokenizer = _tokenizer(run)
    data = run.config.data
    sources = open_sources(data)
    _, held_out, report = load_datasets(data, sources, GEMMA3, tokenizer, run.config.train.seed)
    assert report.validation == "split" and held_out
    rows = eval_data(run)
    assert [c.where for c in rows.conversations] == [ex.where for ex in held_out]
    assert "rows training held out (seed 0)" in rows.source


def test_other_data_and_tasks(tiny_run, tmp_path):
    run = tiny_run("plain")
    data = tmp_path / "more.jsonl"
    rows = [
        {"prompt": "What colour is the sky?", "response": "The sky is blue."},
        {"prompt": "Which way is up?", "response": "Up is towards the ground."},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # The run's data format is auto, so --data may use another format than training did.
    report = evaluate(run, data=str(data), task="summary")
    assert report["examples_scored"] == 2
    # Row 2: the adapter says "Up is away from the ground." -> LCS up-is-the-ground, 4 of 6
    # and 5 words: F1 = 8/11.
    assert report["metrics"]["adapter"]["rouge_l"] == pytest.approx((1 + 8 / 11) / 2)
    assert report["examples"][1]["adapter_score"] == pytest.approx(8 / 11)

    only_loss = evaluate(run, data=str(data), task="perplexity", limit=1)
    assert only_loss["examples"] == [] and only_loss["max_new_tokens"] is None
    assert set(only_loss["metrics"]["adapter"]) == {"perplexity"}


def test_completion_rows_score_perplexity_only(tiny_run, tmp_path):
    run = tiny_run("plain")
    data = tmp_path / "text.jsonl"
    data.write_text('{"text": "The sky is blue."}\n{"text": "Cows drink water."}\n')
    report = evaluate(run, data=str(data))
    assert report["task"] == "perplexity"
    result = runner.invoke(app, ["eval", str(run), "--data", str(data), "--task", "exact"])
    assert result.exit_code == 2
    assert "completion-format rows have no reply to generate" in result.output
    assert "--task perplexity" in result.output


def test_changed_training_file_is_refused(tiny_run, tmp_path):
    """Another training file would give another split, which may hold trained-on rows."""
    copy = tmp_path / "run"
    shutil.copytree(tiny_run("plain"), copy)
    train_file = tmp_path / "train.jsonl"
    shutil.copy(open_run(copy).config.data.train, train_file)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["data"]["train"] = str(train_file)
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    report = json.loads((copy / "data_report.json").read_text())
    report["files"][0]["path"] = str(train_file)
    (copy / "data_report.json").write_text(json.dumps(report))
    assert eval_data(open_run(copy)).conversations  # unchanged: fine

    with train_file.open("a") as handle:
        handle.write(train_file.read_text().splitlines()[0] + "\n")
    with pytest.raises(UserError, match="changed since the run trained on it"):
        eval_data(open_run(copy))


def test_run_without_held_out_rows_needs_data(tiny_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(tiny_run("plain"), copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["data"]["val_fraction"] = 0.0
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(UserError, match=r"held out no validation rows.*--data"):
        eval_data(open_run(copy))


def _tokenizer(run):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(run.adapter_dir)


@pytest.mark.slow
def test_trained_adapter_beats_the_real_base_model(tmp_path):
    """The quickstart's task on the real Gemma 3 270M: a short training, then eval on 16 of
    the bundled held-out rows. The pretrained base model knows nothing of the format."""
    from gemmaforge.quickstart import dataset_path, quickstart_config
    from gemmaforge.train.trainer import train

    cfg = quickstart_config(tmp_path / "run", steps=30)
    cfg.model.dtype = "fp32"
    run = train(cfg).run_dir
    report = evaluate(run, data=str(dataset_path("test")), limit=16, batch_size=8)
    assert report["task"] == "json"
    base, tuned = report["metrics"]["base"], report["metrics"]["adapter"]
    print(json.dumps(report["metrics"], indent=1))
    assert tuned["exact_match"] >= 0.5 > base["exact_match"]
    assert tuned["field_accuracy"] > base["field_accuracy"]
    assert tuned["json_validity"] > base["json_validity"]
    assert tuned["perplexity"] < base["perplexity"]
