"""One prebuilt statement executed for many rows, without SQLAlchemy's work per row.

``session.execute(statement, rows)`` compiles from a cache, then builds and type-converts every
row in Python (the bind processors, called through several layers per value): for the outbox's
hot statements that cost more than the database's own work. :func:`execute_many` compiles the
statement once per dialect (and set of keys), keeps its SQL text, parameter order and
converters, converts each value with the column type's own converter (so what is stored is
exactly what SQLAlchemy would store), and hands the rows to the driver through the session's
connection and transaction (``exec_driver_sql``: the same error wrapping, the same events).

:func:`insert_many` inserts new rows into a table: on PostgreSQL with ``COPY`` (a stream of rows
instead of a statement per row: a quarter less of the server's work for a bulk enqueue; with
psycopg 3, the driver the project installs), else with :func:`execute_many`.

:func:`matched_many` runs an UPDATE ... RETURNING for many rows and says which rows it
reached: with psycopg 3 in one pipelined ``executemany`` that keeps each row's result, with
SQLite's driver one statement per row (no ``executemany`` for a statement that returns rows).
Cheaper than reading the rows first: through SQLAlchemy, that read of a window's eight ids cost
about 50 µs of CPU per message (its expanding ``IN``), the per-row statements a few.

Only plain INSERT and UPDATE (and DELETE) statements without expanding ``IN`` parameters, and
without RETURNING except for :func:`matched_many`; a column default computed in Python
(``default=``/``onupdate=`` callables) is not run here, so every such column must be given in
the rows: a missing one raises, and so does a row key the statement does not take. The
statements are module constants: their compiled forms are kept for the life of the process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect, Insert, Table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement

__all__ = ["execute_many", "insert_many", "matched_many"]

_Convert = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class _Prepared:
    sql: str
    names: tuple[str, ...]  # the parameters, in the driver's order when it is positional
    keys: tuple[str, ...]  # the row key each parameter takes its value from
    driver_names: tuple[str, ...]  # the names in the SQL text, when it is not positional
    positional: bool
    converters: tuple[_Convert | None, ...]
    fixed: Mapping[str, Any]  # values compiled into the statement, already converted
    required: frozenset[str]  # what every row must give


# (statement, dialect+driver[+returning], row keys) -> its compiled form; a dict's item
# assignment is atomic, so the worker's threads at worst compile one twice.
_prepared: dict[tuple[ClauseElement, str, tuple[str, ...]], _Prepared] = {}


def _prepare(
    statement: ClauseElement, dialect: Dialect, keys: tuple[str, ...], *, returning: bool
) -> _Prepared:
    compiled: Any = statement.compile(dialect=dialect, column_keys=list(keys))
    # Read off the SQL: the compiled form's ``returning`` and the statement's
    # ``returning_column_descriptions`` were found empty for an UPDATE that had one.
    returns = " RETURNING " in compiled.string
    if getattr(compiled, "_numeric_binds", False) or returns != returning:
        raise ValueError(
            "matched_many takes an UPDATE ... RETURNING"
            if returning
            else "execute_many takes plain INSERT, UPDATE and DELETE statements"
        )
    names: tuple[str, ...] = tuple(compiled.positiontup or compiled.binds)
    unused = set(keys) - {compiled.binds[name].key for name in names}
    if unused:  # (a misspelt or dropped column would otherwise vanish without a word)
        raise ValueError(f"the statement takes no {', '.join(sorted(unused))}: rows give it")
    converters: list[_Convert | None] = []
    fixed: dict[str, Any] = {}
    required: set[str] = set()
    given = set(keys)
    prefetched = {
        column.key
        for column in [
            *getattr(compiled, "insert_prefetch", ()),
            *getattr(compiled, "update_prefetch", ()),
        ]
    }
    for name in names:
        bind = compiled.binds[name]
        if bind.expanding:
            raise ValueError(f"execute_many cannot expand the IN parameter {name!r}")
        convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
        converters.append(convert)
        if bind.key in given:
            continue
        if bind.callable is None and not bind.required and bind.key not in prefetched:
            value = bind.value
            fixed[name] = convert(value) if convert is not None and value is not None else value
        else:
            required.add(bind.key)
    return _Prepared(
        sql=compiled.string,
        names=names,
        keys=tuple(compiled.binds[name].key for name in names),
        driver_names=tuple(compiled.escaped_bind_names.get(name, name) for name in names),
        positional=compiled.positiontup is not None,
        converters=tuple(converters),
        fixed=fixed,
        required=frozenset(required),
    )


_inserts: dict[Table, Insert] = {}
_NOTHING = object()


def insert_many(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (every row with the same keys) into ``table``, in the session's
    transaction. Values are converted as :func:`execute_many` converts them."""
    if not rows:
        return
    insert = _inserts.get(table)
    if insert is None:
        insert = _inserts[table] = table.insert()
    connection = session.connection()
    dialect = connection.dialect
    if (dialect.name, dialect.driver) != ("postgresql", "psycopg"):
        execute_many(session, insert, rows)
        return
    _refuse_sql_defaults(table, set(rows[0]))
    prepared, converted = _converted(dialect, insert, rows, positional=True)
    quote = dialect.identifier_preparer.quote
    columns = ", ".join(quote(table.c[key].name) for key in prepared.keys)
    command = f"COPY {dialect.identifier_preparer.format_table(table)} ({columns}) FROM STDIN"
    with _driver_cursor(connection, command) as cursor, cursor.copy(command) as copy:
        for values in converted:
            copy.write_row(values)


