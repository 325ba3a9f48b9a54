"""instrument_job in one process: header shapes, context, metrics, Sentry, hostile input.

The producer and the consumer in separate processes over RabbitMQ are in
tests/integrations/test_rabbitmq.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context

from kaleem_telemetry import (
    RetryJob,
    bind_context,
    get_context,
    get_logger,
    inject_context,
    instrument_job,
    telemetry_context,
    tracing,
)
from kaleem_telemetry.testing import TelemetryCapture, capture_telemetry

QUEUE = "jobs-test"


@pytest.fixture(name="cap")
def _cap() -> Iterator[TelemetryCapture]:
    """Capture spans, logs, Sentry events and the process metrics."""
    with capture_telemetry() as captured:
        yield captured


def _published(**bound: str) -> tuple[dict[str, Any], trace.SpanContext]:
    """Return headers injected inside a producer span (with baggage), and that span's context."""
    ctx = baggage.set_baggage("tenant.plan", "gold")
    token = otel_context.attach(ctx)
    try:
        with (
            telemetry_context(**bound),
            tracing.get_tracer().start_as_current_span("publish") as span,
        ):
            return inject_context({}), span.get_span_context()
    finally:
        otel_context.detach(token)


def _job_span(cap: TelemetryCapture) -> Any:
    spans = [s for s in cap.spans if s.name == f"process {QUEUE}"]
    assert len(spans) == 1
    return spans[0]


def _runs(cap: TelemetryCapture, job: str, status: str) -> float:
    return cap.metric_value("job_runs_total", queue=QUEUE, job=job, status=status)


class _Properties:
    """The shape of pika's BasicProperties: a ``headers`` attribute."""

    def __init__(self, headers: Any) -> None:
        self.headers = headers


def _pika_call(handler: Any, headers: Any) -> Any:
    return handler(object(), object(), _Properties(headers), b"body")


def _kwarg_call(handler: Any, headers: Any) -> Any:
    return handler(b"body", headers=headers)


def _dict_call(handler: Any, headers: Any) -> Any:
    return handler({"headers": headers, "body": "x"})


def _flat_dict_call(handler: Any, headers: Any) -> Any:
    return handler(dict(headers))


SHAPES = [_pika_call, _kwarg_call, _dict_call, _flat_dict_call]


