"""Hub search: full text over name, card and tags, filters, sorts, and facet counts.

Full text is the database's own: SQLite FTS5 (`versions_fts`, porter stemming, ranked by
bm25) or PostgreSQL's tsvector (`search_tsv`, ranked by ts_rank); both are kept in step with
`versions.search_text` by the database (see migration 0002). A query's words are reduced
to letters and digits and each is matched as a prefix, so no user text reaches either
engine's query syntax. Only each adapter's `latest` version (the newest not yanked) is
searched: a search answers "which adapters", not "which versions".
"""

from __future__ import annotations

import re

from sqlalchemy import and_, column, desc, exists, func, literal_column, or_, select, table, text
from sqlalchemy.orm import Session

from gemmaforge.hub.filters import FACETS, METRIC, Filters
from gemmaforge.hub.server.db import (
    Adapter,
    BaseRecord,
    Fit,
    Metric,
    Namespace,
    Tag,
    Version,
)

LATEST = "latest"
WORD = re.compile(r"\w+", re.UNICODE)
FTS = table("versions_fts", column("rowid"))
"""SQLite's FTS5 index of versions.search_text (made by migration 0002, not the ORM)."""


def _words(q: str) -> list[str]:
    return [w.lower() for w in WORD.findall(q)][:12]


def _split_base(ref: str) -> tuple[str, str | None]:
    base_id, _, revision = ref.partition("@")
    return base_id, revision or None


def search_query(session: Session, f: Filters):
    """The SELECT of (Version, adapter name, namespace name, Adapter) rows matching `f`."""
    dialect = session.get_bind().dialect.name
    query = (
        select(Version, Adapter.name, Namespace.name, Adapter)
        .select_from(Tag)
        .join(Version, Version.id == Tag.version_id)
        .join(Adapter, Adapter.id == Tag.adapter_id)
        .join(Namespace, Namespace.id == Adapter.namespace_id)
        .where(Tag.name == LATEST)
    )
    relevance = None
    words = _words(f.q or "")
    if words:
        if dialect == "sqlite":
            match = " ".join(f'"{w}"*' for w in words)
            # The match runs once, as a subquery the LIMIT keeps SQLite from flattening:
            # flattened, the planner ran the whole MATCH again for every candidate row.
            found = (
                select(
                    FTS.c.rowid.label("id"),
                    func.bm25(literal_column("versions_fts")).label("score"),
                )
                .where(text("versions_fts MATCH :fts").bindparams(fts=match))
                .limit(1_000_000)
                .subquery("fts")
            )
            query = query.join(found, found.c.id == Version.id)
            relevance = found.c.score  # bm25: lower is better
        elif dialect == "postgresql":
            tsquery = " & ".join(f"{w}:*" for w in words)
            query = query.where(
                text("versions.search_tsv @@ to_tsquery('english', :tsq)").bindparams(tsq=tsquery)
            )
            relevance = text(
                "ts_rank(versions.search_tsv, to_tsquery('english', :tsq_rank)) DESC"
            ).bindparams(tsq_rank=tsquery)
        else:  # another database: substring match on each word
            for w in words:
                query = query.where(func.lower(Version.search_text).contains(w, autoescape=True))
    if f.base:
        base_id, revision = _split_base(f.base)
        query = query.where(Version.base_id == base_id)
        if revision:
            query = query.where(Version.base_revision == revision)
    if f.revision:
        query = query.where(Version.base_revision == f.revision)
    if f.family:
        query = query.where(Version.family == f.family)
    for modality in f.modality:
        query = query.where(Version.modalities.contains(modality[:20], autoescape=True))
    if f.domain:
        query = query.where(Version.domain == f.domain)
    if f.licence:
        query = query.where(func.lower(Version.licence) == f.licence.lower())
    if f.rank is not None:
        query = query.where(Version.rank == f.rank)
    if f.namespace:
        query = query.where(Namespace.name == f.namespace)
    if f.signer:
        # Each namespace has one pinned key, so "signed by NS" is "published in NS".
        query = query.where(
            or_(Namespace.name == f.signer, Version.key_fingerprint.startswith(f.signer))
        )
    for threshold in f.metric:
        found = METRIC.match(threshold)
        if not found:
            continue
        name, op, value = found[1], found[2], float(found[3])
        compare = {
            ">=": Metric.value >= value,
            "<=": Metric.value <= value,
            ">": Metric.value > value,
            "<": Metric.value < value,
            "=": Metric.value == value,
        }[op]
        query = query.where(
            exists().where(Metric.version_id == Version.id, Metric.name == name, compare)
        )
    if f.fits:
        base_id, revision = _split_base(f.fits)
        condition = [BaseRecord.base_id == base_id]
        if revision:
            condition.append(BaseRecord.revision == revision)
        query = query.where(
            exists()
            .where(Fit.version_id == Version.id, Fit.fits.is_(True), Fit.base_pk == BaseRecord.id)
            .where(and_(*condition))
        )
    return query, relevance


