"""Celery over the real RabbitMQ: a producer process and a real ``celery worker`` process.

The producer publishes, inside a span, a baggage entry and a bound request context,
through `kaleem_telemetry.integrations.celery`; the worker (prefork children
recycled after every task, or a thread pool) runs the tasks, serves ``/metrics``
from its main process over ``PROMETHEUS_MULTIPROC_DIR``, exports spans to the
local OTLP receiver and errors to the local Sentry receiver behind a real DSN.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

celery = pytest.importorskip("celery")

from celery import Celery, signals  # noqa: E402

from kaleem_telemetry import instrument_job, telemetry_context, tracing  # noqa: E402
from kaleem_telemetry.exceptions import MissingDependencyError  # noqa: E402
from kaleem_telemetry.integrations import celery as integration  # noqa: E402
from kaleem_telemetry.testing import TelemetryCapture, capture_telemetry  # noqa: E402
from tests.receivers import OTLPReceiver, ReceivedSpan, SentryIngest  # noqa: E402
from tests.reliability._support import clean_env, free_port, sample  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

TASKS = r'''
"""The tasks of the test: the producer and the worker import this module."""
import os

from celery import Celery
from opentelemetry import baggage

from kaleem_telemetry import get_logger, setup_telemetry
from kaleem_telemetry.integrations import celery as celery_telemetry

app = Celery("kt_celery_test", broker=os.environ["KT_BROKER"])
app.conf.task_default_queue = os.environ["KT_QUEUE"]
app.conf.broker_connection_retry_on_startup = True
setup_telemetry()
celery_telemetry.instrument(
    metrics_port=int(os.environ["KT_METRICS_PORT"]), metrics_addr="127.0.0.1"
)
log = get_logger("tasks")


def ran(task, label):
    log.info("job_ran", label=label, attempt=task.request.retries,
             plan=baggage.get_baggage("tenant.plan"), pid=os.getpid())


@app.task(bind=True)
def ok(self, label):
    ran(self, label)


@app.task(bind=True)
def later(self, label):
    ran(self, label)


@app.task(bind=True)
def fail(self, label):
    ran(self, label)
    raise ValueError("boom")


@app.task(bind=True, max_retries=1)
def flaky(self, label):
    ran(self, label)
    if self.request.retries == 0:
        raise self.retry(countdown=RETRY_COUNTDOWN)


RETRY_COUNTDOWN = 10
'''

PRODUCER = r"""
from opentelemetry import baggage, context as otel_context

from kaleem_telemetry import shutdown_telemetry, telemetry_context, tracing
import kt_tasks as tasks

token = otel_context.attach(baggage.set_baggage("tenant.plan", "gold"))
with telemetry_context(request_id="req-1", merchant_id="m-1"), \
        tracing.get_tracer().start_as_current_span("checkout"):
    # flaky first, so that its first run waits behind nothing.
    tasks.flaky.apply_async(("flaky",))
    tasks.later.apply_async(("later",), countdown=COUNTDOWN)
    tasks.fail.apply_async(("fail",))
    for i in range(1, 5):
        tasks.ok.apply_async((f"ok-{i}",))
otel_context.detach(token)
shutdown_telemetry(5.0)
"""

#: The countdown of the ``later`` task and of the retry, in seconds: far above the
#: lag a busy worker adds, so a run counted in the 5 s bucket had its wait excluded.
COUNTDOWN = 10
#: Runs: ok x4, later, fail, flaky twice (a retry, then a success).
RUNS = 8
POOLS = {
    "prefork": ["--pool=prefork", "--concurrency=2", "--max-tasks-per-child=1"],
    "threads": ["--pool=threads", "--concurrency=2"],
    "solo": ["--pool=solo"],
}


@pytest.fixture(name="instrumented")
def _instrumented() -> Iterator[None]:
    """Instrument Celery for the test, and put it back afterwards."""
    integration.instrument()
    yield
    integration.uninstrument()


@pytest.fixture(name="cap")
def _cap() -> Iterator[TelemetryCapture]:
    with capture_telemetry() as captured:
        yield captured


@pytest.fixture(name="app")
def _app() -> Celery:
    """An app on kombu's in-memory transport: publishing runs for real, in this process."""
    app = Celery(f"kt-{uuid.uuid4().hex[:8]}", broker="memory://")
    app.conf.task_default_queue = "invoices"
    return app


