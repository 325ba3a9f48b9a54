"""`instrument` and `instrument_job`: a span and metrics for any function, and for job handlers.

Put ``@instrument`` on a function you want to see in traces and dashboards::

    from kaleem_telemetry import instrument

    @instrument
    def price_cart(cart): ...

    @instrument(name="pricing.refresh", attributes={"pricing.source": "erp"})
    async def refresh_prices(): ...

Every call then:

* runs inside a span named after the function (or ``name=``), a child of the
  span that is current when the call starts, with the bound request context
  (``merchant.id``, ``request.id``, ``enduser.id``) and ``attributes=`` on it;
* counts ``function_calls_total{function, module, result}`` (``result`` is ``ok``
  or ``error``) and observes ``function_duration_seconds{function, module}``;
* when it raises, records the exception on the span, marks the span as an
  error, counts ``result="error"``, and re-raises the very same exception.

It works on plain, ``async``, generator and async-generator functions, on
methods, classmethods and staticmethods, bare (``@instrument``) and called
(``@instrument(...)``). For generators the span covers the whole iteration, and
the span is current only while the generator body runs, never in the consumer
between two items.

The decorated function keeps its name, docstring, signature and ``__wrapped__``,
and `inspect` answers the same (``iscoroutinefunction``, ``isgeneratorfunction``,
``signature``) as for the original, because the wrapper is a `wrapt` proxy.

Cost: the tracer and the metric children are looked up once per decorated
function and cached, so a call costs a span start/end and two metric updates;
``benchmarks/bench_instrument.py`` measures it next to a bare call and to
OpenTelemetry's own ``tracer.start_as_current_span`` decorator.

``attributes=`` pass through the redaction policy, so a secret put there by
mistake is never exported. The ``function`` label is the function's qualified
name (or ``name=``), which is bounded: never put a per-call value in ``name=``.

Added in 0.1.0.
"""

from __future__ import annotations

import functools
import inspect
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, TypeVar, overload

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Status, StatusCode

from kaleem_telemetry import propagation, tracing
from kaleem_telemetry._guard import internal_errors
from kaleem_telemetry._wrapping import wrap
from kaleem_telemetry.context import pop_context, push_context, span_attributes
from kaleem_telemetry.redaction import redact_attributes
from kaleem_telemetry.sentry import (
    capture_exception,
    enter_request_scope,
    leave_request_scope,
    never_report,
)

__all__ = ["RetryJob", "instrument", "instrument_job"]

F = TypeVar("F", bound=Callable[..., Any])


@overload
def instrument(func: F, /) -> F: ...


@overload
def instrument(
    *, name: str | None = None, attributes: Mapping[str, Any] | None = None
) -> Callable[[F], F]: ...


