"""Sentry errors, linked to the trace and the request context, with one redaction policy.

`configure_sentry()` turns Sentry on when ``SENTRY_DSN`` is set (docs/reference.md, Sentry):

* ``environment`` and ``release`` come from the configuration;
* every event gets the tags ``service``, ``merchant_id``, ``request_id``, ``route``
  and ``trace_id``, ``user.id`` from the bound ``user_id``, and the OpenTelemetry
  ``trace_id``/``span_id`` as its ``contexts.trace``, so a Sentry issue opens its
  Tempo trace;
* Sentry's own performance tracing stays off (``traces_sample_rate=None``) and
  Sentry adds no ``sentry-trace``/``baggage`` headers to outgoing calls: the W3C
  propagators of OpenTelemetry own that;
* the redactor runs as ``before_send`` and ``before_breadcrumb`` over request data,
  headers, cookies, query strings, extra, contexts, breadcrumbs, messages,
  frame locals and source lines, and hides the value after a secret-looking
  command-line flag in ``sys.argv``, with ``send_default_pii=False``;
* an exception is reported once, however many of Sentry's framework
  integrations, our middleware and our log hook see it;
* log events of level info and above become breadcrumbs, and an error log that
  carries an exception becomes an event (``KALEEM_TELEMETRY_SENTRY_LOG_EVENTS``);
* the transport sends from a background thread with a bounded queue and a short
  timeout, so a Sentry host that is down or slow never slows a request, and
  flush/shutdown are bounded.

sentry_sdk is imported only when Sentry is configured or a hook is added.

Added in 0.1.0.
"""

from __future__ import annotations

import collections
import copy
import logging
import sys
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from opentelemetry import trace

from kaleem_telemetry import _compat
from kaleem_telemetry._guard import internal_errors
from kaleem_telemetry.context import current_request, get_context
from kaleem_telemetry.logs import ACCESS_LOGGER
from kaleem_telemetry.redaction import REDACTED, get_redactor

if TYPE_CHECKING:
    from kaleem_telemetry.config import TelemetryConfig

__all__ = ["capture_exception", "enter_request_scope", "leave_request_scope", "request_scope"]

_LOGGER = logging.getLogger(__name__)

EventHook = Callable[[dict[str, Any]], None]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]

#: Seconds the transport waits for the Sentry host per request (sentry-sdk: 30).
TRANSPORT_TIMEOUT = 5
#: Envelopes queued for the transport thread before new ones are dropped.
TRANSPORT_QUEUE_SIZE = 100

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50}
_SENTRY_LEVELS = {"warn": "warning", "critical": "fatal"}
#: Keys of a shaped log event that are not worth repeating in breadcrumb data.
_LOG_BASE_KEYS = frozenset(
    {
        "event",
        "level",
        "logger",
        "timestamp",
        "service",
        "environment",
        "exception",
        "exc_info",
        "stack_info",
        "stack",
    }
)
_CONTEXT_TAGS = ("merchant_id", "request_id", "route")

_LOCK = threading.RLock()
_HOOKS: tuple[EventHook, ...] = ()
_REDACTED_HINT = "kaleem_telemetry_redacted"
_CONFIG: TelemetryConfig | None = None
_MODE: str | None = None  # None, "dsn" (sending) or "hooks" (local only, no DSN)
_REMOVE_TAP: Callable[[], None] | None = None
_REPORTED_ATTR = "_kaleem_sentry_reported"
_REPORTED: collections.deque[BaseException] = collections.deque(maxlen=64)
_REPORTED_LOCK = threading.Lock()


class SentryComponent:
    """The handle `configure_sentry()` returns: bounded flush and shutdown of the transport."""

    def __init__(self) -> None:
        self._closed = False

    def force_flush(self, timeout: float = 5.0) -> bool:
        """Send the queued events; return ``False`` if that did not finish in ``timeout`` s."""
        if self._closed or _MODE != "dsn":
            return True
        import sentry_sdk

        from kaleem_telemetry._bounded import run_bounded

        client = sentry_sdk.get_client()

        def flush() -> bool:
            client.flush(timeout=timeout)
            return True

        return run_bounded(flush, timeout) is True

    def shutdown(self, timeout: float = 5.0) -> None:
        """Flush and close the Sentry client within ``timeout`` seconds; idempotent."""
        if self._closed:
            return
        self._closed = True
        _close_client(timeout)