@pytest.fixture(name="published")
def _published() -> Iterator[list[dict[str, Any]]]:
    """The message headers of every publish, as they leave (after our receiver)."""
    seen: list[dict[str, Any]] = []

    def record(headers: dict[str, Any] | None = None, **_: Any) -> None:
        seen.append(json.loads(json.dumps(headers, default=str)))

    signals.before_task_publish.connect(record, weak=False)
    yield seen
    signals.before_task_publish.disconnect(record)


class TestInstrument:
    def test_repeat_warns_and_uninstrument_restores_exactly(
        self, caplog: pytest.LogCaptureFixture, app: Celery, published: list[dict[str, Any]]
    ) -> None:
        """A second instrument() warns; uninstrument() restores send_task and disconnects."""
        original = Celery.__dict__["send_task"]
        integration.instrument()
        try:
            with caplog.at_level(logging.WARNING):
                integration.instrument()
        finally:
            integration.uninstrument()
        app.send_task("tasks.nothing")

        assert "already instrumented" in caplog.text
        assert Celery.__dict__["send_task"] is original
        assert "traceparent" not in published[-1]

    def test_missing_celery_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without celery, importing the integration says which extra to install."""
        monkeypatch.setitem(sys.modules, "celery", None)
        monkeypatch.delitem(sys.modules, "kaleem_telemetry.integrations.celery")

        with pytest.raises(MissingDependencyError, match=r"kaleem-telemetry\[celery\]"):
            importlib.import_module("kaleem_telemetry.integrations.celery")


class TestPublish:
    def test_headers_written_where_both_protocol_paths_read_them(
        self,
        instrumented: None,
        app: Celery,
        cap: TelemetryCapture,
        published: list[dict[str, Any]],
    ) -> None:
        """One canonical traceparent, the ids and the enqueue time, at the top and nested."""
        stale = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
        with (
            telemetry_context(request_id="req-9", merchant_id="m-9"),
            tracing.get_tracer().start_as_current_span("request") as request,
        ):
            app.send_task("tasks.send_invoice", headers={"Traceparent": stale, "custom": "kept"})
        publish = next(span for span in cap.spans if span.name == "publish invoices")
        headers = published[-1]
        expected = f"00-{publish.context.trace_id:032x}-{publish.context.span_id:016x}-"

        assert publish.kind.name == "PRODUCER"
        assert publish.parent is not None
        assert publish.parent.span_id == request.get_span_context().span_id
        assert publish.attributes["messaging.destination.name"] == "invoices"
        for place in (headers, headers["headers"]):
            assert place["traceparent"].startswith(expected)
            assert "Traceparent" not in place
            assert (place["x-request-id"], place["x-merchant-id"]) == ("req-9", "m-9")
            assert float(place["x-enqueued-at"]) > 0
        assert headers["custom"] == "kept"

    def test_a_beat_scheduled_task_is_published_with_its_trace(
        self,
        instrumented: None,
        app: Celery,
        cap: TelemetryCapture,
        published: list[dict[str, Any]],
    ) -> None:
        """Beat's publish runs in a PRODUCER span and sends its trace context with the task."""
        from celery.beat import ScheduleEntry, Scheduler

        entry = ScheduleEntry(name="nightly", task="tasks.nightly", schedule=60.0, app=app)
        scheduler = Scheduler(app=app, lazy=True)
        scheduler.apply_entry(entry)
        publish = next(span for span in cap.spans if span.name == "publish invoices")
        headers = published[-1]

        assert publish.attributes["celery.task.name"] == "tasks.nightly"
        assert headers["traceparent"].startswith(f"00-{publish.context.trace_id:032x}-")
        assert headers["headers"]["traceparent"] == headers["traceparent"]


