"""Persistence: SQLAlchemy Core tables, typed repository functions, Alembic migrations."""
