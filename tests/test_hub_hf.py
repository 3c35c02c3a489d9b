"""Hugging Face compatibility: the real `huggingface_hub` client pulls an adapter from our hub
on loopback (`snapshot_download`, `hf_hub_download`, `model_info`), gets the right errors for
a missing repo, revision or file, and the files it gets are byte for byte what was published.

conftest.py sets HF_HUB_OFFLINE=1 for the whole session; these tests switch huggingface_hub
online (its module-level flag, via monkeypatch) and point it only at 127.0.0.1.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gemmaforge.files import sha256_file
from gemmaforge.hub.client.publish import publish
from gemmaforge.hub.server import Settings
from hub_support import BASE_ID, HubServer, set_up_publisher, train_tiny

REPO = "clinic/notes"


@pytest.fixture(scope="module")
def published(tiny_dir, tmp_path_factory):
    run = train_tiny(tiny_dir("gemma4"), tmp_path_factory.getbasetemp() / "hub-run-gemma4")
    server = HubServer(Settings(root=tmp_path_factory.mktemp("hub")))
    keys = tmp_path_factory.mktemp("keys") / "clinic"
    pub = set_up_publisher(server.url, server.token("clinic"), "clinic", keys, tiny_dir("gemma4"))
    client = pub.client()
    publish(client, run, REPO, "v1", pub.private, "gemma", hf_card=True)
    publish(client, run, REPO, "v2", pub.private, "gemma", domain="medical")
    yield server, client.version("clinic", "notes", "v1")
    server.stop()


@pytest.fixture
def hf(monkeypatch, tmp_path):
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    return huggingface_hub


def test_snapshot_download_of_a_version(published, hf, tmp_path):
    server, info = published
    folder = hf.snapshot_download(
        repo_id=REPO, revision="v1", endpoint=server.url, cache_dir=str(tmp_path / "cache")
    )
    got = {p.name: sha256_file(p) for p in Path(folder).iterdir()}
    assert got == {f["path"]: f["sha256"] for f in info["files"]}
    assert Path(folder).name == info["digest"][:40]  # the commit id huggingface_hub keys on
    # `main` (the Hub's default branch) is the latest version.
    latest = hf.snapshot_download(
        repo_id=REPO, endpoint=server.url, cache_dir=str(tmp_path / "cache")
    )
    assert Path(latest).name != Path(folder).name


def test_hf_hub_download_and_model_info(published, hf, tmp_path):
    server, info = published
    path = hf.hf_hub_download(
        REPO,
        "adapter_model.safetensors",
        revision="v1",
        endpoint=server.url,
        cache_dir=str(tmp_path / "cache"),
    )
    expected = next(f for f in info["files"] if f["path"] == "adapter_model.safetensors")
    assert sha256_file(path) == expected["sha256"]
    model = hf.HfApi(endpoint=server.url).model_info(REPO, revision="v1")
    assert model.sha == info["digest"][:40]
    assert {s.rfilename for s in model.siblings} == {f["path"] for f in info["files"]}
    assert model.card_data.base_model == BASE_ID
    assert model.library_name == "peft"


def test_errors_are_the_ones_huggingface_hub_expects(published, hf, tmp_path):
    from huggingface_hub.errors import (
        EntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    server, _ = published
    cache = str(tmp_path / "cache")
    with pytest.raises(RepositoryNotFoundError):
        hf.hf_hub_download("clinic/nothing", "README.md", endpoint=server.url, cache_dir=cache)
    with pytest.raises(RevisionNotFoundError):
        hf.hf_hub_download(REPO, "README.md", revision="v9", endpoint=server.url, cache_dir=cache)
    with pytest.raises(EntryNotFoundError):
        hf.hf_hub_download(REPO, "missing.bin", revision="v1", endpoint=server.url, cache_dir=cache)


def test_byte_ranges(published):
    import requests

    server, info = published
    expected = next(f for f in info["files"] if f["path"] == "adapter_config.json")
    url = f"{server.url}/{REPO}/resolve/v1/adapter_config.json"
    whole = requests.get(url, timeout=10)
    assert whole.headers["X-Repo-Commit"] == info["digest"][:40]
    assert whole.headers["ETag"] == f'"{expected["sha256"]}"'
    part = requests.get(url, headers={"Range": "bytes=2-9"}, timeout=10)
    assert part.status_code == 206 and part.content == whole.content[2:10]
    assert part.headers["Content-Range"] == f"bytes 2-9/{expected['size']}"
