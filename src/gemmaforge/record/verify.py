"""`gemmaforge verify`: re-hash a run folder against its record and report every drift.

Checked: every output the record lists (changed, missing, added since), the record itself
against the manifest, the base model's files where the base is a local path that still
exists, the original data files when given, and with a public key the model-signing
signature over the whole folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from gemmaforge.errors import UserError, problem
from gemmaforge.files import sha256_file
from gemmaforge.record.build import base_files, outputs
from gemmaforge.runs import RunFolder

LATER_OUTPUTS = ("eval/",)
"""Written into a finished run by later verbs (`gemmaforge eval`): not drift."""


@dataclass
class Verification:
    checked: list[str] = field(default_factory=list)
    """What was checked and found as recorded (one line each)."""
    drift: list[str] = field(default_factory=list)
    """Each difference, as a problem line naming the file."""

    @property
    def ok(self) -> bool:
        return not self.drift


def load_record(run: Path) -> dict:
    folder = RunFolder(run)
    if not folder.record_file.is_file():
        raise UserError(
            problem(
                str(run),
                f"has no run record ({folder.record_file.name})",
                "pass a run folder trained by a gemmaforge with run records (retrain it)",
            )
        )
    try:
        return json.loads(folder.record_file.read_text(encoding="utf-8"))
    except ValueError as err:
        raise UserError(problem(str(folder.record_file), f"is not valid JSON ({err})")) from err


def verify_run(
    run: Path, data: list[Path] | None = None, public_key: Path | None = None
) -> Verification:
    run = Path(run)
    folder = RunFolder(run)
    record = load_record(run)
    result = Verification()
    _check_outputs(run, record, result)
    _check_manifest(folder, result)
    _check_base(record, result)
    for path in data or []:
        _check_data(Path(path), record, result)
    if public_key is not None:
        from gemmaforge import signing

        try:
            signing.verify(run, public_key)
            result.checked.append(f"signature: {signing.SIGNATURE_NAME} verifies with {public_key}")
        except UserError as err:
            result.drift.extend(err.problems)
    return result


def _check_outputs(run: Path, record: dict, result: Verification) -> None:
    recorded: dict[str, str] = record.get("outputs", {})
    actual = outputs(run)
    for name, digest in recorded.items():
        if name not in actual:
            result.drift.append(problem(f"{run}/{name}", "is in the record but missing"))
        elif actual[name] != digest:
            result.drift.append(
                problem(
                    f"{run}/{name}",
                    f"was changed after the run (sha256 {actual[name][:16]}…, recorded "
                    f"{digest[:16]}…)",
                )
            )
    added = [n for n in actual if n not in recorded and not n.startswith(LATER_OUTPUTS)]
    for name in added:
        result.drift.append(problem(f"{run}/{name}", "was added after the run (not in the record)"))
    same = sum(1 for n, d in recorded.items() if actual.get(n) == d)
    result.checked.append(f"outputs: {same} of {len(recorded)} files as recorded")


def _check_manifest(folder: RunFolder, result: Verification) -> None:
    if not folder.manifest.is_file():
        result.drift.append(problem(str(folder.manifest), "is missing"))
        return
    listed = json.loads(folder.manifest.read_text(encoding="utf-8")).get("files", {})
    name = folder.record_file.name
    if name in listed and sha256_file(folder.record_file) != listed[name]:
        result.drift.append(
            problem(
                str(folder.record_file), "was changed after the run (the manifest's sha256 differs)"
            )
        )
    else:
        result.checked.append("record: matches the manifest")


def _check_base(record: dict, result: Verification) -> None:
    base = record.get("base_model", {})
    recorded = base.get("files") or {}
    source = base.get("source", "")
    if not recorded or not Path(source).exists():
        result.checked.append(f"base model: {source} not checked (not a local path here)")
        return
    actual = base_files(source)
    changed = [n for n, d in recorded.items() if actual.get(n) != d]
    for name in changed:
        what = "is missing" if name not in actual else "differs from the base trained on"
        result.drift.append(problem(f"{source}/{name}", what))
    if not changed:
        result.checked.append(f"base model: {len(recorded)} files of {source} as recorded")


def _check_data(path: Path, record: dict, result: Verification) -> None:
    files = record.get("data", {}).get("files", [])
    if not path.is_file():
        result.drift.append(problem(str(path), "no such data file"))
        return
    fingerprint = f"sha256:{sha256_file(path)}"
    by_name = [f for f in files if Path(f["path"]).name == path.name]
    if any(f["fingerprint"] == fingerprint for f in files):
        result.checked.append(f"data: {path} is a file the run was trained on")
    elif by_name:
        result.drift.append(
            problem(
                str(path),
                f"differs from the {path.name} the run was trained on (sha256 "
                f"{fingerprint[7:23]}…, recorded {by_name[0]['fingerprint'][7:23]}…)",
            )
        )
    else:
        result.drift.append(problem(str(path), "is not one of the run's data files"))
