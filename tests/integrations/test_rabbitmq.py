"""pika and aio-pika over the real RabbitMQ: producer and worker in separate processes.

The producer publishes, inside a span and a bound request context, through the
integration; the worker consumes through the integration, exposes ``/metrics``,
and exports spans to the local OTLP receiver and errors to the local Sentry
receiver behind a real DSN.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.receivers import OTLPReceiver, SentryIngest
from tests.reliability._support import clean_env, free_port, sample

ROOT = Path(__file__).resolve().parents[2]

PRODUCER = r"""
import sys, time
import pika
from opentelemetry import baggage, context as otel_context
from kaleem_telemetry import setup_telemetry, telemetry_context, tracing

lib, url, queue, delayed = sys.argv[1:5]
telemetry = setup_telemetry(service_name="producer")
hostile = [
    {"traceparent": "garbage", "x-request-id": "has space", "x-merchant-id": "<x>",
     "x-enqueued-at": "not-a-number", "x-delay": "soon", "x-big": "x" * 50_000,
     "tracestate": "t" * 5_000},
    {"traceparent": "00-" + "f" * 2_000, "x-request-id": b"\xff\xfe",
     "x-merchant-id": {"nested": "table"}, "x-enqueued-at": repr(time.time() + 3600),
     "baggage": 42},
]


def messages():
    token = otel_context.attach(baggage.set_baggage("tenant.plan", "gold"))
    with telemetry_context(request_id="req-1", merchant_id="m-1"), \
            tracing.get_tracer().start_as_current_span("checkout"):
        for body in ("ok-1", "ok-2", "error", "retry"):
            yield "instrumented", queue, body, None
        yield "instrumented", delayed, "delayed", {"x-delay": 600000}
    otel_context.detach(token)
    for i, headers in enumerate(hostile):
        yield "raw", queue, f"hostile-{i + 1}", headers
    yield "instrumented", queue, "ok-3", None


if lib == "pika":
    from kaleem_telemetry.integrations import pika as integration
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    state = None
    for how, target, body, headers in messages():
        if how != state:
            (integration.instrument if how == "instrumented" else integration.uninstrument)()
            state = how
        channel.basic_publish("", target, body.encode(), pika.BasicProperties(headers=headers))
    connection.close()
else:
    import asyncio
    import aio_pika
    from kaleem_telemetry.integrations import aio_pika as integration

    async def main():
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            state = None
            for how, target, body, headers in messages():
                if how != state:
                    toggle = integration.instrument if how == "instrumented" else None
                    (toggle or integration.uninstrument)()
                    state = how
                if headers:
                    # pamqp sends raw bytes as a byte array, not as bytes.
                    headers = {
                        k: bytearray(v) if isinstance(v, bytes) else v for k, v in headers.items()
                    }
                message = aio_pika.Message(body.encode(), headers=headers)
                await channel.default_exchange.publish(message, routing_key=target)

    asyncio.run(main())
telemetry.shutdown(5.0)
"""

WORKER = r"""
import sys
from opentelemetry import baggage
from kaleem_telemetry import RetryJob, get_logger, setup_telemetry, start_metrics_server

lib, url, queue, delayed, port = sys.argv[1:6]
setup_telemetry(service_name="worker")
start_metrics_server(int(port), addr="127.0.0.1")
log = get_logger("worker")


def handle(body):
    log.info("job_ran", body=body, plan=baggage.get_baggage("tenant.plan"))
    if body == "error":
        raise ValueError("boom")
    if body == "retry":
        raise RetryJob("later")


if lib == "pika":
    import pika
    from kaleem_telemetry.integrations import pika as integration
    integration.instrument()

    def on_message(channel, method, properties, body):
        channel.basic_ack(method.delivery_tag)
        handle(body.decode())

    while True:
        # An exception out of a callback ends pika's consuming loop: the worker
        # reconnects, as a real one would (one message in flight, already acked).
        connection = pika.BlockingConnection(pika.URLParameters(url))
        channel = connection.channel()
        channel.basic_qos(prefetch_count=1)
        for name in (queue, delayed):
            channel.basic_consume(name, on_message)
        try:
            channel.start_consuming()
        except (ValueError, RetryJob) as exc:
            connection.close()
            frame = exc.__traceback__
            while frame.tb_next is not None:
                frame = frame.tb_next
            log.info("consumer_raised", type=type(exc).__name__, message=str(exc),
                     innermost=frame.tb_frame.f_code.co_name)
else:
    import asyncio
    import aio_pika
    from kaleem_telemetry.integrations import aio_pika as integration
    integration.instrument()

    async def on_message(message):
        async with message.process(ignore_processed=True):
            handle(message.body.decode())

    async def main():
        def raised(loop, context):
            exc = context.get("exception")
            log.info("consumer_raised", type=type(exc).__name__, message=str(exc))
        asyncio.get_running_loop().set_exception_handler(raised)
        connection = await aio_pika.connect(url)
        channel = await connection.channel()
        for name in (queue, delayed):
            await (await channel.get_queue(name)).consume(on_message)
        await asyncio.Future()

    asyncio.run(main())
