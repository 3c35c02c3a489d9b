"""Signing folders with model-signing EC keys: keys, a good signature, and every way a
signature fails (missing, another key, forged, a file changed, added or removed)."""

from __future__ import annotations

import base64
import hashlib
import json
import stat

import pytest

from gemmaforge import signing
from gemmaforge.errors import UserError


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    return signing.keygen(root / "alice"), signing.keygen(root / "mallory")


@pytest.fixture
def folder(tmp_path):
    """A small folder with a subfolder, like an adapter folder with an eval report."""
    root = tmp_path / "adapter"
    (root / "eval").mkdir(parents=True)
    (root / "adapter_config.json").write_text('{"r": 8}\n')
    (root / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 8)
    (root / "eval" / "report.json").write_text('{"accuracy": 0.5}\n')
    return root


def refused(folder, public) -> str:
    with pytest.raises(UserError) as caught:
        signing.verify(folder, public)
    return str(caught.value)


def test_keygen_writes_a_private_key_only_its_owner_reads(keys, tmp_path):
    (private, public), _ = keys
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert signing.public_key_of(private) == public.read_bytes()
    with pytest.raises(UserError, match="a key already exists"):
        signing.keygen(private.parent)


def test_fingerprint_is_the_sha256_of_the_der_public_key(keys):
    from cryptography.hazmat.primitives import serialization

    (_, alice), (_, mallory) = keys
    key = serialization.load_pem_public_key(alice.read_bytes())
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert signing.public_key_fingerprint(alice) == hashlib.sha256(der).hexdigest()
    assert signing.public_key_fingerprint(alice) != signing.public_key_fingerprint(mallory)


def test_a_signed_folder_verifies_and_lists_every_file(keys, folder):
    (private, public), _ = keys
    assert signing.sign(folder, private) == folder / "model.sig"
    signing.verify(folder, public)
    assert set(signing.signed_files(folder)) == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "eval/report.json",
    }


def test_missing_signature_is_refused(keys, folder):
    (_, public), _ = keys
    assert "is not signed (no model.sig)" in refused(folder, public)


def test_signature_by_another_key_is_refused(keys, folder):
    (_, alice), (mallory_private, _) = keys
    signing.sign(folder, mallory_private)
    message = refused(folder, alice)
    assert "was signed with another key" in message
    assert signing.public_key_fingerprint(alice) in message


def test_forged_signature_is_refused(keys, folder):
    """Mallory signs, then claims Alice's key hint: the ECDSA signature does not verify."""
    (alice_private, alice), (mallory_private, _) = keys
    signing.sign(folder, alice_private)
    hint = json.loads((folder / "model.sig").read_text())["verificationMaterial"]["publicKey"]
    signing.sign(folder, mallory_private)
    bundle = json.loads((folder / "model.sig").read_text())
    bundle["verificationMaterial"]["publicKey"] = hint
    (folder / "model.sig").write_text(json.dumps(bundle))
    assert "is forged or altered" in refused(folder, alice)


def test_altered_file_list_in_the_signature_is_refused(keys, folder):
    """Editing the signed statement (to bless a changed file) breaks the signature."""
    (private, public), _ = keys
    signing.sign(folder, private)
    (folder / "adapter_config.json").write_text('{"r": 64}\n')
    bundle = json.loads((folder / "model.sig").read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    for resource in statement["predicate"]["resources"]:
        if resource["name"] == "adapter_config.json":
            resource["digest"] = hashlib.sha256(b'{"r": 64}\n').hexdigest()
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    (folder / "model.sig").write_text(json.dumps(bundle))
    assert "is forged or altered" in refused(folder, public)


def test_garbage_signature_file_is_refused(keys, folder):
    (_, public), _ = keys
    (folder / "model.sig").write_text("not a bundle")
    assert "is not a model-signing signature bundle" in refused(folder, public)


def test_one_byte_changed_after_signing_names_the_file(keys, folder):
    (private, public), _ = keys
    signing.sign(folder, private)
    weights = folder / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[100] ^= 1
    weights.write_bytes(bytes(data))
    message = refused(folder, public)
    assert "adapter_model.safetensors: was changed after signing" in message
    assert "adapter_config.json" not in message


def test_added_and_removed_files_are_named(keys, folder):
    (private, public), _ = keys
    signing.sign(folder, private)
    (folder / "eval" / "report.json").unlink()
    (folder / "extra.md").write_text("hello\n")
    (folder / ".gitattributes").write_text("* text\n")  # git files are signed too
    message = refused(folder, public)
    assert "eval/report.json: was signed but is missing" in message
    assert "extra.md: was added after signing" in message
    assert ".gitattributes: was added after signing" in message


def test_signature_that_leaves_files_unsigned_is_refused(keys, folder):
    """A bundle made elsewhere with an ignore list verifies in model-signing, not here."""
    import model_signing

    (private, public), _ = keys
    hashing = model_signing.hashing.Config().set_ignored_paths(
        paths=["model.sig", "adapter_model.safetensors"]
    )
    config = model_signing.signing.Config().use_elliptic_key_signer(private_key=private)
    config.set_hashing_config(hashing).sign(folder, folder / "model.sig")
    message = refused(folder, public)
    assert "leaves files unsigned" in message
    assert "adapter_model.safetensors" in message  # (and model-signing's default git files)


def test_bad_key_files_are_user_errors(tmp_path, folder):
    (tmp_path / "not.pem").write_text("hello")
    with pytest.raises(UserError, match="is not an unencrypted PEM private key"):
        signing.sign(folder, tmp_path / "not.pem")
    with pytest.raises(UserError, match="no such public key file"):
        (folder / "model.sig").write_text("{}")
        signing.verify(folder, tmp_path / "missing.pem")
