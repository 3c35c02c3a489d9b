"""Alembic migrations of the hub database (run by `db.migrate`)."""
