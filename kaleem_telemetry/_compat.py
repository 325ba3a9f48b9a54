"""Every touch of another library's private names, each with a public fallback.

Upgrades change private names without notice. Each function here names what it
relies on, degrades to a documented public behaviour when that is gone, and is
pinned by a canary test (``tests/test_compat.py``) that fails, naming the
library version, when an upgrade changes it.
"""

from __future__ import annotations

import collections
import os
import sys
from typing import Any

__all__ = [
    "FASTAPI_TELEMETRY_DEFAULTS",
    "SDK_SPAN",
    "batch_span_queue",
    "fastapi_has_native_telemetry",
    "fastapi_telemetry_config",
    "fastapi_telemetry_is_default",
    "global_logger_provider",
    "metric_labelnames",
    "prometheus_is_multiprocess",
    "prometheus_sync_value_class",
    "registered_collector",
    "reset_global_tracer_provider",
    "sentry_has_data_collection",
    "sentry_transport_class",
    "set_span_attributes",
]

#: FastAPI's ``telemetry=`` settings when the application passed none (0.165).
FASTAPI_TELEMETRY_DEFAULTS: dict[str, Any] = {
    "tracer_provider": None,
    "meter_provider": None,
    "logger_provider": None,
    "tracing": True,
    "metrics": True,
    "logs": True,
    "operation_spans": True,
    "exclude": None,
}


def fastapi_has_native_telemetry(app: Any) -> bool:
    """Return whether ``app`` is a FastAPI that traces by itself (FastAPI 0.165 and later).

    Public signs only: the application is a FastAPI, and FastAPI's public
    ``fastapi.telemetry`` module (which its application module imports) exists.
    """
    is_fastapi = any(cls.__module__.partition(".")[0] == "fastapi" for cls in type(app).__mro__)
    return is_fastapi and "fastapi.telemetry" in sys.modules


def fastapi_telemetry_config(app: Any) -> dict[str, Any] | None:
    """Return the live ``telemetry=`` settings of a FastAPI application, or ``None``.

    FastAPI keeps what ``FastAPI(telemetry={...})`` was given, merged over its
    defaults, in the private dict ``app._telemetry``, and its request handler
    reads that same dict on every request; changing it in place changes what
    the application records from its next request on. There is no public way
    after construction: the public one is ``FastAPI(telemetry=...)``, which
    `kaleem_telemetry.instrument_app` names in its warning when this returns
    ``None`` on a FastAPI that traces by itself.
    """
    config: object = getattr(app, "_telemetry", None)
    read_per_request = getattr(getattr(app, "_native_telemetry", None), "config", None)
    if not isinstance(config, dict) or id(read_per_request) != id(config):
        return None
    return config if all(key in config for key in FASTAPI_TELEMETRY_DEFAULTS) else None


