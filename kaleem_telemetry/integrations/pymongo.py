"""Trace and measure pymongo commands through its command monitoring (the ``pymongo`` extra).

Call `instrument()` once, before the clients are created::

    from kaleem_telemetry.integrations import pymongo as pymongo_telemetry

    pymongo_telemetry.instrument()

It registers a ``pymongo.monitoring.CommandListener``: pymongo's own events
(``started``, ``succeeded``, ``failed``) for every command of every client
(``MongoClient`` and ``AsyncMongoClient``) made after the call. pymongo copies
the global listeners into each client when it is created, so a client made
before `instrument()` is not observed: `instrument()` logs a warning when it
finds one.

Each command runs in a CLIENT span named ``"{command} {collection}"``
(``find orders``) with ``db.system.name="mongodb"``, ``db.operation.name``,
``db.collection.name``, ``db.namespace`` (the database), ``server.address`` and
``server.port``, and observes ``database_query_duration_seconds{db_system=
"mongodb", operation, collection, status}`` with the span's duration;
``status="error"`` when the command failed. The command document, its filter
and values, and the reply are never recorded; the handshake and
authentication commands are not observed.

`uninstrument()` removes the listener from pymongo's global list (clients made
meanwhile keep an inert one). The spans are our own rather than those of
``opentelemetry-instrumentation-pymongo``: see docs/integrations.md.

Added in 0.1.0.
"""

from __future__ import annotations

import gc
import logging
import threading
from typing import Any

from opentelemetry.trace import Span

from kaleem_telemetry._guard import report_internal_error
from kaleem_telemetry._optional import import_optional
from kaleem_telemetry.db import observe_query
from kaleem_telemetry.integrations._clients import end_call, start_call
from kaleem_telemetry.integrations._health_checks import pymongo_check as health_check
from kaleem_telemetry.integrations._patching import already_instrumented
from kaleem_telemetry.metrics import get_metrics

pymongo = import_optional("pymongo", module=__name__, package="pymongo", extra="pymongo")

from pymongo import monitoring  # noqa: E402 - after the guarded import names the extra.

__all__ = ["health_check", "instrument", "uninstrument"]

_LOGGER = logging.getLogger(__name__)
_WHERE = "pymongo integration"
_LOCK = threading.Lock()
#: Commands not observed: the connection handshake and authentication.
_SKIPPED = frozenset(
    {"hello", "ismaster", "isMaster", "saslStart", "saslContinue", "authenticate", "getnonce"}
)
_MAX_IN_FLIGHT = 10_000
_MAX_NAME = 64

_Call = tuple[Span, int, str, str]


class _Listener(monitoring.CommandListener):
    """Our command listener: one span and one observation per command."""

    def __init__(self) -> None:
        self.active = True
        self._in_flight: dict[tuple[Any, int], _Call] = {}

    def started(self, event: Any) -> None:
        if not self.active or event.command_name in _SKIPPED:
            return
        try:
            operation = str(event.command_name)[:_MAX_NAME]
            collection = event.command.get(event.command_name)
            collection = collection[:_MAX_NAME] if isinstance(collection, str) else ""
            attributes: dict[str, Any] = {
                "db.system.name": "mongodb",
                "db.system": "mongodb",
                "db.operation.name": operation,
                "db.namespace": str(event.database_name),
            }
            if collection:
                attributes["db.collection.name"] = collection
            address = event.connection_id
            if isinstance(address, tuple) and len(address) == 2:
                attributes["server.address"] = str(address[0])
                if isinstance(address[1], int):
                    attributes["server.port"] = address[1]
            span, begun = start_call(
                f"{operation} {collection}" if collection else operation, attributes
            )
            if len(self._in_flight) >= _MAX_IN_FLIGHT:
                self._in_flight.clear()
            self._in_flight[(event.connection_id, event.request_id)] = (
                span,
                begun,
                operation,
                collection,
            )
        except Exception:  # noqa: BLE001 - our failure: the command runs unobserved.
            report_internal_error(_WHERE)

    def succeeded(self, event: Any) -> None:
        self._finish(event, None)

    def failed(self, event: Any) -> None:
        self._finish(event, _CommandFailed())

    def _finish(self, event: Any, exc: BaseException | None) -> None:
        try:
            call = self._in_flight.pop((event.connection_id, event.request_id), None)
            if call is None:
                return
            span, begun, operation, collection = call
            elapsed = end_call(span, begun, exc)
            observe_query(
                get_metrics(), "mongodb", operation, collection, exc is not None, elapsed, span
            )
        except Exception:  # noqa: BLE001 - our failure must not reach the caller.
            report_internal_error(_WHERE)


class _CommandFailed(Exception):
    """What a failed command's span records as its ``error.type`` (no message)."""


_LISTENER: _Listener | None = None


def instrument() -> None:
    """Register the command listener for every client made from now on.

    A repeated call logs a warning and does nothing; a client made before it
    is reported with a warning (it is not observed).
    """
    global _LISTENER
    with _LOCK:
        if _LISTENER is not None:
            already_instrumented("pymongo")
            return
        listener = _Listener()
        monitoring.register(listener)
        _LISTENER = listener
    earlier = _clients_made_before()
    if earlier:
        _LOGGER.warning(
            "kaleem_telemetry.integrations.pymongo: %d pymongo client(s) were created before "
            "instrument() and are not observed; call instrument() (or setup_telemetry) "
            "before creating clients.",
            earlier,
        )


def uninstrument() -> None:
    """Remove the listener from pymongo's global list; a no-op when not instrumented."""
    global _LISTENER
    with _LOCK:
        listener, _LISTENER = _LISTENER, None
        if listener is None:
            return
        listener.active = False
        registered = getattr(getattr(monitoring, "_LISTENERS", None), "command_listeners", None)
        if isinstance(registered, list) and listener in registered:
            registered.remove(listener)


def _clients_made_before() -> int:
    """Count the live clients (sync or async) made without our listener."""
    classes = [pymongo.MongoClient]
    async_client = getattr(pymongo, "AsyncMongoClient", None)
    if isinstance(async_client, type):
        classes.append(async_client)
    try:
        found = 0
        for referrer in gc.get_referrers(*classes):
            if isinstance(referrer, tuple(classes)) and not _observes(referrer):
                found += 1
    except Exception:  # noqa: BLE001 - a best-effort warning only.
        return 0
    return found


def _observes(client: Any) -> bool:
    listeners = getattr(getattr(client, "options", None), "event_listeners", None) or ()
    return any(isinstance(listener, _Listener) and listener.active for listener in listeners)
