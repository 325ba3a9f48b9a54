from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from kaleem_telemetry import tracing
from kaleem_telemetry.db import track_db


def _count(registry: CollectorRegistry, status: str, operation: str = "find") -> float:
    labels = {
        "db_system": "mongodb",
        "operation": operation,
        "collection": "orders",
        "status": status,
    }
    value = registry.get_sample_value("database_query_duration_seconds_count", labels)
    return 0.0 if value is None else value


class TestTrackDb:
    def test_context_manager_records_metric_and_span(
        self, registry: CollectorRegistry, span_exporter: Any
    ) -> None:
        """A with-block observes the histogram with status ok and ends a CLIENT span."""
        with track_db("find", collection="orders", system="mongodb", registry=registry) as op:
            assert op.span is not None
            assert op.span.is_recording()

        (span,) = span_exporter.get_finished_spans()
        assert _count(registry, "ok") == 1
        assert span.name == "find orders"
        assert span.kind == SpanKind.CLIENT
        assert span.attributes["db.system.name"] == "mongodb"
        assert span.attributes["db.collection.name"] == "orders"
        assert span.attributes["db.operation.name"] == "find"

    def test_error_recorded_and_reraised(
        self, registry: CollectorRegistry, span_exporter: Any
    ) -> None:
        """An exception is re-raised unchanged, counted as status error and set on the span."""
        boom = RuntimeError("boom")

        with (
            pytest.raises(RuntimeError) as info,
            track_db("find", collection="orders", system="mongodb", registry=registry),
        ):
            raise boom

        (span,) = span_exporter.get_finished_spans()
        assert info.value is boom
        assert _count(registry, "error") == 1
        assert _count(registry, "ok") == 0
        assert span.status.status_code == StatusCode.ERROR
        assert span.events[0].name == "exception"

    def test_span_is_current_inside(self, registry: CollectorRegistry, span_exporter: Any) -> None:
        """Spans started inside the block are children of the database span."""
        with (
            track_db("find", collection="orders", system="mongodb", registry=registry),
            tracing.get_tracer().start_as_current_span("inner"),
        ):
            pass

        inner, outer = span_exporter.get_finished_spans()
        assert inner.parent is not None
        assert inner.parent.span_id == outer.context.span_id

    def test_exemplar_when_sampled(self, registry: CollectorRegistry, span_exporter: Any) -> None:
        """A sampled span's trace_id becomes the histogram exemplar."""
        with track_db("find", collection="orders", system="mongodb", registry=registry):
            pass

        (span,) = span_exporter.get_finished_spans()
        exemplars = [
            s.exemplar
            for family in registry.collect()
            for s in family.samples
            if s.name == "database_query_duration_seconds_bucket" and s.exemplar
        ]
        assert exemplars[0].labels == {"trace_id": format(span.context.trace_id, "032x")}

    def test_sync_decorator(self, registry: CollectorRegistry, span_exporter: Any) -> None:
        """As a decorator each call is tracked and the return value passes through."""

        @track_db("insert", collection="orders", system="mongodb", registry=registry)
        def insert(x: int) -> int:
            return x * 2

        assert insert(2) == 4
        assert insert(3) == 6
        assert insert.__name__ == "insert"
        assert _count(registry, "ok", "insert") == 2
        assert len(span_exporter.get_finished_spans()) == 2

    async def test_async_decorator(self, registry: CollectorRegistry, span_exporter: Any) -> None:
        """An async function is tracked across its await, errors included."""

        @track_db("update", collection="orders", system="mongodb", registry=registry)
        async def update(fail: bool) -> str:
            if fail:
                raise ValueError("no")
            return "done"

        assert await update(False) == "done"
        with pytest.raises(ValueError, match="no"):
            await update(True)

        assert _count(registry, "ok", "update") == 1
        assert _count(registry, "error", "update") == 1

    async def test_async_context_manager(
        self, registry: CollectorRegistry, span_exporter: Any
    ) -> None:
        """An `async with` block is tracked like a `with` block."""
        async with track_db("find", collection="orders", system="mongodb", registry=registry) as op:
            assert op.span is not None

        assert _count(registry, "ok") == 1

    def test_without_tracing_configured(self, registry: CollectorRegistry) -> None:
        """With no tracer provider the metric is still recorded, without an exemplar."""
        with track_db("find", collection="orders", system="mongodb", registry=registry):
            pass

        assert _count(registry, "ok") == 1
