"""Training on several processes (torchrun, gloo on CPU) trains what one process trains.

Two processes split every global micro-batch by rows and normalise the loss over the global
labelled-token count, so the loss curve and the adapter match a one-process run with the same
config; a killed two-process run resumes on one or two processes and continues the same
curve; only the main process writes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from gemmaforge.config import DataConfig
from gemmaforge.train.loop import shard
from test_train import write_task

STEPS = 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(tmp_path, tiny_dir, data_settings=None) -> str:
    data = write_task(tmp_path / "train.jsonl", rows=40)
    config = tmp_path / "run.yaml"
    settings = {
        "model": {"name_or_path": str(tiny_dir("gemma3")), "dtype": "fp32"},
        "data": {"train": str(data), **(data_settings or {})},
        "lora": {"r": 8, "alpha": 16},
        "train": {
            "max_steps": STEPS,
            "batch_size": 5,  # odd: the second rank gets the smaller share of each batch
            "grad_accum": 2,
            "lr": 1e-2,
            "eval_every": 4,
            "save_every": 2,
            "seed": 0,
        },
    }
    config.write_text(yaml.safe_dump(settings))
    return str(config)


def launch(config, out, nproc: int, *extra) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "gemmaforge",
        "launch",
        config,
        f"train.output_dir={out}",
        f"--nproc={nproc}",
        f"--master-port={free_port()}",
        *extra,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True
    )


def finish(process) -> str:
    out, err = process.communicate(timeout=900)
    assert process.returncode == 0, err.decode()[-3000:]
    return out.decode() + err.decode()


def losses(run) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


def adapter(run) -> dict:
    return load_file(run / "adapter" / "adapter_model.safetensors")


def assert_same_adapter(a, b):
    """The same weights to 5e-4: gradients agree to float summation order (~1e-7), but Adam
    divides each by the root of its running square, so an element whose gradient is near zero
    moves by a step-sized amount either way (measured: 1 of 1,024 elements off by 1.2e-4)."""
    first, second = adapter(a), adapter(b)
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=1e-3, atol=5e-4)


def test_shards_cover_every_row_once_per_epoch(tmp_path):
    """Streamed rows, grouped into global batches: across two ranks every row is trained
    exactly once per epoch, and no row by both."""
    from gemmaforge.data.batches.batching import Batching, Position
    from gemmaforge.data.batches.epochs import batch_stream
    from gemmaforge.data.batches.streaming import open_stream
    from gemmaforge.data.examples.dataset import RowRenderer
    from gemmaforge.data.examples.skiplog import SkipLog
    from gemmaforge.data.read.sources import open_sources
    from gemmaforge.models.families import GEMMA3
    from gemmaforge.models.tiny import tiny_tokenizer

    rows = 37
    path = tmp_path / "rows.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": f"row {i}"},
                        {"role": "assistant", "content": f"answer {i}"},
                    ]
                }
            )
            + "\n"
            for i in range(rows)
        )
    )
    cfg = DataConfig(train=str(path), streaming="on", shuffle_buffer=8, val_fraction=0.0)
    renderer = RowRenderer(cfg, GEMMA3, tiny_tokenizer("gemma3"))
    source, _, _ = open_stream(cfg, open_sources(cfg), renderer, SkipLog(), seed=3)
    spec = Batching(batch_size=4, max_tokens=cfg.max_seq_length, seed=3)
    seen = {0: [], 1: []}
    stream = batch_stream(source, spec, Position())
    batch = next(stream)
    while batch.after.epoch == 0:
        for rank in (0, 1):
            mine, weight = shard(batch.rows, rank, 2)
            if weight:
                seen[rank] += [ex.where for row in mine for ex in row]
        batch = next(stream)
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(f"{path}:{i + 1}" for i in range(rows))


@pytest.mark.slow
def test_two_processes_train_what_one_trains(tiny_dir, tmp_path):
    config = write_config(tmp_path, tiny_dir)
    one, two = tmp_path / "one", tmp_path / "two"
    finish(launch(config, one, 1))
    log = finish(launch(config, two, 2))
    assert "distributed: 2 processes" in log
    assert log.count("Run folder:") == 1  # the other rank says nothing
    # Same curve to float-summation-order differences; the same adapter.
    torch.testing.assert_close(losses(two), losses(one), rtol=1e-4, atol=1e-5)
    assert_same_adapter(one, two)
    # Only the main process wrote: one metrics line per logged step, one manifest entry each.
    steps = [json.loads(line)["step"] for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS
    manifest = json.loads((two / "manifest.json").read_text())["files"]
    assert "adapter/adapter_model.safetensors" in manifest
    assert not [p for p in two.rglob("*") if ".tmp" in p.name]


@pytest.mark.slow
@pytest.mark.parametrize("resume_on", [1, 2])
def test_a_killed_two_process_run_resumes_on_any_count(resume_on, tiny_dir, tmp_path):
    config = write_config(tmp_path, tiny_dir)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    finish(launch(config, whole, 1))
    process = launch(config, cut, 2)
    deadline = time.time() + 600
    while not (cut / "checkpoints" / "step-00000004").exists():
        assert process.poll() is None and time.time() < deadline, "no checkpoint at step 4"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # torchrun and both workers, mid-run
    process.wait()
    finish(launch(config, cut, resume_on, "--resume"))
    torch.testing.assert_close(losses(cut), losses(whole), rtol=1e-4, atol=1e-5)
    assert_same_adapter(whole, cut)


def test_plan_predicts_one_process_of_several(tiny_dir):
    from gemmaforge.config import Config
    from gemmaforge.perf.plan import make_plan

    cfg = Config.model_validate(
        {
            "model": {"name_or_path": str(tiny_dir("gemma3"))},
            "train": {"batch_size": 8, "gradient_checkpointing": False},
        }
    )
    one, two = make_plan(cfg), make_plan(cfg, processes=2)
    assert two.settings.batch_size == 4 and one.settings.batch_size == 8
    assert two.prediction.parts["activations"] < one.prediction.parts["activations"]
    assert two.prediction.parts["weights"] == one.prediction.parts["weights"]
    assert any("2 processes (DDP)" in note for note in two.notes)
