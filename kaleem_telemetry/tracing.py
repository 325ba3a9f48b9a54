"""Traces: the tracer provider, its sampler, the OTLP exporter and the span processors.

`configure_tracing()` builds, once per process, an OpenTelemetry SDK
``TracerProvider`` with the resource of docs/reference.md, sets it as the global provider and
the W3C propagators as the global propagators. Around the SDK it adds:

* a processor that copies the bound request context (`kaleem_telemetry.context`)
  onto every span when it starts, so child spans carry ``merchant.id`` too;
* an exporter wrapper that runs span attributes, events and status messages
  through the one redaction policy before anything leaves the process;
* a count of the spans dropped because the export queue was full
  (``telemetry_spans_dropped_total`` and one warning);
* a log filter that keeps OTLP header values and endpoint credentials out of the
  exporters' own error messages;
* bounded ``force_flush``/``shutdown``: the SDK does not honour its timeouts when
  the collector accepts connections and never answers, so both run in a daemon
  thread that is abandoned at the deadline.

OpenTelemetry allows the global provider to be set only once. A reconfiguration
(``setup_telemetry(force=True)``) therefore keeps the provider and swaps its
sampler and its export processor; a changed resource (service name, version,
environment) needs a new process, and a warning says so.

The OTLP exporters (and grpc) are imported only when an exporter is built.

Added in 0.1.0.
"""

from __future__ import annotations

import base64

# Imported before any TracerProvider exists, for its fork hooks' order: the
# provider's after-fork hook runs the resource detectors on a thread pool, and
# concurrent.futures holds its global lock across os.fork() until its own
# after-fork hook releases it in the child. Hooks run in the order they were
# registered, so with concurrent.futures.thread first imported later (by the
# gRPC exporter) every forked child (Celery prefork, billiard) hangs in the
# provider's hook before it runs anything.
import concurrent.futures.thread  # noqa: F401
import contextlib
import gc
import logging
import os
import re
import socket
import sys
import threading
import traceback
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Status

from kaleem_telemetry import _compat
from kaleem_telemetry._bounded import run_bounded
from kaleem_telemetry._exporter_logs import EXPORTER_LOGGER_PREFIXES, EXPORTER_LOGGER_ROOTS
from kaleem_telemetry._guard import internal_errors, report_internal_error
from kaleem_telemetry._metric_specs import SPANS_DROPPED
from kaleem_telemetry._version import __version__
from kaleem_telemetry.context import bound_values, span_attributes
from kaleem_telemetry.propagation import install_propagators
from kaleem_telemetry.redaction import REDACTED, get_redactor, redact_attributes

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import Span
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Link, SpanKind
    from opentelemetry.util.types import Attributes

    from kaleem_telemetry.config import TelemetryConfig

__all__ = ["get_tracer"]

_LOGGER = logging.getLogger(__name__)

TRACER_NAME = "kaleem_telemetry"
SPANS_DROPPED_METRIC = SPANS_DROPPED.base_name  # exposed as ..._total by prometheus_client

#: Public top-level logger names of the OpenTelemetry SDK and exporters and of grpc:
#: any of their loggers may quote the endpoint (userinfo included) or a failing
#: request, so the secret filter sees every record of a logger at or under them.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
_EXCEPTION_ATTR = "_kaleem_span_context"

_LOCK = threading.RLock()
_PROVIDER: TracerProvider | None = None
_ROUTER: _SpanRouter | None = None
_SAMPLER: _SwitchableSampler | None = None
_TRACER: trace.Tracer | None = None
_RESOURCE_KEY: tuple[tuple[str, Any], ...] | None = None
_INSTANCE_ID = str(uuid.uuid4())
_DROPPED = 0
_DROPPED_WARNED = False
_DROPPED_COUNTER: Any = None
_LOG_FILTER: _SecretLogFilter | None = None