def configure_sentry(config: TelemetryConfig) -> SentryComponent | None:
    """Turn Sentry on when ``config.sentry_dsn`` is set.

    Args:
        config: The telemetry configuration.

    Returns:
        The component to flush and shut down, or ``None`` without a DSN.
    """
    global _CONFIG
    with _LOCK:
        _CONFIG = config
        if not config.sentry_dsn:
            if _MODE == "dsn":
                _close_client(config.shutdown_timeout)
            if _HOOKS:
                _start_hook_mode()
            return None
        _init_client(config, dsn=config.sentry_dsn)
        return SentryComponent()


def is_enabled() -> bool:
    """Return whether events are captured (a DSN is configured, or a hook listens)."""
    return _MODE is not None


def capture_exception(exc: BaseException | None = None, **tags: Any) -> str | None:
    """Send an exception to Sentry with the bound context plus ``tags``.

    A no-op when Sentry is off. The same exception object is reported at most
    once, so calling this in an ``except`` block that re-raises is safe.

    Args:
        exc: The exception; the one being handled when ``None``.
        **tags: Extra tags, for example ``job="send_invoice"``.

    Returns:
        The Sentry event id, or ``None`` if nothing was sent.

    Added in 0.1.0.
    """
    if _MODE is None:
        return None
    event_id: str | None = None
    with internal_errors("sentry capture_exception"):
        import sentry_sdk

        if exc is None:
            exc = sys.exc_info()[1]
            if exc is None:
                return None
        with sentry_sdk.new_scope() as scope:
            for key, value in tags.items():
                scope.set_tag(key, str(value))
            event_id = sentry_sdk.capture_exception(exc)
    return event_id


def add_event_hook(hook: EventHook) -> Callable[[], None]:
    """Call ``hook(event)`` with every final, redacted Sentry event; return a remover.

    Works without a DSN and without network: while a hook is registered and
    Sentry is not configured, events are built exactly as they would be sent and
    handed to the hooks only. `kaleem_telemetry.testing.capture_telemetry()` uses
    this.

    Args:
        hook: A callable receiving a copy of the event dict.
    """
    global _HOOKS
    with _LOCK:
        _HOOKS = (*_HOOKS, hook)
        if _MODE is None:
            _start_hook_mode()

    def remove() -> None:
        global _HOOKS
        with _LOCK:
            _HOOKS = tuple(h for h in _HOOKS if h is not hook)
            if not _HOOKS and _MODE == "hooks":
                _close_client(1.0)

    return remove


def enter_request_scope() -> Any:
    """Give the running request or job a Sentry isolation scope of its own.

    The web middleware and job decorators call it when a request starts, so
    breadcrumbs, tags and the user set during one request never reach the error
    report of another (another merchant's, in a multi-tenant service). The new
    scope is a fork of the current isolation scope, so tags set at start-up still
    apply. Only the isolation scope is forked: it is where ``sentry_sdk.set_tag``,
    ``set_user``, ``set_context`` and breadcrumbs go, and Sentry's own
    performance tracing, which would use the current scope, stays off.

    Returns:
        The isolation scope to hand back to `leave_request_scope()`, or ``None``
        when Sentry is off, so the caller pays nothing.
    """
    global _scope_class
    if _MODE is None:
        return None
    scope_class = _scope_class
    if scope_class is None:
        # Looked up once: an import statement on every request costs a
        # sys.modules lookup and a module-lock check each time.
        from sentry_sdk import Scope

        scope_class = _scope_class = Scope
    outer = scope_class.get_isolation_scope()
    scope_class.set_isolation_scope(outer.fork())
    return outer


def leave_request_scope(outer: Any) -> None:
    """Restore the isolation scope `enter_request_scope()` returned (``None``: nothing)."""
    if outer is not None and _scope_class is not None:
        _scope_class.set_isolation_scope(outer)


class _RequestScope:
    __slots__ = ("_outer",)

    def __init__(self) -> None:
        self._outer: Any = None

    def __enter__(self) -> Any:
        self._outer = enter_request_scope()
        return None if _scope_class is None else _scope_class.get_isolation_scope()

    def __exit__(self, *_exc: object) -> None:
        leave_request_scope(self._outer)
        self._outer = None


def request_scope() -> AbstractContextManager[Any] | None:
    """Return a context manager giving its block a Sentry isolation scope, or ``None``.

    The ``with`` form of `enter_request_scope()`; ``None`` when Sentry is off.
    """
    if _MODE is None:
        return None
    return _RequestScope()


_scope_class: Any = None


