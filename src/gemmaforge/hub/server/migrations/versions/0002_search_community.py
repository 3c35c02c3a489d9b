"""Search and community: full-text index, filter columns, ratings, reports, metrics, fits.

Full text is SQLite FTS5 (an external-content table over the versions `latest` tags point
to, kept by triggers on tags) or PostgreSQL's tsvector (a generated column with a GIN index):
the database keeps the index in step whatever writes it.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    with op.batch_alter_table("adapters") as batch:
        batch.add_column(sa.Column("pulls", sa.BigInteger(), server_default="0", nullable=False))
        batch.add_column(sa.Column("rating_sum", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(
            sa.Column("rating_count", sa.Integer(), server_default="0", nullable=False)
        )
        batch.create_index("ix_adapters_pulls", ["pulls"])
    with op.batch_alter_table("versions") as batch:
        batch.add_column(sa.Column("family", sa.String(64), nullable=True))
        batch.add_column(sa.Column("rank", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("search_text", sa.Text(), server_default="", nullable=False))
        batch.add_column(sa.Column("deprecated", sa.Text(), nullable=True))
        batch.add_column(sa.Column("replaced_by", sa.String(64), nullable=True))
        batch.create_index("ix_versions_family", ["family"])
        batch.create_index("ix_versions_rank", ["rank"])
    op.execute("UPDATE versions SET search_text = summary")
    op.execute(
        "UPDATE adapters SET pulls = "
        "(SELECT COALESCE(SUM(pulls), 0) FROM versions WHERE versions.adapter_id = adapters.id)"
    )

    op.create_table(
        "ratings",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version_id", sa.Integer(), sa.ForeignKey("versions.id"), nullable=False),
        sa.Column("adapter_id", sa.Integer(), sa.ForeignKey("adapters.id"), nullable=False),
        sa.Column("user", sa.String(64), nullable=False),
        sa.Column("stars", sa.Integer(), nullable=False),
        sa.Column("review", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("version_id", "user"),
    )
    op.create_index("ix_ratings_version_id", "ratings", ["version_id"])
    op.create_index("ix_ratings_adapter_id", "ratings", ["adapter_id"])
    op.create_table(
        "reports",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version_id", sa.Integer(), sa.ForeignKey("versions.id"), nullable=False),
        sa.Column("reporter", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_reports_version_id", "reports", ["version_id"])
    op.create_index("ix_reports_status", "reports", ["status"])
    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version_id", sa.Integer(), sa.ForeignKey("versions.id"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
    )
    op.create_index("ix_metrics_version_name_value", "metrics", ["version_id", "name", "value"])
    op.create_table(
        "fits",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version_id", sa.Integer(), sa.ForeignKey("versions.id"), nullable=False),
        sa.Column("base_pk", sa.Integer(), sa.ForeignKey("bases.id"), nullable=False),
        sa.Column("fits", sa.Boolean(), nullable=False),
        sa.Column("problems", sa.JSON(), nullable=False),
        sa.UniqueConstraint("version_id", "base_pk"),
    )
    op.create_index("ix_fits_version_id", "fits", ["version_id"])
    op.create_index("ix_fits_base_pk", "fits", ["base_pk"])

    if dialect == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE versions_fts USING fts5(search_text, content='versions', "
            "content_rowid='id', tokenize='porter unicode61')"
        )
        # Only versions a `latest` tag points to are indexed (search shows no other), kept
        # so by triggers on tags: a publish or a yank moves the tag, and the index follows.
        # An adapter's old versions cost the full-text match nothing.
        add = (
            "INSERT INTO versions_fts(rowid, search_text) "
            "SELECT id, search_text FROM versions WHERE id = new.version_id"
        )
        drop = (
            "INSERT INTO versions_fts(versions_fts, rowid, search_text) "
            "SELECT 'delete', id, search_text FROM versions WHERE id = old.version_id"
        )
        op.execute(
            "CREATE TRIGGER versions_fts_tag_insert AFTER INSERT ON tags "
            f"WHEN new.name = 'latest' BEGIN {add}; END"
        )
        op.execute(
            "CREATE TRIGGER versions_fts_tag_update AFTER UPDATE OF version_id ON tags "
            f"WHEN new.name = 'latest' AND old.version_id != new.version_id "
            f"BEGIN {drop}; {add}; END"
        )
        op.execute(
            "CREATE TRIGGER versions_fts_tag_delete AFTER DELETE ON tags "
            f"WHEN old.name = 'latest' BEGIN {drop}; END"
        )
        op.execute(
            "INSERT INTO versions_fts(rowid, search_text) SELECT versions.id, search_text "
            "FROM versions JOIN tags ON tags.version_id = versions.id WHERE tags.name = 'latest'"
        )
    elif dialect == "postgresql":
        op.execute(
            "ALTER TABLE versions ADD COLUMN search_tsv tsvector GENERATED ALWAYS AS "
            "(to_tsvector('english', search_text)) STORED"
        )
        op.execute("CREATE INDEX ix_versions_search_tsv ON versions USING gin (search_tsv)")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS versions_fts_tag_{trigger}")
        op.execute("DROP TABLE IF EXISTS versions_fts")
    elif dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_versions_search_tsv")
        op.execute("ALTER TABLE versions DROP COLUMN IF EXISTS search_tsv")
    for table in ("fits", "metrics", "reports", "ratings"):
        op.drop_table(table)
    with op.batch_alter_table("versions") as batch:
        batch.drop_index("ix_versions_rank")
        batch.drop_index("ix_versions_family")
        for column in ("replaced_by", "deprecated", "search_text", "rank", "family"):
            batch.drop_column(column)
    with op.batch_alter_table("adapters") as batch:
        batch.drop_index("ix_adapters_pulls")
        for column in ("rating_count", "rating_sum", "pulls"):
            batch.drop_column(column)
