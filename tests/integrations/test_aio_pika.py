"""kaleem_telemetry.integrations.aio_pika in one process, against the real RabbitMQ."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

aio_pika = pytest.importorskip("aio_pika")

from aio_pika.exchange import Exchange  # noqa: E402
from aio_pika.queue import Queue  # noqa: E402

from kaleem_telemetry import instrument_job, telemetry_context, tracing  # noqa: E402
from kaleem_telemetry.exceptions import MissingDependencyError  # noqa: E402
from kaleem_telemetry.integrations import aio_pika as integration  # noqa: E402
from kaleem_telemetry.testing import TelemetryCapture, capture_telemetry  # noqa: E402


@pytest.fixture(name="instrumented")
def _instrumented() -> Iterator[None]:
    """Instrument aio-pika for the test, and put it back afterwards."""
    integration.instrument()
    yield
    integration.uninstrument()


@pytest.fixture(name="cap")
def _cap() -> Iterator[TelemetryCapture]:
    with capture_telemetry() as captured:
        yield captured


class TestInstrument:
    def test_repeat_warns_and_uninstrument_restores_exactly(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A second instrument() warns and changes nothing; uninstrument() puts aio-pika back."""
        originals = (Exchange.__dict__["publish"], Queue.__dict__["consume"])
        integration.instrument()
        patched = Exchange.__dict__["publish"]
        with caplog.at_level(logging.WARNING):
            integration.instrument()
        integration.uninstrument()

        assert patched is not originals[0]
        assert "already instrumented" in caplog.text
        assert (Exchange.__dict__["publish"], Queue.__dict__["consume"]) == originals

    def test_missing_aio_pika_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without aio-pika, importing the integration says which extra to install."""
        monkeypatch.setitem(sys.modules, "aio_pika", None)
        monkeypatch.delitem(sys.modules, "kaleem_telemetry.integrations.aio_pika")

        with pytest.raises(MissingDependencyError, match=r"kaleem-telemetry\[aio-pika\]"):
            importlib.import_module("kaleem_telemetry.integrations.aio_pika")


class TestPublishAndConsume:
    async def test_publish_injects_and_consume_runs_a_job(
        self, instrumented: None, rabbitmq_url: str, cap: TelemetryCapture
    ) -> None:
        """The consumer's job span is a child of the PRODUCER span; its context is the request's."""
        queue_name = f"kt-aio-pika-{uuid.uuid4().hex}"
        seen: asyncio.Queue[Any] = asyncio.Queue()

        async def on_message(message: Any) -> None:
            from kaleem_telemetry import get_context

            await seen.put((dict(message.headers), get_context()))

        connection = await aio_pika.connect(rabbitmq_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(queue_name)
            try:
                with (
                    telemetry_context(request_id="req-a", merchant_id="m-a"),
                    tracing.get_tracer().start_as_current_span("request"),
                ):
                    message = aio_pika.Message(b"1", headers={"app": "x"})
                    await channel.default_exchange.publish(message, routing_key=queue_name)
                await queue.consume(on_message, no_ack=True)
                headers, bound = await asyncio.wait_for(seen.get(), timeout=30)
            finally:
                await queue.delete(if_unused=False, if_empty=False)
        publish = next(s for s in cap.spans if s.name == f"publish {queue_name}")
        job = next(s for s in cap.spans if s.name == f"process {queue_name}")

        assert headers["app"] == "x"
        assert "traceparent" in headers
        assert bound == {"request_id": "req-a", "merchant_id": "m-a"}
        assert job.parent.span_id == publish.context.span_id
        assert publish.attributes["messaging.system"] == "rabbitmq"
        assert cap.metric_value("job_runs_total", queue=queue_name, status="ok") == 1

    async def test_hand_decorated_callback_is_observed_once(
        self, instrumented: None, rabbitmq_url: str, cap: TelemetryCapture
    ) -> None:
        """A callback already under instrument_job is not wrapped a second time by consume()."""
        queue_name = f"kt-aio-pika-{uuid.uuid4().hex}"
        done = asyncio.Event()

        @instrument_job(queue=queue_name, name="by-hand")
        async def on_message(message: Any) -> None:
            done.set()

        connection = await aio_pika.connect(rabbitmq_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(queue_name)
            try:
                await channel.default_exchange.publish(aio_pika.Message(b"1"), queue_name)
                await queue.consume(on_message, no_ack=True)
                await asyncio.wait_for(done.wait(), timeout=30)
            finally:
                await queue.delete(if_unused=False, if_empty=False)

        assert len([s for s in cap.spans if s.name == f"process {queue_name}"]) == 1
