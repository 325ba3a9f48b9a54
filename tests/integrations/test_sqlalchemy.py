"""kaleem_telemetry.integrations.sqlalchemy against the real PostgreSQL, sync and async."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("psycopg")

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from kaleem_telemetry import tracing
from kaleem_telemetry.exceptions import MissingDependencyError
from kaleem_telemetry.integrations import sqlalchemy as integration
from kaleem_telemetry.testing import TelemetryCapture, capture_telemetry

SECRET = "s3cr3t-parameter-never-recorded"
LISTENERS = [
    ("before_cursor_execute", integration._before),
    ("after_cursor_execute", integration._after),
    ("handle_error", integration._error),
]


def _url(postgres_url: str) -> str:
    return postgres_url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture(name="cap")
def _cap() -> Iterator[TelemetryCapture]:
    with capture_telemetry() as captured:
        yield captured


@pytest.fixture(name="table")
def _table(postgres_url: str) -> Iterator[str]:
    """A fresh table in the test database, dropped afterwards."""
    engine = sa.create_engine(_url(postgres_url))
    name = f"kt_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {name} (id int primary key, secret text)"))
    try:
        yield name
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
        engine.dispose()


@pytest.fixture(name="engine")
def _engine(postgres_url: str, table: str) -> Iterator[Any]:
    """A sync engine created before instrument(); instrumented for the test."""
    engine = sa.create_engine(_url(postgres_url))
    integration.instrument()
    try:
        yield engine
    finally:
        integration.uninstrument()
        engine.dispose()


def _leaks(cap: TelemetryCapture, needle: str) -> list[str]:
    texts = []
    for span in cap.spans:
        texts += [str(span.attributes), str(span.status.description), span.name]
        texts += [str(event.attributes) for event in span.events]
    return [text for text in texts if needle in text]


def _duration(span: Any) -> float:
    return float(span.end_time - span.start_time) / 1e9


class TestInstrument:
    def test_repeat_warns_and_uninstrument_removes_the_listeners(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A second instrument() warns; uninstrument() leaves no listener behind."""
        integration.instrument()
        added = [sa.event.contains(sa.engine.Engine, n, f) for n, f in LISTENERS]
        with caplog.at_level(logging.WARNING):
            integration.instrument()
        integration.uninstrument()

        assert added == [True, True, True]
        assert "already instrumented" in caplog.text
        assert [sa.event.contains(sa.engine.Engine, n, f) for n, f in LISTENERS] == [False] * 3

    def test_missing_sqlalchemy_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without SQLAlchemy, importing the integration says which extra to install."""
        monkeypatch.setitem(sys.modules, "sqlalchemy", None)
        monkeypatch.delitem(sys.modules, "kaleem_telemetry.integrations.sqlalchemy")

        with pytest.raises(MissingDependencyError, match=r"kaleem-telemetry\[sqlalchemy\]"):
            importlib.import_module("kaleem_telemetry.integrations.sqlalchemy")

    @pytest.mark.parametrize(
        ("statement", "expected"),
        [
            ("SELECT id FROM orders WHERE id = %(id)s", ("SELECT", "orders")),
            (
                '  /* app */ -- note\n insert into public."Orders" (id) values (1)',
                ("INSERT", "public.Orders"),
            ),
            ("UPDATE orders SET total = 'inline-value'", ("UPDATE", "orders")),
            ("DELETE FROM orders WHERE id = 1", ("DELETE", "orders")),
            ("WITH x AS (SELECT 1) SELECT * FROM items JOIN x ON true", ("WITH", "items")),
            ("SELECT 1", ("SELECT", "")),
            ("CREATE TABLE IF NOT EXISTS kt (id int)", ("CREATE", "kt")),
        ],
    )
    def test_statement_is_reduced_to_verb_and_table(
        self, statement: str, expected: tuple[str, str]
    ) -> None:
        """The verb and the first table; never a value."""
        assert integration._parse(statement) == expected


class TestSync:
    def test_statements_spans_metrics_and_no_values(
        self, engine: Any, table: str, cap: TelemetryCapture
    ) -> None:
        """Exact observations per operation and table, parent spans, the span's duration."""
        with tracing.get_tracer().start_as_current_span("request") as parent, engine.begin() as c:
            c.execute(sa.text(f"INSERT INTO {table} VALUES (1, :s)"), {"s": SECRET})
            c.execute(sa.text(f"SELECT secret FROM {table} WHERE secret = :s"), {"s": SECRET})
            c.execute(sa.text(f"SELECT secret FROM {table} WHERE id = :i"), {"i": 1})
        selects = [s for s in cap.spans if s.name == f"SELECT {table}"]
        labels = {"db_system": "postgresql", "operation": "SELECT", "collection": table}

        assert len(selects) == 2
        assert all(s.parent.span_id == parent.get_span_context().span_id for s in selects)
        assert selects[0].attributes["db.collection.name"] == table
        assert selects[0].attributes["db.namespace"] == "test"
        assert cap.metric_value("database_query_duration_seconds_count", **labels) == 2
        assert cap.metric_value(
            "database_query_duration_seconds_sum", **labels, status="ok"
        ) == pytest.approx(sum(_duration(s) for s in selects), abs=1e-9)
        assert (
            cap.metric_value(
                "database_query_duration_seconds_count",
                db_system="postgresql",
                operation="INSERT",
                collection=table,
                status="ok",
            )
            == 1
        )
        assert _leaks(cap, SECRET) == []

    def test_failure_and_statement_timeout_are_errors(
        self, engine: Any, table: str, cap: TelemetryCapture
    ) -> None:
        """A failed statement and a statement timeout count status=error, without the values."""
        with engine.connect() as conn:
            with pytest.raises(sa.exc.IntegrityError):
                conn.execute(sa.text(f"INSERT INTO {table} VALUES (NULL, :s)"), {"s": SECRET})
            conn.rollback()
            conn.execute(sa.text("SET statement_timeout = 100"))
            with pytest.raises(sa.exc.OperationalError):
                conn.execute(sa.text("SELECT pg_sleep(5)"))
            conn.rollback()

        assert (
            cap.metric_value(
                "database_query_duration_seconds_count",
                operation="INSERT",
                collection=table,
                status="error",
            )
            == 1
        )
        assert (
            cap.metric_value(
                "database_query_duration_seconds_count", operation="SELECT", status="error"
            )
            == 1
        )
        assert _leaks(cap, SECRET) == []

    def test_uninstrumented_engine_records_nothing(
        self, postgres_url: str, cap: TelemetryCapture
    ) -> None:
        """After uninstrument(), an engine records no span and no observation."""
        integration.instrument()
        integration.uninstrument()
        engine = sa.create_engine(_url(postgres_url))
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()

        assert cap.spans == []
        assert cap.metric_value("database_query_duration_seconds_count") == 0