def record_log(event_dict: Mapping[str, Any], exc_info: Any = None) -> None:
    """Turn a log event into a breadcrumb, or into an event when it carries an exception.

    Registered as a tap of the log pipeline (`kaleem_telemetry.logs.add_tap`) while
    Sentry is on; it receives the shaped, redacted event dict. Events of level
    info and above become breadcrumbs; an error (or critical) event with
    ``exc_info`` becomes a Sentry event when ``sentry_log_events`` is on.

    Args:
        event_dict: The log event, as it is about to be rendered.
        exc_info: The event's ``exc_info``: ``True``, an exception or a
            ``sys.exc_info()`` tuple.
    """
    if _MODE is None or (event_dict.get("logger") == ACCESS_LOGGER and exc_info is None):
        # The access event closes its request: as a breadcrumb it would only ever
        # reach the next request's reports.
        return
    level = _LEVELS.get(str(event_dict.get("level", "info")).lower(), 20)
    if level < logging.INFO:
        return
    import sentry_sdk

    message = str(event_dict.get("event", ""))
    logger_name = str(event_dict.get("logger", "log"))
    sentry_level = _sentry_level(str(event_dict.get("level", "info")).lower())
    info = _exc_info(exc_info)
    log_events = _CONFIG.sentry_log_events if _CONFIG is not None else True
    if info is not None and level >= logging.ERROR and log_events:
        from sentry_sdk.utils import event_from_exception

        client = sentry_sdk.get_client()
        event, hint = event_from_exception(
            info, client_options=client.options, mechanism={"type": "logging", "handled": True}
        )
        event["level"] = sentry_level  # type: ignore[typeddict-item]
        event["logger"] = logger_name
        event["logentry"] = {"message": message}
        extra = {k: v for k, v in event_dict.items() if k not in _LOG_BASE_KEYS}
        if extra:
            event["extra"] = extra
        sentry_sdk.capture_event(event, hint=hint)
        return
    data = {k: v for k, v in event_dict.items() if k not in _LOG_BASE_KEYS}
    sentry_sdk.add_breadcrumb(
        type="log",
        category=logger_name,
        level=sentry_level,
        message=message,
        data=data,
        hint={_REDACTED_HINT: True},
    )


def reset_for_tests() -> None:
    """Close the client, forget hooks and state, so the next test starts clean."""
    global _HOOKS, _CONFIG
    with _LOCK:
        _HOOKS = ()
        if _MODE is not None:
            _close_client(1.0)
        _CONFIG = None
        with _REPORTED_LOCK:
            _REPORTED.clear()
        sentry_sdk = sys.modules.get("sentry_sdk")
        if sentry_sdk is not None:
            # Breadcrumbs and tags live on sentry's process-wide scopes.
            sentry_sdk.get_isolation_scope().clear()
            sentry_sdk.get_current_scope().clear()


# -- client lifecycle -------------------------------------------------------------


def _init_client(config: TelemetryConfig | None, *, dsn: str | None) -> None:
    global _MODE
    import sentry_sdk
    from sentry_sdk.integrations.dedupe import DedupeIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration

    options: dict[str, Any] = {
        "dsn": dsn,
        # OpenTelemetry does tracing: no Sentry transactions, and no sentry-trace /
        # sentry baggage headers added to outgoing requests by Sentry's stdlib/httpx
        # integrations.
        "traces_sample_rate": None,
        "trace_propagation_targets": [],
        "before_send": _before_send,
        "before_breadcrumb": _before_breadcrumb,
        "transport_queue_size": TRANSPORT_QUEUE_SIZE,
        "include_local_variables": True,
        # Sentry's logging integration would turn the same stdlib records into a
        # second event: our log tap (record_log) sees them through the bridge.
        "integrations": [LoggingIntegration(level=None, event_level=None), DedupeIntegration()],
    }
    if not _compat.sentry_has_data_collection():
        # sentry-sdk before data_collection: say no PII explicitly. Newer versions
        # default to no PII and deprecate the flag (a warning we must not cause).
        options["send_default_pii"] = False
    if config is not None:
        options["environment"] = config.effective_sentry_environment
        options["release"] = config.effective_sentry_release
        options["shutdown_timeout"] = min(2.0, config.shutdown_timeout)
    # Sentry's framework integrations (Starlette, FastAPI, Flask, Django, ...) would
    # wrap every application and middleware a second time: our middleware already
    # captures, tags and isolates each request, for a fraction of their cost.
    options["auto_enabling_integrations"] = False
    if dsn:
        transport = _compat.sentry_transport_class(TRANSPORT_TIMEOUT)
        if transport is not None:
            options["transport"] = transport
    else:
        # Hook mode: build events exactly as they would be sent, send nothing,
        # and patch nothing (no framework or excepthook integrations).
        options["transport"] = _null_transport()
        options["default_integrations"] = False
    sentry_sdk.init(**options)
    _MODE = "dsn" if dsn else "hooks"
    _ensure_tap()


