"""The hub server on loopback: what it refuses (and then stores nothing), races, crashes,
limits, and a bounded schemathesis run against its OpenAPI schema.

Publishing goes through the real client and the real gate; the adapter is a tiny Gemma 4
run trained for a few steps.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import struct
import threading
import time
from pathlib import Path

import pytest
import requests
import schemathesis

from gemmaforge import signing
from gemmaforge.errors import UserError
from gemmaforge.hub.client.publish import base_for_run, build_folder, publish, upload_folder
from gemmaforge.hub.server import Settings
from gemmaforge.runs import open_run
from hub_support import (
    BASE_ID,
    BASE_REVISION,
    HubProcess,
    HubServer,
    set_up_publisher,
    train_tiny,
)

BASE = {"id": BASE_ID, "revision": BASE_REVISION}


@pytest.fixture(scope="module")
def run(tiny_dir, tmp_path_factory):
    return train_tiny(tiny_dir("gemma4"), tmp_path_factory.getbasetemp() / "hub-run-gemma4")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = HubServer(Settings(root=tmp_path_factory.mktemp("hub")))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def publisher(hub, tiny_dir, tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys") / "clinic"
    return set_up_publisher(hub.url, hub.token("clinic"), "clinic", keys, tiny_dir("gemma4"))


def signed_folder(run: Path, publisher, out: Path, key: Path | None = None) -> Path:
    client = publisher.client()
    base = base_for_run(client, open_run(run), None)
    build_folder(run, out, base, "gemma", hf_card=False)
    signing.sign(out, key or publisher.private)
    return out


def versions(hub, name: str) -> list[str]:
    response = requests.get(f"{hub.url}/api/adapters/{name}", timeout=10)
    if response.status_code == 404:
        return []
    return [v["version"] for v in response.json()["versions"]]


def refused(call) -> str:
    with pytest.raises(UserError) as caught:
        call()
    return "\n".join(caught.value.problems)


def test_publish_then_duplicate_is_409_and_stores_nothing(hub, publisher, run):
    done = publish(publisher.client(), run, "clinic/notes", "v1", publisher.private, "gemma")
    assert done.base == f"{BASE_ID}@{BASE_REVISION}"  # found by the run's base weights hash
    assert done.modalities == ["text"]
    # Straight to the server (the client checks first): the server's own answer is a 409.
    folder = signed_folder(run, publisher, hub.settings.root.parent / "dup")
    body = {"version": "v1", "files": {}, "base": BASE, "licence": "gemma"}
    for path in sorted(folder.iterdir()):
        body["files"][path.name] = publisher.client().upload(path)
    response = requests.post(
        f"{hub.url}/api/adapters/clinic/notes/versions",
        json=body,
        headers={"Authorization": f"Bearer {publisher.token}"},
        timeout=60,
    )
    assert response.status_code == 409
    assert "already exists" in response.json()["error"]
    message = refused(
        lambda: publish(publisher.client(), run, "clinic/notes", "v1", publisher.private, "gemma")
    )
    assert "already exists" in message
    assert versions(hub, "clinic/notes") == ["v1"]


def test_missing_signature_refused(hub, publisher, run, tmp_path):
    folder = signed_folder(run, publisher, tmp_path / "a")
    (folder / "model.sig").unlink()
    message = refused(
        lambda: upload_folder(publisher.client(), "clinic/unsigned", "v1", folder, BASE, "gemma")
    )
    assert "not signed" in message
    assert versions(hub, "clinic/unsigned") == []


def test_forged_signature_refused(hub, publisher, run, tmp_path):
    other, _ = signing.keygen(tmp_path / "thief")
    folder = signed_folder(run, publisher, tmp_path / "a", key=other)
    message = refused(
        lambda: upload_folder(publisher.client(), "clinic/forged", "v1", folder, BASE, "gemma")
    )
    assert "another key" in message
    # A signature whose bytes were tampered with.
    folder = signed_folder(run, publisher, tmp_path / "b")
    bundle = json.loads((folder / "model.sig").read_text())
    sig = bundle["dsseEnvelope"]["signatures"][0]["sig"]
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = ("A" if sig[0] != "A" else "B") + sig[1:]
    (folder / "model.sig").write_text(json.dumps(bundle))
    assert refused(
        lambda: upload_folder(publisher.client(), "clinic/forged", "v1", folder, BASE, "gemma")
    )
    assert versions(hub, "clinic/forged") == []


def test_one_byte_changed_after_signing_refused(hub, publisher, run, tmp_path):
    folder = signed_folder(run, publisher, tmp_path / "a")
    weights = folder / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    (header_size,) = struct.unpack("<Q", data[:8])
    data[8 + header_size + 3] ^= 0x01  # one byte of tensor data, header still valid
    weights.write_bytes(bytes(data))
    message = refused(
        lambda: upload_folder(publisher.client(), "clinic/changed", "v1", folder, BASE, "gemma")
    )
    assert "adapter_model.safetensors" in message and "changed after signing" in message
    assert versions(hub, "clinic/changed") == []


def test_blob_not_matching_its_name_is_not_stored(hub, publisher):
    data = b"some bytes"
    wrong = hashlib.sha256(b"other").hexdigest()
    response = requests.put(
        f"{hub.url}/api/blobs/{wrong}",
        data=data,
        headers={"Authorization": f"Bearer {publisher.token}"},
        timeout=10,
    )
    assert response.status_code == 400 and "hash to" in response.json()["error"]
    assert not hub.app.state.hub.store.exists(wrong)
    assert not hub.app.state.hub.store.exists(hashlib.sha256(data).hexdigest())


def test_unsafe_names_unknown_base_and_auth(hub, publisher, tmp_path):
    client = publisher.client()
    sha = client.upload(_write(tmp_path / "x.json", b"{}"))
    headers = {"Authorization": f"Bearer {publisher.token}"}
    url = f"{hub.url}/api/adapters/clinic/bad/versions"
    for path in ("../x.json", "/etc/x.json", "a/../../x.json", "C:/x.json"):
        body = {"version": "v1", "files": {path: sha}, "base": BASE, "licence": "mit"}
        response = requests.post(url, json=body, headers=headers, timeout=10)
        assert response.status_code == 422 and "unsafe" in response.json()["error"], path
    body = {"version": "v1", "files": {"x.json": sha}, "base": {**BASE, "revision": "nope"}}
    response = requests.post(url, json={**body, "licence": "mit"}, headers=headers, timeout=10)
    assert response.status_code == 422 and "not registered" in response.json()["error"]
    # No token, a bad token, another namespace's token.
    assert requests.post(url, json=body, timeout=10).status_code == 401
    bad = {"Authorization": "Bearer gfh_nope"}
    assert requests.post(url, json=body, headers=bad, timeout=10).status_code == 401
    other = {"Authorization": f"Bearer {hub.token('lawfirm')}"}
    response = requests.post(url, json={**body, "licence": "mit"}, headers=other, timeout=10)
    assert response.status_code == 403 and "lawfirm" in response.json()["error"]
    assert versions(hub, "clinic/bad") == []


def test_pinned_key_cannot_be_replaced(hub, publisher, tmp_path):
    _, public = signing.keygen(tmp_path / "k")
    message = refused(lambda: publisher.client().add_key(public.read_text()))
    assert "pinned" in message
    assert publisher.client().add_key(publisher.public.read_text())["pinned"]


def test_concurrent_publishes_of_one_version_exactly_one_wins(hub, publisher, run, tmp_path):
    folder = signed_folder(run, publisher, tmp_path / "a")
    results: list[object] = []

    def attempt():
        try:
            upload_folder(publisher.client(), "clinic/race", "v1", folder, BASE, "gemma")
            results.append("ok")
        except UserError as exc:
            results.append("\n".join(exc.problems))

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results.count("ok") == 1, results
    assert all("409" in r for r in results if r != "ok"), results
    assert versions(hub, "clinic/race") == ["v1"]


def test_yank_moves_latest_and_hides_from_search(hub, publisher, run, tmp_path):
    client = publisher.client()
    publish(client, run, "clinic/yanky", "v1", publisher.private, "gemma")
    publish(client, run, "clinic/yanky", "v2", publisher.private, "gemma")
    assert client.adapter("clinic", "yanky")["tags"] == {"latest": "v2"}
    client.yank("clinic", "yanky", "v2", "leaks a phone number")
    assert client.adapter("clinic", "yanky")["tags"] == {"latest": "v1"}
    found = {r["name"]: r["version"] for r in client.search("yanky")}
    assert found == {"clinic/yanky": "v1"}
    shown = client.version("clinic", "yanky", "v2")
    assert shown["yanked"] and shown["yank_reason"] == "leaks a phone number"
    # A pinned deployment can still pull it, with a warning that gives the reason.
    from gemmaforge.hub.client.pull import pull

    pulled = pull(client, "clinic/yanky@v2", cache=tmp_path / "cache")
    assert any("leaks a phone number" in w for w in pulled.warnings)
    assert pull(client, "clinic/yanky", cache=tmp_path / "cache").info["version"] == "v1"


def test_limits_and_private_reads(tmp_path):
    server = HubServer(
        Settings(
            root=tmp_path / "hub",
            private=True,
            max_json_bytes=1000,
            rate_burst=5,
            rate_per_s=0.1,
            max_blob_bytes=100,
        )
    )
    try:
        token = server.token("ns")
        auth = {"Authorization": f"Bearer {token}"}
        response = requests.get(f"{server.url}/api/adapters", timeout=10)
        assert response.status_code == 401 and "private" in response.json()["error"]
        assert requests.get(f"{server.url}/api/adapters", headers=auth, timeout=10).ok
        big = requests.post(f"{server.url}/api/keys", data=b"x" * 2000, headers=auth, timeout=10)
        assert big.status_code == 413 and "error" in big.json()
        data = b"y" * 200
        sha = hashlib.sha256(data).hexdigest()
        put = requests.put(f"{server.url}/api/blobs/{sha}", data=data, headers=auth, timeout=10)
        assert put.status_code == 413
        codes = [
            requests.get(f"{server.url}/api/bases", headers=auth, timeout=10).status_code
            for _ in range(8)
        ]
        assert 429 in codes
        limited = requests.get(f"{server.url}/api/adapters", headers=auth, timeout=10)
        assert limited.status_code == 429 and "slow down" in limited.json()["error"]
    finally:
        server.stop()


def test_killed_mid_upload_leaves_no_version_and_orphans_are_collected(run, tiny_dir, tmp_path):
    root = tmp_path / "hub"
    first = HubProcess(root)
    try:
        token = _cli_token(root, "clinic")
        pub = set_up_publisher(first.url, token, "clinic", tmp_path / "keys", tiny_dir("gemma4"))
        folder = signed_folder(run, pub, tmp_path / "a")
        client = pub.client()
        # Every file but one uploaded: orphans, since no version refers to them ...
        for path in sorted(folder.iterdir())[:-1]:
            client.upload(path)
        # ... and one more cut off mid-stream by a SIGKILL.
        sha = hashlib.sha256(b"z" * (8 << 20)).hexdigest()
        sent = threading.Event()

        def body():
            yield b"z" * (1 << 20)
            sent.set()
            time.sleep(30)
            yield b"z" * (7 << 20)

        upload = threading.Thread(
            target=_quiet_put, args=(f"{first.url}/api/blobs/{sha}", body(), token), daemon=True
        )
        upload.start()
        assert sent.wait(30)
        deadline = time.monotonic() + 30
        while not any((root / "uploads").glob("*")):
            assert time.monotonic() < deadline, "the upload never reached the server"
            time.sleep(0.1)
        first.kill()
    finally:
        first.stop()
    assert list((root / "uploads").iterdir()), "the cut-off upload left its temp file"
    assert [p for p in (root / "blobs").rglob("*") if p.is_file()], "the orphans are there"
    second = HubProcess(root, "--orphan-minutes", "0")
    try:
        response = requests.get(f"{second.url}/api/adapters/clinic/a", timeout=10)
        assert response.status_code == 404
        assert requests.get(f"{second.url}/api/adapters", timeout=10).json()["results"] == []
        assert not list((root / "uploads").iterdir())
        assert [p for p in (root / "blobs").rglob("*") if p.is_file()] == []
    finally:
        second.stop()


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(hub, publisher):
    """Every operation of the OpenAPI schema, 50 generated requests each (with a valid
    token, so the generated bodies reach the handlers): never a 5xx."""
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(f"{hub.url}/openapi.json")
    auth = {"Authorization": f"Bearer {publisher.token}"}
    failures, calls = [], []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10

    for operation in operations:

        @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case):
            response = case.call(base_url=hub.url, headers=auth, timeout=30)
            calls.append(response.status_code)
            if response.status_code >= 500:
                failures.append((case.method, case.formatted_path, response.text[:300]))

        check()
    assert failures == []
    assert len(calls) > 10 * len(operations)


def _cli_token(root: Path, namespace: str) -> str:
    from typer.testing import CliRunner

    from gemmaforge.cli import app

    result = CliRunner().invoke(app, ["hub", "token", "create", namespace, "--root", str(root)])
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


def _quiet_put(url: str, body, token: str) -> None:
    with contextlib.suppress(requests.RequestException):
        requests.put(url, data=body, headers={"Authorization": f"Bearer {token}"}, timeout=60)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_licence_must_follow_the_base(hub, publisher, run, tmp_path):
    message = refused(
        lambda: publish(publisher.client(), run, "clinic/lic", "v1", publisher.private, "mit")
    )
    assert "Gemma Terms of Use" in message
    folder = signed_folder(run, publisher, tmp_path / "a")
    message = refused(
        lambda: upload_folder(publisher.client(), "clinic/lic", "v1", folder, BASE, "mit")
    )
    assert "Gemma Terms of Use" in message
    assert versions(hub, "clinic/lic") == []


def test_chunked_json_body_over_the_cap_is_413(tmp_path):
    server = HubServer(Settings(root=tmp_path / "hub", max_json_bytes=1000))
    try:
        auth = {"Authorization": f"Bearer {server.token('ns')}"}

        def chunks():  # no Content-Length: sent chunked
            yield b'{"pem": "'
            for _ in range(100):
                yield b"x" * 100
            yield b'"}'

        response = requests.post(
            f"{server.url}/api/keys",
            data=chunks(),
            headers={**auth, "Content-Type": "application/json"},
            timeout=10,
        )
        assert response.status_code == 413 and "over 1000 bytes" in response.json()["error"]
        # Anonymous callers cannot probe which blobs were uploaded.
        sha = hashlib.sha256(b"x").hexdigest()
        assert requests.head(f"{server.url}/api/blobs/{sha}", timeout=10).status_code == 401
    finally:
        server.stop()


def test_eval_report_is_kept_as_self_reported_and_pulls_are_counted(hub, publisher, run, tmp_path):
    from gemmaforge.hub.client.pull import pull

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "eval").mkdir(exist_ok=True)
    rows = [{"prompt": "What colour is the sky?", "reference": "Blue."}]
    report = {"metrics": {"base": {"exact": 0.0}, "adapter": {"exact": 1.0}}, "examples": rows}
    (copy / "eval" / "report.json").write_text(json.dumps(report))
    client = publisher.client()
    publish(client, copy, "clinic/evaluated", "v1", publisher.private, "gemma")
    shown = client.version("clinic", "evaluated", "v1")
    (evaluation,) = shown["eval_reports"]
    assert evaluation["self_reported"] is True
    assert evaluation["report"]["metrics"]["adapter"] == {"exact": 1.0}
    expected = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    assert evaluation["eval_set_sha256"] == expected
    assert shown["pulls"] == 0
    pull(publisher.client(None), "clinic/evaluated@v1", cache=tmp_path / "cache")
    assert client.version("clinic", "evaluated", "v1")["pulls"] == 1


@pytest.mark.parametrize("where", ["local", "s3"])
def test_blob_store_keeps_referenced_and_young_blobs(where, tmp_path, request):
    from gemmaforge.hub.server.storage import BlobStore, HashMismatch

    if where == "s3":
        s3 = request.getfixturevalue("s3")
        store = BlobStore(f"s3://hub-store/{tmp_path.name}", s3.storage_options)
    else:
        store = BlobStore(str(tmp_path / "blobs"))
    kept, orphan = b"kept", b"orphan"
    for data in (kept, orphan):
        sha = hashlib.sha256(data).hexdigest()
        assert store.put_stream(sha, iter([data[:2], data[2:]]), 100) == len(data)
        assert b"".join(store.open(sha)) == data
    with pytest.raises(HashMismatch):
        store.put_stream(hashlib.sha256(b"x").hexdigest(), iter([b"y"]), 100)
    assert not store.exists(hashlib.sha256(b"x").hexdigest())
    referenced = {hashlib.sha256(kept).hexdigest()}
    assert store.collect_orphans(referenced, older_than_s=3600) == []  # too young
    assert store.collect_orphans(referenced, older_than_s=0) == [hashlib.sha256(orphan).hexdigest()]
    assert store.exists(hashlib.sha256(kept).hexdigest())
    assert not store.exists(hashlib.sha256(orphan).hexdigest())


def test_base_records_are_checked_before_registering(hub, publisher, tiny_dir):
    from gemmaforge.hub import bases

    good = json.loads(bases.read_base(tiny_dir("gemma4"), "tiny/other", "r1", "gemma").to_json())
    client = publisher.client()
    for change, words in (
        ({"id": "/home/me/gemma"}, "local path"),
        ({"revision": ""}, "no revision"),
        ({"licence": "not-a-licence"}, "SPDX"),
        ({"shapes": {"w": ["x"]}}, "shapes"),
    ):
        assert words in refused(lambda change=change: client.add_base({**good, **change}))
    assert client.bases(id="/home/me/gemma") == []
    assert client.add_base(good)["id"] == "tiny/other"
    changed = {**good, "weights_sha256": "0" * 64}
    assert "already registered" in refused(lambda: client.add_base(changed))
