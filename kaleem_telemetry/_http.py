"""Shared helpers of the ASGI, WSGI and Django middleware.

Everything a request costs twice is here once: the route-template normalisation
(one form for every framework, cached), method and status labels, request ids,
and `HttpRecorder`, which turns one finished request into its RED metrics, its
span attributes and its access-log event.

The per-request path is written for speed: label children are cached, header
names are precomputed bytes, and labels are looked up in dicts instead of built.
Only the rare paths import lazily: trace-context extraction (a request that
carries trace headers) and the Sentry report of a failed request.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from kaleem_telemetry import _setup
from kaleem_telemetry._guard import internal_errors, report_internal_error
from kaleem_telemetry.context import (
    current_request,
    enter_request,
    leave_request,
    pop_context,
    push_context,
)
from kaleem_telemetry.logs import emit_access
from kaleem_telemetry.metrics import get_metrics
from kaleem_telemetry.redaction import get_redactor
from kaleem_telemetry.sentry import enter_request_scope as enter_sentry_scope
from kaleem_telemetry.sentry import leave_request_scope as leave_sentry_scope
from kaleem_telemetry.tracing import set_own_attributes, start_own_span

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from kaleem_telemetry.metrics import TelemetryMetrics

__all__ = [
    "ACTIVE_KEY",
    "DEFAULT_EXCLUDED_PATHS",
    "DEFAULT_REQUEST_ID_HEADER",
    "ERROR_KEY",
    "METHOD_LABELS",
    "OTHER_METHOD",
    "ROUTE_SCOPE_KEY",
    "STANDARD_METHODS",
    "UNMATCHED",
    "HttpRecorder",
    "RequestScope",
    "RequestSettings",
    "access_level",
    "client_ip_from_scope",
    "generate_request_id",
    "normalise_method",
    "remember_route",
    "request_id_or_new",
    "route_template",
    "status_label",
]

#: The methods recorded under their own name; any other becomes `OTHER_METHOD`.
STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
OTHER_METHOD = "_OTHER"
#: The ``route`` label of a request that matched no route.
UNMATCHED = "unmatched"
#: The paths the middleware never traces, logs or counts (docs/reference.md, Endpoints).
DEFAULT_EXCLUDED_PATHS = ("/metrics", "/health/live", "/health/ready")
DEFAULT_REQUEST_ID_HEADER = "X-Request-ID"
#: Scope/environ key where framework glue (Django) leaves the matched route template.
ROUTE_SCOPE_KEY = "kaleem_telemetry.route"
#: Scope/environ key where framework glue leaves an exception the framework handled.
ERROR_KEY = "kaleem_telemetry.error"
#: Scope/environ key set by the ASGI/WSGI middleware, so the Django middleware
#: knows the request is already instrumented.
ACTIVE_KEY = "kaleem_telemetry.active"

#: Method -> its label, for the standard methods (a lookup miss is `OTHER_METHOD`).
METHOD_LABELS = {m: m for m in STANDARD_METHODS}
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_REQUEST_ID_BYTES = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_STATUS_LABELS = {code: str(code) for code in range(100, 600)}
_TEMPLATE_CACHE: dict[str, str] = {}
_TEMPLATE_CACHE_SIZE = 2048
# Starlette ``{name}``/``{name:int}``, Flask/Werkzeug ``<name>``/``<int:name>``/
# ``<any(a,b):name>``, Django ``<name>``/``<int:name>``.
_BRACE_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^{}]*)?\}")
_ANGLE_PARAM = re.compile(r"<(?:[A-Za-z_][A-Za-z0-9_]*(?:\([^)]*\))?:)?([A-Za-z_][A-Za-z0-9_]*)>")
_REGEX_MARKERS = ("^", "$", "(?P<", "(?:", "\\d", "[")
_EMPTY_CONTEXT = Context()
_UUID_VERSION_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID_VERSION_SET = (0x4000 << 64) | (0x8000 << 48)
# A generator of our own: drawing from the module-level one would advance the
# application's (possibly seeded) random sequence on every request. Reseeded from
# os.urandom in forked children, so gunicorn workers forked from one master never
# share a request-id sequence.
_RANDOM = random.Random()
_getrandbits = _RANDOM.getrandbits
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_RANDOM.seed)


def normalise_method(method: str) -> str:
    """Return ``method`` if it is a standard HTTP method, else ``"_OTHER"``.

    Methods are case-sensitive (RFC 9110), so ``"get"`` is ``"_OTHER"``.

    Args:
        method: The request method as received.
    """
    return METHOD_LABELS.get(method, OTHER_METHOD)


def status_label(status: int) -> str:
    """Return the ``status_code`` label for ``status`` (a string, from a table)."""
    label = _STATUS_LABELS.get(status)
    return label if label is not None else str(status)


def access_level(status: int) -> str:
    """Return the access-log level for ``status``: error 5xx, warning 4xx, else info."""
    if status >= 500:
        return "error"
    if status >= 400:
        return "warning"
    return "info"


def generate_request_id() -> str:
    """Return a new request id: 32 hex digits, shaped like a UUID4."""
    value = (_getrandbits(128) & _UUID_VERSION_CLEAR) | _UUID_VERSION_SET
    return f"{value:032x}"


def request_id_or_new(value: str | bytes | None) -> str:
    """Return ``value`` if it is an acceptable request id, else a new one.

    Accepted ids match ``^[A-Za-z0-9._:-]{1,128}$`` (docs/reference.md, Logs), so a caller
    cannot inject log lines, control characters or huge values.

    Args:
        value: The incoming header value (``str`` from WSGI, ``bytes`` from ASGI).
    """
    if value:
        if isinstance(value, bytes):
            if _REQUEST_ID_BYTES.fullmatch(value):
                return value.decode("ascii")
        elif _REQUEST_ID.fullmatch(value):
            return value
    return generate_request_id()


def route_template(raw: str) -> str:
    """Return the route template ``raw`` in the one form of docs/reference.md (Metrics).

    ``/items/{item_id:int}`` (Starlette), ``/items/<int:item_id>`` (Flask) and
    ``items/<int:item_id>/`` (Django) all become ``/items/{item_id}``: a leading
    slash is added and a trailing one dropped, so one endpoint has one label
    whichever framework serves it. Regular-expression routes (Django
    ``re_path``) keep their pattern. Results are cached in a bounded dict.

    Args:
        raw: The framework's route template.
    """
    cached = _TEMPLATE_CACHE.get(raw)
    if cached is not None:
        return cached
    template = _normalise_template(raw)
    if len(_TEMPLATE_CACHE) < _TEMPLATE_CACHE_SIZE:
        _TEMPLATE_CACHE[raw] = template
    return template


def _normalise_template(raw: str) -> str:
    if any(marker in raw for marker in _REGEX_MARKERS):
        return raw
    template = raw
    if "{" in template:
        template = _BRACE_PARAM.sub(r"{\1}", template)
    if "<" in template:
        template = _ANGLE_PARAM.sub(r"{\1}", template)
    if not template.startswith("/"):
        template = "/" + template
    if len(template) > 1 and template.endswith("/"):
        template = template.rstrip("/") or "/"
    return template


def remember_route(raw: str) -> None:
    """Leave the route template ``raw`` on the current request, once routing has matched it."""
    request = current_request()
    if isinstance(request, RequestScope):
        request.route = route_template(raw)


def client_ip_from_scope(scope: Any) -> str | None:
    """Return the peer address of an ASGI scope (``scope["client"][0]``), if known."""
    client = scope.get("client")
    if client:
        host = client[0]
        return host if isinstance(host, str) else None
    return None


class RequestSettings:
    """The configuration-derived settings of one middleware, rebuilt when setup changes.

    Attributes:
        header_name: The request-id header name as configured (``X-Request-ID``).
        header_key: Its lower-case ASGI form, as bytes.
        environ_key: Its WSGI environ form (``HTTP_X_REQUEST_ID``).
        trust_trace_headers: Whether incoming ``traceparent`` headers are trusted.
        config: The live configuration, or ``None`` before setup.
    """

    __slots__ = ("config", "environ_key", "header_key", "header_name", "trust_trace_headers")

    def __init__(self, header_name: str, config: Any) -> None:
        self.header_name = header_name
        self.header_key = header_name.lower().encode("latin-1")
        self.environ_key = "HTTP_" + header_name.upper().replace("-", "_")
        self.trust_trace_headers = bool(getattr(config, "trust_trace_headers", True))
        self.config = config


class RequestScope:
    """What one request binds while it runs: its context values, its span, its Sentry scope.

    Entered when the request starts and closed exactly once when it is recorded,
    by the ASGI, WSGI and Django middleware alike. It is the current request
    (`kaleem_telemetry.context.current_request`) while it runs: framework glue
    leaves the route template on it as soon as routing is done, so a Sentry
    event from inside the handler (a framework's error log) is tagged with it.
    The Sentry isolation scope keeps one request's breadcrumbs and tags out of
    every other request's reports; it costs nothing when Sentry is off.

    Args:
        span: The request's server span, made current.
        request_id: The request id, bound as ``request_id``.
    """

    __slots__ = ("_bound", "_request", "_sentry", "_token", "route", "span")

    def __init__(self, span: Any, request_id: str) -> None:
        self.span = span
        #: The route template, once framework glue knows it before the request ends.
        self.route: str | None = None
        # The span already carries request.id (start_span), so the plain push is
        # enough: no attribute copying onto whatever span was current before.
        self._bound = push_context({"request_id": request_id})
        self._request = enter_request(self)
        self._sentry = enter_sentry_scope()
        self._token = otel_context.attach(trace.set_span_in_context(span))

    def close(self) -> None:
        """Restore what was current before the request."""
        otel_context.detach(self._token)
        leave_sentry_scope(self._sentry)
        leave_request(self._request)
        pop_context(self._bound)


class HttpRecorder:
    """Record finished requests: RED metrics, span end, access log, Sentry.

    One instance belongs to one middleware instance. It holds only
    configuration-derived state and caches (label children, settings); the
    per-request values are passed in by the middleware.

    Args:
        registry: A Prometheus registry for the metrics; the process-wide
            metrics (`kaleem_telemetry.metrics.get_metrics`) when ``None``.
        request_id_header: The request-id header; the configured one
            (``KALEEM_TELEMETRY_REQUEST_ID_HEADER``) when ``None``.
        excluded_paths: Paths that are not traced, logged or counted.
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        request_id_header: str | None = None,
        excluded_paths: Iterable[str] = DEFAULT_EXCLUDED_PATHS,
    ) -> None:
        self.excluded = frozenset(excluded_paths)
        self._registry = registry
        self._header_override = request_id_header
        self._settings: RequestSettings | None = None
        self._settings_config: Any = _UNSET

    # -- configuration ------------------------------------------------------------

    def settings(self) -> RequestSettings:
        """Return the settings for the live configuration (cached per config object)."""
        live = _setup.current()
        config = live.config if live is not None else None
        settings = self._settings
        if settings is None or config is not self._settings_config:
            header = self._header_override or getattr(config, "request_id_header", None)
            settings = RequestSettings(header or DEFAULT_REQUEST_ID_HEADER, config)
            self._settings = settings
            self._settings_config = config
        return settings

    def metrics(self) -> TelemetryMetrics:
        """Return the metric families of the registry (the process ones by default)."""
        return get_metrics(self._registry)

    # -- metrics ------------------------------------------------------------------

    def in_progress(self, method: str) -> Any:
        """Return the ``http_requests_in_progress`` child for ``method``."""
        family = get_metrics(self._registry).http_requests_in_progress
        return family.cached((method,)) or family.labels(method)

    def observe(
        self, method: str, route: str, status: str, seconds: float, trace_id: str | None
    ) -> None:
        """Count one request and observe its duration (with an exemplar when sampled)."""
        metrics = get_metrics(self._registry)
        values = (method, route, status)
        total = metrics.http_requests_total
        (total.cached(values) or total.labels(*values)).inc()
        metrics.http_request_duration_seconds.observe_sampled(values, seconds, trace_id)

    def count_error(self, method: str, route: str, status: str, error_type: str) -> None:
        """Increment ``http_errors_total`` for one failed request."""
        self.metrics().http_errors_total.labels(method, route, status, error_type).inc()

    def websocket_active(self, route: str) -> Any:
        """Return the ``websocket_connections_active`` child for ``route``."""
        return self.metrics().websocket_connections_active.labels(route)

    def websocket_message(self, route: str, direction: str) -> None:
        """Count one WebSocket message in ``direction`` (``"in"`` or ``"out"``)."""
        self.metrics().websocket_messages_total.labels(route, direction).inc()

    # -- spans ----------------------------------------------------------------------

    def start_span(
        self,
        settings: RequestSettings,
        method: str,
        raw_method: str,
        path: str,
        client_ip: str | None,
        user_agent: str | None,
        carrier: Any,
        request_id: str | None = None,
    ) -> Any:
        """Start the SERVER span of a request (named after the method until routed).

        Call it before binding the request context: the request id is passed
        here, so the span processor that copies the bound context onto new
        spans has nothing left to do.

        Args:
            settings: The middleware settings (trace-header trust policy).
            method: The normalised method.
            raw_method: The method as received (kept when it is ``_OTHER``).
            path: ``url.path``.
            client_ip: ``client.address``.
            user_agent: ``user_agent.original``.
            carrier: The request headers when they carry trace context, else
                ``None`` (the span then starts a new trace).
            request_id: ``request.id``.

        Returns:
            The span (non-recording when tracing is off or not sampled).
        """
        parent: Context = _EMPTY_CONTEXT
        links: Any = None
        if carrier is not None:
            with internal_errors("trace context extraction"):
                from kaleem_telemetry.propagation import extract_server_context

                parent, links = extract_server_context(carrier, trust=settings.trust_trace_headers)
        attributes: dict[str, Any] = {"http.request.method": method, "url.path": path}
        if method == OTHER_METHOD:
            attributes["http.request.method_original"] = raw_method
        if client_ip:
            attributes["client.address"] = client_ip
        if user_agent:
            attributes["user_agent.original"] = user_agent
        if request_id is not None:
            attributes["request.id"] = request_id
        return start_own_span(
            method if method != OTHER_METHOD else "HTTP",
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            links=links,
        )

    # -- the end of a request ---------------------------------------------------------

    def finish(
        self,
        span: Any,
        method: str,
        route: str,
        path: str,
        status: int,
        duration_ns: int,
        client_ip: str | None,
        request_id: str,
        error: BaseException | None,
        query: str = "",
    ) -> None:
        """Record a finished request: span, metrics, error count, Sentry, access log.

        Must run while the request's context (span and bound values) is still
        current, so the log line and the Sentry event carry them. Never raises.

        Args:
            span: The request's span (ended here).
            method: The normalised method label.
            route: The route template label.
            path: The raw path (log only, never a label).
            status: The response status (499 for a client that went away).
            duration_ns: Request duration in nanoseconds.
            client_ip: The peer address.
            request_id: The request id.
            error: The application's exception, or ``None``.
            query: The raw query string; stored redacted as ``url.query`` on a
                recorded span (redacted only for spans that are kept: most are
                not, in production).
        """
        try:
            status_text = status_label(status)
            trace_id: str | None = None
            error_type: str | None = None
            if error is not None:
                error_type = type(error).__qualname__
            elif status >= 500:
                error_type = status_text
            span_context = span.get_span_context()
            if span.is_recording():
                label = "HTTP" if method == OTHER_METHOD else method
                attributes: dict[str, Any] = {
                    "http.route": route,
                    "http.response.status_code": status,
                }
                if query:
                    attributes["url.query"] = get_redactor().redact_query(query)
                if error_type is not None:
                    attributes["error.type"] = error_type
                set_own_attributes(
                    span, attributes, label if route == UNMATCHED else f"{label} {route}"
                )
                if error_type is not None:
                    if error is not None:
                        span.record_exception(error)
                    span.set_status(Status(StatusCode.ERROR, error_type))
                if span_context.trace_flags.sampled:
                    # Same 32 lower-case hex digits as f"{id:032x}", at a third of the cost.
                    trace_id = span_context.trace_id.to_bytes(16, "big").hex()
            if error is not None:
                self._report(error, span, route, method)
            self.observe(method, route, status_text, duration_ns / 1e9, trace_id)
            if error_type is not None:
                self.count_error(method, route, status_text, error_type)
            emit_access(
                access_level(status),
                method,
                route,
                path,
                status,
                round(duration_ns / 1e6, 3),
                client_ip,
                request_id,
                span_context,
            )
        except Exception:  # noqa: BLE001 - the guard logs it; the caller must not see it.
            report_internal_error("http request telemetry")
        span.end()

    def _report(self, error: BaseException, span: Any, route: str, method: str) -> None:
        with internal_errors("sentry capture from middleware"):
            from kaleem_telemetry import sentry, tracing

            tracing.remember_span(error, span)
            sentry.capture_exception(error, route=route, method=method)


class _Unset:
    __slots__ = ()


_UNSET: Any = _Unset()
