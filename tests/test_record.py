"""The run record: complete, verifiable (tamper tests), signable with the hub's signing, and
exported as a model card, SPDX 3.0.1 and a CycloneDX ML-BOM that their own libraries read back
with the same hashes and names; planted secrets appear in no output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gemmaforge.cli import app

ROWS = [
    {
        "messages": [
            {"role": "user", "content": f"Add one to {i}."},
            {"role": "assistant", "content": f"{i + 1}"},
        ]
    }
    for i in range(24)
]


TRAIN = ["train", "--max-steps", "2", "--batch-size", "4", "--offline-proof"]


def _write(path: Path, rows=ROWS) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def trained(tiny_dir, tmp_path_factory):
    """(run folder, data file): a 2-step run trained through the CLI, guard on."""
    folder = tmp_path_factory.mktemp("record")
    data = _write(folder / "train.jsonl")
    run = folder / "run"
    done = CliRunner().invoke(
        app,
        [*TRAIN, "--model", str(tiny_dir("gemma3")), "--data", str(data), "--output", str(run)],
    )
    assert done.exit_code == 0, done.output
    assert "network: no host was contacted" in done.output
    return run, data


def _copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def test_record_holds_the_whole_story(trained, tiny_dir):
    run, data = trained
    record = json.loads((run / "record.json").read_text())
    assert record["format"] == "gemmaforge-run-record/1"
    assert record["started"] <= record["ended"]
    [file] = record["data"]["files"]
    import hashlib

    assert file["fingerprint"] == "sha256:" + hashlib.sha256(data.read_bytes()).hexdigest()
    assert file["rows"] == len(ROWS)
    assert (
        record["data"]["split"]["seed"] == 42 and record["data"]["split"]["validation"] == "split"
    )
    base = record["base_model"]
    assert base["source"] == str(tiny_dir("gemma3"))
    assert "model.safetensors" in base["files"]
    assert record["tokenizer"]["files"]  # tokenizer files in the adapter folder
    assert set(record["packages"]) >= {"torch", "transformers", "peft", "accelerate", "datasets"}
    assert record["device"]["type"] == "cpu"
    assert record["metrics"]["step"] == 2
    assert record["network"] == {"guard": "on", "log": []}
    assert "adapter/adapter_model.safetensors" in record["outputs"]
    assert "config.yaml" in record["outputs"] and "record.json" not in record["outputs"]
    manifest = json.loads((run / "manifest.json").read_text())["files"]
    assert "record.json" in manifest


def test_verify_passes_then_names_each_tampered_file(trained, tmp_path):
    run, data = trained
    runner = CliRunner()
    ok = runner.invoke(app, ["verify", str(run), "--data", str(data)])
    assert ok.exit_code == 0, ok.output
    assert "verified" in ok.output

    copy = _copy(run, tmp_path)
    weights = copy / "adapter" / "adapter_model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 1
    weights.write_bytes(bytes(raw))
    config = copy / "config.yaml"
    config.write_text(config.read_text().replace("lr: 0.0002", "lr: 0.0003"))
    changed_data = tmp_path / "train.jsonl"
    changed_data.write_bytes(data.read_bytes().replace(b"Add one to 3", b"Add one to 4"))
    (copy / "extra.txt").write_text("smuggled in")
    done = runner.invoke(app, ["verify", str(copy), "--data", str(changed_data)])
    assert done.exit_code == 1, done.output
    drift = [line for line in done.output.splitlines() if line.startswith("DRIFT")]
    assert any("adapter/adapter_model.safetensors" in line and "changed" in line for line in drift)
    assert any("config.yaml" in line and "changed" in line for line in drift)
    assert any(str(changed_data) in line and "differs" in line for line in drift)
    assert any("extra.txt" in line and "added" in line for line in drift)
    assert len(drift) == 4, drift

    # The record itself, edited to match a change, no longer matches the manifest.
    copy2 = _copy(run, tmp_path / "second")
    record = json.loads((copy2 / "record.json").read_text())
    record["metrics"]["loss"] = 0.01
    (copy2 / "record.json").write_text(json.dumps(record))
    edited = runner.invoke(app, ["verify", str(copy2)])
    assert edited.exit_code == 1 and "record.json" in edited.output


def test_sign_and_verify_with_the_hub_signing(trained, tmp_path):
    from gemmaforge import signing

    run = _copy(trained[0], tmp_path)
    private, public = signing.keygen(tmp_path / "keys")
    runner = CliRunner()
    signed = runner.invoke(app, ["sign", str(run), "--key", str(private)])
    assert signed.exit_code == 0, signed.output
    assert (run / "model.sig").is_file()
    # The same check the hub makes, on the same file list.
    signing.verify(run, public)
    assert "record.json" in signing.signed_files(run)
    ok = runner.invoke(app, ["verify", str(run), "--public-key", str(public)])
    assert ok.exit_code == 0, ok.output
    assert "signature" in ok.output

    _, other_public = signing.keygen(tmp_path / "other")
    wrong = runner.invoke(app, ["verify", str(run), "--public-key", str(other_public)])
    assert wrong.exit_code == 1 and "another key" in wrong.output

    (run / "metrics.jsonl").write_text("{}\n")
    tampered = runner.invoke(app, ["verify", str(run), "--public-key", str(public)])
    assert tampered.exit_code == 1
    assert tampered.output.count("metrics.jsonl") >= 2  # the record and the signature


def test_exports_validate_and_round_trip(trained, tmp_path):
    from cyclonedx.model.bom import Bom
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    from spdx_python_model import load_data

    run, data = trained
    record = json.loads((run / "record.json").read_text())
    adapter_sha = record["outputs"]["adapter/adapter_model.safetensors"]
    data_sha = record["data"]["files"][0]["fingerprint"].removeprefix("sha256:")
    runner = CliRunner()
    paths = {}
    for fmt in ("model-card", "spdx", "cyclonedx"):
        paths[fmt] = tmp_path / f"out.{fmt}"
        done = runner.invoke(
            app, ["record", str(run), "--format", fmt, "--output", str(paths[fmt])]
        )
        assert done.exit_code == 0, done.output

    card = paths["model-card"].read_text()
    assert adapter_sha in card and data_sha in card and "No network connection" in card

    # SPDX 3.0.1: the SPDX model's own bindings read it back (types and required fields are
    # checked on load); the adapter, data and files keep their names and hashes.
    document = json.loads(paths["spdx"].read_text())
    assert document["@context"] == "https://spdx.org/rdf/3.0.1/spdx-context.jsonld"
    model, objects = load_data(document)
    packages = {p.name: p for p in objects.foreach_type(model.ai_AIPackage)}
    adapter = next(p for name, p in packages.items() if name.startswith("LoRA adapter"))
    assert [h.hashValue for h in adapter.verifiedUsing] == [adapter_sha]
    [dataset] = list(objects.foreach_type(model.dataset_DatasetPackage))
    assert dataset.name == str(data) and dataset.verifiedUsing[0].hashValue == data_sha
    files = {
        f.name: f.verifiedUsing[0].hashValue for f in objects.foreach_type(model.software_File)
    }
    assert files == record["outputs"]
    [trained_on] = [
        r for r in objects.foreach_type(model.Relationship)
        if r.relationshipType == model.RelationshipType.trainedOn
    ]  # fmt: skip
    assert trained_on.from_ is adapter and list(trained_on.to) == [dataset]
    profiles = {
        p.rsplit("/", 1)[-1]
        for p in next(objects.foreach_type(model.SpdxDocument)).profileConformance
    }
    assert {"ai", "dataset", "software", "core"} <= profiles

    # CycloneDX 1.6: the library's schema validator, then its parser.
    text = paths["cyclonedx"].read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    bom = Bom.from_json(json.loads(text))  # type: ignore[attr-defined]
    assert bom.metadata.component.name.startswith("LoRA adapter")
    assert [h.content for h in bom.metadata.component.hashes] == [adapter_sha]
    parsed = {c.name: [h.content for h in c.hashes] for c in bom.components}
    assert parsed[str(data)] == [data_sha]
    assert all(parsed[name] == [sha] for name, sha in record["outputs"].items())


def test_unknown_format_and_missing_record_are_user_errors(trained, tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["record", str(trained[0]), "-f", "pdf", "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "unknown format" in bad.output
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = runner.invoke(app, ["verify", str(empty)])
    assert missing.exit_code == 2 and "no run record" in missing.output


@pytest.mark.slow
def test_planted_secrets_appear_in_no_output(s3, tiny_dir, tmp_path, monkeypatch):
    """Storage credentials and tokens: in no file of the run folder, the record or the log."""
    key, secret, token = "AKIAPLANTEDKEY12345", "planted-secret-9f8e7d", "hf_plantedtoken42"
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv("GEMMAFORGE_HUB_URL", f"http://user:{token}@127.0.0.1:9/")
    url = s3.put("secrets/train.jsonl", _write(tmp_path / "t.jsonl").read_bytes())
    options = {"endpoint_url": s3.endpoint, "key": key, "secret": secret, "token": token}
    run = tmp_path / "run"
    done = CliRunner().invoke(
        app,
        [
            *TRAIN,
            "--model",
            str(tiny_dir("gemma3")),
            "--data",
            url,
            "--output",
            str(run),
            f"data.storage_options={json.dumps(options)}",
        ],
    )
    assert done.exit_code == 0, done.output
    record = json.loads((run / "record.json").read_text())
    assert record["config"]["data"]["storage_options"]["secret"] == "<redacted>"
    contacted = {
        (e["host"], e["setting"]) for e in record["network"]["log"] if e["event"] == "connect"
    }
    assert contacted == {("127.0.0.1", "data.storage_options.endpoint_url")}
    assert all(e["allowed"] for e in record["network"]["log"])
    exports = [tmp_path / "card.md", tmp_path / "spdx.json", tmp_path / "cdx.json"]
    for fmt, out in zip(("model-card", "spdx", "cyclonedx"), exports, strict=True):
        assert (
            CliRunner().invoke(app, ["record", str(run), "-f", fmt, "-o", str(out)]).exit_code == 0
        )
    outputs = [p for p in run.rglob("*") if p.is_file()] + exports
    for planted in (key, secret, token):
        assert planted not in done.output
        for path in outputs:
            assert planted.encode() not in path.read_bytes(), (planted, path)
