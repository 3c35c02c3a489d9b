"""Hub search on a seeded set: full text over name, card and tags, every filter, the sorts,
and the same filters through `gemmaforge hub search` - on SQLite and on a real PostgreSQL.

The set is written straight into the database (as a publish would leave it: search text,
metrics and fits made by the server's own functions), so each case knows exactly which
adapters must come back.
"""

from __future__ import annotations

import json

import pytest
import requests
from typer.testing import CliRunner

from gemmaforge.cli import app as cli_app
from gemmaforge.hub.server import Settings
from hub_support import HubServer

E2B = "google/gemma-4-E2B-it"
E4B = "google/gemma-4-E4B-it"
N3 = "google/gemma-3n-E2B-it"
OLD, NEW = "a" * 40, "b" * 40

# name, namespace, base, revision, family, modalities, domain, licence, rank, exact_match,
# pulls, stars, card
SET = [
    ("receipts-extractor", "acme", E2B, OLD, "gemma4", "text", "finance", "apache-2.0", 8,
     0.93, 50, [5, 4], "---\ntags: [invoices, ocr]\n---\n# Receipts\nTotals from receipts."),
    ("receipts-lite", "bob", E2B, NEW, "gemma4", "text", "finance", "mit", 4,
     0.71, 500, [2], "# Receipts lite\nSmaller receipt reader."),
    ("clinic-dictation", "acme", E4B, OLD, "gemma4", "text,audio", "medical", "apache-2.0", 16,
     0.88, 5, [5, 5, 5], "# Dictation\nTurns a clinician's dictation into notes."),
    ("clause-finder", "lawco", N3, OLD, "gemma3n", "text", "legal", "apache-2.0", 8,
     0.95, 10, [], "# Clauses\nFinds indemnity clauses in contracts."),
    ("xray-notes", "acme", E4B, NEW, "gemma4", "text,vision", "medical", "gemma", 32,
     None, 0, [3], "# X-ray notes\nDrafts radiology reports from images."),
    ("invoice-vision", "bob", E2B, OLD, "gemma4", "text,vision", "finance", "apache-2.0", 8,
     0.91, 70, [4], "# Invoice vision\nReads scanned invoices and receipts."),
]  # fmt: skip


def seed(sessions) -> None:
    import datetime as dt

    from gemmaforge.hub.server.community import add_metrics, search_text
    from gemmaforge.hub.server.db import (
        Adapter,
        BaseRecord,
        Fit,
        Namespace,
        Rating,
        Tag,
        Version,
    )

    with sessions() as s:
        bases = {}
        for base_id, rev in ((E2B, OLD), (E2B, NEW), (E4B, OLD), (E4B, NEW), (N3, OLD)):
            row = BaseRecord(base_id=base_id, revision=rev, weights_sha256="0" * 64, record={})
            s.add(row)
            s.flush()
            bases[base_id, rev] = row
        spaces = {}
        start = dt.datetime(2026, 1, 1)
        for i, (
            name,
            ns,
            base,
            rev,
            family,
            mods,
            domain,
            lic,
            rank,
            em,
            pulls,
            stars,
            card,
        ) in enumerate(SET):
            if ns not in spaces:
                spaces[ns] = Namespace(name=ns)
                s.add(spaces[ns])
                s.flush()
            adapter = Adapter(namespace_id=spaces[ns].id, name=name, pulls=pulls)
            s.add(adapter)
            s.flush()
            v = Version(
                adapter_id=adapter.id,
                version="v1",
                digest=f"{i:064x}",
                base_id=base,
                base_revision=rev,
                licence=lic,
                domain=domain,
                modalities=mods,
                summary=name,
                card=card,
                provenance={},
                key_fingerprint=f"{ns}-key-{i}",
                family=family,
                rank=rank,
                created_at=start + dt.timedelta(days=i),
                search_text=search_text(name, card, domain, mods.split(","), lic, family),
            )
            s.add(v)
            s.flush()
            add_metrics(s, v.id, [{"metrics": {"adapter": {"exact_match": em}}}] if em else [])
            for j, n in enumerate(stars):
                s.add(Rating(version_id=v.id, adapter_id=adapter.id, user=f"u{j}", stars=n))
            adapter.rating_sum, adapter.rating_count = sum(stars), len(stars)
            # Fits: the base it names, and the other revision of the same id for E2B ones.
            for (bid, brev), row in bases.items():
                fits = bid == base and (brev == rev or base == E2B)
                s.add(Fit(version_id=v.id, base_pk=row.id, fits=fits, problems=[]))
            s.add(Tag(adapter_id=adapter.id, name="latest", version_id=v.id))
        # A yanked adapter never shows (its `latest` tag is gone).
        ghost = Adapter(namespace_id=spaces["acme"].id, name="receipts-yanked")
        s.add(ghost)
        s.flush()
        s.add(
            Version(
                adapter_id=ghost.id,
                version="v1",
                digest="f" * 64,
                base_id=E2B,
                base_revision=OLD,
                licence="apache-2.0",
                modalities="text",
                card="# receipts",
                provenance={},
                key_fingerprint="x",
                yanked=True,
                search_text="receipts-yanked receipts",
            )
        )
        s.commit()


