"""Statements of the audit log's busy path, compiled once and run straight on the driver.

Every event costs the router an accept and the worker a claim and a finish, all on the
path from event to handler. Run through SQLAlchemy Core, each statement spent about
three quarters of its time outside the database: setting up an execution context,
processing parameters and results, for a statement that never changes. A
:class:`Prepared` statement is a Core statement compiled once for the engine's
dialect; each execution orders its parameters, applies the column types' own bind
and result processors (the conversions Core would apply, so stored values are the
same), and hands the SQL to the driver's cursor inside the caller's transaction.
"""

from collections import namedtuple
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.interfaces import DBAPICursor
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.selectable import ExecutableReturnsRows

_row_types: dict[tuple[str, ...], type] = {}


def _row_type(names: tuple[str, ...]) -> type:
    """A read-only row with attribute access, one class per set of column names."""
    row = _row_types.get(names)
    if row is None:
        row = _row_types[names] = namedtuple("Row", names)
    return row


class Prepared:
    """One Core statement, compiled for ``dialect`` (``columns``: an INSERT's columns)."""

    def __init__(self, statement: ExecutableReturnsRows, dialect: Dialect, columns: Iterable[str] | None = None):
        compiled = statement.compile(dialect=dialect, column_keys=list(columns) if columns is not None else None)
        assert isinstance(compiled, SQLCompiler)  # what a dialect compiles a statement with
        self.sql = compiled.string
        self._dialect = dialect
        self._positional = compiled.positional
        self._names = (
            tuple(compiled.positiontup)
            if compiled.positional and compiled.positiontup is not None
            else tuple(compiled.binds)
        )
        binds = compiled.binds
        if any(bind.expanding for bind in binds.values()):  # rendered anew at each execution
            raise ValueError(f"a statement with an expanding IN cannot be prepared: {self.sql}")
        # Column defaults computed in Python are Core's to fill in: here they must be given.
        defaulted = {column.key for column in (*compiled.insert_prefetch, *compiled.update_prefetch)}
        #: values the statement carries itself, e.g. ``status='running'`` in an UPDATE
        self._fixed = {name: bind.value for name, bind in binds.items() if not bind.required and name not in defaulted}
        self._bind = {
            name: processor
            for name, bind in binds.items()
            if (processor := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }
        returned = list(statement.exported_columns)  # what a SELECT or a RETURNING gives back
        self._row: type | None = _row_type(tuple(c.key for c in returned)) if returned else None
        self._results = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in returned]

    def _parameters(self, values: dict[str, Any]) -> Any:
        fixed, bind = self._fixed, self._bind
        processed = {}
        for name in self._names:
            value = values[name] if name in values else fixed[name]
            processor = bind.get(name)
            processed[name] = value if processor is None else processor(value)
        return tuple(processed[name] for name in self._names) if self._positional else processed

    def _cursor(self, connection: Connection, values: dict[str, Any] | list[dict[str, Any]]) -> DBAPICursor:
        """Execute (many, for a list) on a cursor of ``connection``'s current transaction."""
        cursor = connection.connection.cursor()
        try:
            if isinstance(values, list):
                cursor.executemany(self.sql, [self._parameters(v) for v in values])
            else:
                cursor.execute(self.sql, self._parameters(values))
        except self._dialect.loaded_dbapi.Error as exc:
            cursor.close()
            if self._dialect.is_disconnect(exc, connection.connection.dbapi_connection, cursor):
                connection.invalidate(exc)
            # the error Core would raise (IntegrityError and its kin), so callers catch one kind
            raise DBAPIError.instance(
                self.sql, None, exc, self._dialect.loaded_dbapi.Error, dialect=self._dialect
            ) from exc
        return cursor

    def execute(self, connection: Connection, values: dict[str, Any] | list[dict[str, Any]]) -> int:
        """Run for one set of values, or many (a list); the number of rows it changed."""
        cursor = self._cursor(connection, values)
        try:
            return cursor.rowcount
        finally:
            cursor.close()

    def rows(self, connection: Connection, values: dict[str, Any]) -> list[Any]:
        """Run and return the rows it selects or returns, their columns converted by type."""
        cursor = self._cursor(connection, values)
        try:
            raw = cursor.fetchall()
        finally:
            cursor.close()
        processors, row_type = self._results, self._row
        assert row_type is not None, f"the statement returns no rows: {self.sql}"
        return [
            row_type(*[value if p is None else p(value) for p, value in zip(processors, row, strict=False)])
            for row in raw
        ]

    def first(self, connection: Connection, values: dict[str, Any]) -> Any:
        found = self.rows(connection, values)
        return found[0] if found else None