def ranked_ids(session: Session, f: Filters, limit: int = 20, offset: int = 0):
    """The SELECT of the ids of one page of matches of `f`, in `f.sort`'s order."""
    query, relevance = search_query(session, f)
    if f.sort == "pulls":
        order = [desc(Adapter.pulls), desc(Version.id)]
    elif f.sort == "rating":  # columns the index ix_adapters_rating holds, in its order
        order = [desc(Adapter.rating), desc(Adapter.rating_count), desc(Version.id)]
    elif f.sort == "recent" or relevance is None:
        order = [desc(Version.id)]
    else:
        order = [relevance, desc(Version.id)]
    # Two steps: rank only ids (a sort of narrow rows), then load the page's rows. Sorting
    # whole rows carried every match's card and provenance through the sorter.
    return query.with_only_columns(Version.id).order_by(*order).limit(limit).offset(offset)


def search(session: Session, f: Filters, limit: int = 20, offset: int = 0) -> list[dict]:
    ids = list(session.scalars(ranked_ids(session, f, limit, offset)))
    if not ids:
        return []
    rows = session.execute(
        select(Version, Adapter.name, Namespace.name, Adapter)
        .join(Adapter, Adapter.id == Version.adapter_id)
        .join(Namespace, Namespace.id == Adapter.namespace_id)
        .where(Version.id.in_(ids))
    ).all()
    by_id = {row[0].id: row for row in rows}
    return [result_json(*by_id[i]) for i in ids if i in by_id]


def result_json(v: Version, name: str, ns: str, adapter: Adapter) -> dict:
    return {
        "name": f"{ns}/{name}",
        "version": v.version,
        "digest": v.digest,
        "base": f"{v.base_id}@{v.base_revision}",
        "family": v.family,
        "rank": v.rank,
        "modalities": [m for m in v.modalities.split(",") if m],
        "licence": v.licence,
        "domain": v.domain,
        "summary": v.summary,
        "signer": ns,
        "key_fingerprint": v.key_fingerprint,
        "pulls": adapter.pulls,
        "rating": round(adapter.rating, 2) if adapter.rating_count else None,
        "ratings": adapter.rating_count,
        "deprecated": v.deprecated,
        "created_at": v.created_at.isoformat() + "Z",
    }


FACET_COLUMNS = {
    "domain": Version.domain,
    "family": Version.family,
    "licence": Version.licence,
    "base": Version.base_id,
    "rank": Version.rank,
}
"""The column each facet (a filter in `FACETS`) counts the values of."""


def facets(session: Session, f: Filters) -> dict[str, list[tuple[str, int]]]:
    """Counts per value of each facet among the matches of all the filters in `f` but that
    facet's own: with domain=legal chosen, the domain facet still says how many medical
    adapters the other filters match (what choosing medical instead would give), and the
    other facets count within legal. The facets whose filter is unset share one query
    grouped by all their columns (the combinations are few) and are summed here; each facet
    whose filter is set takes a query of its own (each redoes the full-text match)."""
    from collections import Counter

    counters = {name: Counter() for name in FACETS}
    unset = [name for name in FACETS if getattr(f, name) is None]
    chosen = [name for name in FACETS if getattr(f, name) is not None]
    for names, filters in [(unset, f)] + [([name], f.without(name)) for name in chosen]:
        if not names:
            continue
        query, _ = search_query(session, filters)
        fields = [FACET_COLUMNS[name] for name in names]
        grouped = query.with_only_columns(*fields, func.count()).group_by(*fields)
        for *values, n in session.execute(grouped.limit(10_000)):
            for name, value in zip(names, values, strict=True):
                if value is not None:
                    counters[name][str(value)] += n
    return {name: counters[name].most_common(12) for name in FACETS}
