"""kaleem_telemetry.integrations.pymongo through pymongo's own command monitoring events.

There is no MongoDB server here: the listener is the one a real client carries
(``client.options.event_listeners``), driven with pymongo's own event classes,
and a client with a short server selection timeout shows that a command that
never reached a server records nothing.
"""

from __future__ import annotations

import datetime
import importlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("pymongo")

import pymongo
from pymongo import monitoring

from kaleem_telemetry import tracing
from kaleem_telemetry.exceptions import MissingDependencyError
from kaleem_telemetry.integrations import pymongo as integration
from kaleem_telemetry.testing import TelemetryCapture, capture_telemetry

SECRET = "alice-s3cr3t@example.com"
ADDRESS = ("127.0.0.1", 27017)
URL = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=50"


@pytest.fixture(name="cap")
def _cap() -> Iterator[TelemetryCapture]:
    with capture_telemetry() as captured:
        yield captured


@pytest.fixture(name="listener")
def _listener() -> Iterator[Any]:
    """The command listener of a client made after instrument()."""
    integration.instrument()
    client = pymongo.MongoClient(URL, connect=False)
    try:
        [listener] = [
            listener
            for listener in client.options.event_listeners
            if isinstance(listener, monitoring.CommandListener)
        ]
        yield listener
    finally:
        client.close()
        integration.uninstrument()


def _started(command: dict[str, Any], request_id: int) -> Any:
    return monitoring.CommandStartedEvent(command, "shop", request_id, ADDRESS, request_id)


def _succeeded(name: str, request_id: int) -> Any:
    return monitoring.CommandSucceededEvent(
        datetime.timedelta(microseconds=5),
        {"ok": 1, "cursor": {"firstBatch": [{"email": SECRET}]}},
        name,
        request_id,
        ADDRESS,
        request_id,
        database_name="shop",
    )


def _failed(name: str, request_id: int) -> Any:
    return monitoring.CommandFailedEvent(
        datetime.timedelta(microseconds=5),
        {"ok": 0, "errmsg": f"duplicate {SECRET}"},
        name,
        request_id,
        ADDRESS,
        request_id,
        database_name="shop",
    )


def _leaks(cap: TelemetryCapture) -> list[str]:
    texts = []
    for span in cap.spans:
        texts += [str(span.attributes), str(span.status.description), span.name]
        texts += [str(event.attributes) for event in span.events]
    return [text for text in texts if SECRET in text]


class TestInstrument:
    def test_repeat_warns_and_uninstrument_removes_the_listener(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A second instrument() warns; uninstrument() leaves pymongo's global list as it was."""
        before = list(monitoring._LISTENERS.command_listeners)
        integration.instrument()
        added = list(monitoring._LISTENERS.command_listeners)
        with caplog.at_level(logging.WARNING):
            integration.instrument()
        integration.uninstrument()

        assert len(added) == len(before) + 1
        assert "already instrumented" in caplog.text
        assert monitoring._LISTENERS.command_listeners == before

    def test_client_made_before_instrument_is_warned_about(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The import order that would leave a client unobserved is logged."""
        early = pymongo.MongoClient(URL, connect=False)
        try:
            with caplog.at_level(logging.WARNING):
                integration.instrument()
        finally:
            integration.uninstrument()
            early.close()

        assert "created before instrument()" in caplog.text

    def test_missing_pymongo_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without pymongo, importing the integration says which extra to install."""
        monkeypatch.setitem(sys.modules, "pymongo", None)
        monkeypatch.delitem(sys.modules, "kaleem_telemetry.integrations.pymongo")

        with pytest.raises(MissingDependencyError, match=r"kaleem-telemetry\[pymongo\]"):
            importlib.import_module("kaleem_telemetry.integrations.pymongo")


class TestCommands:
    def test_find_span_metric_and_no_values(self, listener: Any, cap: TelemetryCapture) -> None:
        """A find: span under the current one, exact observation at the span's duration."""
        with tracing.get_tracer().start_as_current_span("request") as parent:
            listener.started(_started({"find": "orders", "filter": {"email": SECRET}}, 7))
            listener.succeeded(_succeeded("find", 7))
        [span] = [s for s in cap.spans if s.kind.name == "CLIENT"]
        labels = {"db_system": "mongodb", "operation": "find", "collection": "orders"}

        assert span.name == "find orders"
        assert span.parent.span_id == parent.get_span_context().span_id
        assert span.attributes["db.namespace"] == "shop"
        assert span.attributes["server.port"] == 27017
        assert cap.metric_value("database_query_duration_seconds_count", **labels, status="ok") == 1
        assert cap.metric_value("database_query_duration_seconds_sum", **labels) == pytest.approx(
            (span.end_time - span.start_time) / 1e9, abs=1e-9
        )
        assert _leaks(cap) == []

    def test_failed_command_is_an_error_without_its_message(
        self, listener: Any, cap: TelemetryCapture
    ) -> None:
        """A failed insert counts status=error; the server's message is not recorded."""
        listener.started(_started({"insert": "users", "documents": [{"email": SECRET}]}, 8))
        listener.failed(_failed("insert", 8))

        assert (
            cap.metric_value(
                "database_query_duration_seconds_count",
                db_system="mongodb",
                operation="insert",
                collection="users",
                status="error",
            )
            == 1
        )
        assert _leaks(cap) == []

    def test_handshake_and_unmatched_events_record_nothing(
        self, listener: Any, cap: TelemetryCapture
    ) -> None:
        """hello/saslStart are skipped; a reply without its start is ignored."""
        listener.started(_started({"saslStart": 1, "payload": SECRET}, 9))
        listener.succeeded(_succeeded("saslStart", 9))
        listener.succeeded(_succeeded("find", 10))

        assert cap.spans == []

    def test_command_that_reached_no_server_records_nothing(self, cap: TelemetryCapture) -> None:
        """No server (short selection timeout): the error propagates, no command is observed."""
        integration.instrument()
        client = pymongo.MongoClient(URL)
        try:
            with pytest.raises(pymongo.errors.ServerSelectionTimeoutError):
                client.shop.orders.find_one({"email": SECRET})
        finally:
            client.close()
            integration.uninstrument()

        assert cap.metric_value("database_query_duration_seconds_count", db_system="mongodb") == 0

    def test_after_uninstrument_a_clients_listener_is_inert(self, cap: TelemetryCapture) -> None:
        """A client made while instrumented records nothing once uninstrumented."""
        integration.instrument()
        client = pymongo.MongoClient(URL, connect=False)
        integration.uninstrument()
        [listener] = [
            lst
            for lst in client.options.event_listeners
            if isinstance(lst, monitoring.CommandListener)
        ]
        listener.started(_started({"find": "orders"}, 11))
        listener.succeeded(_succeeded("find", 11))
        client.close()

        assert cap.spans == []