class TestInstrumentJob:
    @pytest.mark.parametrize("call", SHAPES)
    def test_continues_the_trace_and_binds_the_context(self, cap: TelemetryCapture, call: Any):
        """The job span is a CONSUMER child of the publishing span, with its ids and baggage."""
        headers, sent = _published(request_id="req-1", merchant_id="m-1")
        seen: dict[str, Any] = {}

        @instrument_job(queue=QUEUE, name="handle")
        def handle(*args: Any, **kwargs: Any) -> str:
            seen.update(get_context())
            seen["baggage"] = baggage.get_baggage("tenant.plan")
            get_logger("worker").info("job_ran")
            return "done"

        result = call(handle, headers)
        span = _job_span(cap)
        line = next(line for line in cap.logs if line["event"] == "job_ran")

        assert result == "done"
        assert span.kind is trace.SpanKind.CONSUMER
        assert span.context.trace_id == sent.trace_id
        assert span.parent is not None
        assert span.parent.span_id == sent.span_id
        assert span.attributes["messaging.destination.name"] == QUEUE
        assert span.attributes["merchant.id"] == "m-1"
        assert seen["request_id"] == "req-1"
        assert seen["merchant_id"] == "m-1"
        assert seen["baggage"] == "gold"
        assert line["request_id"] == "req-1"
        assert line["trace_id"] == format(sent.trace_id, "032x")
        assert get_context() == {}
        assert _runs(cap, "handle", "ok") == 1

    async def test_async_handler(self, cap: TelemetryCapture) -> None:
        """An async handler is observed when awaited, with the context bound inside."""
        headers, sent = _published(request_id="req-a")

        @instrument_job(queue=QUEUE)
        async def handle(message: _Properties) -> str | None:
            await asyncio.sleep(0)
            return get_context().get("request_id")

        result = await handle(_Properties(headers))

        assert result == "req-a"
        assert _job_span(cap).context.trace_id == sent.trace_id
        assert _runs(cap, "TestInstrumentJob.test_async_handler.<locals>.handle", "ok") == 1

    def test_method_handler(self, cap: TelemetryCapture) -> None:
        """A method finds the headers in its arguments, not in ``self``."""
        headers, _ = _published(request_id="req-m")

        class Consumer:
            @instrument_job(queue=QUEUE, name="consumer")
            def on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> Any:
                return get_context().get("request_id")

        assert Consumer().on_message(None, None, _Properties(headers), b"") == "req-m"
        assert _runs(cap, "consumer", "ok") == 1

    def test_generator_handler_and_direct_form(self, cap: TelemetryCapture) -> None:
        """A generator handler is one job over its iteration; instrument_job(f, queue=) works."""
        headers, sent = _published(request_id="req-g")

        def handle(headers: dict[str, str]) -> Iterator[str | None]:
            yield get_context().get("request_id")
            yield get_context().get("request_id")

        wrapped = instrument_job(handle, queue=QUEUE, name="gen")
        items = list(wrapped(headers=headers))

        assert items == ["req-g", "req-g"]
        assert _job_span(cap).context.trace_id == sent.trace_id
        assert _runs(cap, "gen", "ok") == 1
        assert get_context() == {}

    def test_failure_is_reported_once_and_propagates(self, cap: TelemetryCapture) -> None:
        """A failing job counts error, sends one Sentry event with job tags, re-raises the same."""
        headers, sent = _published(request_id="req-e", merchant_id="m-e")
        error = ValueError("boom")

        @instrument_job(queue=QUEUE, name="failing")
        def handle(properties: _Properties) -> None:
            raise error

        with pytest.raises(ValueError, match="boom") as info:
            handle(_Properties(headers))
        span = _job_span(cap)

        assert info.value is error
        assert span.status.status_code is trace.StatusCode.ERROR
        assert _runs(cap, "failing", "error") == 1
        assert _runs(cap, "failing", "ok") == 0
        assert len(cap.sentry_events) == 1
        tags = cap.sentry_events[0]["tags"]
        assert tags["queue"] == QUEUE
        assert tags["job"] == "failing"
        assert tags["merchant_id"] == "m-e"
        assert tags["request_id"] == "req-e"
        assert tags["trace_id"] == format(sent.trace_id, "032x")
        assert cap.metric_value("jobs_in_progress", queue=QUEUE, job="failing") == 0
        assert get_context() == {}

    @pytest.mark.parametrize("make", [lambda: RetryJob("later"), "celery"])
    def test_retry_counts_retry_without_sentry(self, cap: TelemetryCapture, make: Any) -> None:
        """RetryJob and Celery's Retry count status=retry, send no event, and propagate."""
        if make == "celery":
            exceptions = pytest.importorskip("celery.exceptions")
            exc = exceptions.Retry("later", when=5)
        else:
            exc = make()

        @instrument_job(queue=QUEUE, name="retrying")
        def handle(headers: dict[str, str]) -> None:
            raise exc

        with pytest.raises(type(exc)) as info:
            handle({"x-request-id": "r"})

        assert info.value is exc
        assert _runs(cap, "retrying", "retry") == 1
        assert _runs(cap, "retrying", "error") == 0
        assert cap.sentry_events == []

    def test_counts_are_exact_and_in_progress_returns_to_zero(self, cap: TelemetryCapture):
        """Three ok, two error and one retry runs are counted exactly; the gauge ends at 0."""
        outcomes = ["ok", "error", "ok", "retry", "error", "ok"]
        during: list[float] = []

        @instrument_job(queue=QUEUE, name="mixed")
        def handle(outcome: str, headers: dict[str, str]) -> None:
            during.append(cap.metric_value("jobs_in_progress", queue=QUEUE, job="mixed"))
            if outcome == "error":
                raise KeyError(outcome)
            if outcome == "retry":
                raise RetryJob(outcome)

        for outcome in outcomes:
            with contextlib.suppress(KeyError, RetryJob):
                handle(outcome, headers=inject_context({}))

        assert (_runs(cap, "mixed", "ok"), _runs(cap, "mixed", "error")) == (3, 2)
        assert _runs(cap, "mixed", "retry") == 1
        assert [
            cap.metric_value("job_duration_seconds_count", queue=QUEUE, job="mixed", status=s)
            for s in ("ok", "error", "retry")
        ] == [3, 2, 1]
        assert during == [1.0] * len(outcomes)
        assert cap.metric_value("jobs_in_progress", queue=QUEUE, job="mixed") == 0
        assert len(cap.sentry_events) == 2

    def test_cancelled_job_leaves_nothing_in_progress(self, cap: TelemetryCapture) -> None:
        """A cancelled async job counts error, sends no event and takes the gauge back."""

        @instrument_job(queue=QUEUE, name="slow")
        async def handle(headers: dict[str, str]) -> None:
            await asyncio.sleep(30)

        async def run() -> None:
            task = asyncio.ensure_future(handle(headers={}))
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(run())

        assert _runs(cap, "slow", "error") == 1
        assert cap.metric_value("jobs_in_progress", queue=QUEUE, job="slow") == 0
        assert cap.sentry_events == []