"""


@pytest.fixture(name="queues")
def _queues(rabbitmq_url: str) -> Iterator[tuple[str, str]]:
    """Two fresh queues (main and delayed), deleted afterwards."""
    pika = pytest.importorskip("pika")
    names = (f"kt-jobs-{uuid.uuid4().hex}", f"kt-jobs-delayed-{uuid.uuid4().hex}")
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        channel = connection.channel()
        for name in names:
            channel.queue_declare(name)
        yield names
        channel = connection.channel()
        for name in names:
            channel.queue_delete(name)
    finally:
        connection.close()


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def _wait_for_runs(port: int, queue: str, total: int, worker: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 90
    text = ""
    while time.monotonic() < deadline:
        assert worker.poll() is None, "the worker exited early"
        try:
            text = _scrape(port)
        except OSError:
            text = ""
        if sample(text, "job_runs_total", queue=queue) >= total:
            return text
        time.sleep(0.2)
    pytest.fail(f"the worker did not run {total} jobs on {queue} in time:\n{text}")


def _lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for raw in path.read_text().splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


@pytest.mark.parametrize("lib", ["pika", "aio_pika"])
def test_publish_and_consume_in_one_trace(
    lib: str, rabbitmq_url: str, queues: tuple[str, str], tmp_path: Path
) -> None:
    """One trace from the producer's span to the worker's CONSUMER span, with exact job metrics."""
    pytest.importorskip(lib)
    queue, delayed = queues
    producer_py, worker_py = tmp_path / "producer.py", tmp_path / "worker.py"
    producer_py.write_text(PRODUCER)
    worker_py.write_text(WORKER)
    port = free_port()
    with OTLPReceiver() as receiver, SentryIngest() as sentry:
        env = clean_env(
            **receiver.env(),
            SENTRY_DSN=sentry.dsn,
            OTEL_BSP_SCHEDULE_DELAY="100",
            KALEEM_TELEMETRY_LOG_FORMAT="json",
        )
        args = [lib, rabbitmq_url, queue, delayed]
        subprocess.run(
            [sys.executable, str(producer_py), *args], env=env, cwd=ROOT, check=True, timeout=120
        )
        out = tmp_path / "worker.log"
        with out.open("wb") as log:
            worker = subprocess.Popen(
                [sys.executable, str(worker_py), *args, str(port)],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                _wait_for_runs(port, queue, 7, worker)
                metrics = _wait_for_runs(port, delayed, 1, worker)
                events = sentry.wait_for_events(1, timeout=30)
                spans = receiver.wait_for(7 + 6 + 1 + 1, timeout=30)
                time.sleep(0.5)
                events, spans = sentry.events, receiver.spans
            finally:
                worker.terminate()
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait(timeout=30)
    lines = _lines(out)
    ran = {line["body"]: line for line in lines if line.get("event") == "job_ran"}
    by_id = {span.span_id: span for span in spans}
    checkout = next(span for span in spans if span.name == "checkout")
    consumer_span = by_id[ran["ok-1"]["span_id"]]
    publish_span = by_id[consumer_span.parent_span_id]
    raised = [line for line in lines if line.get("event") == "consumer_raised"]

    # One trace: checkout -> PRODUCER publish -> CONSUMER process, across the processes.
    assert consumer_span.name == f"process {queue}"
    assert consumer_span.kind == 5  # SPAN_KIND_CONSUMER
    assert publish_span.kind == 4  # SPAN_KIND_PRODUCER
    assert publish_span.parent_span_id == checkout.span_id
    assert consumer_span.trace_id == checkout.trace_id
    assert consumer_span.resource["service.name"] == "worker"
    # The worker's log lines carry the producer's context, and the baggage survived.
    for body in ("ok-1", "ok-2", "error", "retry", "delayed"):
        assert ran[body]["request_id"] == "req-1"
        assert ran[body]["merchant_id"] == "m-1"
        assert ran[body]["trace_id"] == checkout.trace_id
        assert ran[body]["plan"] == "gold"
    # Hostile headers bind nothing and start a trace of their own; nothing leaks on.
    # ok-3 was published outside the request: none of its context may linger either.
    for body in ("hostile-1", "hostile-2", "ok-3"):
        assert "merchant_id" not in ran[body]
        assert "request_id" not in ran[body]
        assert ran[body]["trace_id"] != checkout.trace_id
        assert ran[body]["plan"] is None
    # Exact counts, queue lag measured (the delayed message's declared delay is not lag).
    assert sample(metrics, "job_runs_total", queue=queue, status="ok") == 5
    assert sample(metrics, "job_runs_total", queue=queue, status="error") == 1
    assert sample(metrics, "job_runs_total", queue=queue, status="retry") == 1
    assert sample(metrics, "jobs_in_progress", queue=queue) == 0
    assert sample(metrics, "job_queue_lag_seconds_count", queue=queue) == 6
    assert sample(metrics, "job_queue_lag_seconds_sum", queue=queue) > 0
    assert sample(metrics, "job_queue_lag_seconds_count", queue=delayed) == 1
    assert sample(metrics, "job_queue_lag_seconds_sum", queue=delayed) == 0
    # One Sentry event for the one failed job, with the job's tags.
    assert len(events) == 1
    tags = events[0]["tags"]
    assert (tags["queue"], tags["merchant_id"], tags["request_id"]) == (queue, "m-1", "req-1")
    assert tags["job"] == "on_message"
    assert tags["trace_id"] == checkout.trace_id
    # The handler's exceptions reached the code around the consumer unchanged.
    assert {(line["type"], line["message"]) for line in raised} >= {("ValueError", "boom")}
    if lib == "pika":
        assert {line["innermost"] for line in raised} == {"handle"}
        assert {(line["type"], line["message"]) for line in raised} == {
            ("ValueError", "boom"),
            ("RetryJob", "later"),
        }
