"""The hub's HTTP API (FastAPI): publish, search, show, pull and yank adapters.

`create_app(settings)` migrates the database (`alembic upgrade head`), deletes orphan blobs
left by crashed uploads, and returns the app. Endpoints (all errors are JSON `{"error": ...}`
with a 4xx status):

- `PUT /api/blobs/{sha256}`: upload one file's bytes, streamed; stored under its hash only
  if the bytes hash to it. `HEAD`/`GET` the same path to test for / read a blob.
- `POST /api/adapters/{ns}/{name}/versions`: commit a version from uploaded blobs (a
  manifest of `path -> sha256`, the base it claims, licence). The server assembles the folder
  in a temp dir, runs the gate on it (files, safetensors, signature against the namespace's
  pinned key, shapes against the registered base, licence) and inserts the version, its
  files and its `latest` tag in one transaction: a version is visible complete or not at all.
- `GET /api/adapters` (search), `GET /api/adapters/{ns}/{name}`,
  `GET /api/adapters/{ns}/{name}/versions/{ref}` (a version, tag or digest),
  `POST .../versions/{v}/yank`.
- `POST /api/keys` (register the token's namespace key; the first is pinned),
  `GET /api/namespaces/{ns}/keys`, `POST /api/bases`, `GET /api/bases`.
- The read side of the Hugging Face Hub API (see `hf.py`).

Publishing needs a token of the namespace (`Authorization: Bearer TOKEN`); reading is
anonymous unless the server is private.
"""

# No `from __future__ import annotations` here: FastAPI resolves the dependency types
# (Reader, DB) that create_app defines locally, which string annotations would hide.

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel as Schema
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from gemmaforge import signing
from gemmaforge.errors import UserError
from gemmaforge.hub import bases, gate
from gemmaforge.hub.filters import Filters
from gemmaforge.hub.server import auth, community
from gemmaforge.hub.server.db import (
    Adapter,
    BaseRecord,
    EvalReport,
    File,
    Fit,
    Namespace,
    PublisherKey,
    Tag,
    Version,
    open_database,
)
from gemmaforge.hub.server.hf import add_hf_routes
from gemmaforge.hub.server.search import search as run_search
from gemmaforge.hub.server.settings import Settings
from gemmaforge.hub.server.storage import SHA256, BlobStore, HashMismatch, TooLarge

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
LATEST = "latest"
CARD = "README.md"
PROVENANCE = "provenance.json"
MAX_FILES = 1000


class HubError(HTTPException):
    """A 4xx answer: `{"error": message}` plus optional extra fields (e.g. `problems`)."""

    def __init__(self, status: int, message: str, headers: dict | None = None, **extra: Any):
        super().__init__(status, message, headers=headers)
        self.extra = extra


@dataclass
class Hub:
    settings: Settings
    sessions: sessionmaker
    store: BlobStore
    limiter: auth.RateLimiter


@dataclass
class Caller:
    namespace: str | None
    """The namespace of the caller's token, None for anonymous."""


class BaseRef(Schema):
    id: str = Field(max_length=200)
    revision: str = Field(max_length=200)


class EvalIn(Schema):
    eval_set_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    report: dict


class CommitIn(Schema):
    version: str = Field(max_length=64)
    files: dict[str, str] = Field(max_length=MAX_FILES)
    """Path in the adapter folder -> sha256 of an uploaded blob."""
    base: BaseRef
    licence: str = Field(min_length=1, max_length=100)
    domain: str | None = Field(default=None, max_length=100)
    eval_reports: list[EvalIn] = Field(default_factory=list, max_length=20)


class YankIn(Schema):
    reason: str = Field(min_length=1, max_length=2000)


class RatingIn(Schema):
    stars: int = Field(ge=1, le=5)
    review: str = Field(default="", max_length=community.MAX_REVIEW)


class ReportIn(Schema):
    reason: str = Field(min_length=1, max_length=community.MAX_REASON)