class TestAsync:
    def test_async_engine_created_after_instrument(
        self, postgres_url: str, table: str, cap: TelemetryCapture
    ) -> None:
        """An AsyncEngine's statements are observed, under the current span."""

        async def run() -> None:
            engine = create_async_engine(_url(postgres_url))
            try:
                with tracing.get_tracer().start_as_current_span("job"):
                    async with engine.begin() as conn:
                        await conn.execute(sa.text(f"SELECT * FROM {table}"))
                        with pytest.raises(sa.exc.ProgrammingError):
                            await conn.execute(sa.text("SELECT * FROM kt_no_such_table"))
            finally:
                await engine.dispose()

        integration.instrument()
        try:
            asyncio.run(run())
        finally:
            integration.uninstrument()
        job = next(s for s in cap.spans if s.name == "job")
        select = next(s for s in cap.spans if s.name == f"SELECT {table}")

        assert select.parent.span_id == job.context.span_id
        assert (
            cap.metric_value(
                "database_query_duration_seconds_count",
                db_system="postgresql",
                operation="SELECT",
                collection=table,
                status="ok",
            )
            == 1
        )
        assert (
            cap.metric_value(
                "database_query_duration_seconds_count",
                collection="kt_no_such_table",
                status="error",
            )
            == 1
        )
