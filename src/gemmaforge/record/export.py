"""Exports of a run record for auditors: a Markdown model card, SPDX 3.0.1 JSON-LD (Core,
Software, AI and Dataset profiles) and a CycloneDX 1.6 ML-BOM (JSON).

Each is built with its format's own library, which checks it as it is built:
spdx-python-model (the SPDX project's bindings generated from the SPDX 3.0.1 model; types
and required properties are enforced when the document is encoded and again when it is read)
and cyclonedx-python-lib (the JSON is validated against the CycloneDX 1.6 schema it ships).
spdx-tools 0.8.5 is not used for SPDX 3: its `spdx3` module is a pre-release model with a
writer only, no parser or validator.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from gemmaforge.errors import UserError, problem
from gemmaforge.files import write_text_atomic

FORMATS = ("model-card", "spdx", "cyclonedx")
NAMESPACE = "https://gemmaforge.invalid/spdx/"
"""Base of the document's element IRIs (a per-run UUID-free namespace: the run's adapter
hash makes each document's IRIs unique)."""


def export(record: dict, fmt: str) -> str:
    if fmt == "model-card":
        return model_card(record)
    if fmt == "spdx":
        return json.dumps(spdx(record), indent=2) + "\n"
    if fmt == "cyclonedx":
        return cyclonedx(record)
    raise UserError(
        problem("--format", f"unknown format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    )


def adapter_hash(record: dict) -> str:
    """sha256 of the adapter weights (the run's main output)."""
    outputs = record["outputs"]
    return next(
        (d for n, d in outputs.items() if n.endswith("adapter_model.safetensors")),
        next(iter(outputs.values()), ""),
    )


def _hex(fingerprint: str) -> str | None:
    """The hex sha256 of a `sha256:<hex>` fingerprint (None for ETags and versions)."""
    return fingerprint.removeprefix("sha256:") if fingerprint.startswith("sha256:") else None


def _data_kind(fmt: str) -> str:
    return {"caption": "image", "vqa": "image", "transcription": "audio"}.get(fmt, "text")


def _set(**values):
    """Keyword arguments without the unset ones (the SPDX bindings refuse None)."""
    return {k: v for k, v in values.items() if v is not None}


def model_card(record: dict) -> str:
    base = record["base_model"]
    data_rows = "\n".join(
        f"| `{f['path']}` | `{f['fingerprint']}` | {f['rows']} | {f['format']} |"
        for f in record["data"]["files"]
    )
    split = record["data"]["split"]
    config = record["config"]
    hyper = "\n".join(
        f"| {section}.{key} | `{value}` |"
        for section in ("lora", "train")
        for key, value in config.get(section, {}).items()
    )
    metrics = "\n".join(f"| {k} | {v} |" for k, v in (record.get("metrics") or {}).items())
    packages = ", ".join(f"{k} {v}" for k, v in record["packages"].items() if v)
    network = record["network"]
    if network["guard"] == "off":
        net = "The network guard was off for this run: no claim is made about connections."
    else:
        contacted = [
            e for e in network["log"] if e["allowed"] and e["event"] in ("connect", "sendto")
        ]
        refused = [e for e in network["log"] if not e["allowed"]]
        net = (
            "No network connection was made or attempted."
            if not contacted and not refused
            else "\n".join(
                f"- {'contacted' if e['allowed'] else 'refused'} {e['host']}:{e['port']} "
                f"({e['event']}, {e['count']}x, {e['setting'] or 'no setting allows it'})"
                for e in contacted + refused
            )
        )
    outputs = "\n".join(f"| `{n}` | `{d}` |" for n, d in record["outputs"].items())
    device = record["device"]
    return f"""---
library_name: peft
base_model: {base["source"]}
tags: [gemmaforge, lora, {base["family"]}]
---

# LoRA adapter for `{base["source"]}`: run record

Trained with gemmaforge {record["packages"].get("gemmaforge")} on this machine from
{record["started"]} to {record["ended"]} (UTC), on {device["type"]} ({device["dtype"]}).
Adapter weights sha256: `{adapter_hash(record)}`.

## Base model

- Source: `{base["source"]}` (family `{base["family"]}`, revision `{base["revision"]}`)
- Weights sha256: `{base["sha256"]}` ({len(base["files"])} files hashed in record.json)
- Chat template sha256: `{record["tokenizer"]["chat_template_sha256"]}`

## Data

| file | fingerprint | rows | format |
| --- | --- | --- | --- |
{data_rows}

Validation: {split["validation"]} ({split["val_examples"]} examples; seed {split["seed"]},
val_fraction {split["val_fraction"]}, at most {split["val_max_rows"]} rows); training examples:
{split["train_examples"]}. Personal data redaction (data.redact_pii):
{"on" if record["data"].get("redact_pii") else "off"}.

## Hyperparameters

| setting | value |
| --- | --- |
{hyper}

## Final metrics

| metric | value |
| --- | --- |
{metrics}

## Network

{net}

## Software

{packages}

## Outputs

| file | sha256 |
| --- | --- |
{outputs}
"""


def spdx(record: dict) -> dict:
    """The record as an SPDX 3.0.1 JSON-LD document (a dict ready for json.dumps)."""
    from spdx_python_model import v3_0_1 as m

    run_id = adapter_hash(record)[:16] or "run"
    prefix = f"{NAMESPACE}{run_id}/"
    created = datetime.fromisoformat(record["ended"]).astimezone(UTC).replace(microsecond=0)
    objects = m.SHACLObjectSet()
    agent = m.SoftwareAgent(_id=f"{prefix}agent", name="gemmaforge")
    info = m.CreationInfo(
        specVersion="3.0.1", created=created, createdBy=[agent], _id="_:creationinfo"
    )
    agent.creationInfo = info
    tool = m.Tool(
        _id=f"{prefix}tool",
        name=f"gemmaforge {record['packages'].get('gemmaforge')}",
        creationInfo=info,
    )
    info.createdUsing = [tool]

    def sha256(hex_digest: str):
        return m.Hash(algorithm=m.HashAlgorithm.sha256, hashValue=hex_digest)

    def entries(mapping: dict) -> list:
        return [m.DictionaryEntry(key=str(k), value=str(v)) for k, v in mapping.items()]

    base_info = record["base_model"]
    base = m.ai_AIPackage(
        **_set(
            _id=f"{prefix}base-model",
            creationInfo=info,
            name=base_info["source"],
            software_primaryPurpose=m.software_SoftwarePurpose.model,
            software_packageVersion=base_info.get("revision") or None,
            comment=f"gemmaforge base weights hash: {base_info['sha256']}",
            verifiedUsing=[sha256(d) for d in base_info["files"].values()][:1] or None,
            ai_typeOfModel=[f"Gemma ({base_info['family']})"],
        )
    )
    config = record["config"]
    hyper = {f"{s}.{k}": v for s in ("lora", "train") for k, v in config.get(s, {}).items()}
    adapter = m.ai_AIPackage(
        **_set(
            _id=f"{prefix}adapter",
            creationInfo=info,
            name=f"LoRA adapter for {base_info['source']}",
            software_primaryPurpose=m.software_SoftwarePurpose.model,
            verifiedUsing=[sha256(adapter_hash(record))],
            ai_typeOfModel=["LoRA adapter"],
            ai_hyperparameter=entries(hyper),
            ai_metric=entries(record.get("metrics") or {}),
            ai_informationAboutTraining=(
                f"LoRA fine-tuning on {record['device']['type']} from {record['started']} to "
                f"{record['ended']}; network guard {record['network']['guard']}, "
                f"{sum(1 for e in record['network']['log'] if e['allowed'])} allowed network "
                "events."
            ),
            # Redaction is a heuristic (docs/privacy.md): never a claim of "no".
            ai_useSensitivePersonalInformation=m.PresenceType.noAssertion,
            builtTime=created,
        )
    )
    datasets = []
    for i, f in enumerate(record["data"]["files"]):
        digest = _hex(f["fingerprint"])
        datasets.append(
            m.dataset_DatasetPackage(
                **_set(
                    _id=f"{prefix}dataset-{i}",
                    creationInfo=info,
                    name=f["path"],
                    software_primaryPurpose=m.software_SoftwarePurpose.data,
                    dataset_datasetType=[getattr(m.dataset_DatasetType, _data_kind(f["format"]))],
                    verifiedUsing=[sha256(digest)] if digest else None,
                    comment=f"{f['rows']} rows ({f['format']}), fingerprint {f['fingerprint']}",
                    software_downloadLocation=f["path"] if "://" in f["path"] else None,
                )
            )
        )
    files = [
        m.software_File(
            _id=f"{prefix}file-{i}", creationInfo=info, name=name, verifiedUsing=[sha256(digest)]
        )
        for i, (name, digest) in enumerate(record["outputs"].items())
    ]
    relationships = [
        m.Relationship(
            _id=f"{prefix}rel-base",
            creationInfo=info,
            from_=base,
            relationshipType=m.RelationshipType.ancestorOf,
            to=[adapter],
        ),
        m.Relationship(
            _id=f"{prefix}rel-files",
            creationInfo=info,
            from_=adapter,
            relationshipType=m.RelationshipType.contains,
            to=files,
        ),
    ]
    if datasets:
        relationships.append(
            m.Relationship(
                _id=f"{prefix}rel-data",
                creationInfo=info,
                from_=adapter,
                relationshipType=m.RelationshipType.trainedOn,
                to=datasets,
            )
        )
    elements = [agent, tool, base, adapter, *datasets, *files, *relationships]
    document = m.SpdxDocument(
        _id=f"{prefix}document",
        creationInfo=info,
        name=f"gemmaforge run {run_id}",
        rootElement=[adapter],
        element=elements,
        profileConformance=[
            m.ProfileIdentifierType.core,
            m.ProfileIdentifierType.software,
            m.ProfileIdentifierType.ai,
            m.ProfileIdentifierType.dataset,
        ],
    )
    for obj in [document, *elements]:
        objects.add(obj)
    return m.JSONLDSerializer().serialize_data(objects, force_at_graph=True)


def cyclonedx(record: dict) -> str:
    """The record as a CycloneDX 1.6 ML-BOM, validated against the schema the library ships."""
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    def sha256(hex_digest: str) -> list:
        return [HashType(alg=HashAlgorithm.SHA_256, content=hex_digest)]

    base_info = record["base_model"]
    base = Component(
        type=ComponentType.MACHINE_LEARNING_MODEL,
        name=base_info["source"],
        bom_ref="base-model",
        version=base_info.get("revision") or None,
        hashes=sha256(next(iter(base_info["files"].values()))) if base_info["files"] else [],
        properties=[Property(name="gemmaforge:weights-sha256", value=base_info["sha256"])],
    )
    config = record["config"]
    props = [
        Property(name=f"gemmaforge:{s}.{k}", value=json.dumps(v))
        for s in ("lora", "train")
        for k, v in config.get(s, {}).items()
    ]
    props += [
        Property(name=f"gemmaforge:metric:{k}", value=str(v))
        for k, v in (record.get("metrics") or {}).items()
    ]
    props.append(Property(name="gemmaforge:network-guard", value=record["network"]["guard"]))
    props.append(
        Property(name="gemmaforge:network-log", value=json.dumps(record["network"]["log"]))
    )
    adapter = Component(
        type=ComponentType.MACHINE_LEARNING_MODEL,
        name=f"LoRA adapter for {base_info['source']}",
        bom_ref="adapter",
        hashes=sha256(adapter_hash(record)),
        properties=props,
    )
    datasets = []
    for i, f in enumerate(record["data"]["files"]):
        digest = _hex(f["fingerprint"])
        datasets.append(
            Component(
                type=ComponentType.DATA,
                name=f["path"],
                bom_ref=f"dataset-{i}",
                hashes=sha256(digest) if digest else [],
                properties=[
                    Property(name="gemmaforge:rows", value=str(f["rows"])),
                    Property(name="gemmaforge:fingerprint", value=f["fingerprint"]),
                ],
            )
        )
    files = [
        Component(type=ComponentType.FILE, name=name, bom_ref=f"file-{i}", hashes=sha256(digest))
        for i, (name, digest) in enumerate(record["outputs"].items())
    ]
    bom = Bom()
    bom.metadata.component = adapter
    bom.metadata.timestamp = datetime.fromisoformat(record["ended"])
    for component in [base, *datasets, *files]:
        bom.components.add(component)
    bom.register_dependency(adapter, [base, *datasets])
    text = JsonV1Dot6(bom).output_as_string(indent=2)
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if errors:
        raise UserError(problem("cyclonedx", f"the ML-BOM does not validate: {errors}"))
    return text + "\n"


def write_export(record: dict, fmt: str, output: Path) -> Path:

    write_text_atomic(Path(output), export(record, fmt))
    return Path(output)