CASES = [
    ({"q": "receipts"}, {"receipts-extractor", "receipts-lite", "invoice-vision"}),
    ({"q": "receipt"}, {"receipts-extractor", "receipts-lite", "invoice-vision"}),  # prefix
    ({"q": "ocr"}, {"receipts-extractor"}),  # a card tag
    ({"q": "indemnity contracts"}, {"clause-finder"}),  # every word, from the card
    ({"q": "dictation"}, {"clinic-dictation"}),
    ({"q": "'; DROP TABLE versions; --"}, set()),  # only words reach the engine
    ({"base": E2B}, {"receipts-extractor", "receipts-lite", "invoice-vision"}),
    ({"base": f"{E2B}@{NEW}"}, {"receipts-lite"}),
    ({"base": E4B, "revision": NEW}, {"xray-notes"}),
    ({"family": "gemma3n"}, {"clause-finder"}),
    ({"modality": "vision"}, {"xray-notes", "invoice-vision"}),
    ({"modality": "audio", "domain": "medical"}, {"clinic-dictation"}),
    ({"domain": "finance", "licence": "apache-2.0"}, {"receipts-extractor", "invoice-vision"}),
    ({"licence": "MIT"}, {"receipts-lite"}),
    ({"rank": 8}, {"receipts-extractor", "clause-finder", "invoice-vision"}),
    ({"signer": "bob"}, {"receipts-lite", "invoice-vision"}),
    ({"metric": "exact_match>=0.9"}, {"receipts-extractor", "clause-finder", "invoice-vision"}),
    ({"metric": "exact_match<0.8"}, {"receipts-lite"}),
    (
        {"q": "receipts", "base": E2B, "metric": "exact_match>=0.9", "licence": "apache-2.0"},
        {"receipts-extractor", "invoice-vision"},
    ),
    ({"q": "receipts", "signer": "acme", "modality": "text", "rank": 8}, {"receipts-extractor"}),
    ({"fits": f"{E2B}@{NEW}"}, {"receipts-extractor", "receipts-lite", "invoice-vision"}),
    ({"fits": f"{E4B}@{NEW}"}, {"xray-notes"}),
    ({"q": "nothing-like-this"}, set()),
]

ORDERS = [
    ({"sort": "pulls"}, ["receipts-lite", "invoice-vision", "receipts-extractor"]),
    ({"sort": "rating"}, ["clinic-dictation", "receipts-extractor", "invoice-vision"]),
    ({"sort": "recent"}, ["invoice-vision", "xray-notes", "clause-finder"]),
]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def hub(request, tmp_path_factory):
    settings = Settings(root=tmp_path_factory.mktemp(f"search-{request.param}"))
    pg = None
    if request.param == "postgres":
        from services import start_postgres

        pg = start_postgres()
        settings.db_url = pg.url
    server = HubServer(settings, web=True)  # the API and the search page
    seed(server.app.state.hub.sessions)
    yield server
    server.stop()
    if pg is not None:
        pg.remove()


def names(hub, params: dict) -> list[str]:
    response = requests.get(f"{hub.url}/api/adapters", params=params, timeout=30)
    assert response.status_code == 200, response.text
    return [r["name"].split("/")[1] for r in response.json()["results"]]


def test_filters_find_exactly_the_expected_adapters(hub):
    from gemmaforge.hub.client.api import HubClient

    client = HubClient(hub.url)
    for params, expected in CASES:
        found = names(hub, params)
        assert set(found) == expected, params
        assert len(found) == len(set(found)), params  # one row per adapter
        # The client sends the same filters (Filters.query_params) and gets the same answer.
        fields = {k: [v] if k in ("modality", "metric") else v for k, v in params.items()}
        via_client = client.search(fields.pop("q", None), **fields)
        assert {r["name"].split("/")[1] for r in via_client} == expected, params


