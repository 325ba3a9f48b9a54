"""Trace and measure SQLAlchemy statements (the ``sqlalchemy`` extra).

Call `instrument()` once; every engine, sync or async (an ``AsyncEngine`` runs
on a sync ``Engine``), created before or after the call, then observes each
statement it sends to the database, through SQLAlchemy's own engine events
(``before_cursor_execute``, ``after_cursor_execute``, ``handle_error``)::

    from kaleem_telemetry.integrations import sqlalchemy as sqlalchemy_telemetry

    sqlalchemy_telemetry.instrument()

Each statement runs in a CLIENT span named ``"{operation} {table}"`` (``SELECT
orders``; the operation alone when no table is found) with ``db.system.name``
(the dialect: ``postgresql``, ``mysql``, ``sqlite``...), ``db.operation.name``,
``db.collection.name``, ``db.namespace``, ``server.address`` and
``server.port``, and observes ``database_query_duration_seconds{db_system,
operation, collection, status}`` with the span's duration; ``status="error"``
when the statement failed (a syntax error, a constraint, a statement timeout).

The statement is reduced to its verb and first table, read once per distinct
statement text: its text and its parameters are never recorded.
`uninstrument()` removes the listeners. The spans are our own rather than those
of ``opentelemetry-instrumentation-sqlalchemy``: see docs/integrations.md.

Added in 0.1.0.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.trace import Span

from kaleem_telemetry._guard import report_internal_error
from kaleem_telemetry._optional import import_optional
from kaleem_telemetry.db import observe_query
from kaleem_telemetry.integrations._clients import end_call, start_call
from kaleem_telemetry.integrations._health_checks import sqlalchemy_check as health_check
from kaleem_telemetry.integrations._patching import Patches
from kaleem_telemetry.metrics import get_metrics

sqlalchemy = import_optional(
    "sqlalchemy", module=__name__, package="sqlalchemy", extra="sqlalchemy"
)

__all__ = ["health_check", "instrument", "uninstrument"]

_PATCHES = Patches("sqlalchemy")
_WHERE = "sqlalchemy integration"
#: Where a statement's call is kept between the before and after events.
_CALL = "_kaleem_telemetry_call"

_LEADING = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_VERB = re.compile(r"[A-Za-z]+")
_NAME = r'(?:"[^"]{1,128}"|`[^`]{1,128}`|\[[^\]]{1,128}\]|[A-Za-z_][\w$]{0,127})'
_TABLE = re.compile(
    rf"\b(?:FROM|INTO|UPDATE|JOIN|TABLE)\s+(?:ONLY\s+|IF\s+(?:NOT\s+)?EXISTS\s+)?"
    rf"({_NAME}(?:\.{_NAME})?)",
    re.IGNORECASE,
)
_KEYWORDS = frozenset({"SELECT", "LATERAL", "UNNEST", "VALUES"})
_MAX_OPERATION = 32
_MAX_STATEMENTS = 1024

#: Statement text -> (operation, table); bounded, so a service that builds
#: statements with inlined values cannot grow it without end.
_PARSED: dict[str, tuple[str, str]] = {}
_ENGINES: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()

_Call = tuple[Span, int, str, str, str]


def instrument() -> None:
    """Observe every statement of every SQLAlchemy engine, sync and async.

    A repeated call logs a warning and does nothing.
    """
    _PATCHES.listen(_listeners, add=sqlalchemy.event.listen, remove=sqlalchemy.event.remove)


def uninstrument() -> None:
    """Remove the listeners `instrument()` added; a no-op when not instrumented."""
    _PATCHES.restore()


def _listeners() -> Iterable[tuple[Any, str, Callable[..., Any]]]:
    engine = sqlalchemy.engine.Engine
    yield engine, "before_cursor_execute", _before
    yield engine, "after_cursor_execute", _after
    yield engine, "handle_error", _error


def _before(
    conn: Any, cursor: Any, statement: Any, parameters: Any, context: Any, executemany: bool
) -> None:
    try:
        operation, table = _parse(statement)
        engine = conn.engine
        base = _ENGINES.get(engine)
        if base is None:
            base = _engine_attributes(engine)
            _ENGINES[engine] = base
        attributes = dict(base)
        attributes["db.operation.name"] = operation
        if table:
            attributes["db.collection.name"] = table
        span, started = start_call(f"{operation} {table}" if table else operation, attributes)
        call: _Call = (span, started, base["db.system.name"], operation, table)
        _holder(conn, context)[_CALL] = call
    except Exception:  # noqa: BLE001 - our failure: the statement runs unobserved.
        report_internal_error(_WHERE)


def _after(
    conn: Any, cursor: Any, statement: Any, parameters: Any, context: Any, executemany: bool
) -> None:
    _finish(conn, context, None)


def _error(exception_context: Any) -> None:
    _finish(
        exception_context.connection,
        exception_context.execution_context,
        exception_context.original_exception,
    )


def _finish(conn: Any, context: Any, exc: BaseException | None) -> None:
    try:
        call: _Call | None = _holder(conn, context).pop(_CALL, None)
        if call is None:
            return
        span, started, system, operation, table = call
        elapsed = end_call(span, started, exc)
        observe_query(get_metrics(), system, operation, table, exc is not None, elapsed, span)
    except Exception:  # noqa: BLE001 - our failure must not reach the caller.
        report_internal_error(_WHERE)


def _holder(conn: Any, context: Any) -> dict[str, Any]:
    """Where the call of a statement waits: its execution context, else the connection."""
    if context is not None:
        return context.__dict__  # type: ignore[no-any-return]
    info: dict[str, Any] = conn.info
    return info


def _parse(statement: Any) -> tuple[str, str]:
    """Return the statement's verb (upper case) and first table; never a value."""
    if not isinstance(statement, str):
        return "other", ""
    found = _PARSED.get(statement)
    if found is not None:
        return found
    text = statement[_LEADING.match(statement).end() :]  # type: ignore[union-attr]
    verb = _VERB.match(text)
    operation = verb.group(0).upper()[:_MAX_OPERATION] if verb else "other"
    table = ""
    for match in _TABLE.finditer(text):
        name = match.group(1)
        if name.upper() not in _KEYWORDS:
            table = ".".join(part.strip('"`[]') for part in name.split("."))
            break
    found = (operation, table)
    if len(_PARSED) >= _MAX_STATEMENTS:
        _PARSED.clear()
    _PARSED[statement] = found
    return found


def _engine_attributes(engine: Any) -> dict[str, Any]:
    url = engine.url
    attributes: dict[str, Any] = {
        "db.system.name": str(engine.dialect.name),
        "db.system": str(engine.dialect.name),
    }
    if url.database:
        attributes["db.namespace"] = str(url.database)
    if url.host:
        attributes["server.address"] = str(url.host)
    if url.port:
        attributes["server.port"] = int(url.port)
    return attributes
