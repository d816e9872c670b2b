"""One file per migration, applied in the order of their revision chain (Alembic skips this
file)."""
