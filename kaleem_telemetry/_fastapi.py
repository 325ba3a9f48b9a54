"""What becomes of FastAPI's own telemetry (FastAPI 0.165 and later) under `instrument_app()`.

FastAPI traces by itself: it starts a SERVER span of its own from the incoming
headers, outside every middleware, so beside our server span each request
would become a second trace, and `bind_context()` would land on FastAPI's
endpoint span instead of ours. `tame()` decides, once per application:

* **default** (the application passed no ``telemetry=``): FastAPI's spans,
  metrics and OTel log records are switched off. The request costs what it
  costs without FastAPI's tracing, and there is one trace, ours.
* **operation spans** (``instrument_app(app, fastapi_operation_spans=True)``):
  FastAPI's ``fastapi.dependencies``, ``fastapi.endpoint``,
  ``fastapi.serialization`` and ``fastapi.background_task`` spans are kept,
  nested under our server span in the same trace; FastAPI's own server span is
  replaced by a non-recording one, so it neither exports nor starts a trace.
* **the application configured ``FastAPI(telemetry=...)``**: it keeps what it
  asked for. If that includes FastAPI's tracing, a warning says that it splits
  each request into two server spans. If it includes FastAPI's log records,
  they pass through the redactor before they reach any log processor.

Nothing here imports FastAPI; the private settings dict is reached through
`kaleem_telemetry._compat`.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind

from kaleem_telemetry import _compat

__all__ = ["OperationSpansOnly", "RedactingLoggerProvider", "tame"]

_LOGGER = logging.getLogger("kaleem_telemetry")
_SPLIT_WARNING = (
    "This FastAPI application traces by itself (FastAPI(telemetry=...) leaves its tracing on), "
    "so every request gets FastAPI's server span beside kaleem_telemetry's and becomes two "
    "server spans. Pass FastAPI(telemetry={'tracing': False}) for one, or leave telemetry= "
    "unset and call instrument_app(app, fastapi_operation_spans=True) to keep FastAPI's "
    "operation spans under ours."
)
_UNREACHABLE_WARNING = (
    "kaleem_telemetry cannot switch off this FastAPI version's own tracing, so every request "
    "may become two traces. Create the application with FastAPI(telemetry={'tracing': False, "
    "'metrics': False, 'logs': False})."
)


def tame(app: Any, *, operation_spans: bool) -> None:
    """Make FastAPI's own telemetry fit ours on ``app`` (see the module docstring).

    Args:
        app: A FastAPI application (any other application is left alone).
        operation_spans: Keep FastAPI's operation spans, under our server span.
    """
    if not _compat.fastapi_has_native_telemetry(app):
        return
    config = _compat.fastapi_telemetry_config(app)
    if config is None:
        _LOGGER.warning(_UNREACHABLE_WARNING)
        return
    if _compat.fastapi_telemetry_is_default(config):
        config.update(
            tracing=operation_spans,
            operation_spans=operation_spans,
            tracer_provider=OperationSpansOnly() if operation_spans else None,
            metrics=False,
            logs=False,
            auto_configure=False,
        )
        return
    if config.get("tracing") and not isinstance(config.get("tracer_provider"), OperationSpansOnly):
        _LOGGER.warning(_SPLIT_WARNING)
    if config.get("logs") and not isinstance(
        config.get("logger_provider"), RedactingLoggerProvider
    ):
        config["logger_provider"] = RedactingLoggerProvider(config.get("logger_provider"))


class OperationSpansOnly(trace.TracerProvider):
    """A tracer provider for FastAPI that keeps its operation spans and drops its server span.

    Its tracers start every span on the global tracer provider, except a
    SERVER span: that one is a non-recording span with no context, so FastAPI
    still runs as it would, our middleware's span is the request's only server
    span, and FastAPI's operation spans (started as the current span's
    children) nest under ours.
    """

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Any = None,
    ) -> trace.Tracer:
        """Return a tracer that drops SERVER spans and delegates the rest."""
        return _OperationTracer(
            instrumenting_module_name, instrumenting_library_version, schema_url
        )


class _OperationTracer(trace.Tracer):
    def __init__(self, name: str, version: str | None, schema_url: str | None) -> None:
        self._name = name
        self._version = version
        self._schema_url = schema_url
        self._provider: Any = None
        self._delegate: trace.Tracer | None = None

    def _tracer(self) -> trace.Tracer:
        provider = trace.get_tracer_provider()
        if provider is not self._provider or self._delegate is None:
            self._delegate = provider.get_tracer(self._name, self._version, self._schema_url)
            self._provider = provider
        return self._delegate

    def start_span(self, name: str, *args: Any, **kwargs: Any) -> Span:
        if _kind(args, kwargs) is SpanKind.SERVER:
            return INVALID_SPAN
        return self._tracer().start_span(name, *args, **kwargs)

    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self, name: str, *args: Any, **kwargs: Any
    ) -> Iterator[Span]:
        if _kind(args, kwargs) is SpanKind.SERVER:
            yield INVALID_SPAN
            return
        with self._tracer().start_as_current_span(name, *args, **kwargs) as span:
            yield span


def _kind(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    # start_span(name, context=None, kind=SpanKind.INTERNAL, ...): kind is the second.
    return args[1] if len(args) > 1 else kwargs.get("kind", SpanKind.INTERNAL)


class RedactingLoggerProvider:
    """A logger provider for FastAPI whose loggers redact every record before it is emitted.

    FastAPI's OTel log records carry exception messages and stack traces (which
    can hold input values). Its loggers turn the exception into the standard
    ``exception.*`` attributes themselves, redacted, and redact the body and the
    other attributes, then emit on the application's provider (or the global one).

    Args:
        provider: The provider FastAPI was given; the global one when ``None``.
    """

    def __init__(self, provider: Any = None) -> None:
        self._provider = provider

    def _target(self) -> Any:
        if self._provider is not None:
            return self._provider
        return _compat.global_logger_provider()

    def get_logger(self, name: str, version: str | None = None, *args: Any, **kwargs: Any) -> Any:
        """Return a redacting logger over the target provider's logger of that name."""
        return _RedactingLogger(self, name, version, args, kwargs)

    def add_log_record_processor(self, processor: Any) -> None:
        """Add a processor to the target provider (FastAPI's ``auto_configure`` calls this)."""
        self._target().add_log_record_processor(processor)


class _RedactingLogger:
    def __init__(
        self,
        provider: RedactingLoggerProvider,
        name: str,
        version: str | None,
        args: Sequence[Any],
        kwargs: dict[str, Any],
    ) -> None:
        self._provider = provider
        self._args = (name, version, *args)
        self._kwargs = kwargs

    def emit(self, record: Any = None, **fields: Any) -> None:
        from kaleem_telemetry.redaction import redact, redact_attributes

        attributes = dict(fields.get("attributes") or {})
        exception = fields.pop("exception", None)
        if exception is not None:
            attributes["exception.type"] = type(exception).__qualname__
            attributes["exception.message"] = str(exception)
            attributes["exception.stacktrace"] = "".join(
                traceback.format_exception(type(exception), exception, exception.__traceback__)
            )
        if attributes:
            fields["attributes"] = redact_attributes(attributes)
        body = fields.get("body")
        if body is not None:
            fields["body"] = redact(body)
        logger = self._provider._target().get_logger(*self._args, **self._kwargs)
        if record is not None:
            logger.emit(record, **fields)
        else:
            logger.emit(**fields)
