"""kaleem_telemetry.integrations.pika in one process, against the real RabbitMQ."""

from __future__ import annotations

import importlib
import logging
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pika = pytest.importorskip("pika")

from pika.adapters.blocking_connection import BlockingChannel  # noqa: E402
from pika.channel import Channel  # noqa: E402

from kaleem_telemetry import instrument_job, telemetry_context, tracing  # noqa: E402
from kaleem_telemetry.exceptions import MissingDependencyError  # noqa: E402
from kaleem_telemetry.integrations import pika as integration  # noqa: E402
from kaleem_telemetry.testing import TelemetryCapture, capture_telemetry  # noqa: E402


@pytest.fixture(name="instrumented")
def _instrumented() -> Iterator[None]:
    """Instrument pika for the test, and put it back afterwards."""
    integration.instrument()
    yield
    integration.uninstrument()


@pytest.fixture(name="channel")
def _channel(rabbitmq_url: str) -> Iterator[tuple[Any, str]]:
    """A blocking channel and a fresh queue, deleted afterwards."""
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    queue = f"kt-pika-{uuid.uuid4().hex}"
    channel.queue_declare(queue)
    try:
        yield channel, queue
    finally:
        channel.queue_delete(queue)
        connection.close()


@pytest.fixture(name="cap")
def _cap() -> Iterator[TelemetryCapture]:
    with capture_telemetry() as captured:
        yield captured


class TestInstrument:
    def test_repeat_warns_and_uninstrument_restores_exactly(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A second instrument() warns and changes nothing; uninstrument() puts pika back."""
        originals = (
            Channel.__dict__["basic_publish"],
            Channel.__dict__["basic_consume"],
            BlockingChannel.__dict__["basic_consume"],
        )
        integration.instrument()
        patched = Channel.__dict__["basic_publish"]
        with caplog.at_level(logging.WARNING):
            integration.instrument()
        integration.uninstrument()

        assert patched is not originals[0]
        assert "already instrumented" in caplog.text
        assert (
            Channel.__dict__["basic_publish"],
            Channel.__dict__["basic_consume"],
            BlockingChannel.__dict__["basic_consume"],
        ) == originals

    def test_missing_pika_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without pika, importing the integration says which extra to install."""
        monkeypatch.setitem(sys.modules, "pika", None)
        monkeypatch.delitem(sys.modules, "kaleem_telemetry.integrations.pika")

        with pytest.raises(MissingDependencyError, match=r"kaleem-telemetry\[pika\]"):
            importlib.import_module("kaleem_telemetry.integrations.pika")


class TestPublishAndConsume:
    def test_caller_properties_unchanged_one_traceparent_and_one_job_span(
        self, instrumented: None, channel: tuple[Any, str], cap: TelemetryCapture
    ) -> None:
        """The caller's properties stay as given, one traceparent is sent, the job runs once."""
        ch, queue = channel
        stale = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        given = {"app": "x", "Traceparent": stale, "X-Request-ID": "old"}
        properties = pika.BasicProperties(headers=dict(given), content_type="text/plain")
        seen: list[Any] = []

        @instrument_job(queue=queue, name="by-hand")
        def on_message(channel: Any, method: Any, props: Any, body: bytes) -> None:
            seen.append(props)

        with telemetry_context(request_id="req-p"), tracing.get_tracer().start_as_current_span("r"):
            ch.basic_publish("", queue, b"1", properties)
        ch.basic_consume(queue, on_message, auto_ack=True)
        for _ in range(100):
            if seen:
                break
            ch.connection.process_data_events(time_limit=0.1)
        jobs = [s for s in cap.spans if s.name == f"process {queue}"]
        publish = next(s for s in cap.spans if s.name == f"publish {queue}")

        assert properties.headers == given
        assert seen[0].headers["app"] == "x"
        assert seen[0].headers["x-request-id"] == "req-p"
        # One traceparent, the publishing span's: the caller's stale spellings are gone.
        assert [k for k in seen[0].headers if k.lower() in {"traceparent", "x-request-id"}] == [
            "traceparent",
            "x-request-id",
        ]
        assert stale.split("-")[1] not in seen[0].headers["traceparent"]
        assert seen[0].content_type == "text/plain"
        assert len(jobs) == 1
        assert jobs[0].parent.span_id == publish.context.span_id
        assert cap.metric_value("job_runs_total", queue=queue, job="by-hand", status="ok") == 1
