"""Alembic environment for the hub database: runs on the connection `db.migrate` passes in
(no alembic.ini, no URL of its own), so SQLite and PostgreSQL migrate the same way."""

from __future__ import annotations

from alembic import context

from gemmaforge.hub.server.db import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
