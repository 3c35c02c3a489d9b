"""Publish a finished run: build the folder, check it with the gate, sign it, upload it.

The published folder holds the adapter (the run's `adapter/` files: weights, PEFT config,
tokenizer/processor files), the model card (`README.md`, its base named by canonical id) and
`provenance.json` (the run's manifest.json, data_report.json, run.json and config: hashes,
row counts, seeds, versions, never the data), then `model.sig`, the signature over all of it.
The gate runs here first, with the same checks the server runs, so a refusal costs no upload.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gemmaforge import signing
from gemmaforge.errors import UserError, problem
from gemmaforge.files import read_jsonl, sha256_file
from gemmaforge.hub import bases, gate
from gemmaforge.hub.client.api import HubClient, split_name
from gemmaforge.hub.client.card import adapter_card
from gemmaforge.runs import RunFolder, open_run

CARD = "README.md"
PROVENANCE = "provenance.json"
SIGNATURE = "model.sig"


@dataclass
class Published:
    name: str
    version: str
    digest: str
    base: str
    modalities: list[str]


def public_key_of(private_key: Path, out: Path) -> Path:
    """Write the public half of a private key to `out` (for the local gate run)."""

    out.write_bytes(signing.public_key_of(Path(private_key)))
    return out


def base_for_run(client: HubClient, run, claimed: str | None):
    """The registered base: the one claimed (`ID@REV`), else the one whose weights hash
    matches the run's base model."""

    if claimed:
        base_id, sep, revision = claimed.rpartition("@")
        if not (sep and base_id and revision):
            raise UserError(problem(None, f"--base {claimed!r} is not ID@REVISION", None))
        found = client.bases(id=base_id, revision=revision)
        what = f"base {claimed} is not registered on {client.url}"
    elif run.base_sha256.startswith("hub:"):  # loaded from a model hub: `hub:ID@REV`
        base_id, _, revision = run.base_sha256.removeprefix("hub:").rpartition("@")
        found = client.bases(id=base_id, revision=revision)
        what = f"base {base_id}@{revision} (the run's base) is not registered on {client.url}"
    else:
        found = client.bases(weights_sha256=run.base_sha256)
        what = (
            f"no base registered on {client.url} has the weights of {run.base_model} "
            f"(sha256 {run.base_sha256})"
        )
    if not found:
        raise UserError(
            problem(
                str(run.dir),
                what,
                "register it: `gemmaforge hub base add MODEL --id ID --revision REV`, "
                "or name one with --base ID@REV",
            )
        )
    return bases.BaseModel.from_json(json.dumps(found[-1]))


def build_folder(run_dir: Path, out: Path, base, licence: str, hf_card: bool, domain=None) -> Path:
    """Lay out the folder to publish (unsigned) in `out`."""

    run = open_run(run_dir)
    folder = RunFolder(run.dir)
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(run.adapter_dir.iterdir()):
        if path.is_file() and not path.is_symlink() and not path.name.startswith("."):
            shutil.copyfile(path, out / path.name)
    # PEFT recorded the local path it was trained from; a published adapter names its base
    # by the canonical id and revision instead.
    gate.name_base(out, base.id, base.revision)
    card = folder.card.read_text("utf-8") if folder.card.is_file() else f"# {run.dir.name}\n"
    card = card.replace(run.base_model, base.id)  # the card names the base as the hub does
    (out / CARD).write_text(adapter_card(card, base.id, licence, hf_card, domain=domain))
    provenance = {"gemmaforge": _version()}
    for key, path in (
        ("manifest", folder.manifest),
        ("data_report", folder.data_report),
        ("run", folder.record),
    ):
        if path.is_file():
            provenance[key] = json.loads(path.read_text("utf-8"))
    provenance["config"] = run.config.model_dump(mode="json")
    provenance["metrics"] = _loss_points(folder.metrics)
    (out / PROVENANCE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    return out


def _loss_points(metrics_file: Path, most: int = 500) -> list[dict]:
    """Step, loss and eval loss from the run's metrics.jsonl (thinned to `most` points), so
    the hub can draw the loss curve; nothing else of the log is published."""

    if not metrics_file.is_file():
        return []
    keep = ("step", "loss", "eval_loss")
    points = [{k: r[k] for k in keep if k in r} for r in read_jsonl(metrics_file)]
    stride = max(1, -(-len(points) // most))
    return points[::stride]


def eval_reports(run_dir: Path) -> list[dict]:
    """The run's `gemmaforge eval` report, tied to the hash of the rows it scored."""
    path = RunFolder(run_dir).eval_dir / "report.json"
    if not path.is_file():
        return []
    report = json.loads(path.read_text("utf-8"))
    rows = report.get("examples") or report.get("data")
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    return [{"eval_set_sha256": digest, "report": report}]


def publish(
    client: HubClient,
    run_dir: Path,
    name: str,
    version: str,
    private_key: Path,
    licence: str,
    domain: str | None = None,
    base: str | None = None,
    hf_card: bool = False,
    folder: Path | None = None,
) -> Published:
    """Build, gate, sign and upload `run_dir` as `name@version`."""

    namespace, adapter, _ = split_name(name)
    run = open_run(run_dir)
    if (
        client.request(
            "GET", f"/api/adapters/{namespace}/{adapter}/versions/{version}", ok=(200, 404)
        ).status_code
        == 200
    ):
        raise UserError(
            problem(
                f"{client.url}: {namespace}/{adapter}@{version}",
                "already exists; versions are immutable",
                "publish under a new --version",
            )
        )
    base_model = base_for_run(client, run, base)
    with tempfile.TemporaryDirectory(prefix="gemmaforge-publish-") as tmp:
        out = folder or Path(tmp) / "adapter"
        build_folder(run.dir, out, base_model, licence, hf_card, domain)
        signing.sign(out, Path(private_key))
        public = public_key_of(Path(private_key), Path(tmp) / "public.pem")
        problems = gate.check_adapter_folder(out, base_model, public)
        problems += gate.check_licence(licence, base_model)
        if problems:
            raise UserError(problems)
        modalities = gate.modalities(out)
        base_ref = {"id": base_model.id, "revision": base_model.revision}
        result = upload_folder(
            client, name, version, out, base_ref, licence, domain, eval_reports(run.dir)
        )
    return Published(
        name=f"{namespace}/{adapter}",
        version=version,
        digest=result["digest"],
        base=f"{base_model.id}@{base_model.revision}",
        modalities=modalities,
    )


def upload_folder(
    client: HubClient,
    name: str,
    version: str,
    folder: Path,
    base: dict,
    licence: str,
    domain: str | None = None,
    evals: list[dict] | None = None,
) -> dict:
    """Upload every file of a signed folder (those the hub lacks), then commit the version."""

    namespace, adapter, _ = split_name(name)
    files = {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(Path(folder).rglob("*"))
        if path.is_file()
    }
    for path, sha in files.items():
        client.upload(Path(folder) / path, sha)
    body = {
        "version": version,
        "files": files,
        "base": base,
        "licence": licence,
        "domain": domain,
        "eval_reports": evals or [],
    }
    return client.commit(namespace, adapter, body)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gemmaforge")
    except PackageNotFoundError:
        return "unknown"
