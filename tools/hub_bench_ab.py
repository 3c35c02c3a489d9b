"""Search and page latency before and after a change, interleaved: one hub served by another
checkout's code (before) and one by this checkout's (after), requests alternating between
the two, so both sides see the same machine load (a benchmark, not a test).

    git worktree add /tmp/before main
    python tools/hub_bench_ab.py /tmp/before                     # two SQLite hubs
    python tools/hub_bench_ab.py /tmp/before --db-before URL1 --db-after URL2   # PostgreSQL

Each side seeds its own database with its own code (tools/hub_bench.py's `seed`: 10,000
versions; PostgreSQL is then analysed) and serves it with its own `gemmaforge hub serve`.
Prints p50 / p95 per kind for each side and the p95 ratio after / before.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(HERE / "src"), str(HERE / "tests")]

SEED = """
import sys
from pathlib import Path
sys.path.insert(0, {tools!r})
from hub_bench import seed
from gemmaforge.hub.server import Settings
from gemmaforge.hub.server.db import open_database
settings = Settings(root=Path({root!r}), db_url={url!r})
_, sessions = open_database(settings.database_url)
seed(sessions, {versions})
if settings.database_url.startswith("postgresql"):
    from sqlalchemy import text
    with sessions() as session:
        session.execute(text("ANALYZE"))
        session.commit()
"""
FILTER_SETS = {
    "none": {},
    "text": {"q": "legal"},
    "domain+rank": {"domain": "legal", "rank": 16},
    "family+licence": {"family": "gemma4", "licence": "mit"},
    "text+filters+metric": {
        "q": "clinic",
        "base": "google/gemma-4-E4B-it",
        "modality": "text",
        "metric": "exact_match>=0.5",
    },
}
PAGES = {
    "page: home": ("/", {}),
    "page: search + facets": ("/search", {"q": "legal", "modality": "text"}),
    "page: search, 2 facets chosen": (
        "/search",
        {"q": "legal", "domain": "legal", "rank": 16, "sort": "rating"},
    ),
}


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    import requests

    from hub_support import HubProcess

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="the other checkout (its src/ and tools/)")
    parser.add_argument("--db-before", help="database URL for the before side (default SQLite)")
    parser.add_argument("--db-after", help="database URL for the after side (default SQLite)")
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    print(f"load average (1, 5, 15 min) at the start: {os.getloadavg()}", flush=True)
    sides = {
        "before": (args.before.resolve(), args.db_before),
        "after": (HERE, args.db_after),
    }
    kinds = {
        f"{sort}: {name}": ("/api/adapters", {**params, "sort": sort})
        for sort in ("relevance", "pulls", "rating", "recent")
        for name, params in FILTER_SETS.items()
    } | PAGES
    with tempfile.TemporaryDirectory() as tmp:
        servers = {}
        for side, (checkout, url) in sides.items():
            root = Path(tmp, side)
            root.mkdir()
            src, tools = str(checkout / "src"), str(checkout / "tools")
            code = SEED.format(tools=tools, root=str(root), url=url, versions=args.versions)
            started = time.perf_counter()
            env = {**os.environ, "PYTHONPATH": src}
            subprocess.run([sys.executable, "-c", code], check=True, env=env)
            print(f"{side}: seeded in {time.perf_counter() - started:.0f} s", flush=True)
            extra = ["--rate", "1000000", "--burst", "1000000"] + (["--db", url] if url else [])
            servers[side] = HubProcess(root, *extra, env={"PYTHONPATH": src})
        with requests.Session() as http:
            for label, (path, params) in kinds.items():
                times = {"before": [], "after": []}
                for i in range(args.repeats):
                    for side in ("before", "after") if i % 2 else ("after", "before"):
                        started = time.perf_counter()
                        response = http.get(servers[side].url + path, params=params, timeout=60)
                        times[side].append((time.perf_counter() - started) * 1000)
                        response.raise_for_status()
                b, a = times["before"], times["after"]
                print(
                    f"{label:32s} before {percentile(b, 50):6.1f} / {percentile(b, 95):6.1f} ms"
                    f"   after {percentile(a, 50):6.1f} / {percentile(a, 95):6.1f} ms"
                    f"   p95 after/before {percentile(a, 95) / percentile(b, 95):5.2f}",
                    flush=True,
                )
        for server in servers.values():
            server.stop()
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