class TestQueueLag:
    def _lag(self, cap: TelemetryCapture, job: str) -> tuple[float, float]:
        labels = {"queue": QUEUE, "job": job}
        return (
            cap.metric_value("job_queue_lag_seconds_count", **labels),
            cap.metric_value("job_queue_lag_seconds_sum", **labels),
        )

    def test_lag_is_measured_from_x_enqueued_at(self, cap: TelemetryCapture) -> None:
        """A message enqueued 30 s ago shows at least 30 s of lag."""

        @instrument_job(queue=QUEUE, name="lag")
        def handle(headers: dict[str, str]) -> None:
            pass

        handle(headers={"x-enqueued-at": repr(time.time() - 30)})
        count, total = self._lag(cap, "lag")

        assert count == 1
        # Bounded above by a hang, not by the machine's speed.
        assert 30 <= total < 300

    def test_declared_delay_is_not_lag(self, cap: TelemetryCapture) -> None:
        """x-delay (ms) is taken off: a message due 1 h after enqueueing, run now, has no lag."""

        @instrument_job(queue=QUEUE, name="delayed")
        def handle(headers: dict[str, str]) -> None:
            pass

        enqueued = time.time() - 40
        handle(headers={"x-enqueued-at": repr(enqueued), "x-delay": "-30000"})
        count, total = self._lag(cap, "delayed")

        assert count == 1
        assert 10 <= total < 40

    def test_celery_task_request_and_eta(self, cap: TelemetryCapture) -> None:
        """A bound Celery task's request gives the headers, and its ETA is not lag."""
        celery = pytest.importorskip("celery")
        from celery.app.task import Context

        app = celery.Celery("jobs-test", set_as_current=False)

        @app.task(bind=True)
        @instrument_job(queue=QUEUE, name="celery")
        def task(self: Any) -> Any:
            return get_context().get("request_id")

        # Run by a worker's eager apply: the headers reach the request as Celery delivers them.
        assert task.apply(headers={"x-request-id": "r-c"}).get() == "r-c"

        enqueued = time.time() - 100
        eta = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(enqueued + 90))
        request = Context(
            called_directly=False,
            delivery_info={},
            eta=eta,
            headers={"headers": {"x-enqueued-at": repr(enqueued)}, "x-request-id": "r-d"},
        )

        class Task:
            def __init__(self) -> None:
                self.request = request

        @instrument_job(queue=QUEUE, name="celery-eta")
        def delayed(self: Any) -> Any:
            return get_context().get("request_id")

        assert delayed(Task()) == "r-d"
        count, total = self._lag(cap, "celery-eta")

        assert count == 1
        assert 5 <= total < 60
        assert {span.attributes["messaging.system"] for span in cap.spans} == {"celery"}

    @pytest.mark.parametrize("value", [repr(time.time() + 3600), "soon", "nan", "-1", b"\xff"])
    def test_future_or_bad_enqueue_time_never_goes_negative(
        self, cap: TelemetryCapture, value: Any
    ) -> None:
        """An enqueue time in the future is 0 lag; one that is not a number is no lag."""

        @instrument_job(queue=QUEUE, name="skew")
        def handle(headers: dict[str, Any]) -> None:
            pass

        handle(headers={"x-enqueued-at": value})
        count, total = self._lag(cap, "skew")

        assert total == 0
        assert count == (1 if value.__class__ is str and value[0].isdigit() else 0)


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text")


HOSTILE = [
    {"traceparent": "garbage", "x-request-id": "has space", "x-merchant-id": "<script>"},
    {"traceparent": 12345, "x-request-id": ["a", "b"], "x-merchant-id": {"nested": 1}},
    {b"traceparent": b"\xff\xfe", b"x-request-id": b"\x00"},
    {"traceparent": "00-" + "f" * 10_000, "x-request-id": "r" * 100_000},
    {"x-request-id": _Unprintable(), "traceparent": _Unprintable(), 7: _Unprintable()},
    {"x-enqueued-at": "1e999", "x-delay": "forever"},
    {"x-enqueued-at": _Unprintable()},
]