class DeprecateIn(Schema):
    note: str = Field(min_length=1, max_length=2000)
    replaced_by: str | None = Field(default=None, max_length=64)


class KeyIn(Schema):
    pem: str = Field(min_length=1, max_length=20_000)


def version_digest(files: dict[str, str]) -> str:
    """A version's identity: sha256 over `sha256 path` lines, sorted by path."""
    lines = "".join(f"{files[path]} {path}\n" for path in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def unsafe_path(path: str) -> bool:
    """A manifest path that could land outside the folder it is assembled in (checked before
    anything is written; the gate then judges every file again by name and content)."""
    parts = path.split("/")
    return (
        not path
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or any(part in ("", ".", "..") for part in parts)
        or re.match(r"^[A-Za-z]:", path) is not None
        or len(path) > 400
    )


def create_app(settings: Settings, extensions: Iterable[Callable[[FastAPI], None]] = ()) -> FastAPI:
    """The hub app: database migrated, orphan blobs collected, routes mounted. Each of
    `extensions` is called with the app last (the web pages, a layer above, add themselves
    so: this module never imports them)."""
    settings.root.mkdir(parents=True, exist_ok=True)
    _, sessions = open_database(settings.database_url)
    store = BlobStore(settings.blob_url, settings.storage_options)
    hub = Hub(settings, sessions, store, auth.RateLimiter(settings.rate_per_s, settings.rate_burst))
    collect_orphans(hub)

    app = FastAPI(title="gemmaforge hub", version="1", docs_url=None, redoc_url=None)
    app.state.hub = hub
    _errors(app)
    _limits(app, hub)

    def db():
        with hub.sessions() as session:
            yield session

    DB = Annotated[Session, Depends(db)]

    def caller(request: Request, session: DB) -> Caller:
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        # Limited before the token is looked up, so bad tokens cost the database nothing.
        key = f"token:{auth.hash_token(token)}" if token else f"ip:{_client(request)}"
        if not hub.limiter.allow(key):
            raise HubError(429, "too many requests; slow down and retry in a second")
        namespace = None
        if token:
            ns = auth.token_namespace(session, token)
            if ns is None:
                raise HubError(401, "the token is not valid on this hub")
            namespace = ns.name
        return Caller(namespace)

    def reader(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if hub.settings.private and who.namespace is None:
            raise HubError(401, "this hub is private: send a token (Authorization: Bearer ...)")
        return who

    def writer(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if who.namespace is None:
            raise HubError(401, "publishing needs a token: `gemmaforge hub token create NS`")
        return who

    Reader = Annotated[Caller, Depends(reader)]
    Writer = Annotated[Caller, Depends(writer)]

    @app.get("/api/health")
    def health() -> dict:
        return {"ok": True}

    # ---- blobs -------------------------------------------------------------------------

    @app.put("/api/blobs/{sha256}", status_code=201)
    async def put_blob(sha256: str, request: Request, who: Writer) -> dict:
        _check_sha(sha256)
        limit = hub.settings.max_blob_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise HubError(413, f"the file is larger than this hub's cap of {limit} bytes")
        spool_dir = hub.settings.root / "uploads"
        spool_dir.mkdir(exist_ok=True)
        spool = spool_dir / f"{os.getpid()}-{os.urandom(8).hex()}"
        digest, size = hashlib.sha256(), 0
        try:
            with spool.open("wb") as out:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise HubError(413, f"the file is larger than this hub's cap of {limit}")
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != sha256:
                raise HubError(400, f"the bytes sent hash to {digest.hexdigest()}, not {sha256}")
            try:
                await run_in_threadpool(hub.store.put_stream, sha256, _chunks(spool), limit)
            except (HashMismatch, TooLarge) as exc:
                raise HubError(400, str(exc)) from None
        finally:
            spool.unlink(missing_ok=True)
        return {"sha256": sha256, "size": size}

    @app.head("/api/blobs/{sha256}")
    def head_blob(sha256: str, who: Writer) -> Response:
        # For publishers (to skip uploading what the hub has): anonymous readers must not
        # learn which unpublished bytes someone uploaded.
        _check_sha(sha256)
        if not hub.store.exists(sha256):
            raise HubError(404, f"no blob {sha256}")
        return Response(headers={"Content-Length": str(hub.store.size(sha256))})

    @app.get("/api/blobs/{sha256}")
    def get_blob(sha256: str, who: Reader, session: DB) -> StreamingResponse:
        _check_sha(sha256)
        if session.scalar(select(File.id).where(File.sha256 == sha256).limit(1)) is None:
            # Only blobs of published versions are readable: an upload in progress is not
            # public until its version is committed.
            raise HubError(404, f"no published file has sha256 {sha256}")
        return blob_response(hub, sha256, None)

    # ---- keys and bases ----------------------------------------------------------------

    @app.post("/api/keys", status_code=201)
    def add_key(body: KeyIn, who: Writer, session: DB) -> dict:
        fingerprint = _fingerprint(body.pem)
        ns = session.scalar(select(Namespace).where(Namespace.name == who.namespace))
        existing = session.scalar(select(PublisherKey).where(PublisherKey.namespace_id == ns.id))
        if existing is not None:
            if existing.fingerprint == fingerprint:
                return {"namespace": ns.name, "fingerprint": fingerprint, "pinned": True}
            raise HubError(
                409,
                f"namespace {ns.name} already has a pinned key ({existing.fingerprint}); "
                "a pinned key cannot be replaced through the API",
            )
        session.add(PublisherKey(namespace_id=ns.id, pem=body.pem, fingerprint=fingerprint))
        try:
            session.commit()
        except IntegrityError:
            raise HubError(409, f"namespace {ns.name} already has a pinned key") from None
        return {"namespace": ns.name, "fingerprint": fingerprint, "pinned": True}

    @app.get("/api/namespaces/{namespace}/keys")
    def list_keys(namespace: str, who: Reader, session: DB) -> dict:
        rows = session.scalars(
            select(PublisherKey).join(Namespace).where(Namespace.name == namespace)
        ).all()
        return {
            "namespace": namespace,
            "keys": [
                {"pem": k.pem, "fingerprint": k.fingerprint, "pinned": k.pinned} for k in rows
            ],
        }

    @app.post("/api/bases", status_code=201)
    def add_base(body: dict, who: Writer, session: DB) -> dict:
        record = _base_record(body)
        found = session.scalar(
            select(BaseRecord).where(
                BaseRecord.base_id == record["id"], BaseRecord.revision == record["revision"]
            )
        )
        if found is not None:
            if found.record == record:
                return record
            raise HubError(409, f"base {record['id']}@{record['revision']} is already registered")
        row = BaseRecord(
            base_id=record["id"],
            revision=record["revision"],
            weights_sha256=record["weights_sha256"],
            record=record,
        )
        session.add(row)
        try:
            session.commit()
        except IntegrityError:
            raise HubError(409, f"base {record['id']}@{record['revision']} is registered") from None
        # Which published adapters fit the new base (e.g. a newer revision of their own).
        community.fit_all_versions(session, hub.store, row)
        session.commit()
        return record

    @app.get("/api/bases")
    def list_bases(
        who: Reader,
        session: DB,
        id: Annotated[str | None, Query(max_length=200)] = None,
        revision: Annotated[str | None, Query(max_length=200)] = None,
        weights_sha256: Annotated[str | None, Query(max_length=64)] = None,
    ) -> dict:
        query = select(BaseRecord).order_by(BaseRecord.id)
        if id is not None:
            query = query.where(BaseRecord.base_id == id)
        if revision is not None:
            query = query.where(BaseRecord.revision == revision)
        if weights_sha256 is not None:
            query = query.where(BaseRecord.weights_sha256 == weights_sha256)
        return {"bases": [row.record for row in session.scalars(query.limit(500))]}

    # ---- adapters ----------------------------------------------------------------------

    @app.post("/api/adapters/{namespace}/{name}/versions", status_code=201)
    def commit_version(namespace: str, name: str, body: CommitIn, who: Writer) -> dict:
        _check_names(namespace, name)
        if who.namespace != namespace:
            raise HubError(403, f"the token is for namespace {who.namespace}, not {namespace}")
        if not VERSION.match(body.version):
            raise HubError(422, f"version {body.version!r} is not a valid version name")
        return commit(hub, namespace, name, body)

    @app.get("/api/adapters")
    def search(
        who: Reader,
        session: DB,
        filters: SearchQuery,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> dict:
        return {"results": run_search(session, filters, limit, offset)}

    @app.get("/api/namespaces/{namespace}")
    def publisher(namespace: str, who: Reader, session: DB) -> dict:
        ns = session.scalar(select(Namespace).where(Namespace.name == namespace))
        if ns is None:
            raise HubError(404, f"no publisher {namespace} on this hub")
        found = run_search(session, Filters(namespace=namespace, sort="recent"), 100, 0)
        return {"namespace": namespace, "adapters": found}

    @app.get("/api/adapters/{namespace}/{name}")
    def show_adapter(namespace: str, name: str, who: Reader, session: DB) -> dict:
        adapter = find_adapter(session, namespace, name)
        versions = session.scalars(
            select(Version).where(Version.adapter_id == adapter.id).order_by(Version.id)
        ).all()
        tags = session.execute(
            select(Tag.name, Version.version)
            .join(Version, Tag.version_id == Version.id)
            .where(Tag.adapter_id == adapter.id)
        ).all()
        return {
            "name": f"{namespace}/{name}",
            "tags": dict(tags),
            "versions": [_version_brief(v) for v in versions],
        }

    @app.get("/api/adapters/{namespace}/{name}/versions/{ref}")
    def show_version(
        namespace: str, name: str, ref: str, who: Reader, session: DB, pull: bool = False
    ) -> dict:
        version = resolve(session, namespace, name, ref)
        if pull:
            community.count_pull(session, version)
            session.commit()
        return version_json(session, version)

    @app.get("/api/adapters/{namespace}/{name}/versions/{ref}/ratings")
    def list_ratings(namespace: str, name: str, ref: str, who: Reader, session: DB) -> dict:
        version = resolve(session, namespace, name, ref)
        return {"ratings": community.ratings(session, version.id)}

    @app.post("/api/adapters/{namespace}/{name}/versions/{ref}/ratings")
    def add_rating(
        namespace: str, name: str, ref: str, body: RatingIn, who: Writer, session: DB
    ) -> dict:
        version = resolve(session, namespace, name, ref)
        with community_errors():
            row = community.rate(session, version, who.namespace, body.stars, body.review)
        session.commit()
        return {"user": row.user, "stars": row.stars, "review": row.review}

    @app.post("/api/adapters/{namespace}/{name}/versions/{ref}/reports", status_code=201)
    def add_report(
        namespace: str, name: str, ref: str, body: ReportIn, who: Writer, session: DB
    ) -> dict:
        version = resolve(session, namespace, name, ref)
        with community_errors():
            row = community.report(session, version, who.namespace, body.reason)
        session.commit()
        return {"id": row.id, "status": row.status}

    @app.post("/api/adapters/{namespace}/{name}/versions/{ref}/deprecate")
    def deprecate(
        namespace: str, name: str, ref: str, body: DeprecateIn, who: Writer, session: DB
    ) -> dict:
        if who.namespace != namespace:
            raise HubError(403, f"the token is for namespace {who.namespace}, not {namespace}")
        version = resolve(session, namespace, name, ref)
        with community_errors():
            community.deprecate(session, version, body.note, body.replaced_by)
        session.commit()
        return version_json(session, version)

    @app.post("/api/adapters/{namespace}/{name}/versions/{ref}/yank")
    def yank(namespace: str, name: str, ref: str, body: YankIn, who: Writer, session: DB) -> dict:
        if who.namespace != namespace:
            raise HubError(403, f"the token is for namespace {who.namespace}, not {namespace}")
        version = resolve(session, namespace, name, ref)
        community.yank(session, version, body.reason)
        _point_latest(session, version.adapter_id)
        session.commit()
        return _version_brief(version)

    add_hf_routes(app, hub, Reader, DB)
    for extend in extensions:
        extend(app)
    return app


SearchQuery = Annotated[Filters, Query()]
"""The search filters from a query string (the JSON API and the search page): FastAPI reads
and checks each field of `Filters`, and a bad one is a 422 naming it."""


class community_errors:
    """Turns a CommunityError into the matching 4xx HubError."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, community.CommunityError):
            raise HubError(exc.status, str(exc)) from None
        return False


# ---- the commit ------------------------------------------------------------------------


def commit(hub: Hub, namespace: str, name: str, body: CommitIn) -> dict:
    """Run the gate on the assembled folder, then insert the version in one transaction."""

    files = body.files
    bad = sorted(path for path in files if unsafe_path(path))
    if bad:
        raise HubError(422, f"unsafe file names (absolute, '..', or odd): {bad}")
    bad_hashes = sorted(path for path, sha in files.items() if not SHA256.match(sha))
    if bad_hashes:
        raise HubError(422, f"not sha256 hex digests, for: {bad_hashes}")
    with hub.sessions() as session:
        if _existing(session, namespace, name, body.version):
            raise HubError(
                409,
                f"{namespace}/{name}@{body.version} already exists; versions are "
                "immutable: publish a new version",
            )
        base_row = session.scalar(
            select(BaseRecord).where(
                BaseRecord.base_id == body.base.id, BaseRecord.revision == body.base.revision
            )
        )
        if base_row is None:
            raise HubError(
                422,
                f"base {body.base.id}@{body.base.revision} is not registered on this hub; "
                "register it with `gemmaforge hub base add MODEL --id ID --revision REV`",
            )
        key = session.scalar(
            select(PublisherKey).join(Namespace).where(Namespace.name == namespace)
        )
        if key is None:
            raise HubError(
                422,
                f"namespace {namespace} has no registered signing key; register one with "
                "`gemmaforge hub keys add public.pem`",
            )
    missing = sorted(path for path, sha in files.items() if not hub.store.exists(sha))
    if missing:
        raise HubError(422, f"files not uploaded yet (PUT /api/blobs/SHA256 first): {missing}")

    base = bases.BaseModel.from_json(base_row.record)
    with tempfile.TemporaryDirectory(prefix="gemmaforge-hub-commit-") as tmp:
        folder = Path(tmp) / "adapter"
        sizes = _materialise(hub.store, files, folder)
        key_file = Path(tmp) / "publisher.pem"
        key_file.write_text(key.pem)
        problems = gate.check_adapter_folder(folder, base, key_file)
        problems += gate.check_licence(body.licence, base)
        if problems:
            raise HubError(422, "the adapter did not pass the gate", problems=problems)
        modalities = gate.modalities(folder)
        card = (folder / CARD).read_text("utf-8", errors="replace") if CARD in files else ""
        provenance = _read_json(folder / PROVENANCE) if PROVENANCE in files else {}
        rank = community.adapter_rank(folder)
        with hub.sessions() as session:
            all_bases = session.scalars(select(BaseRecord).order_by(BaseRecord.id)).all()
        # Fits against every registered base, computed now while the files are at hand.
        fits = community.fit_rows(folder, 0, all_bases)

    digest = version_digest(files)
    adapter_id = _ensure_adapter(hub, namespace, name)
    for _attempt in range(3):
        with hub.sessions() as session:
            version = Version(
                adapter_id=adapter_id,
                version=body.version,
                digest=digest,
                base_id=body.base.id,
                base_revision=body.base.revision,
                licence=body.licence,
                domain=body.domain,
                modalities=",".join(modalities),
                summary=_summary(name, card),
                card=card,
                provenance=provenance,
                key_fingerprint=key.fingerprint,
                family=base.family,
                rank=rank,
                search_text=community.search_text(
                    name, card, body.domain, modalities, body.licence, base.family
                ),
            )
            session.add(version)
            try:
                session.flush()
                session.add_all(
                    File(version_id=version.id, path=p, size=sizes[p], sha256=s)
                    for p, s in sorted(files.items())
                )
                session.add_all(
                    EvalReport(
                        version_id=version.id,
                        eval_set_sha256=e.eval_set_sha256,
                        report=e.report,
                    )
                    for e in body.eval_reports
                )
                community.add_metrics(session, version.id, [e.report for e in body.eval_reports])
                session.add_all(
                    Fit(version_id=version.id, base_pk=f.base_pk, fits=f.fits, problems=f.problems)
                    for f in fits
                )
                _point_latest(session, adapter_id, newest=version)
                session.commit()
                return version_json(session, version)
            except IntegrityError:
                session.rollback()
                if _existing(session, namespace, name, body.version):
                    raise HubError(
                        409, f"{namespace}/{name}@{body.version} already exists"
                    ) from None
            # Lost a race on the `latest` tag to another version: try again.
    raise HubError(409, "the adapter changed while publishing; try again")


def _materialise(store: BlobStore, files: dict[str, str], folder: Path) -> dict[str, int]:
    """Copy each blob to its path under `folder`, hashing as it goes (a blob altered in the
    store since its upload is caught here); returns the sizes."""
    sizes = {}
    for path, sha in files.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        with target.open("wb") as out:
            for chunk in store.open(sha):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha:
            raise HubError(422, f"{path}: the stored blob no longer matches its sha256 {sha}")
        sizes[path] = size
    return sizes


def _ensure_adapter(hub: Hub, namespace: str, name: str) -> int:
    """The adapter's row id, created if new (its own transaction: an adapter with no version
    yet shows nothing, and a concurrent creator is handled by the unique constraint)."""
    for _attempt in range(3):
        with hub.sessions() as session:
            ns = session.scalar(select(Namespace).where(Namespace.name == namespace))
            found = session.scalar(
                select(Adapter).where(Adapter.namespace_id == ns.id, Adapter.name == name)
            )
            if found is not None:
                return found.id
            row = Adapter(namespace_id=ns.id, name=name)
            session.add(row)
            try:
                session.commit()
                return row.id
            except IntegrityError:
                session.rollback()
    raise HubError(409, "the adapter changed while publishing; try again")


def _point_latest(session: Session, adapter_id: int, newest: Version | None = None) -> None:
    """Point `latest` at the newest version that is not yanked (none: drop the tag)."""
    target = newest
    if target is None:
        target = session.scalar(
            select(Version)
            .where(Version.adapter_id == adapter_id, Version.yanked.is_(False))
            .order_by(Version.id.desc())
            .limit(1)
        )
    tag = session.scalar(select(Tag).where(Tag.adapter_id == adapter_id, Tag.name == LATEST))
    if target is None:
        if tag is not None:
            session.delete(tag)
    elif tag is None:
        session.add(Tag(adapter_id=adapter_id, name=LATEST, version_id=target.id))
    else:
        tag.version_id = target.id
    session.flush()


# ---- reading ---------------------------------------------------------------------------


def find_adapter(session: Session, namespace: str, name: str) -> Adapter:
    adapter = session.scalar(
        select(Adapter).join(Namespace).where(Namespace.name == namespace, Adapter.name == name)
    )
    has_version = adapter is not None and session.scalar(
        select(Version.id).where(Version.adapter_id == adapter.id).limit(1)
    )
    if not has_version:
        raise HubError(404, f"no adapter {namespace}/{name} on this hub")
    return adapter


def resolve(session: Session, namespace: str, name: str, ref: str) -> Version:
    """A version by its name, a tag (`latest`; `main` is an alias, for Hugging Face clients),
    or its digest (the 40-hex commit id Hugging Face clients use, or all 64)."""
    adapter = find_adapter(session, namespace, name)
    version = session.scalar(
        select(Version).where(Version.adapter_id == adapter.id, Version.version == ref)
    )
    if version is None:
        tag = LATEST if ref == "main" else ref
        version = session.scalar(
            select(Version)
            .join(Tag, Tag.version_id == Version.id)
            .where(Tag.adapter_id == adapter.id, Tag.name == tag)
        )
    if version is None and re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", ref):
        version = session.scalar(
            select(Version).where(Version.adapter_id == adapter.id, Version.digest.startswith(ref))
        )
    if version is None:
        raise HubError(404, f"{namespace}/{name} has no version or tag {ref!r}", code="revision")
    return version


def version_json(session: Session, version: Version) -> dict:
    adapter = session.get(Adapter, version.adapter_id)
    ns = session.get(Namespace, adapter.namespace_id)
    files = session.scalars(
        select(File).where(File.version_id == version.id).order_by(File.path)
    ).all()
    evals = session.scalars(select(EvalReport).where(EvalReport.version_id == version.id)).all()
    return {
        "name": f"{ns.name}/{adapter.name}",
        **_version_brief(version),
        "base": {"id": version.base_id, "revision": version.base_revision},
        "licence": version.licence,
        "domain": version.domain,
        "modalities": [m for m in version.modalities.split(",") if m],
        "key_fingerprint": version.key_fingerprint,
        "pulls": version.pulls,
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in files],
        "card": version.card,
        "provenance": version.provenance,
        "eval_reports": [
            {"eval_set_sha256": e.eval_set_sha256, "report": e.report, "self_reported": True}
            for e in evals
        ],
        "family": version.family,
        "rank": version.rank,
        "deprecated": version.deprecated,
        "replaced_by": version.replaced_by,
        "adapter_pulls": adapter.pulls,
        "rating": round(adapter.rating, 2) if adapter.rating_count else None,
        "ratings": community.ratings(session, version.id),
        "fits": community.fits_of(session, version.id),
    }


def blob_response(hub: Hub, sha256: str, headers: dict | None, head: bool = False) -> Response:
    size = hub.store.size(sha256)
    headers = {"Content-Length": str(size), "ETag": f'"{sha256}"', **(headers or {})}
    if head:
        return Response(headers=headers, media_type="application/octet-stream")
    return StreamingResponse(
        hub.store.open(sha256), headers=headers, media_type="application/octet-stream"
    )


def collect_orphans(hub: Hub) -> list[str]:
    """Delete blobs and temp uploads no version references, older than the grace period."""
    with hub.sessions() as session:
        referenced = set(session.scalars(select(File.sha256).distinct()))
    grace = hub.settings.orphan_minutes * 60
    deleted = hub.store.collect_orphans(referenced, grace)
    uploads = hub.settings.root / "uploads"
    if uploads.is_dir():
        import time

        for spool in uploads.iterdir():
            if spool.stat().st_mtime < time.time() - grace:
                spool.unlink(missing_ok=True)
                deleted.append(spool.name)
    return deleted


# ---- helpers ---------------------------------------------------------------------------


def _existing(session: Session, namespace: str, name: str, version: str) -> bool:
    return (
        session.scalar(
            select(Version.id)
            .join(Adapter, Adapter.id == Version.adapter_id)
            .join(Namespace, Namespace.id == Adapter.namespace_id)
            .where(Namespace.name == namespace, Adapter.name == name, Version.version == version)
        )
        is not None
    )


def _version_brief(version: Version) -> dict:
    return {
        "version": version.version,
        "digest": version.digest,
        "yanked": version.yanked,
        "yank_reason": version.yank_reason,
        "created_at": version.created_at.isoformat() + "Z",
    }


def _summary(name: str, card: str) -> str:
    """Searchable text of a card: its lines after the YAML front matter, first 500 chars."""
    body = card
    if body.startswith("---"):
        end = body.find("\n---", 3)
        body = body[end + 4 :] if end >= 0 else body
    return (name + " " + " ".join(body.split()))[:500]


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {"value": data}


def _base_record(body: dict) -> dict:
    """A BaseModel's JSON, checked field by field (a malformed record registered now would
    break every later publish against it) and normalised through `bases.BaseModel`."""

    try:
        model = bases.BaseModel.from_json(body)
    except (TypeError, ValueError, KeyError) as exc:
        raise HubError(422, f"not a base model record: {exc}") from None
    shapes_ok = isinstance(model.shapes, dict) and all(
        isinstance(name, str)
        and isinstance(shape, list)
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        for name, shape in model.shapes.items()
    )
    texts = (model.id, model.revision, model.family, model.model_type, model.weights_sha256)
    problems = [] if shapes_ok else ["shapes must map tensor names to lists of sizes"]
    if not all(isinstance(t, str) for t in texts) or not model.weights_sha256:
        problems.append("id, revision, family, model_type and weights_sha256 must be strings")
    elif not isinstance(model.licence, str):
        problems.append("licence must be a string")
    else:
        problems += bases.base_reference_problems(model.id, model.revision)
        problems += bases.licence_problems(model.licence, "base licence")
    if problems:
        raise HubError(422, "not a valid base model record", problems=problems)
    return json.loads(model.to_json())


def _fingerprint(pem: str) -> str:

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "public.pem"
        path.write_text(pem)
        try:
            return signing.public_key_fingerprint(path)
        except (UserError, ValueError, TypeError) as exc:
            raise HubError(422, f"not a public key in PEM form: {exc}") from None


def _check_sha(sha256: str) -> None:
    if not SHA256.match(sha256):
        raise HubError(400, "a blob is named by its sha256: 64 lowercase hex digits")


def _check_names(namespace: str, name: str) -> None:
    if not (auth.NAMESPACE.match(namespace) and NAME.match(name)):
        raise HubError(422, f"{namespace}/{name} is not a valid adapter name")


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _chunks(path: Path):
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            yield block


def _errors(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        extra = dict(getattr(exc, "extra", {}))
        code = extra.pop("code", None)
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            # What huggingface_hub reads to raise RepoNotFound / RevisionNotFound /
            # EntryNotFound errors (see hf.py).
            kinds = {"revision": "RevisionNotFound", "entry": "EntryNotFound"}
            headers.setdefault("X-Error-Code", kinds.get(code, "RepoNotFound"))
        if request.method == "HEAD":
            return Response(status_code=exc.status_code, headers=headers)
        return JSONResponse(
            {"error": str(exc.detail), **extra}, status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        ]
        return JSONResponse({"error": "invalid request", "problems": problems}, status_code=422)


class BodyCap:
    """ASGI middleware capping JSON request bodies (all but blob uploads, which cap
    themselves while streaming): by `Content-Length` at once, and by counting the bytes of a
    chunked body as they arrive, so no body over the cap is ever held in memory."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if (
            scope["type"] != "http"
            or scope["method"] not in ("POST", "PUT", "PATCH")
            or scope["path"].startswith("/api/blobs/")
        ):
            return await self.app(scope, receive, send)
        message = f"request body over {self.limit} bytes"
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            response = JSONResponse({"error": message}, status_code=413)
            return await response(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            event = await receive()
            if event["type"] == "http.request":
                seen += len(event.get("body", b""))
                if seen > self.limit:
                    # An HTTPException: FastAPI re-raises it from the body read, and the
                    # app's handler answers it as JSON.
                    raise HubError(413, message)
            return event

        await self.app(scope, counted, send)


def _limits(app: FastAPI, hub: Hub) -> None:
    app.add_middleware(BodyCap, limit=hub.settings.max_json_bytes)
