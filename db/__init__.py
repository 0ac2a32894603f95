"""Persistence: SQLAlchemy 2 models, sessions, queries; Alembic owns the schema."""
