"""Sign a folder and verify it offline, with OpenSSF model-signing and an EC key pair.

The signature (`model.sig`, a Sigstore bundle holding a DSSE envelope over an in-toto
statement) covers the sha256 of every file in the folder except itself, so adding, removing or
changing any file breaks it. Keys are EC P-256 PEM files made by `keygen`; nothing here needs
the network (no Sigstore transparency log), so a hub on an offline network can verify.

Any folder can be signed: adapter folders for the hub, and run folders for run records.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

from gemmaforge.errors import UserError, problem
from gemmaforge.files import sha256_file

SIGNATURE_NAME = "model.sig"
"""The signature bundle's file name inside a signed folder."""
PRIVATE_KEY_NAME = "private.pem"
PUBLIC_KEY_NAME = "public.pem"


def keygen(folder: Path) -> tuple[Path, Path]:
    """Write a new EC P-256 key pair: `folder/private.pem` (mode 0600) and `folder/public.pem`.

    Refuses to overwrite an existing key: losing a private key loses the identity that a hub
    pinned for its namespace.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder = Path(folder)
    private, public = folder / PRIVATE_KEY_NAME, folder / PUBLIC_KEY_NAME
    existing = [str(p) for p in (private, public) if p.exists()]
    if existing:
        raise UserError(
            problem(
                ", ".join(existing),
                "a key already exists here (overwriting it would lose the identity it signs for)",
                "pass another folder, or move the old keys away first",
            )
        )
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    _write_new(
        private,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        mode=0o600,
    )
    _write_new(
        public,
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        mode=0o644,
    )
    return private, public


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` from the first byte (a private key is never briefly readable
    by others, as it would be if written first and chmod-ed after)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(path, mode)


def public_key_fingerprint(public_key: Path) -> str:
    """Hex sha256 of the key's DER SubjectPublicKeyInfo: the key's identity on the hub."""
    from cryptography.hazmat.primitives import serialization

    key = _load_public_key(Path(public_key))
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def public_key_of(private_key: Path) -> bytes:
    """The PEM public key that belongs to a private key file (to check a key pair)."""
    from cryptography.hazmat.primitives import serialization

    key = _load_private_key(Path(private_key))
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign(folder: Path, private_key: Path) -> Path:
    """Sign every file in `folder` (but the signature) and write `folder/model.sig`."""
    import model_signing

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(problem(str(folder), "no such folder to sign"))
    _load_private_key(Path(private_key))
    signature = folder / SIGNATURE_NAME
    config = model_signing.signing.Config().use_elliptic_key_signer(private_key=private_key)
    try:
        config.set_hashing_config(_hashing_config()).sign(folder, signature)
    except ValueError as err:
        # model_signing refuses symlinks and unreadable entries with a ValueError.
        raise UserError(
            problem(str(folder), f"cannot be signed: {err}", "remove links and special files")
        ) from err
    return signature


def verify(folder: Path, public_key: Path) -> None:
    """Check `folder/model.sig` against `public_key` and every file's hash; a UserError that
    says exactly what failed (no signature, another key, an altered signature, or which files
    were changed, added or removed)."""
    import model_signing

    folder = Path(folder)
    signature = folder / SIGNATURE_NAME
    where = str(folder)
    if not signature.is_file():
        raise UserError(
            problem(
                where,
                f"is not signed (no {SIGNATURE_NAME})",
                "sign it with the publisher's private key (`gemmaforge hub publish --key`)",
            )
        )
    _load_public_key(Path(public_key))
    bundle = _read_bundle(signature)
    config = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public_key)
    config.set_hashing_config(_hashing_config())
    try:
        config.verify(folder, signature)
    except ValueError as err:
        message = str(err)
        if message.startswith("Key mismatch"):
            raise UserError(
                problem(
                    str(signature),
                    "was signed with another key than "
                    f"{public_key} (fingerprint {public_key_fingerprint(public_key)})",
                    "verify with the publisher's registered public key, or re-sign",
                )
            ) from err
        if message.startswith("Signature mismatch"):
            # The envelope verified (the manifest is compared only after that), so its file
            # list is the publisher's: compare it with the folder ourselves to name the files.
            raise UserError(_file_problems(folder, bundle) or [problem(where, message)]) from err
        raise UserError(problem(str(signature), f"does not verify ({message})")) from err
    except Exception as err:  # cryptography's InvalidSignature, protobuf errors and kin
        raise UserError(
            problem(
                str(signature),
                f"is forged or altered: its signature does not verify with {public_key} "
                f"({type(err).__name__})",
                "re-sign the folder with the publisher's private key",
            )
        ) from err
    ignored = set(_statement(bundle)["predicate"]["serialization"].get("ignore_paths", []))
    if ignored - {SIGNATURE_NAME}:
        # model_signing honours the ignore list the signer wrote; files on it are unsigned.
        raise UserError(
            problem(
                str(signature),
                f"leaves files unsigned ({', '.join(sorted(ignored - {SIGNATURE_NAME}))})",
                "sign with gemmaforge, which covers every file",
            )
        )


def signed_files(folder: Path) -> dict[str, str]:
    """The file -> sha256 list the signature in `folder` covers (read, not verified)."""
    bundle = _read_bundle(Path(folder) / SIGNATURE_NAME)
    return _resources(bundle)


def _hashing_config():
    import model_signing

    # Git files are not left out (model_signing's default): a folder is signed whole.
    return model_signing.hashing.Config().set_ignored_paths(
        paths=[SIGNATURE_NAME], ignore_git_paths=False
    )


def _read_bundle(signature: Path) -> dict:
    try:
        bundle = json.loads(signature.read_text(encoding="utf-8"))
        _statement(bundle)["predicate"]["serialization"]
        _resources(bundle)
        bundle["dsseEnvelope"]["signatures"][0]["sig"]
    except (ValueError, KeyError, IndexError, TypeError, RecursionError) as err:
        raise UserError(
            problem(
                str(signature),
                f"is not a model-signing signature bundle ({type(err).__name__}: {err})",
                "re-sign the folder",
            )
        ) from err
    return bundle


def _statement(bundle: dict) -> dict:
    return json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"], validate=True))


def _resources(bundle: dict) -> dict[str, str]:
    return {r["name"]: r["digest"] for r in _statement(bundle)["predicate"]["resources"]}


def _file_problems(folder: Path, bundle: dict) -> list[str]:
    expected = _resources(bundle)
    actual = {
        path.relative_to(folder).as_posix(): path
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).as_posix() != SIGNATURE_NAME
    }
    found = []
    for name in sorted(set(expected) - set(actual)):
        found.append(problem(f"{folder}/{name}", "was signed but is missing"))
    for name in sorted(set(actual) - set(expected)):
        found.append(problem(f"{folder}/{name}", "was added after signing (it is not signed)"))
    for name in sorted(set(expected) & set(actual)):
        if sha256_file(actual[name]) != expected[name]:
            found.append(
                problem(
                    f"{folder}/{name}",
                    "was changed after signing (its sha256 differs from the signed one)",
                    "pull or copy the files again from the publisher",
                )
            )
    return found


def _load_public_key(path: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not path.is_file():
        raise UserError(problem(str(path), "no such public key file", "pass a public.pem"))
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except ValueError as err:
        raise UserError(
            problem(str(path), f"is not a PEM public key ({err})", "pass a public.pem")
        ) from err
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise UserError(
            problem(str(path), "is not an elliptic-curve key", "make keys with `hub keygen`")
        )
    return key


def _load_private_key(path: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not path.is_file():
        raise UserError(problem(str(path), "no such private key file", "pass a private.pem"))
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as err:
        raise UserError(
            problem(
                str(path),
                f"is not an unencrypted PEM private key ({err})",
                "make keys with `gemmaforge hub keygen`",
            )
        ) from err
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UserError(
            problem(str(path), "is not an elliptic-curve key", "make keys with `hub keygen`")
        )
    return key
