"""The live dashboard in a real browser (headless Chromium, tests/browser.py): it follows a tiny
training run as it trains (the loss curve grows between two screenshots, with no reload),
shows a sample reply beside its reference, and compares two runs (overlaid curves, config diff).
Plus the reading side without a browser: torn lines, missing files, the config diff."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from browser import browser, screenshot  # noqa: F401 (a fixture)
from gemmaforge.dashboard.read import config_rows, load_runs
from tiny_runs import ANSWERS, write_rows

SRC = Path(__file__).resolve().parent.parent / "src"


def gemmaforge(*args: str) -> subprocess.Popen:
    """The CLI in a child process, stderr collected line by line in `proc.lines`."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gemmaforge", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    proc.lines = []  # type: ignore[attr-defined]

    def pump():
        for line in proc.stdout:
            proc.lines.append(line)  # type: ignore[attr-defined]

    threading.Thread(target=pump, daemon=True).start()
    return proc


def wait_for(what: str, check, timeout: float, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process ended ({proc.returncode}) before {what}: {''.join(proc.lines)}")
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def dashboard_url(proc: subprocess.Popen) -> str:
    def found():
        for line in proc.lines:  # type: ignore[attr-defined]
            match = re.search(r"Dashboard: (http://127\.0\.0\.1:\d+/)", line)
            if match:
                return match.group(1)
        return None

    return wait_for("the dashboard URL", found, 120, proc)


def loss_points(driver, label: str = "train") -> int:
    """Points in the loss chart's training curve, as the page currently shows it (read in one
    script call: the live part is replaced as updates arrive, so element handles go stale)."""
    return driver.execute_script(
        """const paths = document.querySelectorAll(
               `.chart[data-title="loss"] path.series[data-label$="${arguments[0]}"]`);
           return Math.max(0, ...[...paths].map(p => Number(p.dataset.points)));""",
        label,
    )


def texts(driver, selector: str) -> list[str]:
    """The text of every element matching `selector`, read in one script call."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent);", selector
    )


def train_args(model: Path, data: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [
        "train",
        "--model",
        str(model),
        "--data",
        str(data),
        "--output",
        str(out),
        "--max-steps",
        str(steps),
        "--batch-size",
        "2",
        "--lr",
        "1e-2",
        "lora.r=4",
        *extra,
    ]


@pytest.mark.slow
def test_live_curve_grows_and_samples_show(browser, tiny_dir, tmp_path):  # noqa: F811
    data = write_rows(tmp_path / "train.jsonl", ANSWERS["plain"])
    run = tmp_path / "run"
    proc = gemmaforge(
        *train_args(
            tiny_dir("gemma3"),
            data,
            run,
            400,
            "--dashboard",
            "train.sample_every=3",
            "train.sample_max_tokens=8",
            "train.sample_prompts=2",
        )
    )
    try:
        url = dashboard_url(proc)
        browser.get(url)
        first = wait_for("two points of the loss curve", lambda: loss_points(browser) >= 2, 300)
        first = loss_points(browser)
        screenshot(browser, "dashboard-live-1")
        # No reload: the page changes only through the server-sent events.
        wait_for("the curve to grow", lambda: loss_points(browser) > first, 300, proc)
        second = loss_points(browser)
        screenshot(browser, "dashboard-live-2")
        assert second > first
        references = wait_for(
            "a sample reply", lambda: texts(browser, ".sample .reference"), 300, proc
        )
        assert set(references) <= set(ANSWERS["plain"])
        assert len(texts(browser, ".sample pre.reply")) == len(references)
        assert texts(browser, "tr.run .status") == ["training"]
        screenshot(browser, "dashboard-live-samples")
    finally:
        proc.terminate()
        proc.wait(30)
    lines = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert {line["step"] % 3 for line in lines} == {0}
    assert {"prompt", "reply", "reference", "media"} <= set(lines[0])


@pytest.mark.slow
def test_two_runs_side_by_side(browser, tiny_dir, tmp_path):  # noqa: F811
    data = write_rows(tmp_path / "train.jsonl", ANSWERS["plain"])
    runs = [tmp_path / "lr-high", tmp_path / "lr-low"]
    for run, lr in zip(runs, ("1e-2", "1e-3"), strict=True):
        args = train_args(tiny_dir("gemma3"), data, run, 6)
        args[args.index("--lr") + 1] = lr
        proc = gemmaforge(*args)
        assert proc.wait(600) == 0, "".join(proc.lines)
    proc = gemmaforge("dashboard", *map(str, runs), "--port", "0")
    try:
        browser.get(dashboard_url(proc))
        names = browser.execute_script(
            "return [...document.querySelectorAll('tr.run')].map(r => r.dataset.run);"
        )
        assert names == ["lr-high", "lr-low"]
        assert texts(browser, "tr.run .status") == ["finished", "finished"]
        labels = browser.execute_script(
            """return [...document.querySelectorAll('.chart[data-title="loss"] path')]
                   .map(p => p.dataset.label);"""
        )
        assert {"lr-high train", "lr-low train"} <= set(labels)
        config = texts(browser, "table.config")[0]
        assert "train.lr" in config and "train.output_dir" in config
        assert "train.max_steps" not in config  # the same in both: not a difference
        screenshot(browser, "dashboard-compare")
    finally:
        proc.terminate()
        proc.wait(30)


def test_reading_tolerates_partial_files(tmp_path):
    """A run being written: no config yet, a torn last metrics line; two runs' config diff."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    (a / "config.yaml").write_text("train:\n  lr: 0.01\n  seed: 1\n")
    (b / "config.yaml").write_text("train:\n  lr: 0.001\n  seed: 1\n")
    runs = load_runs([a, b])
    assert [r["step"] for r in runs[0].metrics] == [1]
    assert runs[0].status == "training"
    assert runs[1].status == "starting"
    assert config_rows(runs) == (["train.lr"], [[0.01, 0.001]])


def test_sample_media_and_data_check_are_served(tmp_path):
    """A sample's local image is served by index (a path not named by the run is not), and
    data_check.json's findings are listed; over a real server on 127.0.0.1."""
    import urllib.error
    import urllib.request

    from PIL import Image

    from gemmaforge.dashboard.app import start

    run = tmp_path / "run"
    run.mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "cat.png")
    sample = {
        "step": 5,
        "where": "train.jsonl:1",
        "prompt": "Describe this image.",
        "reply": "A red square.",
        "reference": "A red cat.",
        "media": [{"kind": "image", "ref": str(tmp_path / "cat.png")}],
    }
    (run / "samples.jsonl").write_text(json.dumps(sample) + "\n")
    finding = {"kind": "duplicate", "severity": "warning", "message": "train.jsonl:3: dup. Fix: x"}
    check = {"errors": 0, "warnings": 1, "findings": [finding]}
    (run / "data_check.json").write_text(json.dumps(check))
    served = start([run], port=0)
    try:
        page = urllib.request.urlopen(served.url).read().decode()
        assert '<img src="media/0"' in page
        assert "A red square." in page and "A red cat." in page
        assert "train.jsonl:3: dup. Fix: x" in page and "0 errors, 1 warnings" in page
        image = urllib.request.urlopen(served.url + "media/0").read()
        assert image == (tmp_path / "cat.png").read_bytes()
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(served.url + "media/1")
        assert missing.value.code == 404
    finally:
        served.stop()