def fastapi_telemetry_is_default(config: dict[str, Any]) -> bool:
    """Return whether ``config`` is FastAPI's default, as if the application passed none."""
    auto = os.getenv("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true"
    return config.get("auto_configure", auto) == auto and all(
        config[key] is value if value is None or isinstance(value, bool) else config[key] == value
        for key, value in FASTAPI_TELEMETRY_DEFAULTS.items()
    )


# -- OpenTelemetry SDK: span attribute store -------------------------------------
#
# Relies on: the SDK span class ``opentelemetry.sdk.trace._Span``, its private
# attribute store ``span._attributes`` (a ``BoundedAttributes`` whose private
# ``_dict`` holds the values and ``_immutable`` flag forbids writes) and its
# private name ``span._name``. Decided once, at import, by a probe on a real span.
# Fallback: ``span.set_attributes()`` / ``span.update_name()``, the public path
# (about 10,000 CPU instructions more per attribute).

#: Attribute value types the SDK stores unchanged (its validation returns them as they are).
_PLAIN_VALUE_TYPES = (str, int, bool, float)


def _probe_span_store() -> tuple[type | None, type | None]:
    """Return the SDK span and store classes if the store behaves as the fast path expects."""
    try:
        from opentelemetry.attributes import BoundedAttributes
        from opentelemetry.sdk import trace as sdk_trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON

        span_class: Any = getattr(sdk_trace, "_Span", None)
        provider = sdk_trace.TracerProvider(
            sampler=ALWAYS_ON, resource=Resource({}), shutdown_on_exit=False
        )
        if getattr(provider, "_disabled", False) is True:
            # OTEL_SDK_DISABLED=true at import: the probe still needs a real span
            # (the private switch ``TracerProvider._disabled``; where it is gone
            # the probe fails and spans take the public path).
            provider._disabled = False
        span: Any = provider.get_tracer("kaleem_telemetry.compat").start_span("probe")
        store = span._attributes
        ok = (
            span_class is not None
            and type(span) is span_class
            and type(store) is BoundedAttributes
            and type(store._dict) is dict
            and store._immutable is False
        )
        if ok:
            store._dict["probe"] = "value"
            span._name = "renamed"
            ok = span.attributes.get("probe") == "value" and span.name == "renamed"
        span.end()
        ok = ok and span.attributes.get("probe") == "value" and span.name == "renamed"
    except Exception:  # noqa: BLE001 - any surprise means: use the public path.
        return None, None
    return (span_class, BoundedAttributes) if ok else (None, None)


#: The SDK span class whose private store `set_span_attributes` writes into, or
#: ``None`` when the probe at import found it changed (then every span takes the
#: public path).
SDK_SPAN: Any
_SPAN_STORE: Any
SDK_SPAN, _SPAN_STORE = _probe_span_store()


def set_span_attributes(span: Any, attributes: dict[str, Any], name: str | None = None) -> None:
    """Set ``attributes`` (and rename to ``name``) on a live span, as ``set_attributes`` would.

    For values the library made itself. On an SDK span whose attribute store has
    room and no value-length limit, the values go straight into the private store
    (``span._attributes._dict``, and ``span._name``): the SDK would return plain
    ``str``/``int``/``bool``/``float`` values unchanged after checking them one by
    one under two locks, which is about 10,000 CPU instructions per attribute.
    Anything else (another span class, a value of another type, an attribute count
    or length limit in force, an SDK whose internals the import-time probe found
    changed) takes the public ``set_attributes``/``update_name``.

    Args:
        span: The span, not yet ended.
        attributes: The attributes.
        name: A new span name, or ``None`` to keep it.
    """
    if type(span) is SDK_SPAN:
        try:
            store = span._attributes
            if type(store) is _SPAN_STORE and store.max_value_len is None:
                values = store._dict
                maxlen = store.maxlen
                if (
                    not store._immutable
                    and type(values) is dict
                    and (maxlen is None or len(values) + len(attributes) <= maxlen)
                ):
                    for value in attributes.values():
                        if type(value) not in _PLAIN_VALUE_TYPES:
                            break
                    else:
                        # One dict update: atomic under the GIL for str keys, so no
                        # lock is needed against another thread setting attributes.
                        values.update(attributes)
                        if name is not None:
                            span._name = name
                        return
        except AttributeError:
            pass  # a span built differently from the probed one: the public path
    span.set_attributes(attributes)
    if name is not None:
        span.update_name(name)


# -- OpenTelemetry SDK: batch span processor queue -----------------------------------
#
# Relies on: the bounded deque of queued spans, ``processor._batch_processor._queue``
# (SDK 1.28 and later) or ``processor.queue`` (1.27 and earlier).
# Fallback: ``None``: spans dropped on a full queue are not counted (the SDK's own
# rate-limited "dropping span" warning still appears).


def batch_span_queue(processor: Any) -> Any:
    """Return the bounded deque a ``BatchSpanProcessor`` queues spans in, or ``None``.

    The deque lives as long as the processor (a fork clears it in place), so it is
    looked up once per processor.
    """
    inner = getattr(processor, "_batch_processor", None)
    queue = getattr(inner, "_queue", None) if inner is not None else None
    if queue is None:
        queue = getattr(processor, "queue", None)
    if isinstance(queue, collections.deque) and isinstance(queue.maxlen, int):
        return queue
    return None


# -- OpenTelemetry API: the set-once global tracer provider --------------------------
#
# Relies on: ``opentelemetry.trace._TRACER_PROVIDER`` and its set-once guard
# ``opentelemetry.trace._TRACER_PROVIDER_SET_ONCE`` (an ``opentelemetry.util._once.Once``).
# Fallback: none public exists; the provider stays installed (returns ``False``)
# and the next configuration hooks into it as into a provider installed by others.


def reset_global_tracer_provider() -> bool:
    """Unset OpenTelemetry's global tracer provider (tests only); return whether it was."""
    from opentelemetry import trace

    try:
        from opentelemetry.util._once import Once
    except ImportError:
        return False
    if not hasattr(trace, "_TRACER_PROVIDER") or not isinstance(
        getattr(trace, "_TRACER_PROVIDER_SET_ONCE", None), Once
    ):
        return False
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    return True


# -- prometheus-client -----------------------------------------------------------------
#
# Relies on: ``CollectorRegistry._names_to_collectors`` (name -> collector),
# ``MetricWrapperBase._labelnames``, and ``prometheus_client.values.ValueClass``,
# ``values.MutexValue`` and ``values.get_value_class()`` (the value class chosen
# from ``PROMETHEUS_MULTIPROC_DIR`` when ``prometheus_client.values`` is imported).


def registered_collector(registry: Any, name: str) -> Any:
    """Return the collector registered in ``registry`` under ``name``, or ``None``.

    Fallback when the private map is gone: ``None`` (the caller then counts in an
    unregistered metric).
    """
    names = getattr(registry, "_names_to_collectors", None)
    return names.get(name) if isinstance(names, dict) else None


def metric_labelnames(metric: Any) -> tuple[str, ...] | None:
    """Return the label names a prometheus_client metric was created with, or ``None``.

    Fallback when ``_labelnames`` is gone: ``None``; callers that created the
    metric pass the label names they gave it instead.
    """
    names = getattr(metric, "_labelnames", None)
    if isinstance(names, (tuple, list)) and all(isinstance(n, str) for n in names):
        return tuple(names)
    return None


def _multiproc_dir() -> str | None:
    # prometheus_client still honours the deprecated lower-case spelling.
    lower = os.environ.get("prometheus_multiproc_dir")  # noqa: SIM112
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or lower


#: What prometheus_client's values module offered at its import, or ``None`` when
#: its private value-class switch is gone.
_VALUES: Any = None


def _prometheus_values() -> Any:
    global _VALUES
    if _VALUES is None:
        from prometheus_client import values

        usable = all(hasattr(values, n) for n in ("ValueClass", "MutexValue", "get_value_class"))
        _VALUES = values if usable else False
    return _VALUES or None


def prometheus_is_multiprocess() -> bool:
    """Return whether prometheus_client stores values in ``PROMETHEUS_MULTIPROC_DIR`` files.

    Fallback when ``values.ValueClass`` is gone: whether the variable is set now.
    """
    values = _prometheus_values()
    if values is None:
        return _multiproc_dir() is not None
    return bool(values.ValueClass is not values.MutexValue)


def prometheus_sync_value_class() -> bool:
    """Make prometheus_client's value class follow the environment; return whether it changed.

    prometheus_client reads ``PROMETHEUS_MULTIPROC_DIR`` once, when
    ``prometheus_client.values`` is imported, and every metric child created
    afterwards takes ``values.ValueClass``. Re-deriving that module attribute is
    how prometheus_client's own multiprocess tests switch modes. Fallback when it
    is gone: nothing changes (the mode stays what it was at import).
    """
    values = _prometheus_values()
    if values is None:
        return False
    wanted = _multiproc_dir() is not None
    if wanted == prometheus_is_multiprocess():
        return False
    values.ValueClass = values.get_value_class()
    return True


# -- sentry-sdk --------------------------------------------------------------------------
#
# Relies on: the class attribute ``sentry_sdk.transport.HttpTransport.TIMEOUT`` (the
# request timeout, seconds, read when its connection pool is built) and the options
# map ``sentry_sdk.consts.DEFAULT_OPTIONS``.


def sentry_transport_class(timeout: int) -> type[Any] | None:
    """Return sentry-sdk's HTTP transport with a request timeout of ``timeout`` s, or ``None``.

    Fallback when ``HttpTransport.TIMEOUT`` is gone: ``None``, so sentry-sdk picks
    its own transport and timeout (shutdown stays bounded by the caller's deadline).
    """
    from sentry_sdk.transport import HttpTransport

    if not isinstance(getattr(HttpTransport, "TIMEOUT", None), (int, float)):
        return None

    class BoundedHttpTransport(HttpTransport):
        """sentry-sdk's transport with a request timeout short enough for shutdown."""

        TIMEOUT = timeout

    return BoundedHttpTransport


def sentry_has_data_collection() -> bool:
    """Return whether sentry-sdk has the ``data_collection`` option (which replaces PII flags).

    Fallback when ``DEFAULT_OPTIONS`` is gone: ``True``, so ``send_default_pii``
    is not passed; it defaults to ``False`` in every sentry-sdk 2, so no PII either way.
    """
    try:
        from sentry_sdk.consts import DEFAULT_OPTIONS
    except ImportError:
        return True
    if not isinstance(DEFAULT_OPTIONS, dict) or "dsn" not in DEFAULT_OPTIONS:
        return True
    return "data_collection" in DEFAULT_OPTIONS


# -- OpenTelemetry API: the logs API ---------------------------------------------------
#
# Relies on: ``opentelemetry._logs.get_logger_provider()``, the global logger
# provider of OpenTelemetry's logs API, whose module is still private-named.
# Fallback: a provider whose loggers drop what they are given (OpenTelemetry log
# records then go nowhere, as with no logger provider configured).


class _DroppingLogger:
    def emit(self, *args: Any, **kwargs: Any) -> None:
        return None


class _DroppingLoggerProvider:
    def get_logger(self, *args: Any, **kwargs: Any) -> _DroppingLogger:
        return _DroppingLogger()

    def add_log_record_processor(self, processor: Any) -> None:
        return None


def global_logger_provider() -> Any:
    """Return OpenTelemetry's global logger provider, or one that drops everything."""
    try:
        from opentelemetry import _logs
    except ImportError:
        return _DroppingLoggerProvider()
    get = getattr(_logs, "get_logger_provider", None)
    return get() if callable(get) else _DroppingLoggerProvider()
