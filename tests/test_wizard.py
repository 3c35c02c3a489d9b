"""`gemmaforge wizard` end to end: answered from a file (the config it writes is accepted by
`config show` and trains a tiny model), and typed at its prompts in a real terminal (tmux
send-keys / capture-pane). Without a terminal, a missing answer is a clean error."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gemmaforge.cli import app
from tiny_runs import ANSWERS, write_rows

SRC = Path(__file__).resolve().parent.parent / "src"
runner = CliRunner()


@pytest.mark.slow
def test_answers_file_writes_a_config_that_trains(tiny_dir, tmp_path):
    data = write_rows(tmp_path / "train.jsonl", ANSWERS["plain"])
    answers = {
        "task": "chat",
        "data": str(data),
        "model": str(tiny_dir("gemma3")),
        "output": str(tmp_path / "run"),
        "lr": 0.01,
        "lora_r": 4,
        "max_steps": 3,
        "config": str(tmp_path / "wizard.yaml"),
        "start": True,
    }
    (tmp_path / "answers.yaml").write_text(yaml.safe_dump(answers))
    result = runner.invoke(app, ["wizard", "--answers", str(tmp_path / "answers.yaml")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "wizard.yaml").read_text()
    assert "# Peak learning rate." in text  # each setting carries its help
    assert "format: messages" in text  # detected from the data
    shown = runner.invoke(app, ["config", "show", str(tmp_path / "wizard.yaml")])
    assert shown.exit_code == 0, shown.output
    resolved = yaml.safe_load(shown.output)
    assert resolved["train"]["lr"] == 0.01 and resolved["lora"]["r"] == 4
    assert resolved["data"]["max_seq_length"] == 256  # the data's longest row, rounded up
    assert (tmp_path / "run" / "run.json").is_file()
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 3


def test_without_a_terminal_a_missing_answer_is_an_error(tmp_path):
    result = runner.invoke(app, ["wizard", "--task", "chat"])
    assert result.exit_code == 2
    assert "no answer for 'data'" in result.output
    (tmp_path / "answers.yaml").write_text("task: chat\ncolour: blue\n")
    result = runner.invoke(app, ["wizard", "--answers", str(tmp_path / "answers.yaml")])
    assert result.exit_code == 2 and "unknown answers: colour" in result.output


class Tmux:
    """One detached tmux session running a command, read through capture-pane."""

    def __init__(self, name: str, command: str):
        self.name = name
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", name, "-x", "160", "-y", "50", command],
            check=True,
        )

    def screen(self) -> str:
        out = subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", self.name, "-S", "-200"],
            capture_output=True,
            text=True,
        )
        return out.stdout

    def wait(self, text: str, timeout: float = 240) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.5)
        pytest.fail(f"{text!r} never appeared; the screen:\n{self.screen()}")

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("tmux"), reason="tmux is not installed")
def test_typed_at_the_prompts_in_a_terminal(tiny_dir, tmp_path):
    data = write_rows(tmp_path / "train.jsonl", ANSWERS["plain"])
    config = tmp_path / "typed.yaml"
    done = tmp_path / "exit-code"
    command = (
        f"cd {tmp_path} && PYTHONPATH={SRC} HF_HUB_OFFLINE=1 {sys.executable} -m gemmaforge "
        f"wizard --model {tiny_dir('gemma3')} --output {tmp_path / 'run'} "
        f"--config-out {config} --no-start; echo $? > {done}; sleep 60"
    )
    session = Tmux(f"gf-wizard-{os.getpid()}", command)
    try:
        session.wait("What should the model learn?")
        tasks = ["transcription", "captioning", "visual QA", "instruction", "completion", "chat"]
        for _ in range(tasks.index("chat")):
            session.keys("Down")
        session.keys("Enter")
        session.wait("Where is the data")
        session.keys(str(data))
        session.keys("Enter")
        session.wait("epochs:")
        session.keys("BSpace", "BSpace", "BSpace", "2", "Enter")  # 3.0 -> 2
        for prompt in ("lr:", "lora r:", "batch size:", "max seq length:"):
            session.wait(prompt)
            session.keys("Enter")  # the default
        screen = session.wait("To train: gemmaforge train")
        assert "format messages" in screen
        deadline = time.monotonic() + 30
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert done.read_text().strip() == "0", session.screen()
    finally:
        session.close()
    shown = runner.invoke(app, ["config", "show", str(config)])
    assert shown.exit_code == 0, shown.output
    resolved = yaml.safe_load(shown.output)
    assert resolved["train"]["epochs"] == 2.0
    assert resolved["data"]["train"] == str(data)