class TracingComponent:
    """The handle `configure_tracing()` returns: bounded flush and shutdown of the exporter.

    Args:
        provider: The process's tracer provider.
        processor: The export processor this configuration installed, or
            ``None`` with ``OTEL_TRACES_EXPORTER=none``.
    """

    def __init__(self, provider: TracerProvider, owner: weakref.ref[SpanProcessor] | None) -> None:
        self.provider = provider
        # A weak reference: a processor the router let go of (a pre-fork parent
        # closing its exporter) must be freed, or its SDK after-fork hook would
        # still run in every child.
        self._owner = owner
        self._closed = False

    @property
    def dropped_spans(self) -> int:
        """How many spans were dropped in this process because the export queue was full."""
        return _DROPPED

    def force_flush(self, timeout: float = 5.0) -> bool:
        """Export the queued spans; return ``False`` if that did not finish in ``timeout`` s."""
        processor = self._current()
        if processor is None or self._closed:
            return True
        millis = max(1, int(timeout * 1000))
        return run_bounded(lambda: processor.force_flush(millis), timeout) is True

    def shutdown(self, timeout: float = 5.0) -> None:
        """Flush and stop the exporter, returning within ``timeout`` seconds; idempotent."""
        if self._closed:
            return
        self._closed = True
        processor = self._current()
        if processor is None:
            return
        router = _ROUTER
        if router is not None and self._owner is not None:
            router.detach_export(self._owner)
        run_bounded(processor.shutdown, timeout)

    def _current(self) -> SpanProcessor | None:
        # After os.fork() the router rebuilds the export processor in the child;
        # flush and shut down that one, not the inherited one.
        if self._owner is None:
            return None
        router = _ROUTER
        if router is None:
            return self._owner()
        return router.export_for(self._owner)


def configure_tracing(config: TelemetryConfig) -> TracingComponent | None:
    """Set up (or reconfigure) tracing from ``config``.

    Installs the W3C propagators in every case. With ``OTEL_SDK_DISABLED=true``
    nothing else is set up and ``None`` is returned (a previous export processor,
    if any, is detached). With ``OTEL_TRACES_EXPORTER=none`` the provider is still
    installed, so spans exist for log correlation, exemplars and tests, but nothing
    is exported.

    Args:
        config: The telemetry configuration.

    Returns:
        The component to flush and shut down, or ``None`` when tracing is disabled.
    """
    install_propagators()
    with _LOCK:
        if config.sdk_disabled:
            if _ROUTER is not None:
                old = _ROUTER.set_export(None, None, None)
                if old is not None:
                    _shutdown_in_background(old, config.shutdown_timeout)
            return None
        provider = _ensure_provider(config)
        if provider is None or _ROUTER is None:
            return None
        if _SAMPLER is not None:
            _SAMPLER.set(build_sampler(config))
        _install_log_filter(config)

        def factory() -> SpanProcessor | None:
            return _build_export_processor(config)

        processor = factory()
        owner = None if processor is None else weakref.ref(processor)
        old = _ROUTER.set_export(processor, factory, owner)
        if old is not None:
            _shutdown_in_background(old, config.shutdown_timeout)
        return TracingComponent(provider, owner)


def suspend_export_until_fork(timeout: float) -> None:
    """Flush and close this process's span exporter; children forked later build their own.

    For the main process of a pre-fork pool (Celery's prefork workers), which
    runs no job itself: an exporter alive at ``os.fork()`` (a gRPC channel and
    its threads) can leave the child hung before it runs anything, so the
    parent closes its own before the pool forks, and each child builds one on
    its first span. Spans this process ends afterwards are not exported.

    Args:
        timeout: The bound of the flush and shutdown, in seconds.
    """
    router = _ROUTER
    if router is None:
        return
    old = router.suspend()
    if old is not None:
        run_bounded(old.shutdown, timeout)
        # The SDK's processor registered an after-fork hook that starts a thread
        # in the child; in a child forked by billiard that start can wait
        # forever. The hook holds the processor weakly: once it is collected
        # (it sits in reference cycles with its thread) the hook does nothing.
        del old
        gc.collect()


def get_tracer() -> trace.Tracer:
    """Return the kaleem_telemetry tracer (a proxy until tracing is configured)."""
    tracer = _TRACER
    if tracer is None:
        with _LOCK:
            provider = _PROVIDER
            if provider is not None:
                tracer = provider.get_tracer(TRACER_NAME, __version__)
            else:
                tracer = trace.get_tracer(TRACER_NAME, __version__)
            globals()["_TRACER"] = tracer
    return tracer


