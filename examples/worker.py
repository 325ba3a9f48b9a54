"""A RabbitMQ worker instrumented with kaleem-telemetry, and the request that feeds it.

The worker consumes the ``orders`` jobs with pika and exposes ``/metrics``,
``/health/live`` and ``/health/ready`` on :9101. To show a whole trace, the
script also plays the API: inside a request span with a request id and a
merchant bound, it publishes a few jobs, then consumes them; every log line of a
job carries the request's ``trace_id``, ``request_id`` and ``merchant_id``::

    python examples/worker.py --jobs 3

Needs ``pip install 'kaleem-telemetry[pika]'`` and RabbitMQ (``--url``, default
``amqp://guest:guest@127.0.0.1:5672/``). Logs are JSON lines on stdout, spans go to
stderr (console exporter) unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set. The
queue is the script's own (a fresh name) and deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import time
import urllib.request
import uuid
from typing import Any

import pika
from opentelemetry.trace import SpanKind

from kaleem_telemetry import (
    get_logger,
    setup_telemetry,
    start_metrics_server,
    telemetry_context,
)
from kaleem_telemetry.integrations import pika as pika_telemetry
from kaleem_telemetry.tracing import get_tracer

setup_telemetry(
    service_name="orders-worker",
    traces_exporter="otlp" if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") else "console",
)
pika_telemetry.instrument()
log = get_logger("orders-worker")
_done: list[str] = []


def on_message(channel: Any, method: Any, properties: Any, body: bytes) -> None:
    """Handle one job: with the integration, it runs as an instrument_job."""
    log.info("order_job_done", order=body.decode())
    channel.basic_ack(method.delivery_tag)
    _done.append(body.decode())


def publish_from_a_request(channel: Any, queue: str, jobs: int) -> None:
    """What the API does: publish jobs while it serves a request."""
    with (
        telemetry_context(request_id=f"req-{uuid.uuid4().hex[:8]}", merchant_id="m-42"),
        get_tracer().start_as_current_span("POST /orders", kind=SpanKind.SERVER),
    ):
        for n in range(jobs):
            channel.basic_publish("", queue, f"order-{n}".encode())
        log.info("orders_enqueued", jobs=jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--port", type=int, default=9101, help="the /metrics port (0: any)")
    parser.add_argument("--jobs", type=int, default=3)
    args = parser.parse_args()

    server = start_metrics_server(args.port, addr="127.0.0.1")
    connection = pika.BlockingConnection(pika.URLParameters(args.url))
    channel = connection.channel()
    queue = f"orders-{uuid.uuid4().hex[:8]}"
    channel.queue_declare(queue)
    try:
        publish_from_a_request(channel, queue, args.jobs)
        channel.basic_consume(queue, on_message)
        deadline = time.monotonic() + 30
        while len(_done) < args.jobs and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.1)
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            metrics = response.read().decode()
        runs = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("job_runs_total{") and f'queue="{queue}"' in line
        )
        log.info("worker_metrics_scraped", url=url, job_runs=runs)
    finally:
        channel.queue_delete(queue)
        connection.close()
        server.stop()


if __name__ == "__main__":
    main()
