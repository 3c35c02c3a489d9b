"""`gemmaforge bench` end to end on the tiny Gemma 3: both sides run, each in its own process,
on rows of exactly the sequence length, and the report has every number (values not asserted:
they are timings on a shared machine)."""

from __future__ import annotations

import json
import os

from typer.testing import CliRunner

from gemmaforge.bench.synthetic import write_chat_rows
from gemmaforge.cli import app
from gemmaforge.data.examples.render import render
from gemmaforge.models.families import family_by_name
from gemmaforge.models.tiny import tiny_tokenizer


def test_synthetic_rows_render_to_exactly_the_sequence_length(tmp_path):
    tokenizer = tiny_tokenizer("gemma3")
    family = family_by_name("gemma3")
    path = write_chat_rows(tmp_path, family, tokenizer, seq_len=96, rows=6, trained_fraction=0.5)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 6
    for row in rows:
        example = render(row["messages"], family, tokenizer)
        assert len(example.input_ids) == 96
        assert 40 <= example.num_trained <= 56  # about half the tokens are the trained reply


def test_bench_runs_both_sides_in_separate_processes(tmp_path):
    out = tmp_path / "bench.json"
    args = ["bench", "--config", "tiny-text", "--steps", "2", "--json", "--output", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    [report] = json.loads(out.read_text())
    assert json.loads(result.stdout) == [report]
    assert report["config"] == "tiny-text" and report["steps"] == 2
    sides = report["sides"]
    assert set(sides) == {"gemmaforge", "baseline"}
    pids = {side["pid"] for side in sides.values()}
    assert len(pids) == 2 and os.getpid() not in pids
    for side in sides.values():
        assert len(side["losses"]) == 2 and len(side["step_seconds"]) == 2
        assert side["tokens_per_second"] > 0 and side["peak_bytes"] > 0
        assert side["predicted_bytes"] > 0 and 0 < side["mfu"] < 1
        # The whole process (imports, the weights, training) holds more than training alone.
        assert side["process_peak_bytes"] > side["peak_bytes"]
    # Same rows, same LoRA init (B = 0): both start from the base model's loss on the data.
    first = [side["losses"][0] for side in sides.values()]
    assert abs(first[0] - first[1]) < 0.05
    assert report["speedup"] > 0 and report["memory_ratio"] > 0
    assert report["process_memory_ratio"] > 0
    assert report["matmul_flops"] > 0


def test_bench_refuses_an_unknown_config():
    result = CliRunner().invoke(app, ["bench", "--config", "gemma7"])
    assert result.exit_code == 2
    assert "unknown benchmark config" in result.output and "tiny-text" in result.output


def test_bench_against_trl_packs_variable_length_rows(tmp_path):
    """The TRL SFTTrainer peer (padding-free BFD packing, completion-only loss) and gemmaforge
    with packing train on the same Alpaca-style rows of varied lengths."""
    from gemmaforge.bench.compare import run_bench

    [result] = run_bench(["trl-tiny"], steps=2, log=lambda text: None, keep=tmp_path)
    ours, trl = result.sides["gemmaforge"], result.sides["baseline"]
    for side in (ours, trl):
        assert side.tokens_per_second > 0 and len(side.losses) == 2
        assert side.process_peak_bytes > side.peak_bytes > 0
    # TRL's rows are flattened into one padding-free sequence; gemmaforge pads packed rows
    # to the widest, which is some padding but far from one row per example.
    assert trl.padding == 0.0
    assert 0 <= ours.padding < 0.5
    # Same rendered examples, same LoRA init: both start from the base model's loss.
    assert abs(ours.losses[0] - trl.losses[0]) < 0.1 * abs(trl.losses[0])
