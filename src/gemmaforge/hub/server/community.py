"""What people add to a hub after publishing: ratings and reviews, reports, pull counts,
deprecation notes, and the base-compatibility table ("fits").

Also what a version's search row is made of (`search_text`, metrics), computed once at
publish. Functions here take a Session and leave committing to the caller, so the API and
the web pages share them.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from gemmaforge.hub import bases as base_models
from gemmaforge.hub import gate
from gemmaforge.hub.server.db import (
    Adapter,
    BaseRecord,
    File,
    Fit,
    Metric,
    Namespace,
    Rating,
    Report,
    Version,
    now,
)

MAX_REVIEW = 2000
MAX_REASON = 2000


class CommunityError(ValueError):
    """A request the community rules refuse: (HTTP status, message)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# ---- what is searched ------------------------------------------------------------------


def card_tags(card: str) -> list[str]:
    """`tags:` from a card's YAML front matter (strings only)."""
    import re

    import yaml

    match = re.match(r"---\n(.*?)\n---\n?", card, re.DOTALL)
    if match is None:
        return []
    try:
        data = yaml.safe_load(match[1])
    except (yaml.YAMLError, RecursionError):
        return []
    tags = data.get("tags") if isinstance(data, dict) else None
    return [t for t in tags if isinstance(t, str)][:50] if isinstance(tags, list) else []


def search_text(name: str, card: str, domain, modalities, licence, family) -> str:
    """Name (also split at - _ . so parts match), tags, domain, modalities, licence, family,
    then the card; capped so one huge card cannot bloat the index."""
    parts = [name, name.replace("-", " ").replace("_", " ").replace(".", " ")]
    parts += card_tags(card)
    parts += [domain or "", " ".join(modalities), licence or "", family or ""]
    return (" ".join(p for p in parts if p) + "\n" + card)[:50_000]


def metrics_of(reports: list[dict]) -> dict[str, float]:
    """The adapter's numbers from eval reports: `metrics.adapter` of a `gemmaforge eval`
    report (the base's numbers are a comparison, not the adapter's), else flat numbers."""
    found: dict[str, float] = {}
    for report in reports:
        metrics = report.get("metrics") if isinstance(report, dict) else None
        if isinstance(metrics, dict) and isinstance(metrics.get("adapter"), dict):
            metrics = metrics["adapter"]
        if not isinstance(metrics, dict):
            continue
        for name, value in metrics.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                found[str(name)[:64]] = float(value)
    return found


def add_metrics(session: Session, version_id: int, reports: list[dict]) -> None:
    session.add_all(
        Metric(version_id=version_id, name=n, value=v) for n, v in metrics_of(reports).items()
    )


