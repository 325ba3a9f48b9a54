"""Structured logs: one JSON line per event, from structlog and stdlib `logging` alike.

`configure_logging()` (called by `setup_telemetry()`) points structlog at one
pipeline object and puts one handler on the root logger that feeds stdlib records
into the *same* pipeline, so uvicorn's, gunicorn's and every library's records come
out in the same shape as ``get_logger().info(...)``.

structlog is configured with a single processor, a `_Pipeline` instance whose state
`configure_logging()` replaces. Loggers are cached on first use for speed, and a
logger created at import time (``log = get_logger()`` at module level, before
`setup_telemetry()`) still reaches the configured pipeline, redaction included,
because what it caches is that one object.

Output goes to whatever ``sys.stdout`` is at the time of the write, one line per
event, flushed, under a lock so lines from threads never interleave.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, TextIO

import structlog

from kaleem_telemetry._exporter_logs import ExporterLogLimit
from kaleem_telemetry._guard import internal_errors, report_internal_error
from kaleem_telemetry._processors import EventShaper, render_json
from kaleem_telemetry.redaction import get_redactor

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext
    from structlog.typing import FilteringBoundLogger

    from kaleem_telemetry.config import TelemetryConfig

__all__ = ["get_logger"]

#: The logger name of the web middleware's one-per-request ``http_request`` event.
ACCESS_LOGGER = "kaleem_telemetry.access"

#: A function that sees every emitted event (shaped and redacted) and its exc_info.
LogTap = Callable[[Mapping[str, Any], Any], None]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
#: stdlib loggers whose output our access event replaces (they print raw query strings).
_SILENCED_LOGGERS = ("uvicorn.access", "gunicorn.access")
#: stdlib loggers that servers give handlers of their own; they must propagate to ours.
_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.asgi", "gunicorn", "gunicorn.error")
#: LogRecord attributes that are not event keys, plus uvicorn's ``color_message``
#: (the same message again, with terminal escape codes).
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()
    | {"message", "asctime", "taskName", "color_message"}
)

#: The access event's keys the middleware makes itself; the rest come from the request.
_ACCESS_TRUSTED = frozenset({"event", "method", "route", "status_code", "duration_ms"})

_STATE_LOCK = threading.Lock()
_WRITE_LOCK = threading.Lock()


class _Pipeline:
    """The one processor structlog calls: shape, tap, render."""

    __slots__ = ("level", "render", "shaper", "taps")

    def __init__(self) -> None:
        self.level = logging.INFO
        self.shaper = EventShaper("unknown_service", "development")
        self.render: Callable[[Mapping[str, Any]], str] = render_json
        self.taps: tuple[LogTap, ...] = ()

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> str:
        # Calls below the level never get here: `_BoundLogger`'s methods for
        # them do nothing.
        if method_name == "exception":
            event_dict.setdefault("exc_info", True)
        return self.process(logger, method_name, event_dict)

    def process(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> str:
        shaped = self.shaper(logger, method_name, event_dict)
        if self.taps:
            self.tap(shaped, event_dict.get("exc_info"))
        return self.render(shaped)

    def tap(self, shaped: Mapping[str, Any], exc_info: Any) -> None:
        """Hand a shaped event to every tap; a tap that raises is logged and skipped."""
        for tap in self.taps:
            try:
                tap(shaped, exc_info)
            except Exception:  # noqa: BLE001 - the guard logs it; the caller must not see it.
                report_internal_error("log tap")


_PIPELINE = _Pipeline()


class _BoundLogger(structlog.make_filtering_bound_logger(logging.NOTSET)):  # type: ignore[misc]
    """The one wrapper class of our structlog loggers, filtering at the configured level.

    structlog's filtering bound loggers make a call below their level a method
    that returns at once. Each of their classes is fixed at one level, and a
    logger cached on first use keeps its class, so a module-level logger would
    keep the level it was first used at; `_filter_at` instead gives this one
    class the methods of the configured level's class.
    """


def _filter_at(level: int) -> None:
    """Make `_BoundLogger` (and every logger made with it) filter at ``level``."""
    for name, method in vars(structlog.make_filtering_bound_logger(level)).items():
        if not name.startswith("__"):
            setattr(_BoundLogger, name, method)
    # structlog's own methods do ``event % args``, which raises into the caller
    # on a bad format ("100% done for %s"); the enabled levels' sync methods are
    # replaced by ones that never do.
    for name, method_level in _METHOD_LEVELS.items():
        if method_level >= level:
            setattr(_BoundLogger, name, _log_method(_METHOD_NAMES[name]))
    if level <= logging.ERROR:
        _BoundLogger.exception = _exception_method


#: The sync methods of a filtering bound logger, and the level each logs at.
_METHOD_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "msg": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}
#: The level name each method hands to the pipeline (structlog's aliases resolved).
_METHOD_NAMES = {"msg": "info", "warn": "warning", "fatal": "critical"}
for _name in _METHOD_LEVELS:
    _METHOD_NAMES.setdefault(_name, _name)


def _log_method(name: str) -> Callable[..., Any]:
    def method(self: Any, event: Any, *args: Any, **kw: Any) -> Any:
        if args:
            event = _interpolate(event, args, kw)
        return self._proxy_to_logger(name, event, **kw)

    method.__name__ = name
    return method


def _exception_method(self: Any, event: Any, *args: Any, **kw: Any) -> Any:
    kw.setdefault("exc_info", True)
    if args:
        event = _interpolate(event, args, kw)
    return self._proxy_to_logger("error", event, **kw)


def _interpolate(event: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    """Return ``event % args`` as structlog does; on an error, ``event`` as it is.

    The arguments are redacted before they are formatted: once ``%s`` has turned
    ``{"password": ["a", "b"]}`` into text, no key says which part was secret.
    When the format fails the arguments are kept under ``positional_args`` (a
    field, so redacted like the others) and the call does not raise.
    """
    try:
        redacted = _redacted_args(args)
        if len(redacted) == 1 and isinstance(redacted[0], Mapping) and redacted[0]:
            return event % redacted[0]
        return event % redacted
    except Exception:  # noqa: BLE001 - a log call must never raise into its caller.
        kw["positional_args"] = list(args)
        return event


def _redacted_args(args: Any) -> Any:
    """Redact %-format arguments (a tuple, or the mapping of a stdlib record).

    Returns the same object when nothing is secret. Should the redactor fail, it
    answers with its error marker, which then stands for every argument (failing
    closed, never formatting an argument it could not read).
    """
    redacted = get_redactor().redact(args)
    if isinstance(args, tuple) and not isinstance(redacted, tuple):
        return (redacted,) * len(args)
    return redacted


class _StdoutLogger:
    """Write rendered lines to the current ``sys.stdout``, one flushed line each.

    Its ``name`` is the ``logger`` key of the events logged through it.
    """

    __slots__ = ("name",)

    def __init__(self, name: str = "app") -> None:
        self.name = name

    def msg(self, line: str) -> None:
        stream: TextIO = sys.stdout
        with _WRITE_LOCK:
            try:
                stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError):
                # stdout closed or gone (a daemon, a torn-down test): dropping the
                # line is the only thing that keeps the caller running.
                pass

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _logger_factory(*args: Any) -> _StdoutLogger:
    return _StdoutLogger(str(args[0])) if args else _StdoutLogger()


class _BridgeHandler(logging.Handler):
    """Feed stdlib `logging` records into the structlog pipeline."""

    def emit(self, record: logging.LogRecord) -> None:
        with internal_errors("stdlib log bridge"):
            event_dict: dict[str, Any] = {"event": _record_message(record)}
            for key, value in record.__dict__.items():
                if key not in _RECORD_ATTRS and not key.startswith("_"):
                    # ``event`` is the message; an ``extra`` of that name is a
                    # field like the other fixed names (see EventShaper.shape).
                    event_dict["field_event" if key == "event" else key] = value
            if record.exc_info and record.exc_info[0] is not None:
                event_dict["exc_info"] = record.exc_info
            if record.stack_info:
                event_dict["stack_info"] = True
            method = record.levelname.lower()
            # The record's logger name travels as the logger object's, like a
            # structlog logger's: an ``extra={"logger": ...}`` cannot replace it.
            line = _PIPELINE.process(_StdoutLogger(record.name), method, event_dict)
            _BRIDGE_WRITER.msg(line)


_BRIDGE = _BridgeHandler()
# A collector that is down must not turn every failed export into a log line.
_BRIDGE.addFilter(ExporterLogLimit())
_BRIDGE_WRITER = _StdoutLogger("logging")
_EVENT_WRITER = _StdoutLogger("event")
_saved_root: tuple[list[logging.Handler], int] | None = None
_saved_servers: dict[str, tuple[list[logging.Handler], bool, bool]] = {}


def get_logger(name: str | None = None, **initial_values: Any) -> FilteringBoundLogger:
    """Return a structlog logger that writes through the telemetry pipeline.

    Safe to call at import time, before `setup_telemetry()`: the logger looks up
    the pipeline when it first logs, and the pipeline is the configured one from
    then on.

    Args:
        name: The ``logger`` key of its events; defaults to ``"app"``.
        **initial_values: Values bound on the logger.

    Returns:
        A structlog filtering bound logger (``info``, ``warning``, ``error``,
        ``exception``, ``bind``, ...); calls below the configured level do nothing.
    """
    _ensure_structlog()
    # The name travels as a logger-factory argument: structlog reserves the
    # ``logger`` keyword, and the shaper reads the name off the logger object.
    logger: FilteringBoundLogger = structlog.get_logger(name or "app", **initial_values)
    return logger


def emit_event(
    logger_name: str,
    level: str,
    event: str,
    fields: Mapping[str, Any],
    *,
    trusted: frozenset[str] = frozenset(),
    span_context: SpanContext | None = None,
) -> None:
    """Emit one event through the pipeline without a structlog logger.

    For hot paths that log once per request (the middleware's access event): it
    skips structlog's bound-logger machinery, and the redactor skips the
    ``trusted`` keys, whose values the caller produced itself (a status code, a
    route template), never copied from a request. Never raises.

    Args:
        logger_name: The ``logger`` key.
        level: ``"debug"``, ``"info"``, ``"warning"``, ``"error"`` or ``"critical"``.
        event: The ``event`` key.
        fields: The event's own keys (no ``exc_info``).
        trusted: Keys of ``fields`` the redactor need not see; ``"event"`` among
            them marks the event name as a literal of the library's.
        span_context: The span the event belongs to, when the caller holds it;
            the current span when ``None``.
    """
    _emit(logger_name, level, event, fields, trusted, span_context)


def emit_access(
    level: str,
    method: str,
    route: str,
    path: str,
    status_code: int,
    duration_ms: float,
    client_ip: str | None,
    request_id: str,
    span_context: SpanContext,
) -> None:
    """Emit the web middleware's ``http_request`` access event (docs/reference.md, Logs).

    What `emit_event` writes for the access event's keys, in their order, with
    the method, route, status and duration trusted. Never raises.

    Args:
        level: ``"info"``, ``"warning"`` or ``"error"``.
        method: The normalised method label.
        route: The route template.
        path: The raw path.
        status_code: The response status.
        duration_ms: The duration in milliseconds.
        client_ip: The peer address, if known.
        request_id: The request id.
        span_context: The request span's context.
    """
    fields = {
        "method": method,
        "route": route,
        "path": path,
        "status_code": status_code,
        "duration_ms": duration_ms,
        "client_ip": client_ip,
        "request_id": request_id,
    }
    _emit(ACCESS_LOGGER, level, "http_request", fields, _ACCESS_TRUSTED, span_context)


def _emit(
    logger_name: str,
    level: str,
    event: str,
    fields: Mapping[str, Any],
    trusted: frozenset[str],
    span_context: SpanContext | None,
) -> None:
    """Shape an event with the pipeline's shaper, hand it to the taps, write it."""
    # Positional arguments throughout: the access event is logged once per request.
    pipeline = _PIPELINE
    if _LEVELS.get(level, logging.INFO) < pipeline.level:
        return
    try:
        shaped = pipeline.shaper.shape(logger_name, level, event, fields, trusted, span_context)
        if pipeline.taps:
            pipeline.tap(shaped, None)
        _EVENT_WRITER.msg(pipeline.render(shaped))
    except Exception:  # noqa: BLE001 - the guard logs it; the caller must not see it.
        report_internal_error("log event")


def add_tap(tap: LogTap) -> Callable[[], None]:
    """Call ``tap(event_dict, exc_info)`` for every emitted event; return a remover.

    The event dict is the shaped, redacted one that is about to be rendered. A
    tap that raises is logged and ignored.

    Args:
        tap: The callback.
    """
    with _STATE_LOCK:
        _PIPELINE.taps = (*_PIPELINE.taps, tap)

    def remove() -> None:
        with _STATE_LOCK:
            _PIPELINE.taps = tuple(t for t in _PIPELINE.taps if t is not tap)

    return remove


def configure_logging(config: TelemetryConfig, *, stream: TextIO | None = None) -> None:
    """Configure structlog and the stdlib root logger from ``config``.

    Args:
        config: The telemetry configuration (level, format, service, environment).
        stream: The stream whose terminal-ness decides the ``auto`` format;
            defaults to ``sys.stdout``.
    """
    level = _LEVELS[config.log_level]
    use_console = config.log_format == "console" or (
        config.log_format == "auto" and _is_tty(stream or sys.stdout)
    )
    with _STATE_LOCK:
        _PIPELINE.level = level
        _PIPELINE.shaper = EventShaper(
            config.service_name, config.environment, structure_exceptions=not use_console
        )
        _PIPELINE.render = _console_renderer() if use_console else render_json
    _ensure_structlog(force=True)
    _configure_stdlib(level)


def reset_for_tests() -> None:
    """Restore structlog's defaults and the root logger as they were before setup."""
    global _saved_root
    with _STATE_LOCK:
        _PIPELINE.__init__()  # type: ignore[misc]
    structlog.reset_defaults()
    _filter_at(_PIPELINE.level)
    root = logging.getLogger()
    if _BRIDGE in root.handlers:
        root.removeHandler(_BRIDGE)
    if _saved_root is not None:
        handlers, level = _saved_root
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
        _saved_root = None
    for name, (handlers, propagate, disabled) in _saved_servers.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.disabled = disabled
    _saved_servers.clear()


def _ensure_structlog(*, force: bool = False) -> None:
    if not force and structlog.is_configured():
        return
    _filter_at(_PIPELINE.level)
    structlog.configure(
        processors=[_PIPELINE],
        wrapper_class=_BoundLogger,
        context_class=dict,
        logger_factory=_logger_factory,
        cache_logger_on_first_use=True,
    )


def _configure_stdlib(level: int) -> None:
    global _saved_root
    root = logging.getLogger()
    if _saved_root is None:
        _saved_root = (list(root.handlers), root.level)
    # Replace whatever printed before us (basicConfig, a framework's default
    # handler): keeping it would print every record twice in two shapes.
    for handler in list(root.handlers):
        if handler is not _BRIDGE:
            root.removeHandler(handler)
    if _BRIDGE not in root.handlers:
        root.addHandler(_BRIDGE)
    root.setLevel(level)
    for name in _SERVER_LOGGERS:
        logger = logging.getLogger(name)
        _saved_servers.setdefault(name, (list(logger.handlers), logger.propagate, logger.disabled))
        logger.handlers[:] = []
        logger.propagate = True
    for name in _SILENCED_LOGGERS:
        logger = logging.getLogger(name)
        _saved_servers.setdefault(name, (list(logger.handlers), logger.propagate, logger.disabled))
        logger.handlers[:] = []
        logger.propagate = False
        logger.disabled = True


def _record_message(record: logging.LogRecord) -> str:
    try:
        # `LogRecord.getMessage`, with the arguments redacted before they become text.
        message = str(record.msg)
        if record.args:
            message = message % _redacted_args(record.args)
        return message
    except Exception:  # noqa: BLE001 - bad %-args must not lose the record.
        pass
    try:
        return f"{record.msg!s} (bad log arguments)"
    except Exception:  # noqa: BLE001 - nor a message whose __str__ raises.
        return f"<unrepresentable {type(record.msg).__name__}> (bad log message)"


def _is_tty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _console_renderer() -> Callable[[Mapping[str, Any]], str]:
    renderer = structlog.dev.ConsoleRenderer(
        colors=True, exception_formatter=structlog.dev.plain_traceback
    )

    def render(event_dict: Mapping[str, Any]) -> str:
        try:
            return str(renderer(None, "info", dict(event_dict)))
        except Exception:  # noqa: BLE001 - a console render bug must not lose the line.
            return render_json(event_dict)

    return render
