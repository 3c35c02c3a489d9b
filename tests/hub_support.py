"""Shared pieces of the hub tests: a hub server on loopback (in a thread, or a subprocess that
can be SIGKILLed), a tiny Gemma 4 run to publish, and a publisher set up on a hub (token,
signing key, registered base).

Everything listens on 127.0.0.1 on a port the OS picked.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from gemmaforge.hub.server import Settings, create_app
from tiny_runs import ANSWERS, write_rows

BASE_ID = "tiny-google/gemma-4-tiny"
BASE_REVISION = "0123456789abcdef0123456789abcdef01234567"
SRC = Path(__file__).resolve().parents[1] / "src"


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


class HubServer:
    """`create_app(settings)` served by uvicorn in a thread."""

    def __init__(self, settings: Settings, web: bool = False):
        self.settings = settings
        if web:  # the API plus the web pages, as `gemmaforge hub serve` runs it
            from gemmaforge.hub.web import create_site

            self.app = create_site(settings)
        else:
            self.app = create_app(settings)
        sock = free_socket()
        self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "hub did not start"
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, namespace: str) -> str:
        from gemmaforge.hub.server.auth import create_token

        with self.app.state.hub.sessions() as session:
            return create_token(session, namespace)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class HubProcess:
    """`gemmaforge hub serve` in its own process (so a test can SIGKILL it)."""

    def __init__(self, root: Path, *extra: str, env: dict | None = None):
        sock = free_socket()
        self.port = sock.getsockname()[1]
        sock.close()
        self.root = root
        command = [sys.executable, "-m", "gemmaforge", "hub", "serve", "--root", str(root)]
        command += ["--port", str(self.port), *extra]
        environ = {**os.environ, "PYTHONPATH": str(SRC), **(env or {})}
        self.process = subprocess.Popen(
            command, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, self.process.stderr.read().decode()
            assert time.monotonic() < deadline, "hub process did not start"
            try:
                urllib.request.urlopen(f"{self.url}/api/health", timeout=2).read()
                return
            except OSError:
                time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def train_tiny(model_dir: Path, folder: Path, variant: str = "plain", steps: int = 3) -> Path:
    """A finished LoRA run on `model_dir` (a few steps: the hub tests need a real run folder,
    not a good adapter). Reused if `folder` already holds one: the hub test modules pass the
    same folder under pytest's base temp, so one session trains it once."""
    from gemmaforge.config import Config
    from gemmaforge.train.trainer import train

    run = folder / "run"
    if (run / "manifest.json").is_file():
        return run
    folder.mkdir(parents=True, exist_ok=True)
    data = write_rows(folder / "train.jsonl", ANSWERS[variant], rows=16)
    cfg = Config.model_validate(
        {
            "model": {"name_or_path": str(model_dir)},
            "data": {"train": str(data)},
            "lora": {"r": 4, "alpha": 8},
            "train": {"output_dir": str(run), "max_steps": steps, "batch_size": 4, "seed": 0},
        }
    )
    return train(cfg).run_dir


@dataclass
class Publisher:
    """A namespace on a hub with a token, a registered signing key and the tiny base."""

    url: str
    namespace: str
    token: str
    private: Path
    public: Path

    def client(self, token: str | None = "own"):
        from gemmaforge.hub.client.api import HubClient

        return HubClient(self.url, self.token if token == "own" else token)


def set_up_publisher(url: str, token: str, namespace: str, keys: Path, base_dir: Path):
    from gemmaforge import signing
    from gemmaforge.hub import bases
    from gemmaforge.hub.client.api import HubClient

    private, public = signing.keygen(keys)
    client = HubClient(url, token)
    client.add_key(public.read_text())
    record = bases.read_base(base_dir, BASE_ID, BASE_REVISION, "gemma")
    data = record.to_json()
    client.add_base(json.loads(data) if isinstance(data, str) else data)
    return Publisher(url, namespace, token, private, public)
