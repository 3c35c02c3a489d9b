"""data.on_error: skip trains on what is usable and writes every row it left out, with the
reason, to OUT/skipped.jsonl; fail stops with every problem named (at the row, when
streaming)."""

from __future__ import annotations

import json

import pytest

from gemmaforge.errors import UserError
from gemmaforge.train.trainer import train
from test_train import run_config, write_task


def broken_data(tmp_path):
    """Good rows plus one of each kind of bad row; returns (path, {line: kind})."""
    path = write_task(tmp_path / "train.jsonl", rows=24)
    long_reply = " ".join(["word"] * 400)
    bad = [
        (b"{not json\n", "unreadable"),
        (b'{"text": "caf\xe9"}\n', "unreadable"),
        (json.dumps({"prompt": "no messages column"}).encode() + b"\n", "invalid"),
        (
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": "q"},
                        {"role": "assistant", "content": ""},
                    ]
                }
            ).encode()
            + b"\n",
            "invalid",
        ),
        (
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": "q"},
                        {"role": "assistant", "content": long_reply},
                    ]
                }
            ).encode()
            + b"\n",
            "too_long",
        ),
    ]
    with path.open("ab") as handle:
        for raw, _ in bad:
            handle.write(raw)
    return path, {25 + i: kind for i, (_, kind) in enumerate(bad)}


@pytest.mark.parametrize("streaming", ["off", "on"])
def test_skip_policy_writes_every_skipped_row(streaming, tiny_dir, tmp_path):
    data, planted = broken_data(tmp_path)
    # 8 steps of 4 cover the 24 usable rows, so a streamed run reads every row.
    cfg = run_config(tiny_dir("gemma3"), data, tmp_path / "run", max_steps=8, eval_every=0)
    cfg.data.on_error = "skip"
    cfg.data.streaming = streaming
    cfg.data.max_seq_length = 128
    cfg.data.val_fraction = 0.0
    result = train(cfg)
    entries = [json.loads(line) for line in (result.run_dir / "skipped.jsonl").open()]
    found = {int(e["where"].rsplit(":", 1)[1]): e["kind"] for e in entries}
    assert found == planted
    assert all(e["where"].startswith(str(data)) and e["reason"] for e in entries)
    by_line = {int(e["where"].rsplit(":", 1)[1]): e for e in entries}
    assert "not valid JSON" in by_line[25]["reason"] and by_line[25]["row"] == "{not json\n"
    assert "not valid UTF-8" in by_line[26]["reason"]
    assert "needs max_seq_length >=" in by_line[29]["reason"]


def test_fail_policy_names_every_bad_row(tiny_dir, tmp_path):
    data, planted = broken_data(tmp_path)
    cfg = run_config(tiny_dir("gemma3"), data, tmp_path / "run", max_steps=3)
    cfg.data.max_seq_length = 128
    with pytest.raises(UserError) as info:
        train(cfg)
    named = {int(p.split(": ")[0].rsplit(":", 1)[1]) for p in info.value.problems}
    # Unusable rows are errors; an over-long one is dropped by data.overlong, not an error.
    assert named == {line for line, kind in planted.items() if kind != "too_long"}
    assert not (tmp_path / "run" / "adapter").exists()


def test_streamed_fail_policy_stops_at_the_row(tiny_dir, tmp_path):
    data, _ = broken_data(tmp_path)
    cfg = run_config(tiny_dir("gemma3"), data, tmp_path / "run", max_steps=40, eval_every=0)
    cfg.data.streaming = "on"
    cfg.data.val_fraction = 0.0
    # The first bad row the shuffled stream reaches stops the run, named.
    with pytest.raises(UserError, match=r"train\.jsonl:2[5-8]: "):
        train(cfg)


def test_streaming_needs_max_steps(tiny_dir, tmp_path):
    data = write_task(tmp_path / "train.jsonl", rows=8)
    cfg = run_config(tiny_dir("gemma3"), data, tmp_path / "run", max_steps=None)
    cfg.data.streaming = "on"
    with pytest.raises(UserError, match=r"train\.max_steps: streamed data has no known length"):
        train(cfg)
