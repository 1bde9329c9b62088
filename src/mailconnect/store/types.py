"""Column types shared by the models: UTC timestamps and closed vocabularies stored as text."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import DateTime, Dialect, Enum
from sqlalchemy.types import TypeDecorator

__all__ = ["UTCDateTime", "text_enum", "utcnow"]


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, on PostgreSQL and on SQLite.

    PostgreSQL stores ``timestamptz``; SQLite stores text that sorts in time order because every
    value is converted to UTC first. Naive datetimes are refused: their zone is a guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("a naive datetime cannot be stored; use an aware one (UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """On SQLite, one step to the stored text (SQLAlchemy's own way takes two, the second
        formatting field by field); the text is the same, ``YYYY-MM-DD HH:MM:SS.ffffff``."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        bind = self.process_bind_param

        def to_text(value: datetime | None) -> str | None:
            stored = bind(value, dialect)  # naive refused, UTC without a zone
            return None if stored is None else stored.isoformat(" ", "microseconds")

        return to_text

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        """On SQLite, the stored text read with ``datetime.fromisoformat`` (C) instead of a
        regular expression."""
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        process = self.process_result_value

        def from_text(value: Any) -> datetime | None:
            if isinstance(value, str):
                value = datetime.fromisoformat(value)
            return process(value, dialect)

        return from_text

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def text_enum(kind: type[StrEnum], name: str) -> Enum:
    """A closed vocabulary as VARCHAR(32) plus a CHECK constraint (no native ENUM type).

    Text with a CHECK behaves the same on SQLite and PostgreSQL, and a new word is one migration
    of a constraint rather than an ``ALTER TYPE``.
    """
    return Enum(
        kind,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=32,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )
