"""Special tokens typed as text are refused alike by `data check`, `train` and `serve`
(the shared renderer): a `<start_of_turn>`, `<|image|>` or any other special token in a
row's text would fake a turn or a media slot (issue 12). Turn tokens were already refused by
name; this covers every special token of the tokenizer, media ones included (the tiny text
model's tokenizer has `<unused0>` ... as special tokens; Gemma's media tokens are the same
kind)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
}


def test_typed_turn_tokens_are_refused_at_the_same_row(tiny_dir, tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
        {
            "messages": [
                {"role": "user", "content": "look: <unused0> what is it?"},
                {"role": "assistant", "content": "yo"},
            ]
        },
    ]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = str(tiny_dir("gemma3"))

    def run(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "gemmaforge", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=300, env=ENV)

    check = run("data", "check", str(data), "--model", model)
    assert check.returncode == 1, check.stdout + check.stderr
    assert "d.jsonl:2" in check.stdout and "<unused0>" in check.stdout
    train = run("train", "--model", model, "--data", str(data), "--output", str(tmp_path / "r"))
    assert train.returncode == 2, train.stderr[-3000:]
    assert "d.jsonl:2" in train.stderr and "<unused0>" in train.stderr
    assert "Traceback" not in train.stderr