def adapter_rank(folder: Path) -> int | None:
    try:
        config = json.loads((folder / "adapter_config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    r = config.get("r") if isinstance(config, dict) else None
    return r if isinstance(r, int) and not isinstance(r, bool) else None


# ---- pulls, ratings, reports, deprecation ----------------------------------------------


def count_pull(session: Session, version: Version) -> None:
    # SQL increments (`SET pulls = pulls + 1`), not Python ones: two pulls at once must
    # both count.
    version.pulls = Version.pulls + 1
    adapter = session.get(Adapter, version.adapter_id)
    adapter.pulls = Adapter.pulls + 1


def rate(session: Session, version: Version, user: str, stars: int, review: str) -> Rating:
    """Add or edit `user`'s rating of `version` (one per user per version)."""
    if not 1 <= stars <= 5:
        raise CommunityError(422, "stars must be 1 to 5")
    if len(review) > MAX_REVIEW:
        raise CommunityError(422, f"a review is at most {MAX_REVIEW} characters")
    adapter = session.get(Adapter, version.adapter_id)
    if session.get(Namespace, adapter.namespace_id).name == user:
        raise CommunityError(403, "publishers cannot rate their own adapters")
    row = session.scalar(select(Rating).where(Rating.version_id == version.id, Rating.user == user))
    added = row is None
    if added:
        row = Rating(version_id=version.id, adapter_id=adapter.id, user=user, stars=0)
        session.add(row)
    # The adapter's aggregate changes in this transaction, by SQL increments so concurrent
    # ratings of one adapter cannot lose each other's; the database recomputes the
    # `rating` column (the sort key) from it in the same UPDATE.
    adapter.rating_sum = Adapter.rating_sum + (stars - row.stars)
    adapter.rating_count = Adapter.rating_count + int(added)
    row.stars, row.review, row.updated_at = stars, review.strip(), now()
    session.flush()
    return row


def ratings(session: Session, version_id: int) -> list[dict]:
    rows = session.scalars(
        select(Rating).where(Rating.version_id == version_id).order_by(Rating.updated_at.desc())
    )
    return [
        {
            "user": r.user,
            "stars": r.stars,
            "review": r.review,
            "updated_at": r.updated_at.isoformat() + "Z",
        }
        for r in rows
    ]


def report(session: Session, version: Version, reporter: str | None, reason: str) -> Report:
    reason = reason.strip()
    if not reason or len(reason) > MAX_REASON:
        raise CommunityError(422, f"a report needs a reason of 1 to {MAX_REASON} characters")
    row = Report(version_id=version.id, reporter=reporter, reason=reason)
    session.add(row)
    session.flush()
    return row


def deprecate(session: Session, version: Version, note: str, replaced_by: str | None) -> None:
    if replaced_by is not None:
        newer = session.scalar(
            select(Version.id).where(
                Version.adapter_id == version.adapter_id, Version.version == replaced_by
            )
        )
        if newer is None:
            raise CommunityError(422, f"there is no version {replaced_by!r} to point to")
    version.deprecated, version.replaced_by = note.strip() or "deprecated", replaced_by


def open_reports(session: Session, everything: bool = False) -> list[dict]:
    query = (
        select(Report, Version.version, Adapter.name, Namespace.name)
        .join(Version, Version.id == Report.version_id)
        .join(Adapter, Adapter.id == Version.adapter_id)
        .join(Namespace, Namespace.id == Adapter.namespace_id)
        .order_by(Report.id)
    )
    if not everything:
        query = query.where(Report.status == "open")
    return [
        {
            "id": r.id,
            "adapter": f"{ns}/{name}@{v}",
            "reporter": r.reporter,
            "reason": r.reason,
            "status": r.status,
            "created_at": r.created_at.isoformat() + "Z",
        }
        for r, v, name, ns in session.execute(query)
    ]


# ---- compatibility ---------------------------------------------------------------------


def fit_rows(folder: Path, version_id: int, bases: list[BaseRecord]) -> list[Fit]:
    """The gate's `check_fits` of the adapter in `folder` against each base."""

    rows = []
    for record in bases:
        problems = gate.check_fits(folder, base_models.BaseModel.from_json(record.record))
        rows.append(
            Fit(version_id=version_id, base_pk=record.id, fits=not problems, problems=problems)
        )
    return rows


def fit_all_versions(session: Session, store, base: BaseRecord) -> int:
    """Check every version against a newly registered `base` (the files `check_fits` reads
    are copied from the blob store into a temp folder); returns how many fit."""
    fitting = 0
    versions = session.scalars(select(Version.id).order_by(Version.id)).all()
    for version_id in versions:
        files = session.scalars(select(File).where(File.version_id == version_id)).all()
        with tempfile.TemporaryDirectory(prefix="gemmaforge-hub-fit-") as tmp:
            folder = Path(tmp)
            for f in files:
                if not _fit_input(f.path):
                    continue
                target = folder / f.path
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("wb") as out:
                    for chunk in store.open(f.sha256):
                        out.write(chunk)
            (row,) = fit_rows(folder, version_id, [base])
        session.add(row)
        fitting += row.fits
    session.flush()
    return fitting


def _fit_input(path: str) -> bool:
    """Files `check_fits` reads: the adapter config and weights, tokenizer and template."""
    return "/" not in path and (
        path.endswith((".safetensors", ".json", ".jinja", ".model")) or path == "tokenizer.model"
    )


def fits_of(session: Session, version_id: int) -> list[dict]:
    rows = session.execute(
        select(Fit, BaseRecord)
        .join(BaseRecord, BaseRecord.id == Fit.base_pk)
        .where(Fit.version_id == version_id)
        .order_by(BaseRecord.base_id, BaseRecord.created_at)
    )
    return [
        {
            "base": f"{b.base_id}@{b.revision}",
            "fits": f.fits,
            "problems": f.problems[:5],
        }
        for f, b in rows
    ]


def yank(session: Session, version: Version, reason: str, report_id: int | None = None) -> None:
    """Yank `version` (admin or publisher); marks its open reports (or one) as acted on."""
    version.yanked, version.yank_reason = True, reason
    query = select(Report).where(Report.version_id == version.id, Report.status == "open")
    if report_id is not None:
        query = select(Report).where(Report.id == report_id)
    for row in session.scalars(query):
        row.status = "yanked"
