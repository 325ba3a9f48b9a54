"""`track_db`: time a database operation into a histogram and a child span.

Use it as a context manager or a decorator, on sync or async code (a decorated
generator or async generator is tracked over its whole iteration)::

    with track_db("find", collection="orders", system="mongodb"):
        orders = db.orders.find_one({"_id": order_id})

    @track_db("insert", collection="orders", system="postgresql")
    async def save(order: Order) -> None: ...

Each operation observes ``database_query_duration_seconds{db_system, operation,
collection, status}`` (``status`` is ``ok``, or ``error`` when the block raised)
and runs inside a CLIENT span named ``"{operation} {collection}"`` from the
``kaleem_telemetry`` tracer, with the OpenTelemetry database attributes. The
block's exception is recorded on the span and re-raised unchanged. When the span
is sampled (and not in multiprocess mode), its ``trace_id`` is the exemplar.

Added in 0.1.0.
"""

from __future__ import annotations

import time

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry

from kaleem_telemetry import tracing
from kaleem_telemetry._guard import internal_errors
from kaleem_telemetry._wrapping import OperationTracker
from kaleem_telemetry.metrics import TelemetryMetrics, get_metrics

__all__ = ["track_db"]


class DbTracker(OperationTracker):
    """One tracked database operation; made by `track_db`.

    Attributes:
        span: The operation's span while the block runs, else None.
    """

    _where = "track_db"

    def __init__(
        self, operation: str, collection: str, system: str, registry: CollectorRegistry | None
    ) -> None:
        self.operation = operation
        self.collection = collection
        self.system = system
        self.registry = registry
        self.span: Span | None = None
        self._in_span: Context | None = None
        self._started = 0.0

    def _copy(self) -> DbTracker:
        return DbTracker(self.operation, self.collection, self.system, self.registry)

    def _start(self) -> None:
        with internal_errors("track_db start"):
            span = tracing.start_own_span(
                f"{self.operation} {self.collection}",
                kind=SpanKind.CLIENT,
                attributes={
                    "db.system.name": self.system,
                    "db.system": self.system,
                    "db.operation.name": self.operation,
                    "db.collection.name": self.collection,
                },
            )
            self._in_span = trace.set_span_in_context(span)
            self.span = span
        self._started = time.perf_counter()

    def _context(self) -> Context | None:
        return self._in_span

    def _finish(self, exc: BaseException | None) -> None:
        elapsed = time.perf_counter() - self._started
        with internal_errors("track_db finish"):
            span = self.span
            self.span = self._in_span = None
            if span is not None:
                if exc is not None:
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                span.end()
            observe_query(
                get_metrics(self.registry),
                self.system,
                self.operation,
                self.collection,
                exc is not None,
                elapsed,
                span,
            )


def observe_query(
    metrics: TelemetryMetrics,
    system: str,
    operation: str,
    collection: str,
    failed: bool,
    elapsed: float,
    span: Span | None,
) -> None:
    """Observe one operation in ``database_query_duration_seconds``.

    The span's ``trace_id`` is the exemplar when it is sampled and exemplars are on.
    """
    exemplar = None
    if span is not None and metrics.exemplars_enabled:
        context = span.get_span_context()
        if context.trace_flags.sampled:
            exemplar = {"trace_id": format(context.trace_id, "032x")}
    metrics.database_query_duration_seconds.labels(
        system, operation, collection, "error" if failed else "ok"
    ).observe(elapsed, exemplar)


def track_db(
    operation: str,
    *,
    collection: str,
    system: str,
    registry: CollectorRegistry | None = None,
) -> DbTracker:
    """Track a database operation: a histogram observation and a child span.

    Works as ``with``, ``async with`` and as a decorator of plain, async,
    generator and async-generator functions. Label values must be bounded: the
    operation name (``find``, ``insert``, ``SELECT``), the collection or table,
    the system.

    Args:
        operation: The operation name, for example ``"find"`` or ``"SELECT"``.
        collection: The collection or table name.
        system: The database system (OpenTelemetry ``db.system.name``), for
            example ``"mongodb"``, ``"postgresql"``, ``"redis"``, ``"qdrant"``.
        registry: The registry to record into; the default is the process one.

    Returns:
        A tracker usable as a context manager (yielding itself, with ``.span``)
        or as a decorator.
    """
    return DbTracker(operation, collection, system, registry)
