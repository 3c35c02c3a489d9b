"""No egress: local verbs connect nowhere (checked by a hook of the test's own, with the guard
off), a remote-S3 run contacts only its endpoint, and an unnamed host is refused with a message
naming it and the setting that would allow it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gemmaforge import netguard
from gemmaforge.cli import app

ROOT = Path(__file__).resolve().parents[1]

# Installed in every Python process of the test through sitecustomize: records each socket
# connect / sendto / name lookup to a file, whatever gemmaforge's own guard does.
RECORDER = textwrap.dedent(
    """
    import json, os, sys

    _log = os.environ["NET_RECORD"]

    def _hook(event, args):
        if event in ("socket.connect", "socket.sendto", "socket.getaddrinfo"):
            target = args[-1] if event != "socket.getaddrinfo" else (args[0], args[1])
            family = getattr(args[0], "family", None) if event != "socket.getaddrinfo" else None
            if family is not None and int(family) not in (2, 10):
                return  # AF_UNIX and kin stay on the machine
            with open(_log, "a") as handle:
                handle.write(json.dumps([event, repr(target), sys.argv[:3]]) + "\\n")

    sys.addaudithook(_hook)
    """
)


def _rows(path: Path, n: int = 24) -> Path:
    with path.open("w") as handle:
        for i in range(n):
            messages = [
                {"role": "user", "content": f"What is {i} plus one?"},
                {"role": "assistant", "content": f"{i + 1}."},
            ]
            handle.write(json.dumps({"messages": messages}) + "\n")
    return path


@pytest.mark.slow
def test_local_train_eval_export_and_data_check_attempt_no_connection(tiny_dir, tmp_path):
    """The fact, not the guard: with GEMMAFORGE_NETGUARD=off, an independent audit hook in each
    process records every connection attempt and name lookup; there must be none."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(RECORDER)
    record = tmp_path / "net.jsonl"
    env = {
        **os.environ,
        "PYTHONPATH": f"{site}{os.pathsep}{ROOT / 'src'}",
        "NET_RECORD": str(record),
        netguard.ENV_SWITCH: "off",
    }
    env.pop("HF_HUB_OFFLINE", None)  # what a user has: nothing set to keep libraries quiet
    data = _rows(tmp_path / "train.jsonl")
    model, run = tiny_dir("gemma3"), tmp_path / "run"
    gf = [sys.executable, "-m", "gemmaforge"]
    train = ["train", "--model", str(model), "--data", str(data), "--output", str(run)]
    commands = [
        [*gf, "data", "check", str(data), "--model", str(model)],
        [*gf, *train, "--max-steps", "2", "--batch-size", "4"],
        [*gf, "eval", str(run), "--limit", "2", "--max-new-tokens", "4"],
        [*gf, "export", str(run), "--format", "peft", "--output", str(tmp_path / "peft")],
    ]
    for command in commands:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-3000:])
    # The recorder ran (a lookup of our own proves the hook is live), then nothing else.
    check = subprocess.run(
        [sys.executable, "-c", "import socket; socket.getaddrinfo('localhost', 1)"], env=env
    )
    assert check.returncode == 0
    lines = record.read_text().splitlines()
    assert len(lines) == 1 and "localhost" in lines[0], lines


