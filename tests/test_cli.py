"""The command line: fast help without torch, clean user errors, flags, and verbs' wiring."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from typer.testing import CliRunner

from gemmaforge.cli import app
from gemmaforge.cli.common import CONFIG_FLAGS
from gemmaforge.config_load import load_config
from gemmaforge.models.families import TINY_FAMILIES

runner = CliRunner()

# Imports that would make `--help` slow; none may happen before a verb runs.
HEAVY = ("torch", "transformers", "peft", "accelerate", "timm", "safetensors")

# Runs in a fresh interpreter: imports the CLI, then makes heavy imports fail and asks every
# command of the app (found by walking the click tree, so new verbs are covered) for --help.
HELP_SCRIPT = f"""
import json, sys, time
import click, typer
from typer.testing import CliRunner
import gemmaforge.cli
heavy = {HEAVY!r}
loaded = [m for m in heavy if m in sys.modules]
for name in heavy:
    sys.modules[name] = None  # `import torch` now raises ImportError

def paths(cmd, prefix=()):
    yield prefix
    for name, sub in getattr(cmd, "commands", {{}}).items():
        yield from paths(sub, (*prefix, name))

results = {{}}
for path in paths(typer.main.get_command(gemmaforge.cli.app)):
    start = time.perf_counter()
    result = CliRunner().invoke(gemmaforge.cli.app, [*path, "--help"])
    results[" ".join(path)] = [result.exit_code, time.perf_counter() - start, result.output]
