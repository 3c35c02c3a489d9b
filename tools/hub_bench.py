"""Search and page latency of a hub with 10,000 published adapter versions (a benchmark, not
a test).

    python tools/hub_bench.py                      # SQLite in a temp folder
    python tools/hub_bench.py --db postgresql+psycopg://postgres@127.0.0.1:5432/postgres

Seeds the database directly (2,000 adapters x 5 versions over 50 namespaces, 3 files each,
varied bases, modalities and domains; the gate is not involved: this measures search), serves
it with `gemmaforge hub serve` (its own process) on loopback, and times `GET /api/adapters`
over HTTP for several kinds of query (full text, every filter, each sort with each kind of
filter set), then the web pages (home, search with facets, an adapter page, a publisher
page). Prints p50 and p95 per kind, in milliseconds, after the database's own time for each
sort x filter set's query (median of 5).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

WORDS = [
    "dictation",
    "clause",
    "extractor",
    "triage",
    "summary",
    "radiology",
    "contract",
    "invoice",
    "legal",
    "clinic",
]
BASES = ["google/gemma-4-E2B-it", "google/gemma-4-E4B-it", "google/gemma-3n-E2B-it"]
MODALITIES = ["text", "text,vision", "text,audio", "text,vision,audio"]
DOMAINS = ["medical", "legal", "finance", None]
LICENCES = ["apache-2.0", "mit", "gemma"]
RANKS = [4, 8, 16, 32]


def seed(sessions, versions: int, per_adapter: int = 5) -> None:
    from gemmaforge.hub.server.community import search_text
    from gemmaforge.hub.server.db import Adapter, File, Metric, Namespace, Tag, Version

    rng = random.Random(0)
    with sessions() as session:
        namespaces = [Namespace(name=f"org{i}") for i in range(50)]
        session.add_all(namespaces)
        session.flush()
        for a in range(versions // per_adapter):
            word = rng.choice(WORDS)
            adapter = Adapter(namespace_id=namespaces[a % 50].id, name=f"{word}-{a}")
            session.add(adapter)
            session.flush()
            base, modality, domain = rng.choice(BASES), rng.choice(MODALITIES), rng.choice(DOMAINS)
            adapter.pulls = rng.randrange(10_000)
            adapter.rating_count = rng.randrange(20)
            adapter.rating_sum = adapter.rating_count * rng.randint(1, 5)
            family = "gemma3n" if "3n" in base else "gemma4"
            licence, rank = rng.choice(LICENCES), rng.choice(RANKS)
            last = None
            for v in range(per_adapter):
                digest = hashlib.sha256(f"{a}-{v}".encode()).hexdigest()
                last = Version(
                    adapter_id=adapter.id,
                    version=f"v{v + 1}",
                    digest=digest,
                    base_id=base,
                    base_revision="0" * 40,
                    licence=licence,
                    domain=domain,
                    modalities=modality,
                    summary=f"{word}-{a} LoRA adapter for {word} {rng.choice(WORDS)} tasks",
                    card=f"# {word}\n\nA LoRA adapter for {word} work.\n",
                    family=family,
                    rank=rank,
                    provenance={},
                    key_fingerprint="f" * 64,
                    yanked=rng.random() < 0.02,
                )
                last.search_text = search_text(
                    f"{word}-{a}",
                    last.summary,
                    domain,
                    modality.split(","),
                    licence,
                    family,
                )
                session.add(last)
                session.flush()
                session.add(
                    Metric(version_id=last.id, name="exact_match", value=round(rng.random(), 3))
                )
                session.add_all(
                    File(version_id=last.id, path=p, size=100, sha256=digest)
                    for p in ("adapter_config.json", "adapter_model.safetensors", "model.sig")
                )
            session.add(Tag(adapter_id=adapter.id, name="latest", version_id=last.id))
            if a % 200 == 0:
                session.commit()
        session.commit()


FILTER_SETS = {
    "none": {},
    "text": {"q": "legal"},
    "domain+rank": {"domain": "legal", "rank": 16},
    "family+licence": {"family": "gemma4", "licence": "mit"},
    "text+filters+metric": {
        "q": "clinic",
        "base": BASES[1],
        "modality": "text",
        "metric": "exact_match>=0.5",
    },
}
"""Filter sets each sort is timed with (relevance without a query is newest first)."""


def database_times(sessions) -> None:
    """The database's own time for each sort x filter set's ranked-ids query (PostgreSQL:
    EXPLAIN ANALYZE's execution time; SQLite: the query in this process), median of 5: what
    a loaded machine's HTTP tails say little about."""
    import re

    from sqlalchemy import text

    from gemmaforge.hub.filters import Filters
    from gemmaforge.hub.server.search import ranked_ids

    with sessions() as session:
        postgres = session.get_bind().dialect.name == "postgresql"
        for sort in ("relevance", "pulls", "rating", "recent"):
            for name, params in FILTER_SETS.items():
                lists = {k: [v] for k, v in params.items() if k in ("modality", "metric")}
                page = ranked_ids(session, Filters(**{**params, **lists}, sort=sort))
                sql = page.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
                times = []
                for _ in range(5):
                    if postgres:
                        plan = [row[0] for row in session.execute(text(f"EXPLAIN ANALYZE {sql}"))]
                        times.append(float(re.search(r"Execution Time: ([\d.]+)", plan[-1])[1]))
                    else:
                        started = time.perf_counter()
                        list(session.scalars(page))
                        times.append((time.perf_counter() - started) * 1000)
                label = f"database, {sort}: {name}"
                print(f"{label:40s} median {statistics.median(times):6.1f} ms")


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    import requests

    from gemmaforge.hub.server import Settings
    from gemmaforge.hub.server.db import open_database
    from hub_support import HubProcess

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="database URL (default: SQLite in a temp folder)")
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    print(f"load average (1, 5, 15 min) at the start: {os.getloadavg()}")

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(root=Path(tmp), db_url=args.db, rate_burst=10**9, rate_per_s=1e9)
        _, sessions = open_database(settings.database_url)
        started = time.perf_counter()
        seed(sessions, args.versions)
        if settings.database_url.startswith("postgresql"):
            # What autovacuum does within a minute or so of a bulk load. Without it the
            # server starts on statistics autovacuum took part-way through the seed, and
            # the planner, expecting a few rows, picks plans that take seconds (see
            # migration 0003): that measured the timing of autovacuum, not the hub.
            from sqlalchemy import text

            with sessions() as session:
                session.execute(text("ANALYZE"))
                session.commit()
        print(
            f"seeded {args.versions} versions in {time.perf_counter() - started:.1f} s "
            f"({settings.database_url.split(':')[0]})"
        )
        database_times(sessions)
        # The server runs in its own process, as deployed: in this process it would share
        # the GIL with the timing loop, and every request would wait on thread switches.
        extra = ["--rate", "1000000", "--burst", "1000000"]
        server = HubProcess(settings.root, *extra, *(["--db", args.db] if args.db else []))
        queries = {
            "newest (no filter)": {},
            "text query": {"q": "radiology"},
            "base filter": {"base": BASES[1]},
            "modality filter": {"modality": "audio"},
            "query + base + modality": {"q": "legal", "base": BASES[0], "modality": "vision"},
            "all filters + metric": {
                "q": "legal",
                "base": f"{BASES[0]}@{'0' * 40}",
                "family": "gemma4",
                "modality": "text",
                "licence": "apache-2.0",
                "rank": 8,
                "signer": "org3",
                "metric": "exact_match>=0.5",
            },
            "metric threshold only": {"metric": "exact_match>=0.9", "sort": "recent"},
        }
        for sort in ("relevance", "pulls", "rating", "recent"):
            for name, params in FILTER_SETS.items():
                queries[f"{sort}: {name}"] = {**params, "sort": sort}
        pages = {
            "page: home": "/",
            "page: search + facets": "/search?q=legal&modality=text",
            "page: search, filters": "/search?family=gemma4&licence=mit&metric=exact_match>=0.5",
            "page: search, 2 facets chosen": "/search?q=legal&domain=legal&rank=16&sort=rating",
            "page: adapter": "/org7/{name}",
            "page: adapter version": "/org7/{name}/tree/v3",
            "page: publisher": "/org7",
        }
        rng = random.Random(1)
        with requests.Session() as http:
            for label, params in queries.items():
                times = []
                for i in range(args.repeats):
                    p = dict(params)
                    if "q" in p and i % 2:
                        p["q"] = rng.choice(WORDS)
                    t = time.perf_counter()
                    response = http.get(f"{server.url}/api/adapters", params=p, timeout=30)
                    times.append((time.perf_counter() - t) * 1000)
                    response.raise_for_status()
                print(
                    f"{label:30s} p50 {percentile(times, 50):6.1f} ms   "
                    f"p95 {percentile(times, 95):6.1f} ms   "
                    f"({len(response.json()['results'])} results)"
                )
            with sessions() as session:
                from sqlalchemy import select

                from gemmaforge.hub.server.db import Adapter, Namespace

                name = session.scalar(
                    select(Adapter.name).join(Namespace).where(Namespace.name == "org7").limit(1)
                )
            for label, path in pages.items():
                times = []
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    response = http.get(server.url + path.format(name=name), timeout=30)
                    times.append((time.perf_counter() - t) * 1000)
                    response.raise_for_status()
                print(
                    f"{label:30s} p50 {percentile(times, 50):6.1f} ms   "
                    f"p95 {percentile(times, 95):6.1f} ms   ({len(response.content)} bytes)"
                )
        server.stop()
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
