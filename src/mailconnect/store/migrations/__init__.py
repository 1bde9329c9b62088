"""Alembic migrations for mailconnect's tables. Run them with :mod:`mailconnect.store.migrate`."""