class TestEagerRuns:
    def test_runs_count_by_status_and_a_failure_is_reported_once(
        self, instrumented: None, app: Celery, cap: TelemetryCapture
    ) -> None:
        """Task runs are jobs: ok and error counted, one Sentry event with the job's tags."""

        @app.task(name="tasks.ok")
        def ok() -> str:
            return "done"

        @app.task(name="tasks.broken")
        def broken() -> None:
            raise ValueError("broken")

        ok.apply()
        result = broken.apply()

        assert isinstance(result.result, ValueError)
        assert cap.metric_value("job_runs_total", job="tasks.ok", status="ok") == 1
        assert cap.metric_value("job_runs_total", job="tasks.broken", status="error") == 1
        assert cap.metric_value("jobs_in_progress", job="tasks.broken") == 0
        assert len(cap.sentry_events) == 1
        assert cap.sentry_events[0]["tags"]["job"] == "tasks.broken"
        assert [span.kind.name for span in cap.spans if span.name.startswith("process")] == [
            "CONSUMER",
            "CONSUMER",
        ]

    def test_a_task_decorated_by_hand_is_one_job(
        self, instrumented: None, app: Celery, cap: TelemetryCapture
    ) -> None:
        """A task under instrument_job is left to its decorator: counted once, not twice."""

        @app.task(name="tasks.by_hand")
        @instrument_job(queue="invoices", name="by-hand")
        def by_hand() -> None:
            return None

        by_hand.apply()

        assert cap.metric_value("job_runs_total", queue="invoices", job="by-hand") == 1
        assert cap.metric_value("job_runs_total", job="tasks.by_hand") == 0
        assert len([span for span in cap.spans if span.name == "process invoices"]) == 1


