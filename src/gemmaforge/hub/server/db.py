"""The hub's database: SQLAlchemy 2 tables, the engine, and Alembic migrations run at start-up.

One schema for SQLite (the embedded default, a file in `--root`) and PostgreSQL (by URL,
`postgresql+psycopg://...`). Versions are immutable rows; what may change about one later is
only its `yanked` flag and reason, its pull count, and which version a tag points to. Unique
constraints, not application checks, decide races: two publishes of the same version both
try to insert and exactly one commit succeeds.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Computed,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Namespace(Base):
    __tablename__ = "namespaces"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)


class Token(Base):
    """An API token: only the sha256 of its secret is stored, so a leaked database leaks none."""

    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)
    namespace: Mapped[Namespace] = relationship()


class PublisherKey(Base):
    """A namespace's signing key (PEM). The first one registered is pinned: it cannot be
    replaced through the API, so a stolen token cannot swap in the thief's key."""

    __tablename__ = "publisher_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id"), unique=True)
    pem: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(128))
    pinned: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)


class BaseRecord(Base):
    """A registered base model (`gemmaforge.hub.bases.BaseModel` as JSON)."""

    __tablename__ = "bases"
    __table_args__ = (UniqueConstraint("base_id", "revision"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    base_id: Mapped[str] = mapped_column(String(200), index=True)
    revision: Mapped[str] = mapped_column(String(200))
    weights_sha256: Mapped[str] = mapped_column(String(64), index=True)
    record: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)


class Adapter(Base):
    __tablename__ = "adapters"
    __table_args__ = (
        UniqueConstraint("namespace_id", "name"),
        Index("ix_adapters_rating", "rating", "rating_count"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)
    pulls: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0", index=True)
    """Pulls of all its versions (what "most pulled" sorts by)."""
    rating_sum: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rating_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Stars over all its versions' ratings, kept with each rating so sorting by rating is
    a column read, not an aggregate over every rating on every search."""
    rating: Mapped[float] = mapped_column(
        Float,
        Computed(
            "CASE WHEN rating_count > 0 THEN CAST(rating_sum AS FLOAT) / rating_count ELSE 0 END"
        ),
    )
    """The mean stars (0: unrated), computed by the database from the two columns above in
    the same write (migration 0003); indexed with rating_count for "sort by rating"."""
    namespace: Mapped[Namespace] = relationship()


class Version(Base):
    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("adapter_id", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"), index=True)
    version: Mapped[str] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(64), index=True)
    """sha256 over the sorted `path sha256` lines of its files: the version's identity."""
    base_id: Mapped[str] = mapped_column(String(200), index=True)
    base_revision: Mapped[str] = mapped_column(String(200))
    licence: Mapped[str] = mapped_column(String(100))
    domain: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    modalities: Mapped[str] = mapped_column(String(100), default="")
    """Comma-separated, derived by the gate from which modules carry LoRA weights."""
    summary: Mapped[str] = mapped_column(Text, default="")
    """Searchable text: the card's title and first lines."""
    card: Mapped[str] = mapped_column(Text, default="")
    provenance: Mapped[dict] = mapped_column(JSON)
    key_fingerprint: Mapped[str] = mapped_column(String(128))
    yanked: Mapped[bool] = mapped_column(Boolean, default=False)
    yank_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    pulls: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now, index=True)
    family: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    """Model family of the base it was published for (gemma4, gemma3n, ...)."""
    rank: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    """LoRA rank `r` from adapter_config.json."""
    search_text: Mapped[str] = mapped_column(Text, default="", server_default="")
    """What full-text search indexes: name, tags, domain, modalities, licence and the card
    (SQLite: the FTS5 table `versions_fts`; PostgreSQL: the generated `search_tsv`)."""
    deprecated: Mapped[str | None] = mapped_column(Text, nullable=True)
    """The publisher's deprecation note (None: not deprecated)."""
    replaced_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The newer version the deprecation note points to."""
    adapter: Mapped[Adapter] = relationship()
    files: Mapped[list[File]] = relationship(order_by="File.path")


class Tag(Base):
    __tablename__ = "tags"
    # (name, version_id) serves every search's join from a version to its `latest` tag.
    __table_args__ = (
        UniqueConstraint("adapter_id", "name"),
        Index("ix_tags_name_version", "name", "version_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"))


class File(Base):
    __tablename__ = "files"
    __table_args__ = (UniqueConstraint("version_id", "path"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), index=True)
    path: Mapped[str] = mapped_column(String(500))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)


class EvalReport(Base):
    """A `gemmaforge eval` report the publisher sent: shown as self-reported, tied to the
    hash of the eval set it was computed on."""

    __tablename__ = "eval_reports"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), index=True)
    eval_set_sha256: Mapped[str] = mapped_column(String(64))
    report: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)


class Rating(Base):
    """A token holder's stars (1-5) and short review of one version: one per user (the
    token's namespace) per version; rating again edits it."""

    __tablename__ = "ratings"
    __table_args__ = (UniqueConstraint("version_id", "user"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), index=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"), index=True)
    user: Mapped[str] = mapped_column(String(64))
    stars: Mapped[int] = mapped_column(Integer)
    review: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)


class Report(Base):
    """Someone's "report this adapter": an admin reads them (`hub admin reports`)."""

    __tablename__ = "reports"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), index=True)
    reporter: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)
    """open, yanked (an admin yanked the version) or dismissed."""
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)


class Metric(Base):
    """One number from a version's (self-reported) eval reports, for threshold filters."""

    __tablename__ = "metrics"
    # Led by version_id: a threshold filter asks "does this version have name >= x".
    __table_args__ = (Index("ix_metrics_version_name_value", "version_id", "name", "value"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"))
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)


class Fit(Base):
    """Whether a version fits a registered base by the gate's shape check (`check_fits`):
    computed at publish for every base, and for every version when a base is added."""

    __tablename__ = "fits"
    __table_args__ = (UniqueConstraint("version_id", "base_pk"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), index=True)
    base_pk: Mapped[int] = mapped_column(ForeignKey("bases.id"), index=True)
    fits: Mapped[bool] = mapped_column(Boolean)
    problems: Mapped[list] = mapped_column(JSON)


def make_engine(url: str) -> Engine:
    """An engine; SQLite gets WAL, a busy timeout and enforced foreign keys, so concurrent
    writers queue instead of failing with 'database is locked'."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (`alembic upgrade head`), shipped in the
    package so a pip-installed hub migrates itself."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def open_database(url: str) -> tuple[Engine, sessionmaker]:
    engine = make_engine(url)
    migrate(engine)
    return engine, sessionmaker(engine, expire_on_commit=False)
