"""No secret is written down: storage option credentials and pre-signed URL query strings
never reach the run folder, the console or the exported adapter's card (issue 12)."""

from __future__ import annotations

import functools
import http.server
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gemmaforge.redact import redact_options, redact_text, redact_url
from tiny_runs import ANSWERS, write_rows

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
}
SECRETS = ("SIGsecret123", "CREDsecret456", "TOKsecret789", "HDRsecret000")


def test_redaction_keeps_what_identifies_and_hides_what_authorises():
    url = "https://bucket.s3.amazonaws.com/d/train.jsonl?X-Amz-Signature=abc&X-Amz-Credential=k&v=2"
    out = redact_url(url)
    assert out.startswith("https://bucket.s3.amazonaws.com/d/train.jsonl?")
    assert "abc" not in out and "=k&" not in out and "v=2" in out and "REDACTED-" in out
    assert redact_url(url) == out  # stable: same URL, same hash
    assert "pw" not in redact_url("s3://user:pw@host/x")
    assert redact_options({"key": "AKIA1", "secret": "s", "endpoint_url": "http://h:9"}) == {
        "key": redact_options({"key": "AKIA1"})["key"],
        "secret": redact_options({"secret": "s"})["secret"],
        "endpoint_url": "http://h:9",
    }
    assert "tokval" not in redact_text("train.jsonl?token=tokval and sig=x")


@pytest.fixture
def http_folder(tmp_path):
    """A loopback HTTP server for `tmp_path/www` (ignores query strings, as S3 would not)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_no_secret_in_the_run_folder_or_console(tiny_dir, tmp_path, http_folder):
    root, base = http_folder
    write_rows(root / "train.jsonl", ANSWERS["plain"], rows=8)
    url = (
        f"{base}/train.jsonl?X-Amz-Signature={SECRETS[0]}&X-Amz-Credential={SECRETS[1]}"
        f"&token={SECRETS[2]}"
    )
    config = tmp_path / "run.yaml"
    config.write_text(
        json.dumps(
            {
                "model": {"name_or_path": str(tiny_dir("gemma3"))},
                "data": {
                    "train": url,
                    "storage_options": {"headers": {"Authorization": f"Bearer {SECRETS[3]}"}},
                },
                "lora": {"r": 4},
                "train": {"output_dir": str(tmp_path / "run"), "max_steps": 2, "batch_size": 2},
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "gemmaforge", "train", str(config)],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    export = subprocess.run(
        [
            sys.executable,
            "-m",
            "gemmaforge",
            "export",
            str(tmp_path / "run"),
            "--format",
            "peft",
            "--output",
            str(tmp_path / "peft"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )
    shown = done.stdout + done.stderr + export.stdout + export.stderr
    files = [p for d in ("run", "peft") for p in (tmp_path / d).rglob("*") if p.is_file()]
    assert any(p.name == "config.yaml" for p in files)
    for secret in SECRETS:
        assert secret not in shown, secret
        for path in files:
            assert secret.encode() not in path.read_bytes(), f"{secret} in {path}"
    # What identifies the data is kept: the host and path, and a hash of the signature.
    assert (
        f"{base}/train.jsonl?X-Amz-Signature=REDACTED-"
        in (tmp_path / "run" / "config.yaml").read_text()
    )
    run = tmp_path / "run"
    # The streamed source's rows are counted as read (the card said 0 before).
    card = next(p for p in files if p.name == "README.md" and p.parent == run)
    row = next(line for line in card.read_text().splitlines() if "train.jsonl" in line)
    assert row.endswith("| 8 |"), row
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    assert stat.S_IMODE((run / "config.yaml").stat().st_mode) == 0o600


def test_config_show_hides_storage_credentials(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gemmaforge",
            "config",
            "show",
            f"data.storage_options={{key: AKIA{SECRETS[1]}, secret: {SECRETS[2]}, anon: false}}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    assert done.returncode == 0, done.stderr
    assert SECRETS[1] not in done.stdout and SECRETS[2] not in done.stdout
    assert "REDACTED-" in done.stdout and "anon: false" in done.stdout