class TestMultiprocessCleanup:
    def test_a_new_child_drops_the_live_gauges_of_dead_children_only(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """worker_process_init removes a killed child's live-gauge files, never a live one's."""
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait(timeout=30)
        dead, alive = (
            tmp_path / f"gauge_livesum_{gone.pid}.db",
            tmp_path / f"gauge_livesum_{os.getpid()}.db",
        )
        counter = tmp_path / f"counter_{gone.pid}.db"
        for path in (dead, alive, counter):
            path.write_bytes(b"")
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

        signals.worker_process_init.send(sender=None)  # with the integration off: nothing
        kept_before = dead.exists()
        integration.instrument()
        try:
            signals.worker_process_init.send(sender=None)
        finally:
            integration.uninstrument()

        assert kept_before
        assert not dead.exists()
        assert alive.exists()
        assert counter.exists()  # a counter of a dead child still counts in the sum


@pytest.fixture(name="queue")
def _queue(rabbitmq_url: str) -> Iterator[str]:
    """A fresh queue name; the queue Celery declares for it is deleted afterwards."""
    pika = pytest.importorskip("pika")
    name = f"kt-celery-{uuid.uuid4().hex}"
    yield name
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        channel = connection.channel()
        channel.queue_delete(name)
        channel = connection.channel()
        channel.exchange_delete(name)
    finally:
        connection.close()


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def _wait_for_runs(port: int, queue: str, worker: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 120
    text = ""
    while time.monotonic() < deadline:
        assert worker.poll() is None, "the worker exited early"
        try:
            text = _scrape(port)
        except OSError:
            text = ""
        if sample(text, "job_runs_total", queue=queue) >= RUNS:
            return text
        time.sleep(0.3)
    pytest.fail(f"the worker did not run {RUNS} tasks on {queue} in time:\n{text}")


def _stop(worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM the worker's process group (its prefork children too), SIGKILL after a bound."""
    if worker.poll() is not None:
        return
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)


def _json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in path.read_text().splitlines() if raw.startswith("{")]


def _job(metrics: str, name: str, **labels: str) -> float:
    return sample(metrics, name, job=f"kt_tasks.{labels.pop('task')}", **labels)


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_publish_and_run_in_one_trace(
    pool: str, rabbitmq_url: str, queue: str, tmp_path: Path
) -> None:
    """One trace from the producer to each task run, exact metrics, no span lost."""
    (tmp_path / "kt_tasks.py").write_text(TASKS)
    (tmp_path / "producer.py").write_text(PRODUCER.replace("COUNTDOWN", str(COUNTDOWN)))
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    port = free_port()
    with OTLPReceiver() as receiver, SentryIngest() as sentry:
        base = clean_env(
            **receiver.env(),
            SENTRY_DSN=sentry.dsn,
            KALEEM_TELEMETRY_LOG_FORMAT="json",
            # Far longer than the test: a span arrives only because a flush sent it.
            OTEL_BSP_SCHEDULE_DELAY="60000",
            KT_BROKER=rabbitmq_url,
            KT_QUEUE=queue,
            KT_METRICS_PORT=str(port),
        )
        base["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(tmp_path)])
        worker_env = {
            **base,
            "OTEL_SERVICE_NAME": "worker",
            "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        }
        stdout, stderr = tmp_path / "worker.out", tmp_path / "worker.err"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            worker = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "kt_tasks", "worker",
                    *POOLS[pool], "-Q", queue, "--hostname", f"{queue}@%h",
                    "--without-gossip", "--without-mingle", "--without-heartbeat",
                ],
                env=worker_env,
                cwd=tmp_path,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )  # fmt: skip
            try:
                subprocess.run(
                    [sys.executable, "producer.py"],
                    env={**base, "OTEL_SERVICE_NAME": "producer"},
                    cwd=tmp_path,
                    check=True,
                    timeout=120,
                )
                metrics = _wait_for_runs(port, queue, worker)
                # Prefork children flushed as they exited; the rest goes at shutdown.
                _stop(worker)
                assert worker.returncode == 0
                events = sentry.wait_for_events(1, timeout=30)
                spans = receiver.wait_for(1 + 2 * RUNS, timeout=30)
                time.sleep(0.5)
                events, spans = sentry.events, receiver.spans
            finally:
                _stop(worker)
    lines = _json_lines(stdout)
    ran = [line for line in lines if line.get("event") == "job_ran"]
    consumers = [span for span in spans if span.kind == 5]  # SPAN_KIND_CONSUMER
    by_id: dict[str, ReceivedSpan] = {span.span_id: span for span in spans}
    checkout = next(span for span in spans if span.name == "checkout")
    runs = sample(metrics, "job_runs_total", queue=queue)
    print(f"{pool}: spans received / tasks run = {len(consumers)}/{int(runs)}")

    # Every task run exported its CONSUMER span: none lost to a recycled child.
    assert runs == RUNS
    assert len(consumers) == RUNS
    assert len(ran) == RUNS
    # One trace: checkout -> PRODUCER publish -> CONSUMER process, across the processes.
    for line in ran:
        consumer = by_id[line["span_id"]]
        publish = by_id[consumer.parent_span_id]
        assert consumer.name == f"process {queue}"
        assert consumer.resource["service.name"] == "worker"
        assert consumer.attributes["messaging.system"] == "celery"
        assert publish.kind == 4  # SPAN_KIND_PRODUCER
        assert publish.name == f"publish {queue}"
        assert consumer.trace_id == checkout.trace_id
        # The worker's log lines carry the producer's context, and the baggage survived.
        assert line["request_id"] == "req-1"
        assert line["merchant_id"] == "m-1"
        assert line["trace_id"] == checkout.trace_id
        assert line["plan"] == "gold"
    first_publish = {by_id[by_id[line["span_id"]].parent_span_id].parent_span_id for line in ran}
    retried = [line for line in ran if line["label"] == "flaky" and line["attempt"] == 1]
    # The retry was published from inside the first run: its publish span is the run's child.
    assert len(retried) == 1
    assert checkout.span_id in first_publish
    assert by_id[by_id[retried[0]["span_id"]].parent_span_id].parent_span_id != checkout.span_id
    # The JSON lines went to stdout as they are: none re-wrapped by Celery onto stderr.
    assert "job_ran" not in stderr.read_text()
    # Exact counts per status, nothing left in progress.
    assert _job(metrics, "job_runs_total", task="ok", status="ok") == 4
    assert _job(metrics, "job_runs_total", task="later", status="ok") == 1
    assert _job(metrics, "job_runs_total", task="fail", status="error") == 1
    assert _job(metrics, "job_runs_total", task="flaky", status="retry") == 1
    assert _job(metrics, "job_runs_total", task="flaky", status="ok") == 1
    assert sample(metrics, "jobs_in_progress", queue=queue) == 0
    # Queue lag measured for every run, the countdown and the retry back-off not in it.
    assert sample(metrics, "job_queue_lag_seconds_count", queue=queue) == RUNS
    assert sample(metrics, "job_queue_lag_seconds_sum", queue=queue) > 0
    assert _job(metrics, "job_queue_lag_seconds_bucket", task="later", le="5.0") == 1
    assert _job(metrics, "job_queue_lag_seconds_bucket", task="flaky", le="5.0") == 2
    # One Sentry event for the one failed task, with the job's tags.
    assert len(events) == 1
    tags = events[0]["tags"]
    assert (tags["queue"], tags["job"]) == (queue, "kt_tasks.fail")
    assert (tags["merchant_id"], tags["request_id"]) == ("m-1", "req-1")
    assert tags["trace_id"] == checkout.trace_id
    if pool == "prefork":
        # Children recycled after each task: every run in a process of its own.
        assert len({line["pid"] for line in ran}) == RUNS