def test_server_client_and_cli_share_one_filter_set(hub):
    """Every field of Filters is a query parameter of /api/adapters and an option of `hub
    search`; a bad filter is refused by the CLI before it reaches the hub (exit 2)."""
    import typer.main

    from gemmaforge.hub.filters import Filters

    fields = set(Filters.model_fields)
    spec = requests.get(f"{hub.url}/openapi.json", timeout=30).json()
    query = spec["paths"]["/api/adapters"]["get"]["parameters"]
    assert fields <= {p["name"] for p in query if p["in"] == "query"}
    command = typer.main.get_command(cli_app).commands["hub"].commands["search"]
    options = {p.name for p in command.params if p.param_type_name == "option"}
    assert fields - {"q"} <= options
    result = CliRunner().invoke(
        cli_app, ["hub", "search", "--hub", "http://127.0.0.1:9", "--metric", "accuracy"]
    )
    assert result.exit_code == 2, result.output
    assert "exact_match>=0.9" in result.output


def test_sorts(hub):
    for params, first in ORDERS:
        assert names(hub, params)[:3] == first, params
    # Relevance: the adapter named for the word ranks above one that mentions it once.
    assert names(hub, {"q": "receipts", "sort": "relevance"})[0].startswith("receipts")


FACET_CASES = [
    (
        {},
        {
            "domain": {"finance": 3, "medical": 2, "legal": 1},
            "family": {"gemma4": 5, "gemma3n": 1},
            "licence": {"apache-2.0": 4, "mit": 1, "gemma": 1},
            "base": {E2B: 3, E4B: 2, N3: 1},
            "rank": {"8": 3, "4": 1, "16": 1, "32": 1},
        },
    ),
    # Each facet counts with every filter but its own: the domain facet still offers legal
    # (the rank-8 adapter outside finance), the rank facet rank 4 (the finance one not
    # rank 8), and the rest count within finance and rank 8.
    (
        {"domain": "finance", "rank": 8},
        {
            "domain": {"finance": 2, "legal": 1},
            "family": {"gemma4": 2},
            "licence": {"apache-2.0": 2},
            "base": {E2B: 2},
            "rank": {"8": 2, "4": 1},
        },
    ),
    (
        {"q": "receipts", "licence": "apache-2.0", "modality": ["text"]},
        {
            "domain": {"finance": 2},
            "family": {"gemma4": 2},
            "licence": {"apache-2.0": 2, "mit": 1},
            "base": {E2B: 2},
            "rank": {"8": 2},
        },
    ),
    (
        {"base": f"{E4B}@{NEW}", "family": "gemma4", "metric": ["exact_match>=0.8"]},
        {  # nothing matches (xray-notes has no eval), but the base facet offers two bases
            "domain": {},
            "family": {},
            "licence": {},
            "base": {E2B: 2, E4B: 1},  # gemma4 with exact_match >= 0.8, on any base
            "rank": {},
        },
    ),
]


def test_facets_count_each_value_with_all_the_other_filters(hub):
    from gemmaforge.hub.filters import Filters
    from gemmaforge.hub.server.search import facets

    with hub.app.state.hub.sessions() as session:
        for params, expected in FACET_CASES:
            found = {k: dict(v) for k, v in facets(session, Filters(**params)).items()}
            assert found == expected, params


def test_search_page_shows_the_facet_counts(hub):
    """The page lists each facet's values with those counts: with finance and rank 8 chosen,
    the domain facet still offers legal (1) and the rank facet rank 4 (1)."""
    import re

    params = {"domain": "finance", "rank": 8}
    html = requests.get(f"{hub.url}/search", params=params, timeout=30).text
    shown = {}
    for facet, items in re.findall(r'data-facet="(\w+)">(.*?)</ul>', html, re.DOTALL):
        pairs = re.findall(r">([^<]+)</a> <span class=\"muted\">(\d+)</span>", items)
        shown[facet] = {value: int(n) for value, n in pairs}
    assert shown["domain"] == {"finance": 2, "legal": 1}
    assert shown["rank"] == {"8": 2, "4": 1}
    assert shown["licence"] == {"apache-2.0": 2}
    # The filter form as a browser submits it, every box empty but one: blanks mean "any".
    form = {"q": "", "base": "", "fits": "", "licence": "MIT", "signer": "", "metric": ""}
    form |= {"modality": "", "sort": "relevance"}
    response = requests.get(f"{hub.url}/search", params=form, timeout=30)
    assert response.status_code == 200, response.text
    assert 'id="results"' in response.text and "receipts-lite" in response.text
    assert "invoice-vision" not in response.text


def test_bad_metric_filter_is_a_clear_422(hub):
    response = requests.get(f"{hub.url}/api/adapters", params={"metric": "accuracy"}, timeout=30)
    assert response.status_code == 422
    assert "exact_match>=0.9" in response.json()["problems"][0]


def test_publisher_api_lists_its_adapters(hub):
    data = requests.get(f"{hub.url}/api/namespaces/bob", timeout=30).json()
    assert {a["name"] for a in data["adapters"]} == {"bob/receipts-lite", "bob/invoice-vision"}