print(json.dumps({{"loaded": loaded, "results": results}}))
"""


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gemmaforge", *args], capture_output=True, text=True, timeout=120
    )


def test_help_of_the_app_and_every_verb_works_without_torch():
    proc = subprocess.run(
        [sys.executable, "-c", HELP_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["loaded"] == [], "importing gemmaforge.cli imported heavy modules"
    results = report["results"]
    assert {"", "train", "tiny", "quickstart", "config", "config show"} <= set(results)
    for path, (code, seconds, output) in results.items():
        assert code == 0, (path, output)
        assert "Usage:" in output
        # Generous: without torch a help screen takes milliseconds; importing torch takes seconds.
        assert seconds < 2.0, (path, seconds)


def test_console_module_help():
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    for verb in ("train", "tiny", "quickstart", "config"):
        assert verb in proc.stdout


def test_config_error_exits_2_with_every_problem_and_no_traceback(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("train:\n  lrr: 1\n")
    proc = run_cli("config", "show", str(cfg), "data.formt=x", "--lr", "-1")
    assert proc.returncode == 2
    assert f"{cfg}:2: train.lrr: unknown key; did you mean train.lr?" in proc.stderr
    assert "command line: data.formt: unknown key; did you mean data.format?" in proc.stderr
    assert "command line: train.lr: invalid value -1.0: must be greater than 0" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_config_show_prints_defaults_and_overrides(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("train:\n  seed: 7\n  batch_size: 2\n")
    result = runner.invoke(
        app, ["config", "show", str(cfg), "lora.targets=[q_proj,v_proj]", "--batch-size", "3"]
    )
    assert result.exit_code == 0, result.output
    assert "  seed: 7\n" in result.stdout  # file
    assert "  batch_size: 3\n" in result.stdout  # flag beats file
    assert "  targets:\n  - q_proj\n  - v_proj\n" in result.stdout  # override
    assert "  loss_chunk_size:" in result.stdout  # default
    shown = tmp_path / "shown.yaml"
    shown.write_text(result.stdout)
    assert load_config(str(shown)) == load_config(
        str(cfg), ["lora.targets=[q_proj,v_proj]"], {"train.batch_size": 3}
    )


def test_overrides_without_a_config_file():
    result = runner.invoke(app, ["config", "show", "train.lr=1e-4", "model.revision=null"])
    assert result.exit_code == 0, result.output
    assert "  lr: 0.0001\n" in result.stdout


# Flag, value given, config key, value expected: the mapping the CLI promises, by hand.
FLAG_CASES = [
    ("--model", "m", "model.name_or_path", "m"),
    ("--data", "t.jsonl", "data.train", "t.jsonl"),
    ("--val-data", "v.jsonl", "data.validation", "v.jsonl"),
    ("--output", "runs/x", "train.output_dir", "runs/x"),
    ("--max-steps", "30", "train.max_steps", 30),
    ("--epochs", "2.5", "train.epochs", 2.5),
    ("--batch-size", "3", "train.batch_size", 3),
    ("--grad-accum", "4", "train.grad_accum", 4),
    ("--seq-len", "64", "data.max_seq_length", 64),
    ("--lr", "1e-4", "train.lr", 1e-4),
    ("--lora-r", "8", "lora.r", 8),
    ("--save-every", "10", "train.save_every", 10),
    ("--eval-every", "5", "train.eval_every", 5),
    ("--seed", "7", "train.seed", 7),
    ("--resume", None, "train.resume", True),
    ("--reschedule", None, "train.reschedule", True),
    ("--allow-download", None, "model.allow_download", True),
]


def test_every_flag_sets_its_config_key(tmp_path):
    assert {"--" + n.replace("_", "-") for n in CONFIG_FLAGS} == {c[0] for c in FLAG_CASES}
    args = [arg for flag, value, _, _ in FLAG_CASES for arg in (flag, value) if arg is not None]
    result = runner.invoke(app, ["config", "show", *args])
    assert result.exit_code == 0, result.output
    shown = tmp_path / "shown.yaml"
    shown.write_text(result.stdout)
    cfg = load_config(str(shown))
    for _, _, key, expected in FLAG_CASES:
        section, field = key.split(".")
        assert getattr(getattr(cfg, section), field) == expected, key
    # The `--no-` form turns a boolean off again.
    result = runner.invoke(app, ["config", "show", "train.resume=true", "--no-resume"])
    assert "  resume: false\n" in result.stdout


def test_train_and_config_show_take_the_same_flags():
    def options(*path: str) -> set[str]:
        result = runner.invoke(app, [*path, "--help"], terminal_width=200)
        return {word for word in result.stdout.split() if word.startswith("--")}

    flags = {flag for flag, _, _, _ in FLAG_CASES}
    assert flags <= options("train")
    assert flags <= options("config", "show")


def test_train_runs_a_real_tiny_model_and_prints_the_run_folder(tiny_dir, tmp_path):
    from test_train import write_task

    data = write_task(tmp_path / "train.jsonl", rows=8)
    out = tmp_path / "run"
    args = ["train", "train.seed=5", "--model", str(tiny_dir("gemma3")), "--data", str(data)]
    result = runner.invoke(app, [*args, "--output", str(out), "--max-steps", "2"])
    assert result.exit_code == 0, result.output
    assert f"Run folder: {out}" in result.stdout
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert "seed: 5" in (out / "config.yaml").read_text()


def test_train_without_model_or_data_names_the_flags():
    result = runner.invoke(app, ["train"])
    assert result.exit_code == 2
    assert "error: model.name_or_path is not set. Fix: pass --model" in result.stderr
    assert "error: data.train is not set. Fix: pass --data" in result.stderr


def test_ctrl_c_exits_130(tiny_dir, tmp_path):
    from test_train import write_task

    data = write_task(tmp_path / "train.jsonl", rows=8)
    cmd = [
        sys.executable,
        "-m",
        "gemmaforge",
        "train",
        "--model",
        str(tiny_dir("gemma3")),
        "--data",
        str(data),
        "--output",
        str(tmp_path / "run"),
        "--max-steps",
        "100000",
    ]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not metrics.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Interrupted" in err and "Traceback" not in err
    # It says what to do next (one line, not wrapped mid-sentence): no checkpoint yet here.
    assert "pass --save-every N to save one every N steps" in err


def test_an_interrupted_run_without_checkpoints_says_how_to_get_one(tmp_path):
    from gemmaforge.cli.train import resume_hint
    from gemmaforge.config import Config

    cfg = Config.model_validate({"train": {"output_dir": str(tmp_path / "run")}})
    assert "--save-every N" in resume_hint(cfg)
    saved = tmp_path / "run" / "checkpoints" / "step-00000003"
    saved.mkdir(parents=True)
    (saved / "trainer_state.pt").write_bytes(b"")
    hint = resume_hint(cfg)
    assert str(saved) in hint and "run the same command with --resume" in hint


def test_tiny_checks_the_family_and_writes_a_loadable_model(tmp_path):
    from transformers import AutoConfig

    result = runner.invoke(app, ["tiny", "gemma5", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown tiny model family 'gemma5'" in result.stderr
    assert ", ".join(TINY_FAMILIES) in result.stderr
    assert not any(tmp_path.iterdir())
    result = runner.invoke(app, ["tiny", "gemma3", str(tmp_path / "m"), "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert AutoConfig.from_pretrained(tmp_path / "m").model_type == "gemma3_text"


def test_bad_data_exits_2_naming_file_and_line(tiny_dir, tmp_path):
    data = tmp_path / "bad.jsonl"
    good = json.dumps(
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    )
    no_reply = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
    data.write_bytes(f"{good}\n{{not json\n{no_reply}\n".encode() + b'{"text": "\xff"}\n')
    model = str(tiny_dir("gemma3"))
    result = run_cli(
        "train", "--model", model, "--data", str(data), "--output", str(tmp_path / "r")
    )
    assert result.returncode == 2, result.stderr
    assert f"{data}:2" in result.stderr and f"{data}:4" in result.stderr
    assert "UTF-8" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_model_folder_that_is_not_gemma_exits_2(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path
    )
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "hello"}\n')
    result = run_cli(
        "train", "--model", str(tmp_path), "--data", str(data), "--output", str(tmp_path / "r")
    )
    assert result.returncode == 2
    assert "is not a supported Gemma family" in result.stderr and "Traceback" not in result.stderr


def test_version():
    from gemmaforge import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"gemmaforge {__version__}\n"


def test_tiny_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    result = runner.invoke(app, ["tiny", "gemma3", str(tmp_path)])
    assert result.exit_code == 2 and "--overwrite" in result.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me"
