"""Trace and measure Celery producers and workers (the ``celery`` extra).

Call `instrument()` once, in the module that defines the Celery app, after
`kaleem_telemetry.setup_telemetry()`: the producer and the worker both import it::

    from celery import Celery

    from kaleem_telemetry import setup_telemetry
    from kaleem_telemetry.integrations import celery as celery_telemetry

    app = Celery("billing", broker="amqp://guest:guest@127.0.0.1:5672//")
    setup_telemetry(service_name="billing-worker")
    celery_telemetry.instrument(metrics_port=9101)

Then, through Celery's own signals:

* publishing (``apply_async``, ``delay``, ``send_task``, a retry, a canvas, beat)
  runs in a PRODUCER span named ``publish {routing key}``, and
  ``before_task_publish`` writes the trace context, ``x-request-id``,
  ``x-merchant-id`` and ``x-enqueued-at`` into the message headers, both at
  the top (where protocol 2 delivers them as request attributes) and in the
  nested ``headers["headers"]`` (what ``task.request.headers`` shows), one
  canonical ``traceparent`` in each;
* every task run is a job of `kaleem_telemetry.instrument_job`, started at
  ``task_prerun`` and ended at ``task_postrun``: a CONSUMER span continuing the
  producer's trace, ``request_id``/``merchant_id`` bound from the headers for
  the run, the job metrics with ``queue`` (the routing key) and ``job`` (the
  task name), ``status="retry"`` on ``Retry``, and one Sentry event per failed
  task, sent at ``task_failure`` (before Celery logs the failure);
* the worker's lifecycle: Celery's ``setup_logging`` is answered (the JSON
  lines stay on stdout, un-wrapped); the main process of a prefork pool
  closes its span exporter before forking (``worker_init``), and each child
  builds its own; a child flushes at ``worker_process_shutdown``, before
  billiard ends it with ``os._exit``, so ``--max-tasks-per-child=1`` loses no
  span; with ``PROMETHEUS_MULTIPROC_DIR`` a child drops its live gauges as it
  exits, and a new child drops those of children that died without doing so;
  the main process flushes at ``worker_shutdown`` (threads and solo pools).

The spans are our own rather than those of
``opentelemetry-instrumentation-celery``: see docs/jobs.md.
`uninstrument()` disconnects every signal and restores ``Celery.send_task``.

Added in 0.1.0.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any

import wrapt
from opentelemetry import context as otel_context
from opentelemetry import trace

from kaleem_telemetry import tracing
from kaleem_telemetry._guard import internal_errors
from kaleem_telemetry._optional import import_optional
from kaleem_telemetry.decorators import job_probe
from kaleem_telemetry.exceptions import MissingDependencyError
from kaleem_telemetry.integrations._messaging import put_headers
from kaleem_telemetry.integrations._patching import already_instrumented
from kaleem_telemetry.propagation import inject_context
from kaleem_telemetry.sentry import never_report

celery = import_optional("celery", module=__name__, package="celery", extra="celery")

__all__ = ["instrument", "uninstrument"]

_MIN_VERSION = (5, 3)
_LOGGER = logging.getLogger(__name__)
_LOCK = threading.Lock()
_CONNECTED: list[tuple[Any, Any]] = []
_PATCHED: list[tuple[type, str, Any]] = []
_STATE: dict[str, Any] = {"metrics_port": None, "metrics_addr": "0.0.0.0"}
#: At most this many (queue, task) pairs keep a cached job; the series cap bounds the metrics.
_MAX_JOBS = 1024
_JOBS: dict[tuple[str, str], Any] = {}
_RUNS = threading.local()
# The PRODUCER span of the send_task call in progress, for before_task_publish to name.
_PUBLISHING: contextvars.ContextVar[trace.Span | None] = contextvars.ContextVar(
    "kaleem_celery_publishing", default=None
)


def _check_version() -> None:
    version = str(getattr(celery, "__version__", "0"))
    found = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if found < _MIN_VERSION:
        msg = (
            f"kaleem_telemetry.integrations.celery needs celery>=5.3, found {version!r}. "
            "Install it with: pip install 'kaleem-telemetry[celery]'"
        )
        raise MissingDependencyError(msg)


_check_version()


def instrument(*, metrics_port: int | None = None, metrics_addr: str = "0.0.0.0") -> None:
    """Connect the Celery signals and trace publishing; a repeated call warns and does nothing.

    Args:
        metrics_port: When given, the worker's main process serves ``/metrics``
            (and the health endpoints) on this port once the worker starts
            (``worker_init``); a producer importing the same module serves
            nothing. With ``PROMETHEUS_MULTIPROC_DIR`` set, a scrape adds up
            every prefork child.
        metrics_addr: The address the metrics server binds.
    """
    from celery import Celery, signals

    with _LOCK:
        if _CONNECTED:
            already_instrumented("celery")
            return
        _STATE["metrics_port"] = metrics_port
        _STATE["metrics_addr"] = metrics_addr
        for signal, receiver in (
            (signals.before_task_publish, _before_publish),
            (signals.setup_logging, _setup_logging),
            (signals.worker_init, _worker_init),
            (signals.worker_process_init, _process_init),
            (signals.worker_process_shutdown, _process_shutdown),
            (signals.worker_shutdown, _worker_shutdown),
            (signals.task_prerun, _task_prerun),
            (signals.task_failure, _task_failure),
            (signals.task_retry, _task_retry),
            (signals.task_postrun, _task_postrun),
        ):
            # weak=False: the receivers are module functions, but Celery's
            # signals drop weakly referenced receivers they cannot resolve.
            signal.connect(receiver, weak=False)
            _CONNECTED.append((signal, receiver))
        # Every publish (apply_async, delay, retry, canvas, beat) ends in
        # Celery.send_task: the PRODUCER span wraps it, so it is current when
        # before_task_publish writes the headers, and ends with the publish.
        original = Celery.__dict__["send_task"]
        wrapt.wrap_function_wrapper(Celery, "send_task", _send_task)
        _PATCHED.append((Celery, "send_task", original))


def uninstrument() -> None:
    """Disconnect the signals and restore ``Celery.send_task``; a no-op when not instrumented."""
    with _LOCK:
        while _CONNECTED:
            signal, receiver = _CONNECTED.pop()
            signal.disconnect(receiver)
        while _PATCHED:
            owner, name, original = _PATCHED.pop()
            setattr(owner, name, original)
        _JOBS.clear()


# -- publishing ---------------------------------------------------------------------


def _send_task(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    span: trace.Span | None = None
    token: object | None = None
    publishing: contextvars.Token[trace.Span | None] | None = None
    with internal_errors("celery publish span"):
        name = args[0] if args else kwargs.get("name")
        span = tracing.start_own_span(
            "publish",
            attributes={
                "messaging.system": "celery",
                "messaging.operation.type": "send",
                "messaging.operation.name": "publish",
                "celery.task.name": str(name),
            },
            kind=trace.SpanKind.PRODUCER,
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        publishing = _PUBLISHING.set(span)
    try:
        result = wrapped(*args, **kwargs)
    except BaseException as exc:
        _end_publish(span, token, publishing, exc)
        raise
    _end_publish(span, token, publishing, None)
    return result


def _end_publish(
    span: trace.Span | None,
    token: object | None,
    publishing: contextvars.Token[trace.Span | None] | None,
    exc: BaseException | None,
) -> None:
    with internal_errors("celery publish span"):
        if publishing is not None:
            _PUBLISHING.reset(publishing)
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]
        if span is not None:
            if isinstance(exc, Exception):
                span.record_exception(exc)
                span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
            span.end()


def _before_publish(
    headers: MutableMapping[Any, Any] | None = None,
    routing_key: str | None = None,
    exchange: str | None = None,
    **_: Any,
) -> None:
    """Write our headers into the message (Celery's ``before_task_publish``)."""
    if not isinstance(headers, MutableMapping):
        return
    with internal_errors("celery before_task_publish"):
        span = _PUBLISHING.get()
        destination = str(routing_key or exchange or "celery")
        if span is not None and span is trace.get_current_span():
            span.update_name(f"publish {destination}")
            span.set_attribute("messaging.destination.name", destination)
        injected: dict[str, Any] = inject_context({})
        put_headers(headers, injected)
        # Protocol 2 delivers the top-level headers as the request's attributes;
        # task.request.headers (and a retry's copy of them) is the nested dict.
        nested = headers.get("headers")
        if not isinstance(nested, MutableMapping):
            nested = {}
            headers["headers"] = nested
        put_headers(nested, injected)


# -- task runs ----------------------------------------------------------------------


class _Run:
    """One task run between prerun and postrun: its job, its state, its context token."""

    __slots__ = ("call", "exc", "job", "task_id", "token")

    def __init__(self, task_id: Any, job: Any, call: Any, token: object) -> None:
        self.task_id = task_id
        self.job = job
        self.call = call
        self.token = token
        self.exc: BaseException | None = None


def _runs() -> list[_Run]:
    # Per thread (threads pool) and nested for eager tasks run inside a task.
    stack: list[_Run] | None = getattr(_RUNS, "stack", None)
    if stack is None:
        stack = _RUNS.stack = []
    return stack


def _find_run(task_id: Any) -> _Run | None:
    for run in reversed(_runs()):
        if run.task_id == task_id:
            return run
    return None


def _job_for(task: Any) -> Any:
    request = getattr(task, "request", None)
    delivery = getattr(request, "delivery_info", None)
    queue = None
    if isinstance(delivery, Mapping):
        queue = delivery.get("routing_key") or delivery.get("exchange")
    if not queue:
        queue = getattr(task, "queue", None) or _default_queue(task)
    name = str(getattr(task, "name", None) or type(task).__qualname__)
    key = (str(queue), name)
    job = _JOBS.get(key)
    if job is None:
        if len(_JOBS) >= _MAX_JOBS:
            _JOBS.clear()
        run = getattr(task, "run", None)
        module = str(getattr(run, "__module__", None) or type(task).__module__)
        code = f"{module}.{getattr(run, '__qualname__', name)}"
        job = _JOBS[key] = job_probe(key[0], name, code, "celery")
    return job


def _default_queue(task: Any) -> str:
    app = getattr(task, "app", None)
    conf = getattr(app, "conf", None)
    return str(getattr(conf, "task_default_queue", None) or "celery")


def _task_prerun(task_id: Any = None, task: Any = None, **_: Any) -> None:
    """Start the job: span, bound context, metrics (Celery's ``task_prerun``)."""
    if task is None or getattr(getattr(task, "run", None), "_self_kaleem_job", False):
        # A task decorated with instrument_job by hand is a job already.
        return
    with internal_errors("celery task_prerun"):
        job = _job_for(task)
        call = job.begin_call(task, (), {})
        token = otel_context.attach(job.context(call))
        _runs().append(_Run(task_id, job, call, token))


def _task_failure(task_id: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    """Report the failure while the job's context is bound (Celery's ``task_failure``)."""
    with internal_errors("celery task_failure"):
        run = _find_run(task_id)
        if run is not None and exception is not None:
            run.exc = exception
            run.job.report(run.call, exception)


def _task_retry(request: Any = None, reason: BaseException | None = None, **_: Any) -> None:
    """Remember that the run ends in a retry (Celery's ``task_retry``)."""
    with internal_errors("celery task_retry"):
        run = _find_run(getattr(request, "id", None))
        if run is not None and isinstance(reason, BaseException):
            run.exc = reason


class _Rejected(Exception):
    """A task that raised Celery's ``Reject``: counted as an error, with no Sentry event."""


def _task_postrun(task_id: Any = None, state: str | None = None, **_: Any) -> None:
    """End the job and restore the context (Celery's ``task_postrun``)."""
    with internal_errors("celery task_postrun"):
        stack = _runs()
        run = _find_run(task_id)
        if run is None:
            return
        # A nested run that never reached its postrun is ended with this one.
        while stack:
            top = stack.pop()
            exc = top.exc
            if exc is None and top is run and state == "REJECTED":
                exc = _Rejected("the task rejected its message")
                never_report(exc)
            otel_context.detach(top.token)  # type: ignore[arg-type]
            top.job.end(top.call, exc)
            if top is run:
                break


# -- worker lifecycle ---------------------------------------------------------------


def _setup_logging(**_: Any) -> None:
    """Answer Celery's ``setup_logging``, so that it leaves logging to us.

    A connected receiver is what tells Celery not to configure the root logger
    and not to redirect stdout and stderr into it: left to do so, it would wrap
    every JSON line in its own format and write it to stderr.
    """
    with internal_errors("celery setup_logging"):
        from kaleem_telemetry import _setup

        if _setup.current() is None:
            _LOGGER.debug(
                "Celery set up logging before setup_telemetry(); the JSON pipeline "
                "starts when setup_telemetry() runs"
            )


def _worker_init(sender: Any = None, **_: Any) -> None:
    """Prepare the worker's main process (Celery's ``worker_init``, before the pool starts)."""
    with internal_errors("celery worker_init"):
        from kaleem_telemetry import _setup

        live = _setup.current()
        if live is not None and _is_prefork(sender):
            tracing.suspend_export_until_fork(live.config.shutdown_timeout)
        port = _STATE["metrics_port"]
        if port is not None:
            from kaleem_telemetry import start_metrics_server

            start_metrics_server(int(port), addr=str(_STATE["metrics_addr"]))


def _is_prefork(worker: Any) -> bool:
    pool = getattr(worker, "pool_cls", None)
    module = str(getattr(pool, "__module__", "") or pool or "")
    return "prefork" in module


def _process_init(**_: Any) -> None:
    """Start a prefork child (Celery's ``worker_process_init``)."""
    with internal_errors("celery worker_process_init"):
        from kaleem_telemetry.metrics import multiproc_dir

        path = multiproc_dir()
        if path is not None:
            _sweep_dead(path)


def _process_shutdown(**_: Any) -> None:
    """Flush a prefork child before billiard ends it (Celery's ``worker_process_shutdown``)."""
    with internal_errors("celery worker_process_shutdown"):
        from kaleem_telemetry._setup import flush_before_stop
        from kaleem_telemetry.metrics import multiproc_dir

        flush_before_stop()
        path = multiproc_dir()
        if path is not None:
            from prometheus_client.multiprocess import mark_process_dead

            mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]


def _worker_shutdown(**_: Any) -> None:
    """Flush the worker's main process (Celery's ``worker_shutdown``)."""
    with internal_errors("celery worker_shutdown"):
        from kaleem_telemetry._setup import flush_before_stop

        flush_before_stop()


def _sweep_dead(path: str) -> None:
    """Drop the live gauges of children that died without their shutdown (a SIGKILL)."""
    from prometheus_client.multiprocess import mark_process_dead

    pids: set[int] = set()
    for entry in os.listdir(path):
        if entry.startswith("gauge_live") and entry.endswith(".db"):
            digits = entry[: -len(".db")].rpartition("_")[2]
            if digits.isdigit():
                pids.add(int(digits))
    for pid in pids - {os.getpid()}:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
        except PermissionError:
            # Alive, under another user: not ours to clean.
            continue