def _start_hook_mode() -> None:
    import sentry_sdk

    if sentry_sdk.get_client().is_active():
        # The application initialised Sentry itself; leave its client alone.
        return
    _init_client(_CONFIG, dsn=None)


def _close_client(timeout: float) -> None:
    global _MODE, _REMOVE_TAP
    with _LOCK:
        mode, _MODE = _MODE, None
        remove_tap, _REMOVE_TAP = _REMOVE_TAP, None
    if remove_tap is not None:
        remove_tap()
    if mode is None:
        return
    import sentry_sdk

    from kaleem_telemetry._bounded import run_bounded

    client = sentry_sdk.get_client()
    sentry_sdk.get_global_scope().set_client(None)
    run_bounded(lambda: client.close(timeout=timeout), timeout)
    if _HOOKS and mode == "dsn":
        _start_hook_mode()


def _ensure_tap() -> None:
    global _REMOVE_TAP
    if _REMOVE_TAP is None:
        from kaleem_telemetry import logs

        _REMOVE_TAP = logs.add_tap(record_log)


def _null_transport() -> Any:
    from sentry_sdk.transport import Transport

    class NullTransport(Transport):
        """Accept envelopes and drop them: hooks have already seen the event."""

        def capture_envelope(self, envelope: Any) -> None:
            return None

        def flush(self, timeout: float, callback: Any = None) -> None:
            return None

        def kill(self) -> None:
            return None

    return NullTransport()


# -- event processing ---------------------------------------------------------------


def _before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    try:
        exc = _hint_exception(hint)
        if exc is not None and _already_reported(exc):
            return None
        _enrich(event, exc)
        _redact_event(event)
    except Exception:
        _LOGGER.warning("Could not prepare a Sentry event; it was dropped.", exc_info=True)
        return None
    for hook in _HOOKS:
        with internal_errors("sentry event hook"):
            hook(copy.deepcopy(event))
    return event


def _before_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    if hint and hint.get(_REDACTED_HINT):
        # Built by record_log from an event the log pipeline already redacted.
        return crumb
    try:
        redacted: dict[str, Any] = get_redactor().redact(crumb)
        return redacted
    except Exception:  # noqa: BLE001 - a breadcrumb we cannot redact is not kept.
        return None


def _hint_exception(hint: Mapping[str, Any] | None) -> BaseException | None:
    if not hint:
        return None
    exc_info = hint.get("exc_info")
    if exc_info and isinstance(exc_info[1], BaseException):
        return exc_info[1]
    return None


def never_report(exc: BaseException) -> None:
    """Mark ``exc`` so that no Sentry event is made of it, by us or a log hook.

    `instrument_job` marks a retry signal with it: the library that runs the
    handler may log the exception it sees at error level (aiormq does), and a
    retry is not an error.
    """
    _already_reported(exc)


def _already_reported(exc: BaseException) -> bool:
    # Sentry's DedupeIntegration remembers only the last exception of one
    # context; the same exception seen by a framework integration, our
    # middleware and the log hook in different tasks or threads is still one
    # event. Built-in exceptions cannot be weak-referenced, so the mark is an
    # attribute on the exception, with a short list for the rare ones that
    # refuse attributes.
    with _REPORTED_LOCK:
        if getattr(exc, _REPORTED_ATTR, False) or any(e is exc for e in _REPORTED):
            return True
        try:
            setattr(exc, _REPORTED_ATTR, True)
        except (AttributeError, TypeError):
            _REPORTED.append(exc)
    return False