def test_cli_search_takes_the_same_filters(hub, monkeypatch):
    monkeypatch.delenv("GEMMAFORGE_HUB_TOKEN", raising=False)
    args = ["hub", "search", "receipts", "--hub", hub.url, "--json"]
    args += ["--base", E2B, "--metric", "exact_match>=0.9", "--licence", "apache-2.0"]
    args += ["--sort", "pulls"]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    found = [r["name"] for r in json.loads(result.output)]
    assert found == ["bob/invoice-vision", "acme/receipts-extractor"]
    result = CliRunner().invoke(
        cli_app, ["hub", "search", "--hub", hub.url, "--family", "gemma3n", "--rank", "8"]
    )
    assert result.exit_code == 0, result.output
    assert "lawco/clause-finder@v1" in result.output
    assert "receipts" not in result.output


def test_a_part_one_database_migrates_and_its_adapters_are_found(tmp_path):
    """A hub made before migration 0002 upgrades in place: its adapters get search text and
    land in the full-text index, pull totals carry over."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from gemmaforge.hub.server import db
    from gemmaforge.hub.server.search import Filters, search

    engine = db.make_engine(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    config = Config()
    config.set_main_option("script_location", str(db.Path(db.__file__).parent / "migrations"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(
            text("INSERT INTO namespaces (id, name, created_at) VALUES (1, 'old', '2026-01-01');")
        )
        connection.execute(
            text(
                "INSERT INTO adapters (id, namespace_id, name, created_at) "
                "VALUES (1, 1, 'scribe', '2026-01-01')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO versions (id, adapter_id, version, digest, base_id, base_revision, "
                "licence, modalities, summary, card, provenance, key_fingerprint, yanked, "
                "pulls, created_at) VALUES (1, 1, 'v1', :d, 'b', 'r', 'mit', 'text', "
                "'scribe Writes discharge letters', '# x', '{}', 'k', 0, 7, '2026-01-01')"
            ),
            {"d": "0" * 64},
        )
        connection.execute(
            text("INSERT INTO tags (id, adapter_id, name, version_id) VALUES (1, 1, 'latest', 1)")
        )
    db.migrate(engine)
    sessions = db.sessionmaker(engine)
    with sessions() as session:
        found = search(session, Filters(q="discharge"))
        assert [r["name"] for r in found] == ["old/scribe"]
        assert found[0]["pulls"] == 7


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_rating_column_follows_each_rating_write(backend, tmp_path):
    """`adapters.rating` (the sort key) is computed by the database in the same write as the
    rating totals: new ratings and an edited one move it, and the rating sort follows."""
    from gemmaforge.hub.filters import Filters
    from gemmaforge.hub.server import community, db
    from gemmaforge.hub.server.search import search

    url, pg = f"sqlite:///{tmp_path / 'hub.sqlite'}", None
    if backend == "postgres":
        from services import start_postgres

        pg = start_postgres()
        url = pg.url
    try:
        engine, sessions = db.open_database(url)
        with sessions() as s:
            ns = db.Namespace(name="pub")
            s.add(ns)
            s.flush()
            versions = []
            for i, name in enumerate(("steady", "mover")):
                adapter = db.Adapter(namespace_id=ns.id, name=name)
                s.add(adapter)
                s.flush()
                v = db.Version(
                    adapter_id=adapter.id, version="v1", digest=f"{i:064x}", base_id="b",
                    base_revision="r", licence="mit", modalities="text", provenance={},
                    key_fingerprint="k", search_text=name,
                )  # fmt: skip
                s.add(v)
                s.flush()
                s.add(db.Tag(adapter_id=adapter.id, name="latest", version_id=v.id))
                versions.append(v)
            steady, mover = versions
            for user, stars in (("u1", 4), ("u2", 3)):
                community.rate(s, steady, user, stars, "")
            s.commit()
            by_rating = Filters(sort="rating")
            # (user, stars, mover's mean and count after, first by rating); steady is 3.5.
            steps = [
                ("u1", 4, 4.0, 1, "pub/mover"),
                ("u2", 2, 3.0, 2, "pub/steady"),
                ("u2", 4, 4.0, 2, "pub/mover"),  # u2 edits their rating
            ]
            for user, stars, mean, count, first in steps:
                community.rate(s, mover, user, stars, "")
                s.commit()
                adapter = s.get(db.Adapter, mover.adapter_id)
                s.refresh(adapter)
                assert (adapter.rating, adapter.rating_count) == (mean, count), (user, stars)
                assert search(s, by_rating)[0]["name"] == first, (user, stars)
        engine.dispose()
    finally:
        if pg is not None:
            pg.remove()