def matched_many(
    session: Session, statement: ClauseElement, rows: Sequence[Mapping[str, Any]]
) -> list[bool]:
    """Execute ``statement``, an UPDATE with ``RETURNING``, once per row (every row with the
    same keys), in the session's transaction; return, per row, whether it matched (returned a
    row). For the project's two drivers, psycopg 3 and SQLite's (ValueError for others)."""
    connection = session.connection()
    dialect = connection.dialect
    driver = (dialect.name, dialect.driver)
    if driver not in {("postgresql", "psycopg"), ("sqlite", "pysqlite")}:
        raise ValueError(f"matched_many has no way with the driver {dialect.driver}")
    if not rows:
        return []
    prepared, converted = _converted(dialect, statement, rows, positional=False, returning=True)
    matched: list[bool] = []
    with _driver_cursor(connection, prepared.sql) as cursor:
        if dialect.name == "sqlite":
            for values in converted:
                cursor.execute(prepared.sql, values)
                matched.append(bool(cursor.fetchall()))
            return matched
        cursor.executemany(prepared.sql, converted, returning=True)
        while True:
            matched.append(bool(cursor.fetchall()))
            if not cursor.nextset():
                return matched


@contextlib.contextmanager
def _driver_cursor(connection: Connection, command: str) -> Iterator[Any]:
    """A cursor of the connection's driver, in its transaction; a driver error becomes what a
    statement through SQLAlchemy raises (IntegrityError, OperationalError, ...), with a lost
    connection invalidated as SQLAlchemy would."""
    dialect = connection.dialect
    driver = connection.connection.driver_connection
    assert driver is not None
    error = dialect.loaded_dbapi.Error
    try:
        # (contextlib.closing: sqlite3's cursors are no context managers, psycopg's close alike)
        with contextlib.closing(driver.cursor()) as cursor:
            yield cursor
    except error as exc:
        lost = dialect.is_disconnect(exc, driver, None)
        if lost:
            connection.invalidate(exc)
        raise DBAPIError.instance(
            command, None, exc, error, connection_invalidated=lost, dialect=dialect
        ) from exc


def _refuse_sql_defaults(table: Table, given: set[str]) -> None:
    """COPY leaves out the columns not given, so a default SQLAlchemy would have put into an
    INSERT as an SQL expression (or a sequence) would be lost: refused, naming the column."""
    for column in table.c:
        default = column.default
        if column.key in given or default is None:
            continue
        if not (default.is_scalar or default.is_callable):
            raise ValueError(f"insert_many: give {column.key}; its default is SQL")


def execute_many(
    session: Session, statement: ClauseElement, rows: Sequence[Mapping[str, Any]]
) -> int:
    """Execute ``statement`` once per row (every row with the same keys), in the session's
    transaction; returns the rows the database reports as affected."""
    if not rows:
        return 0
    connection = session.connection()
    prepared, converted = _converted(connection.dialect, statement, rows, positional=False)
    result = connection.exec_driver_sql(prepared.sql, converted)
    return int(result.rowcount)


def _remembering(convert: _Convert) -> _Convert:
    """``convert``, answering a value it has just converted from memory: the rows of one bulk
    statement bind the same objects again and again (the batch's time, its tenant), and a
    timestamp's conversion costs microseconds. By identity, within one call, whose values
    cannot change while it converts them."""
    last: tuple[object, Any] = (_NOTHING, None)

    def remembered(value: Any) -> Any:
        nonlocal last
        seen, result = last
        if value is seen:
            return result
        result = convert(value)
        last = (value, result)
        return result

    return remembered


def _converted(
    dialect: Dialect,
    statement: ClauseElement,
    rows: Sequence[Mapping[str, Any]],
    *,
    positional: bool,
    returning: bool = False,
) -> tuple[_Prepared, list[Any]]:
    """The prepared statement and the rows as the driver takes them (tuples in parameter
    order for a positional driver, or when ``positional``; dicts otherwise)."""
    keys = tuple(rows[0])
    cache_key = (statement, f"{dialect.name}+{dialect.driver}{'+returning' * returning}", keys)
    prepared = _prepared.get(cache_key)
    if prepared is None:
        prepared = _prepared[cache_key] = _prepare(statement, dialect, keys, returning=returning)
    missing = prepared.required - set(keys)
    if missing:
        raise ValueError(f"execute_many: every row must give {', '.join(sorted(missing))}")
    fixed = prepared.fixed
    plan = [
        (key, fixed.get(name), name in fixed, _remembering(convert) if convert else None)
        for name, key, convert in zip(
            prepared.names, prepared.keys, prepared.converters, strict=True
        )
    ]
    converted: list[Any] = []
    for row in rows:
        values = [
            value if is_fixed else (convert(row[key]) if convert is not None else row[key])
            for key, value, is_fixed, convert in plan
        ]
        converted.append(
            tuple(values)
            if prepared.positional or positional
            else dict(zip(prepared.driver_names, values, strict=True))
        )
    return prepared, converted