def instrument(
    func: F | None = None,
    /,
    *,
    name: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> F | Callable[[F], F]:
    """Trace and measure every call of the decorated function.

    Args:
        func: The function, when used bare (``@instrument``).
        name: The span name and ``function`` label; defaults to the function's
            ``__qualname__``.
        attributes: Static span attributes (redacted before export).

    Returns:
        The wrapped function, or a decorator when called with arguments.

    Added in 0.1.0.
    """
    if func is not None:
        return _decorate(func, name, attributes)

    def decorator(inner: F) -> F:
        return _decorate(inner, name, attributes)

    return decorator


class _Instrumented:
    """Per decorated function: names, attributes, the cached metric children; the probe.

    As the `ScopedProbe` of `wrap`, a call's state is its span and start time, and
    the span is current while the function body runs.
    """

    __slots__ = (
        "attributes",
        "calls_error",
        "calls_ok",
        "duration",
        "function",
        "metrics",
        "module",
        "span_name",
    )

    where = "instrument"

    def __init__(
        self, function: str, module: str, attributes: Mapping[str, Any] | None, span_name: str
    ) -> None:
        self.function = function
        self.module = module
        self.span_name = span_name
        base: dict[str, Any] = {"code.function.name": f"{module}.{function}"}
        if attributes:
            base.update(redact_attributes(attributes))
        self.attributes = base
        self.metrics: Any = None
        self.calls_ok: Any = None
        self.calls_error: Any = None
        self.duration: Any = None

    def begin(self) -> tuple[trace.Span, float]:
        return (
            tracing.start_own_span(self.span_name, attributes=self.attributes),
            time.perf_counter(),
        )

    def context(self, state: tuple[trace.Span, float]) -> Context:
        return trace.set_span_in_context(state[0])

    def end(self, state: tuple[trace.Span, float], exc: BaseException | None) -> None:
        span, start = state
        elapsed = time.perf_counter() - start
        # Only an error of the function's own counts: a closed generator, a
        # cancelled task or Ctrl-C end the call as an ordinary one.
        if isinstance(exc, Exception):
            ok = False
            _fail(span, exc)
        else:
            ok = True
        span.end()
        self.record(ok, elapsed)

    def record(self, ok: bool, elapsed: float) -> None:
        metrics = _get_metrics()
        if metrics is None:
            return
        if metrics is not self.metrics:
            # First call, or the process metrics were replaced (tests): build the
            # children once and keep them for every following call.
            with internal_errors("instrument metrics"):
                family = metrics.function_calls_total
                self.calls_ok = family.labels(self.function, self.module, "ok")
                self.calls_error = family.labels(self.function, self.module, "error")
                self.duration = metrics.function_duration_seconds.labels(self.function, self.module)
                self.metrics = metrics
            if metrics is not self.metrics:
                return
        (self.calls_ok if ok else self.calls_error).inc()
        self.duration.observe(elapsed)


def _get_metrics() -> Any:
    try:
        from kaleem_telemetry import metrics
    except ImportError:
        # A package without the metrics module (partial install) still traces.
        return None
    return metrics.get_metrics()


def _decorate(func: F, name: str | None, attributes: Mapping[str, Any] | None) -> F:
    target = inspect.unwrap(getattr(func, "__func__", func))
    qualname = str(getattr(target, "__qualname__", None) or getattr(target, "__name__", target))
    module = str(getattr(target, "__module__", None) or "unknown")
    return wrap(func, _Instrumented(name or qualname, module, attributes, name or qualname))


def _fail(span: trace.Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
    tracing.remember_span(exc, span)


class RetryJob(Exception):
    """Raise from a job handler to say its message will be retried.

    `instrument_job` counts the run as ``status="retry"``, does not report it to
    Sentry, and re-raises it unchanged, so the code around the handler can
    requeue the message (``basic_nack(requeue=True)``, ``message.nack()``)::

        @instrument_job(queue="webhooks")
        def deliver(channel, method, properties, body):
            try:
                post_webhook(body)
            except TimeoutError as exc:
                raise RetryJob("endpoint timed out") from exc

    Celery's own ``Retry`` (``self.retry()``) counts as a retry too.

    Added in 0.1.0.
    """


@overload
def instrument_job(func: F, /, *, queue: str, name: str | None = None) -> F: ...


@overload
def instrument_job(*, queue: str, name: str | None = None) -> Callable[[F], F]: ...


def instrument_job(
    func: F | None = None, /, *, queue: str, name: str | None = None
) -> F | Callable[[F], F]:
    """Trace, measure and report every run of a background job handler.

    Put it on the function a worker calls for each message::

        @instrument_job(queue="ai-replies")
        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None: ...

    Each run then:

    * finds the message headers in the call's arguments, in the shapes workers
      have: pika's ``(channel, method, properties, body)`` (``properties.headers``),
      aio-pika's incoming message (``message.headers``), a bound Celery task's
      request (``self.request``, or the current task's), a ``headers=`` keyword
      argument, or a dict argument that holds them (under ``"headers"``, or as
      its own keys; a dict, or a Celery request, counts only when it has one of
      ``traceparent``, ``x-request-id``, ``x-merchant-id``, ``x-enqueued-at``);
      a handler called with none of these still gets its span and metrics, in
      the current trace and context;
    * runs inside a CONSUMER span named ``process {queue}``, a child of the span
      that published the message (``traceparent``), with the message's baggage
      current, so a message published from the job carries it on;
    * binds ``request_id`` and ``merchant_id`` from ``x-request-id`` and
      ``x-merchant-id`` for the run (a message without them unbinds them), and
      restores the context before the next message, so nothing leaks from one
      message into another;
    * counts ``job_runs_total{queue, job, status}``, observes
      ``job_duration_seconds{queue, job, status}``, keeps
      ``jobs_in_progress{queue, job}`` (back down on every way out) and observes
      ``job_queue_lag_seconds{queue, job}``: the time from ``x-enqueued-at`` to
      the start, less a delay the message declares (``x-delay``, a Celery ETA,
      countdown or retry back-off), and never below 0 (clock skew);
    * when the handler raises, marks the span as an error, reports the
      exception to Sentry once with the tags ``queue``, ``job``, ``merchant_id``
      and ``request_id``, counts ``status="error"`` and re-raises the very same
      exception. `RetryJob` and Celery's ``Retry`` count ``status="retry"``
      instead, with no Sentry event (also none from a library that logs it);
      a cancelled task or ``KeyboardInterrupt`` counts ``error`` without an event.

    Headers are input from another process: a malformed or hostile value
    (garbage ``traceparent``, a non-text value, a huge one, an enqueue time that
    is not a number or lies in the future) is ignored, never raised on.

    It works on plain and ``async`` handlers (and generator ones), functions and
    methods, and keeps the handler's signature, like `instrument`.

    Args:
        func: The handler, when passed directly (``instrument_job(handle, queue=...)``).
        queue: The ``queue`` label and the span's destination: the queue's name.
        name: The ``job`` label; defaults to the handler's ``__qualname__``.
            Bounded: never a per-message value.

    Returns:
        The wrapped handler, or a decorator when ``func`` is not given.

    Added in 0.1.0.
    """
    if func is not None:
        return job_wrapper(func, queue=queue, name=name)

    def decorator(inner: F) -> F:
        return job_wrapper(inner, queue=queue, name=name)

    return decorator


def job_wrapper(func: F, *, queue: str, name: str | None = None, system: str | None = None) -> F:
    """Return ``func`` wrapped by `instrument_job`; ``system`` sets ``messaging.system``.

    The integrations call it for the callbacks they wrap; a function it already
    wrapped is returned as it is, so a handler decorated by hand and consumed
    through an integration is observed once.
    """
    if getattr(func, "_self_kaleem_job", False):
        return func
    target = inspect.unwrap(getattr(func, "__func__", func))
    while isinstance(target, functools.partial):
        # A partial's repr holds an address: its function's name is the bounded label.
        target = inspect.unwrap(target.func)
    qualname = str(getattr(target, "__qualname__", None) or getattr(target, "__name__", target))
    module = str(getattr(target, "__module__", None) or "unknown")
    wrapped = wrap(func, _Job(str(queue), name or qualname, f"{module}.{qualname}", system))
    # A wrapt proxy keeps attributes named _self_* on itself, not on the handler.
    wrapped._self_kaleem_job = True  # type: ignore[attr-defined]
    return wrapped


def job_probe(queue: str, job: str, code_name: str, system: str | None = None) -> _Job:
    """Return the probe behind `instrument_job`, for a runner that starts and ends jobs itself.

    The Celery integration starts a run at ``task_prerun`` (``begin_call``, then
    ``context``), reports a failure at ``task_failure`` (``report``) and ends it
    at ``task_postrun`` (``end``): the same span, context, metrics and Sentry
    event as a decorated handler, with no wrapper around the task.
    """
    return _Job(str(queue), job, code_name, system)


_HEADER_KEYS = frozenset(
    {
        "traceparent",
        propagation.REQUEST_ID_HEADER,
        propagation.MERCHANT_ID_HEADER,
        propagation.ENQUEUED_AT_HEADER,
    }
)
_CELERY_KEYS = ("traceparent", "tracestate", "baggage", *sorted(_HEADER_KEYS - {"traceparent"}))
_SCALARS = (str, bytes, bytearray, int, float, bool)


class _Message:
    """The headers found in a handler's arguments, and a deliberate start time if any."""

    __slots__ = ("eta", "headers", "system")

    def __init__(self, headers: Any, eta: float | None = None, system: str | None = None) -> None:
        self.headers = headers
        self.eta = eta
        self.system = system


class _JobCall:
    """One run of a job: its span, parent context, bound context token, Sentry scope, start."""

    __slots__ = ("parent", "reported", "scope", "span", "start", "token")

    def __init__(
        self, span: trace.Span, parent: Context | None, token: Any, scope: Any, start: float
    ) -> None:
        self.span = span
        self.parent = parent
        self.token = token
        self.scope = scope
        self.start = start
        self.reported = False


class _Job:
    """Per decorated handler: its labels, span attributes and cached metric children.

    The `CallProbe` of `wrap`: a run's state is a `_JobCall`.
    """

    __slots__ = (
        "attributes",
        "done",
        "in_progress",
        "job",
        "lag",
        "metrics",
        "queue",
        "span_name",
    )

    where = "instrument_job"

    def __init__(self, queue: str, job: str, code_name: str, system: str | None) -> None:
        self.queue = queue
        self.job = job
        self.span_name = f"process {queue}"
        attributes: dict[str, Any] = {
            "messaging.destination.name": queue,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "code.function.name": code_name,
        }
        if system:
            attributes["messaging.system"] = system
        self.attributes = attributes
        self.metrics: Any = None
        self.done: dict[str, tuple[Any, Any]] = {}
        self.in_progress: Any = None
        self.lag: Any = None

    def begin(self) -> _JobCall:
        return self.begin_call(None, (), {})

    def begin_call(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _JobCall:
        message = _find_message(instance, args, kwargs)
        attributes = self.attributes
        parent: Context | None = None
        values: dict[str, Any] | None = None
        lag: float | None = None
        if message is not None:
            extracted = propagation.extract_context(message.headers)
            parent = extracted.otel_context
            values = {"request_id": extracted.request_id, "merchant_id": extracted.merchant_id}
            attributes = {**attributes, **span_attributes(values)}
            if message.system and "messaging.system" not in attributes:
                attributes["messaging.system"] = message.system
            lag = _queue_lag(extracted, message.eta)
        span = tracing.start_own_span(
            self.span_name, attributes=attributes, context=parent, kind=trace.SpanKind.CONSUMER
        )
        children = self._children()
        token = None if values is None else push_context(values)
        try:
            scope = enter_request_scope()
            if children:
                if lag is not None:
                    self.lag.observe(lag)
                # Last: nothing after it can fail, so end() always takes it back.
                self.in_progress.inc()
        except BaseException:
            if token is not None:
                pop_context(token)
            span.end()
            raise
        return _JobCall(span, parent, token, scope, time.perf_counter())

    def context(self, state: _JobCall) -> Context:
        return trace.set_span_in_context(state.span, state.parent)

    def end(self, state: _JobCall, exc: BaseException | None) -> None:
        elapsed = time.perf_counter() - state.start
        span = state.span
        status = "ok"
        try:
            if exc is not None:
                status = "retry" if isinstance(exc, Exception) and _is_retry(exc) else "error"
                if status == "error" and not state.reported:
                    self._fail(span, exc)
                else:
                    never_report(exc)
                    span.add_event("retry", {"exception.type": type(exc).__name__})
        finally:
            span.end()
            try:
                if self.metrics is not None and self.metrics is _get_metrics():
                    self.in_progress.dec()
                    runs, duration = self.done[status]
                    runs.inc()
                    duration.observe(elapsed)
            finally:
                leave_request_scope(state.scope)
                if state.token is not None:
                    pop_context(state.token)

    def report(self, state: _JobCall, exc: BaseException) -> None:
        """Record a failure now, before `end`: for a runner that logs it in between.

        Celery logs a failed task at error level before the run ends; reported
        first, with the job's tags, the log record makes no second event.
        """
        if not state.reported and not (isinstance(exc, Exception) and _is_retry(exc)):
            state.reported = True
            self._fail(state.span, exc)

    def _fail(self, span: trace.Span, exc: BaseException) -> None:
        _fail(span, exc)
        if isinstance(exc, Exception):
            # Captured while the job's context is bound (its merchant_id and
            # request_id become tags) and its span current (the trace id).
            token = otel_context.attach(trace.set_span_in_context(span))
            try:
                capture_exception(exc, queue=self.queue, job=self.job)
            finally:
                otel_context.detach(token)

    def _children(self) -> bool:
        """Look the metric children up once (again only if the process metrics change)."""
        metrics = _get_metrics()
        if metrics is None:
            return False
        if metrics is not self.metrics:
            self.metrics = None
            with internal_errors("instrument_job metrics"):
                labels = (self.queue, self.job)
                self.done = {
                    status: (
                        metrics.job_runs_total.labels(*labels, status),
                        metrics.job_duration_seconds.labels(*labels, status),
                    )
                    for status in ("ok", "error", "retry")
                }
                self.lag = metrics.job_queue_lag_seconds.labels(*labels)
                self.in_progress = metrics.jobs_in_progress.labels(*labels)
                self.metrics = metrics
        return self.metrics is not None


def _queue_lag(extracted: propagation.ExtractedContext, eta: float | None) -> float | None:
    """Return the seconds from when the message was due to now, or None when unknown."""
    due = extracted.enqueued_at
    if due is None:
        return None
    if extracted.delay is not None:
        due += extracted.delay
    if eta is not None and eta > due:
        due = eta
    # A producer's clock ahead of ours (or a header from the future) is no negative lag.
    return max(0.0, time.time() - due)


def _is_retry(exc: Exception) -> bool:
    if isinstance(exc, RetryJob):
        return True
    # celery.exceptions.Retry, recognised by name so that celery is never imported here.
    return any(
        cls.__name__ == "Retry" and cls.__module__.startswith("celery") for cls in type(exc).__mro__
    )


def _find_message(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Message | None:
    """Return the headers found in a handler's arguments, or None when it was given none."""
    if kwargs:
        headers = kwargs.get("headers")
        if isinstance(headers, Mapping):
            return _Message(headers)
    for candidate in args:
        if candidate is None or isinstance(candidate, _SCALARS):
            continue
        try:
            found = _message_of(candidate)
        except Exception:  # noqa: BLE001 - an argument whose attributes raise carries no headers.
            continue
        if found is not None:
            return found
    try:
        # ``self`` is only asked for a Celery request (a method of a Task): a
        # consumer object's own attributes are not a message.
        if instance is not None:
            found = _celery_message(getattr(instance, "request", None))
            if found is not None:
                return found
        celery = sys.modules.get("celery")
        if celery is not None:
            # A Celery task that is not bound (no ``self``) is still the current task.
            task = getattr(celery, "current_task", None)
            if task:
                return _celery_message(task.request)
    except Exception:  # noqa: BLE001 - no readable task request: no headers.
        return None
    return None


def _message_of(candidate: Any) -> _Message | None:
    if isinstance(candidate, Mapping):
        # A dict is a message only when it holds headers as inject_context() writes
        # them: a job's payload may well have a "headers" key of its own.
        nested = candidate.get("headers")
        if isinstance(nested, Mapping) and _has_our_headers(nested):
            return _Message(nested)
        if _has_our_headers(candidate):
            return _Message(candidate)
        return None
    request = getattr(candidate, "request", None)
    if request is not None and hasattr(request, "delivery_info"):
        return _celery_message(request)
    headers = getattr(candidate, "headers", _SCALARS)
    if headers is None or isinstance(headers, Mapping):
        # A broker's message (pika's properties, aio-pika's message): a message
        # even without headers, so that it runs with nothing of the last one bound.
        module = type(candidate).__module__
        system = "rabbitmq" if module.startswith(("pika", "aio_pika", "aiormq")) else None
        return _Message(headers, system=system)
    return None


def _has_our_headers(headers: Mapping[Any, Any]) -> bool:
    return any(key in headers for key in _HEADER_KEYS)


def _celery_message(request: Any) -> _Message | None:
    """Read a Celery request: custom headers live in ``headers``, or as its attributes."""
    if request is None or getattr(request, "called_directly", True):
        # Called as a plain function, not run by a worker: no message.
        return None
    headers: dict[str, Any] = {}
    top = getattr(request, "headers", None)
    if isinstance(top, Mapping):
        nested = top.get("headers")
        if isinstance(nested, Mapping):
            headers.update(nested)
        headers.update(top)
    for key in _CELERY_KEYS:
        if key not in headers:
            value = getattr(request, key, None)
            if value is not None:
                headers[key] = value
    if not _has_our_headers(headers):
        # A task sent without our headers (or applied eagerly inside a request)
        # runs in the context it has.
        return None
    return _Message(headers, eta=_timestamp(getattr(request, "eta", None)), system="celery")


def _timestamp(value: Any) -> float | None:
    """Return a Celery ETA (ISO 8601 text or datetime; naive means UTC) as Unix seconds."""
    if value is None:
        return None
    try:
        when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return when.timestamp()
    except (TypeError, ValueError, OverflowError, OSError):
        # An ETA we cannot read is no ETA: the lag is measured from the enqueue time.
        return None