def add_span_processor(processor: SpanProcessor) -> Callable[[], None]:
    """Add ``processor`` to the process's provider (created if needed); return a remover.

    `kaleem_telemetry.testing.capture_telemetry()` uses this to attach an in-memory
    exporter. The remover detaches the processor and shuts it down.

    Args:
        processor: Any SDK span processor.
    """
    with _LOCK:
        _ensure_provider(None)
        router = _ROUTER
    if router is None:
        return lambda: None
    router.add(processor)

    def remove() -> None:
        router.remove(processor)
        with internal_errors("span processor shutdown"):
            processor.shutdown()

    return remove


def capture_spans() -> tuple[InMemorySpanExporter, Callable[[], None]]:
    """Collect finished, redacted spans in memory; return the exporter and a remover."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    remove = add_span_processor(SimpleSpanProcessor(_RedactingSpanExporter(exporter)))
    return exporter, remove


def start_own_span(
    name: str,
    *,
    attributes: dict[str, Any],
    context: Context | None = None,
    kind: SpanKind = trace.SpanKind.INTERNAL,
    links: Sequence[Link] | None = None,
) -> trace.Span:
    """Start a span of the library's own (a server span, an `@instrument` span).

    The same span as ``get_tracer().start_span(...)``. When the provider and its
    sampler are the library's own (its samplers never look at attributes), the
    span is started bare and the attributes are stored with `set_own_attributes`,
    which spares the SDK's per-value validation: on a request that is most of what
    the span costs. A provider someone else installed first keeps the public path,
    so its sampler sees the attributes.

    Args:
        name: The span name.
        attributes: The span's attributes; values of other types than ``str``,
            ``int``, ``bool`` or ``float`` go through the SDK's validation.
        context: The parent context; the current one when ``None``.
        kind: The span kind.
        links: Links to other spans.
    """
    tracer = get_tracer()
    if _SAMPLER is None:
        return tracer.start_span(
            name, context=context, kind=kind, attributes=attributes, links=links
        )
    span = tracer.start_span(name, context=context, kind=kind, links=links)
    set_own_attributes(span, attributes)
    return span


#: Set ``attributes`` (and rename) on a live span of the library's own, as
#: ``set_attributes`` would but faster: `kaleem_telemetry._compat.set_span_attributes`.
set_own_attributes = _compat.set_span_attributes


def dropped_spans() -> int:
    """Return how many spans were dropped in this process because the export queue was full."""
    return _DROPPED


def remember_span(exc: BaseException, span: trace.Span) -> None:
    """Remember on ``exc`` the innermost span it was raised through.

    Sentry reads it back, so an exception captured after its span has ended (by
    a caller further up) still links to the right trace.

    Args:
        exc: The exception leaving the span.
        span: The span.
    """
    if getattr(exc, _EXCEPTION_ATTR, None) is None:
        # Exceptions with __slots__ and no __dict__ cannot carry it; the Sentry
        # event then falls back to the current span.
        with contextlib.suppress(AttributeError, TypeError):
            setattr(exc, _EXCEPTION_ATTR, span.get_span_context())


def remembered_span_context(exc: BaseException | None) -> trace.SpanContext | None:
    """Return the span context `remember_span()` stored on ``exc``, if any."""
    value = getattr(exc, _EXCEPTION_ATTR, None)
    return value if isinstance(value, trace.SpanContext) else None


def build_resource(config: TelemetryConfig) -> Resource:
    """Return the resource of docs/reference.md (Spans) for ``config``.

    ``OTEL_RESOURCE_ATTRIBUTES`` come first; the service name, version,
    environment, instance id and host name from the configuration win over them.

    Args:
        config: The telemetry configuration.
    """
    attributes: dict[str, Any] = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": _sdk_version(),
    }
    attributes.update(config.resource_attributes)
    attributes.update(
        {
            "service.name": config.service_name,
            "service.version": config.version,
            "deployment.environment.name": config.environment,
            "service.instance.id": _INSTANCE_ID,
            "host.name": socket.gethostname(),
        }
    )
    return Resource(attributes)


def build_sampler(config: TelemetryConfig) -> Sampler:
    """Return the sampler that ``OTEL_TRACES_SAMPLER[_ARG]`` and the environment ask for.

    The ratio is ``OTEL_TRACES_SAMPLER_ARG`` when set, else 0.1 in production and
    1.0 elsewhere (`TelemetryConfig.sampler_ratio`).

    Args:
        config: The telemetry configuration.
    """
    name = config.traces_sampler
    ratio = config.sampler_ratio
    if name == "always_on":
        return ALWAYS_ON
    if name == "always_off":
        return ALWAYS_OFF
    if name == "traceidratio":
        return TraceIdRatioBased(ratio)
    if name == "parentbased_always_on":
        return ParentBased(ALWAYS_ON)
    if name == "parentbased_always_off":
        return ParentBased(ALWAYS_OFF)
    return ParentBased(TraceIdRatioBased(ratio))


def reset_for_tests() -> None:
    """Undo everything `configure_tracing()` did, so the next test starts clean.

    Shuts the export processors down (bounded), forgets the provider and resets
    OpenTelemetry's set-once global tracer provider. Only for tests: production
    code never replaces the global provider.
    """
    global _PROVIDER, _ROUTER, _SAMPLER, _TRACER, _RESOURCE_KEY, _DROPPED, _DROPPED_WARNED
    with _LOCK:
        router = _ROUTER
        if router is not None:
            for processor in router.clear():
                run_bounded(processor.shutdown, 1.0)
        if _PROVIDER is not None and trace.get_tracer_provider() is _PROVIDER:
            # OpenTelemetry has no public way to unset the global provider; tests
            # need a fresh one each. Where that fails the next configuration hooks
            # into the old provider, as into one installed by someone else.
            _compat.reset_global_tracer_provider()
        _PROVIDER = _ROUTER = _SAMPLER = _TRACER = _RESOURCE_KEY = None
        _DROPPED = 0
        _DROPPED_WARNED = False
        if _LOG_FILTER is not None:
            _LOG_FILTER.secrets = ()


# -- provider -------------------------------------------------------------------


def _ensure_provider(config: TelemetryConfig | None) -> TracerProvider | None:
    global _PROVIDER, _ROUTER, _SAMPLER, _TRACER, _RESOURCE_KEY
    if _PROVIDER is not None:
        if config is not None:
            _check_resource(config)
        return _PROVIDER
    router = _SpanRouter()
    existing = trace.get_tracer_provider()
    if isinstance(existing, TracerProvider):
        # Someone (opentelemetry-instrument, the application) installed an SDK
        # provider first. OpenTelemetry forbids replacing it, so hook into it:
        # the context processor and our exporter still apply, its resource and
        # sampler stay the owner's.
        _LOGGER.warning(
            "An OpenTelemetry TracerProvider is already installed; kaleem_telemetry adds "
            "its span processors to it and keeps its resource and sampler."
        )
        existing.add_span_processor(router)
        _PROVIDER, _ROUTER, _SAMPLER = existing, router, None
    elif isinstance(existing, trace.ProxyTracerProvider):
        sampler = _SwitchableSampler(
            build_sampler(config) if config is not None else ParentBased(ALWAYS_ON)
        )
        resource = build_resource(config) if config is not None else _default_resource()
        # shutdown_on_exit=False: the SDK's own atexit shutdown is unbounded and
        # hangs interpreter exit on a black-holed collector; `Telemetry.shutdown`
        # (also registered atexit) does it with a deadline instead.
        provider = TracerProvider(sampler=sampler, resource=resource, shutdown_on_exit=False)
        provider.add_span_processor(router)
        trace.set_tracer_provider(provider)
        if trace.get_tracer_provider() is not provider:
            _LOGGER.warning("Could not install the kaleem_telemetry TracerProvider.")
            return None
        _PROVIDER, _ROUTER, _SAMPLER = provider, router, sampler
        _RESOURCE_KEY = _resource_key(resource) if config is not None else None
    else:
        _LOGGER.warning(
            "A non-SDK TracerProvider (%s) is installed; kaleem_telemetry tracing is off.",
            type(existing).__name__,
        )
        return None
    _TRACER = None
    return _PROVIDER


def _check_resource(config: TelemetryConfig) -> None:
    global _RESOURCE_KEY
    key = _resource_key(build_resource(config))
    if _RESOURCE_KEY is None:
        _RESOURCE_KEY = key
    elif key != _RESOURCE_KEY:
        _LOGGER.warning(
            "The trace resource (service name, version, environment, resource attributes) "
            "changed; OpenTelemetry cannot change it in a running process, so spans keep "
            "the old one until the process restarts."
        )


def _resource_key(resource: Resource) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, str(v)) for k, v in resource.attributes.items()))


def _default_resource() -> Resource:
    return Resource({"service.name": "unknown_service", "service.instance.id": _INSTANCE_ID})


def _sdk_version() -> str:
    try:
        return metadata.version("opentelemetry-sdk")
    except metadata.PackageNotFoundError:
        return "unknown"


class _SwitchableSampler(Sampler):
    """A sampler whose delegate can be swapped, since tracers keep the provider's sampler."""

    def __init__(self, delegate: Sampler) -> None:
        self.set(delegate)

    def set(self, delegate: Sampler) -> None:
        self._delegate = delegate
        # The tracer calls should_sample on every span: the instance attribute
        # hands it the delegate's own method, one Python call less per span.
        self.should_sample = delegate.should_sample  # type: ignore[method-assign]

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        return self._delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return self._delegate.get_description()