def test_unnamed_hosts_are_refused_with_the_setting_that_allows_them(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        with netguard.guard() as guard:
            with pytest.raises(netguard.NetworkRefused) as refused:
                socket.create_connection(("127.0.0.1", port), timeout=2)
            assert f"127.0.0.1:{port}" in str(refused.value)
            assert "data.storage_options.endpoint_url" in str(refused.value)
            with pytest.raises(netguard.NetworkRefused, match=r"example\.invalid"):
                socket.getaddrinfo("example.invalid", 443)
            # Naming it allows it, and the log says which setting did.
            netguard.allow_url(f"http://127.0.0.1:{port}/bucket", "data.train")
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            # Another port on the same host stays refused.
            with pytest.raises(netguard.NetworkRefused):
                socket.create_connection(("127.0.0.1", port + 1 if port < 65535 else 1))
            # Local sockets are not network.
            left, right = socket.socketpair(socket.AF_UNIX)
            left.close(), right.close()
        entries = guard.entries()
    finally:
        listener.close()
    allowed = [e for e in entries if e["allowed"] and e["event"] == "connect"]
    assert allowed == [
        {
            "event": "connect",
            "host": "127.0.0.1",
            "port": port,
            "allowed": True,
            "setting": "data.train",
            "count": 1,
        }
    ]
    assert {e["host"] for e in entries if not e["allowed"]} == {"127.0.0.1", "example.invalid"}
    # Outside a guarded verb, nothing is checked.
    socket.getaddrinfo("localhost", 1)


def test_hub_download_allows_the_hub_and_its_cdn_only():
    with netguard.guard() as guard:
        netguard.allow_hub()
        assert guard.rule_for("cas-bridge.xethub.hf.co", 443).setting == "model.allow_download"
        assert guard.rule_for("huggingface.co", 443) is not None
        assert guard.rule_for("evilhuggingface.co", 443) is None
        assert guard.rule_for("huggingface.co.evil.example", 443) is None


def test_rules_reach_a_child_process():
    """bench's worker runs in a child: it inherits the verb's rules and is guarded too."""
    code = (
        "from gemmaforge import netguard; import socket; netguard.install_inherited()\n"
        "try:\n socket.getaddrinfo('example.invalid', 80)\n"
        "except netguard.NetworkRefused as e: print('refused', e.host)\n"
        "print(netguard.active().rule_for('data.example', 443).setting)\n"
    )
    with netguard.guard():
        netguard.allow_url("https://data.example/x.jsonl", "data.train")
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
    out = done.stdout.decode()
    assert "refused example.invalid" in out and "data.train" in out, done.stderr.decode()


def test_data_check_on_s3_reaches_only_the_named_endpoint(s3, tmp_path, tiny_dir, monkeypatch):
    """The endpoint comes from the environment (AWS_ENDPOINT_URL), not the config: the guard
    refuses it, naming the host and the setting; named in storage_options, it is read."""
    url = s3.put("guarded/train.jsonl", _rows(tmp_path / "t.jsonl").read_bytes())
    runner = CliRunner()
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    host_port = s3.endpoint.removeprefix("http://")
    refused = runner.invoke(
        app, ["data", "check", url, "--model", str(tiny_dir("gemma3")), "data.retries=0"]
    )
    assert refused.exit_code == 2, refused.output
    assert host_port in refused.output and "network guard" in refused.output
    assert "data.storage_options.endpoint_url" in refused.output

    seen: list[list[dict]] = []
    original = netguard.guard

    def spying(*args, **kwargs):
        context = original(*args, **kwargs)
        guard = context.__enter__()
        seen.append(guard.log)
        return _Exit(context, guard)

    monkeypatch.setattr(netguard, "guard", spying)
    options = json.dumps(s3.storage_options)
    model = str(tiny_dir("gemma3"))
    done = runner.invoke(
        app, ["data", "check", url, "--model", model, f"data.storage_options={options}"]
    )
    assert done.exit_code == 0, done.output
    entries = list(seen[-1].values())
    contacted = {(e["host"], e["port"], e["setting"]) for e in entries if e["event"] == "connect"}
    assert contacted == {
        ("127.0.0.1", int(host_port.split(":")[1]), "data.storage_options.endpoint_url")
    }
    assert all(e["allowed"] for e in entries), entries


class _Exit:
    """A context manager that was entered already (to keep the guard's log for the test)."""

    def __init__(self, context, guard):
        self.context, self.guard = context, guard

    def __enter__(self):
        return self.guard

    def __exit__(self, *exc):
        return self.context.__exit__(*exc)
