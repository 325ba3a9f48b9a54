"""A Celery app instrumented with kaleem-telemetry: the producer and the worker.

The module is the Celery app both sides import. Run as a script, it plays the
whole story: inside a request span with a request id and a merchant bound, it
enqueues a few tasks, starts a real worker on them (prefork, children recycled
after every task, metrics served on one port for all of them), waits until
``/metrics`` counts every run, and stops the worker::

    python examples/celery_app.py --tasks 3

Every log line of a task carries the request's ``trace_id``, ``request_id`` and
``merchant_id``. Run a worker of your own on the module with::

    celery -A celery_app worker --pool=prefork --concurrency=2

Needs ``pip install 'kaleem-telemetry[celery]'`` and RabbitMQ (``--url``, default
``amqp://guest:guest@127.0.0.1:5672//``). Logs are JSON lines on stdout, spans
go to stderr (console exporter) unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.
The queue is the script's own (a fresh name), deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from celery import Celery
from opentelemetry.trace import SpanKind

from kaleem_telemetry import get_logger, setup_telemetry, telemetry_context
from kaleem_telemetry.integrations import celery as celery_telemetry
from kaleem_telemetry.tracing import get_tracer

BROKER = os.environ.get("CELERY_EXAMPLE_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
QUEUE = os.environ.get("CELERY_EXAMPLE_QUEUE", "invoices")
METRICS_PORT = int(os.environ.get("CELERY_EXAMPLE_METRICS_PORT", "9102"))

app = Celery("invoices", broker=BROKER)
app.conf.task_default_queue = QUEUE
app.conf.broker_connection_retry_on_startup = True

setup_telemetry(
    service_name="invoice-worker",
    traces_exporter="otlp" if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") else "console",
)
# Signals and the publish span; the worker's main process serves /metrics.
celery_telemetry.instrument(metrics_port=METRICS_PORT, metrics_addr="127.0.0.1")
log = get_logger("invoices")


# Named explicitly: the script runs as __main__, the worker imports it as celery_app.
@app.task(bind=True, max_retries=3, name="invoices.send_invoice")
def send_invoice(self: object, invoice: str) -> str:
    """Send one invoice: its log line carries the request's trace and ids."""
    log.info("invoice_sent", invoice=invoice)
    return invoice


def _runs(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("job_runs_total{") and f'queue="{QUEUE}"' in line
    )


def _delete_queue() -> None:
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        channel.queue_delete(QUEUE)
        channel.exchange_delete(QUEUE)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main() -> int:
    """Enqueue tasks from a request, run a prefork worker on them, check /metrics."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--url", default=BROKER)
    args = parser.parse_args()
    if "CELERY_EXAMPLE_QUEUE" not in os.environ:
        # Re-run with a queue, a port and a broker of our own: the worker imports them too.
        env = {
            **os.environ,
            "CELERY_EXAMPLE_QUEUE": f"invoices-{uuid.uuid4().hex[:12]}",
            "CELERY_EXAMPLE_BROKER": args.url,
            "CELERY_EXAMPLE_METRICS_PORT": str(_free_port()),
        }
        return subprocess.call([sys.executable, *sys.argv], env=env)
    with (
        telemetry_context(request_id=f"req-{uuid.uuid4().hex[:8]}", merchant_id="m-42"),
        get_tracer().start_as_current_span("POST /invoices", kind=SpanKind.SERVER),
    ):
        for n in range(args.tasks):
            send_invoice.apply_async((f"invoice-{n}",))
        log.info("invoices_enqueued", tasks=args.tasks)
    with tempfile.TemporaryDirectory() as multiproc:
        worker = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "celery_app", "--quiet", "worker",
                "--pool=prefork", "--concurrency=2", "--max-tasks-per-child=1",
                "-Q", QUEUE, "--hostname", f"{QUEUE}@%h",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
            cwd=Path(__file__).resolve().parent,
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": multiproc},
            start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while _runs(METRICS_PORT) < args.tasks and time.monotonic() < deadline:
                time.sleep(0.3)
            log.info("celery_metrics_scraped", job_runs=_runs(METRICS_PORT))
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=30)
            _delete_queue()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