# -- processors -----------------------------------------------------------------


class _SpanRouter(SpanProcessor):
    """The one processor on the provider: context attributes, then export and extras.

    The export processor can be swapped (reconfiguration) and is rebuilt in a
    forked child, whose inherited exporter (a gRPC channel, an HTTP pool) belongs
    to the parent.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._export: SpanProcessor | None = None
        self._owner: weakref.ref[SpanProcessor] | None = None
        self._factory: Callable[[], SpanProcessor | None] | None = None
        self._extra: tuple[SpanProcessor, ...] = ()
        self._forked = False
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)

            def after_in_child() -> None:
                router = ref()
                if router is not None:
                    router._forked = True

            # Runs in the child of os.fork() (gunicorn --preload workers): only a
            # flag is set here; the export processor is rebuilt on the next span.
            os.register_at_fork(after_in_child=after_in_child)

    def set_export(
        self,
        processor: SpanProcessor | None,
        factory: Callable[[], SpanProcessor | None] | None,
        owner: weakref.ref[SpanProcessor] | None,
    ) -> SpanProcessor | None:
        with self._lock:
            old, self._export, self._factory = self._export, processor, factory
            self._owner = owner
            self._forked = False
        return old

    def export_for(self, owner: weakref.ref[SpanProcessor]) -> SpanProcessor | None:
        with self._lock:
            if owner is self._owner:
                return self._export
        return owner()

    def detach_export(self, owner: weakref.ref[SpanProcessor]) -> None:
        with self._lock:
            if self._owner is owner:
                self._export = self._owner = self._factory = None

    def add(self, processor: SpanProcessor) -> None:
        with self._lock:
            self._extra = (*self._extra, processor)

    def remove(self, processor: SpanProcessor) -> None:
        with self._lock:
            self._extra = tuple(p for p in self._extra if p is not processor)

    def clear(self) -> list[SpanProcessor]:
        with self._lock:
            old = [p for p in (self._export, *self._extra) if p is not None]
            self._export, self._owner, self._factory, self._extra = None, None, None, ()
        return old

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            bound = bound_values()
            if bound:
                set_own_attributes(span, span_attributes(bound))
        except Exception:  # noqa: BLE001 - the guard logs it; the caller must not see it.
            report_internal_error("span context attributes")
        for processor in self._extra:
            processor.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if self._forked:
            self._rebuild_after_fork()
        export = self._export
        if export is not None:
            export.on_end(span)
        for processor in self._extra:
            processor.on_end(span)

    def shutdown(self) -> None:
        for processor in self.clear():
            processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        ok = True
        for processor in (self._export, *self._extra):
            if processor is not None:
                ok = processor.force_flush(timeout_millis) and ok
        return ok

    def suspend(self) -> SpanProcessor | None:
        """Take the export processor out until the next fork; return it for shutting down.

        The process keeps its factory: a child forked from it builds a fresh
        exporter on its first span, and this process exports nothing more.
        """
        with self._lock:
            old, self._export = self._export, None
            self._forked = False
        return old

    def _rebuild_after_fork(self) -> None:
        with self._lock:
            if not self._forked:
                return
            self._forked = False
            factory = self._factory
        if factory is None:
            return
        with internal_errors("rebuild span exporter after fork"):
            processor = factory()
            with self._lock:
                # The inherited processor is abandoned, not shut down: its exporter's
                # connection is the parent's.
                self._export = processor


def _build_export_processor(config: TelemetryConfig) -> SpanProcessor | None:
    exporter = _build_exporter(config)
    if exporter is None:
        return None
    return _CountingBatchSpanProcessor(_RedactingSpanExporter(exporter))


def _build_exporter(config: TelemetryConfig) -> SpanExporter | None:
    kind = config.traces_exporter
    if kind == "none":
        return None
    if kind == "console":
        # One compact JSON object per line on stderr: stdout carries the JSON logs.
        return ConsoleSpanExporter(
            service_name=config.service_name,
            out=sys.stderr,
            formatter=lambda span: span.to_json(indent=None) + os.linesep,
        )
    url = config.otlp_traces_url
    headers = dict(config.otlp_headers)
    if config.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        endpoint, auth = _split_userinfo(url)
        if auth is not None:
            headers.setdefault("authorization", auth)
        # gRPC rejects metadata keys with upper-case letters.
        grpc_headers = {k.lower(): v for k, v in headers.items()}
        return GrpcExporter(
            endpoint=endpoint,
            insecure=urlsplit(endpoint).scheme == "http",
            headers=grpc_headers or None,
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter(endpoint=url, headers=headers or None)


def _split_userinfo(url: str) -> tuple[str, str | None]:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    return urlunsplit(parts._replace(netloc=hostport)), f"Basic {token}"


class _CountingBatchSpanProcessor(BatchSpanProcessor):
    """A `BatchSpanProcessor` that counts the spans it drops on a full queue."""

    def __init__(self, exporter: SpanExporter, **kwargs: Any) -> None:
        super().__init__(exporter, **kwargs)
        # The SDK drops silently but for a rate-limited log line; its queue is a
        # bounded deque, whose fullness we read before handing the span over.
        # ``None`` where the SDK keeps it differently: spans are then not counted.
        self._drop_queue = _compat.batch_span_queue(self)

    def on_end(self, span: ReadableSpan) -> None:
        queue = self._drop_queue
        if queue is not None and len(queue) >= queue.maxlen:
            context = span.context
            if context is not None and context.trace_flags.sampled:
                _record_dropped()
        BatchSpanProcessor.on_end(self, span)


def _record_dropped() -> None:
    global _DROPPED, _DROPPED_WARNED, _DROPPED_COUNTER
    _DROPPED += 1
    with internal_errors("dropped span counter"):
        if _DROPPED_COUNTER is None:
            _DROPPED_COUNTER = _dropped_counter()
        _DROPPED_COUNTER.inc()
    if not _DROPPED_WARNED:
        _DROPPED_WARNED = True
        _LOGGER.warning(
            "The span export queue is full, so spans are being dropped; the collector is "
            "slow or unreachable. %s_total counts them.",
            SPANS_DROPPED_METRIC,
        )


def _dropped_counter() -> Any:
    from prometheus_client import REGISTRY

    from kaleem_telemetry.metrics import create_metric

    try:
        collector = create_metric(SPANS_DROPPED)
        REGISTRY.register(collector)
        return collector
    except ValueError:
        # Already registered in this process (a test reset); reuse that one, or
        # count in an unregistered one where it cannot be found.
        collector = _compat.registered_collector(REGISTRY, SPANS_DROPPED_METRIC)
        if collector is None:
            collector = create_metric(SPANS_DROPPED)
        return collector


class _RedactingSpanExporter(SpanExporter):
    """Run span attributes, event attributes and status messages through the redactor."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([_redacted(span) for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _redacted(span: ReadableSpan) -> ReadableSpan:
    try:
        attributes = _redact_attrs(span.attributes)
        events = [
            Event(event.name, _redact_attrs(event.attributes), event.timestamp)
            for event in span.events
        ]
        status = span.status
        if status.description:
            description = get_redactor().redact_string(status.description)
            if description != status.description:
                status = Status(status.status_code, description)
        return ReadableSpan(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=_keep_dropped(attributes, span.dropped_attributes),
            events=_keep_dropped_items(events, span.dropped_events),
            links=_keep_dropped_items(span.links, span.dropped_links),
            kind=span.kind,
            status=status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )
    except Exception:  # noqa: BLE001 - never export a span we could not redact.
        _LOGGER.warning("Could not redact span %r; its attributes are dropped.", span.name)
        return ReadableSpan(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes={"kaleem.redaction_failed": True},
            kind=span.kind,
            status=span.status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )


def _keep_dropped(attributes: dict[str, Any], dropped: int) -> Any:
    # The exported span reports how many attributes the SDK's limits dropped
    # (OTLP ``dropped_attributes_count``); only its bounded store carries the count.
    if not dropped:
        return attributes
    store = BoundedAttributes(None, attributes, immutable=True)
    store.dropped = dropped
    return store


def _keep_dropped_items(items: Sequence[Any], dropped: int) -> Any:
    if not dropped:
        return items
    bounded = BoundedList.from_seq(None, items)
    bounded.dropped = dropped
    return bounded


def _redact_attrs(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    if not attributes:
        return {}
    return redact_attributes(attributes)


def _shutdown_in_background(processor: SpanProcessor, timeout: float) -> None:
    thread = threading.Thread(
        target=run_bounded,
        args=(processor.shutdown, timeout),
        name="kaleem-telemetry-old-exporter",
        daemon=True,
    )
    thread.start()


# -- exporter log filter ----------------------------------------------------------


class _SecretLogFilter(logging.Filter):
    """Take OTLP header values and URL credentials out of exporter log records."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: tuple[str, ...] = ()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
            scrubbed = self.scrub(message)
            if scrubbed != message:
                record.msg, record.args = scrubbed, None
            if record.exc_info and record.exc_info[1] is not None:
                text = "".join(traceback.format_exception(*record.exc_info))
                if self.scrub(text) != text:
                    # The traceback quotes a secret: keep the scrubbed text only.
                    record.msg = f"{record.msg} ({self.scrub(text).strip()})"
                    record.args = None
                    record.exc_info = None
                    record.exc_text = None
        except Exception:  # noqa: BLE001 - a filter that raises would break the exporter thread.
            return True
        return True

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, REDACTED)
        text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
        result: str = get_redactor().redact_string(text)
        return result


def _install_log_filter(config: TelemetryConfig) -> None:
    global _LOG_FILTER
    secrets = [v for v in config.otlp_headers.values() if v]
    for url in (config.otlp_endpoint, config.otlp_traces_endpoint):
        if url and "@" in urlsplit(url).netloc:
            userinfo = urlsplit(url).netloc.rpartition("@")[0]
            secrets.extend(p for p in (userinfo, *userinfo.split(":", 1)) if len(p) >= 3)
    if _LOG_FILTER is None:
        _LOG_FILTER = _SecretLogFilter()
        _install_record_factory(_LOG_FILTER)
    # Longest first, so a secret that contains another is replaced whole.
    _LOG_FILTER.secrets = tuple(sorted(set(secrets), key=len, reverse=True))


def _install_record_factory(log_filter: _SecretLogFilter) -> None:
    """Run ``log_filter`` on every record of a logger at or under `EXPORTER_LOGGER_ROOTS`.

    A filter on the ``opentelemetry`` or ``grpc`` logger would not see the records
    of their child loggers (logging applies a logger's filters only to records
    logged on that very logger, not to those propagated from below), and a filter
    on a handler only where that handler is. The log record factory makes every
    record, whatever logger it comes from and whichever handlers it reaches, so the
    secrets are out of it before any handler, filter or log capture sees it. The
    factory that was installed before is kept and called first.
    """
    previous = logging.getLogRecordFactory()
    roots = EXPORTER_LOGGER_ROOTS
    prefixes = EXPORTER_LOGGER_PREFIXES

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        name = record.name
        if name.startswith(prefixes) or name in roots:
            log_filter.filter(record)
        return record

    logging.setLogRecordFactory(factory)