class TestHostileHeaders:
    @pytest.mark.parametrize("headers", HOSTILE)
    @pytest.mark.parametrize("call", [_pika_call, _kwarg_call])
    def test_are_ignored_never_raised_on(
        self, cap: TelemetryCapture, headers: Any, call: Any
    ) -> None:
        """Malformed or hostile headers start a new trace, bind nothing, and the job runs."""

        @instrument_job(queue=QUEUE, name="hostile")
        def handle(*args: Any, **kwargs: Any) -> dict[str, Any]:
            return get_context()

        bound = call(handle, headers)
        span = _job_span(cap)

        assert bound == {}
        assert span.parent is None
        assert _runs(cap, "hostile", "ok") == 1

    @pytest.mark.parametrize("headers", ["not a mapping", 42, [("a",)], [1, 2]])
    def test_headers_that_are_not_a_mapping(self, cap: TelemetryCapture, headers: Any) -> None:
        """Properties whose headers are not a mapping carry no headers; the job still runs."""

        @instrument_job(queue=QUEUE, name="odd")
        def handle(*args: Any) -> str:
            return "ran"

        assert _pika_call(handle, headers) == "ran"
        assert _runs(cap, "odd", "ok") == 1


class TestContextIsolation:
    def test_no_context_leaks_into_the_next_message(self, cap: TelemetryCapture) -> None:
        """A message without ids after one with ids sees none, even if the job bound more."""
        first, _ = _published(request_id="req-1", merchant_id="m-1")
        seen: list[dict[str, Any]] = []

        @instrument_job(queue=QUEUE, name="seq")
        def handle(properties: _Properties) -> None:
            seen.append(get_context())
            bind_context(user_id="u-1")

        handle(_Properties(first))
        handle(_Properties(None))

        assert seen == [{"request_id": "req-1", "merchant_id": "m-1"}, {}]
        assert get_context() == {}
        second = [s for s in cap.spans if s.name == f"process {QUEUE}"][1]
        assert second.parent is None

    def test_a_handler_without_headers_keeps_the_outer_context(self, cap: TelemetryCapture):
        """Called with no message at all, the job gets its span and metrics in the current trace."""

        @instrument_job(queue=QUEUE, name="plain")
        def handle(n: int) -> Any:
            return get_context().get("request_id")

        with (
            telemetry_context(request_id="outer"),
            tracing.get_tracer().start_as_current_span("caller") as caller,
        ):
            assert handle(1) == "outer"
        span = _job_span(cap)

        assert span.parent is not None
        assert span.parent.span_id == caller.get_span_context().span_id
        assert _runs(cap, "plain", "ok") == 1

    def test_a_payload_with_headers_of_its_own_is_no_message(self, cap: TelemetryCapture):
        """A dict whose "headers" are not ours (a webhook to send) leaves the context alone."""

        @instrument_job(queue=QUEUE, name="payload")
        def handle(job: dict[str, Any]) -> Any:
            return get_context().get("request_id")

        with telemetry_context(request_id="outer"):
            result = handle({"url": "https://example.test", "headers": {"Accept": "x"}})

        assert result == "outer"
        assert _runs(cap, "payload", "ok") == 1

    def test_a_partial_is_labelled_by_its_function(self, cap: TelemetryCapture) -> None:
        """A functools.partial handler gets its function's name as the job label."""

        def handle(prefix: str, headers: dict[str, str]) -> str:
            return prefix

        job = instrument_job(functools.partial(handle, "p"), queue=QUEUE)

        assert job(headers={}) == "p"
        label = "TestContextIsolation.test_a_partial_is_labelled_by_its_function.<locals>.handle"
        assert _runs(cap, label, "ok") == 1

    def test_handler_decorated_twice_by_an_integration_is_observed_once(
        self, cap: TelemetryCapture
    ) -> None:
        """job_wrapper returns a handler it already wrapped unchanged."""
        from kaleem_telemetry.decorators import job_wrapper

        @instrument_job(queue=QUEUE, name="once")
        def handle(headers: dict[str, str]) -> None:
            pass

        assert job_wrapper(handle, queue="other") is handle