def _enrich(event: dict[str, Any], exc: BaseException | None) -> None:
    from kaleem_telemetry.tracing import remembered_span_context

    tags = event.get("tags")
    if not isinstance(tags, dict):
        tags = {}
        event["tags"] = tags
    if _CONFIG is not None:
        tags.setdefault("service", _CONFIG.service_name)
    bound = get_context()
    for key in _CONTEXT_TAGS:
        value = bound.get(key)
        if value is not None:
            tags[key] = str(value)
    span = trace.get_current_span()
    span_context = span.get_span_context()
    if "route" not in tags:
        request = current_request()
        route = getattr(request, "route", None) if request is not None else None
        if not route:
            route = getattr(span, "attributes", None) and span.attributes.get("http.route")  # type: ignore[attr-defined]
        if route:
            tags["route"] = str(route)
    if not span_context.is_valid:
        span_context = remembered_span_context(exc) or span_context
    if span_context.is_valid:
        trace_id = format(span_context.trace_id, "032x")
        contexts = event.setdefault("contexts", {})
        contexts["trace"] = {
            "trace_id": trace_id,
            "span_id": format(span_context.span_id, "016x"),
            "type": "trace",
        }
        tags["trace_id"] = trace_id
    user_id = bound.get("user_id")
    if user_id is not None:
        event["user"] = {"id": str(user_id)}


def _redact_event(event: dict[str, Any]) -> None:
    redactor = get_redactor()
    request = event.get("request")
    if isinstance(request, dict):
        request = dict(request)
        if isinstance(request.get("url"), str):
            request["url"] = redactor.redact_url(request["url"])
        if isinstance(request.get("query_string"), str):
            request["query_string"] = redactor.redact_query(request["query_string"])
        if isinstance(request.get("headers"), Mapping):
            request["headers"] = redactor.redact_headers(request["headers"])
        event["request"] = redactor.redact(request)
    extra = event.get("extra")
    if isinstance(extra, dict) and isinstance(extra.get("sys.argv"), list):
        event["extra"] = {**extra, "sys.argv": _redact_argv(extra["sys.argv"])}
    for key in ("extra", "breadcrumbs", "logentry", "tags", "user"):
        if key in event:
            event[key] = redactor.redact(event[key])
    if isinstance(event.get("message"), str):
        event["message"] = redactor.redact_string(event["message"])
    contexts = event.get("contexts")
    if isinstance(contexts, dict):
        event["contexts"] = {
            name: value if name == "trace" else redactor.redact(value)
            for name, value in contexts.items()
        }
    for section in ("exception", "threads"):
        container = event.get(section)
        if not isinstance(container, dict):
            continue
        for value in container.get("values") or ():
            if isinstance(value.get("value"), str):
                value["value"] = redactor.redact_string(value["value"])
            frames = (value.get("stacktrace") or {}).get("frames") or ()
            for frame in frames:
                if "vars" in frame:
                    frame["vars"] = redactor.redact(frame["vars"])
                # Source context: a line such as ``DSN = "postgres://app:pw@db"``
                # carries the secret the frame's locals had hidden.
                if isinstance(frame.get("context_line"), str):
                    frame["context_line"] = redactor.redact_string(frame["context_line"])
                for name in ("pre_context", "post_context"):
                    lines = frame.get(name)
                    if isinstance(lines, list):
                        frame[name] = [
                            redactor.redact_string(line) if isinstance(line, str) else line
                            for line in lines
                        ]


def _redact_argv(argv: list[Any]) -> list[Any]:
    """Hide the value of every secret-looking flag in a command line.

    ``--db-password VALUE``, ``--token=VALUE`` and ``-password VALUE`` are caught:
    a flag's name without its dashes is checked with the redactor's key policy,
    and the value is the part after ``=`` or else the next argument (unless that
    starts with ``--``, another flag). A single-letter flag (``-p``) is left
    alone: it means a port as often as a password. The pattern scan over
    ``extra`` still runs over every argument afterwards.
    """
    redactor = get_redactor()
    out: list[Any] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            hide_next = False
            if isinstance(arg, str) and not arg.startswith("--"):
                out.append(REDACTED)
                continue
        if isinstance(arg, str) and arg.startswith("-"):
            flag, sep, _value = arg.partition("=")
            name = flag.lstrip("-")
            if len(name) > 1 and redactor.is_secret_key(name):
                if sep:
                    out.append(f"{flag}={REDACTED}")
                    continue
                hide_next = True
        out.append(arg)
    return out


def _exc_info(value: Any) -> ExcInfo | None:
    if value is True:
        info = sys.exc_info()
        return info if info[1] is not None else None
    if isinstance(value, BaseException):
        return type(value), value, value.__traceback__
    if isinstance(value, tuple) and len(value) == 3 and isinstance(value[1], BaseException):
        return cast("ExcInfo", value)
    return None


def _sentry_level(level: str) -> str:
    return _SENTRY_LEVELS.get(level, level if level in _LEVELS else "info")
