"""WSGI middleware: traces, RED metrics, access log and request id for Flask, Django, any WSGI app.

Wrap the WSGI callable::

    from kaleem_telemetry.wsgi import TelemetryMiddleware

    flask_app.wsgi_app = TelemetryMiddleware(flask_app.wsgi_app)
    application = TelemetryMiddleware(get_wsgi_application())   # Django

or let `kaleem_telemetry.instrument_app()` do it (it also serves ``/metrics`` and
the health endpoints and records the exceptions Flask and Django turn into 500
pages). The behaviour is the one of `kaleem_telemetry.asgi.TelemetryMiddleware`:
request id (read, validated, generated, echoed), one SERVER span, the RED
metrics with the route *template* (Flask ``url_rule``, Django
``resolver_match.route``, ``"unmatched"`` otherwise), one access-log event, and
unhandled exceptions recorded, counted, sent to Sentry once and re-raised.

The response iterable is wrapped: the request is recorded when the body is
exhausted (so a streamed body is timed until its last chunk), and the body's own
``close()`` is always called when the server closes the response.

Added in 0.1.0.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

from kaleem_telemetry._http import (
    ACTIVE_KEY,
    DEFAULT_EXCLUDED_PATHS,
    ERROR_KEY,
    ROUTE_SCOPE_KEY,
    UNMATCHED,
    HttpRecorder,
    RequestScope,
    normalise_method,
    request_id_or_new,
    route_template,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from kaleem_telemetry._types import Environ, StartResponse, WSGIApp

__all__ = ["TelemetryMiddleware"]

_TRACE_ENVIRON = (
    ("HTTP_TRACEPARENT", "traceparent"),
    ("HTTP_TRACESTATE", "tracestate"),
    ("HTTP_BAGGAGE", "baggage"),
)
_CLIENT_CLOSED = 499


class TelemetryMiddleware:
    """Instrument a WSGI application: spans, RED metrics, access log, request id.

    Args:
        app: The WSGI application to wrap.
        registry: The Prometheus registry for the metrics; the process-wide
            metrics on the default registry when ``None``.
        request_id_header: The request-id header name; the configured one
            (``KALEEM_TELEMETRY_REQUEST_ID_HEADER``, default ``X-Request-ID``)
            when ``None``.
        excluded_paths: Paths (``PATH_INFO``) served without telemetry.
            Defaults to ``/metrics``, ``/health/live`` and ``/health/ready``.
        endpoints: WSGI apps answering some of the excluded paths in front of
            the application (`instrument_app()` passes metrics and health).

    Added in 0.1.0.
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        registry: CollectorRegistry | None = None,
        request_id_header: str | None = None,
        excluded_paths: Iterable[str] = DEFAULT_EXCLUDED_PATHS,
        endpoints: Mapping[str, WSGIApp] | None = None,
    ) -> None:
        self.app = app
        self._endpoints = dict(endpoints or {})
        self._recorder = HttpRecorder(
            registry=registry,
            request_id_header=request_id_header,
            excluded_paths=(*excluded_paths, *self._endpoints),
        )

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Serve one request through the application, recording its telemetry."""
        recorder = self._recorder
        path: str = environ.get("PATH_INFO", "")
        if path in recorder.excluded:
            return self._endpoints.get(path, self.app)(environ, start_response)

        start = perf_counter_ns()
        settings = recorder.settings()
        raw_method: str = environ.get("REQUEST_METHOD", "GET")
        method = normalise_method(raw_method)
        request_id = request_id_or_new(environ.get(settings.environ_key))
        client_ip: str | None = environ.get("REMOTE_ADDR") or None
        environ[ACTIVE_KEY] = True
        carrier: dict[str, str] | None = None
        for key, name in _TRACE_ENVIRON:
            value = environ.get(key)
            if value is not None:
                if carrier is None:
                    carrier = {}
                carrier[name] = value

        span = recorder.start_span(
            settings,
            method,
            raw_method,
            path,
            client_ip,
            environ.get("HTTP_USER_AGENT"),
            carrier,
            request_id,
        )
        request_scope = RequestScope(span, request_id)
        progress = recorder.in_progress(method)
        progress.inc()
        request = _Request(
            recorder, environ, span, method, path, client_ip, request_id, start, request_scope
        )
        rid_header = (settings.header_name, request_id)

        def start_response_wrapper(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            request.status = _status_code(status)
            headers = [*headers, rid_header]
            if exc_info is None:
                return start_response(status, headers)
            return start_response(status, headers, exc_info)

        try:
            result = self.app(environ, start_response_wrapper)
        except Exception as exc:
            request.finish(500, exc)
            raise
        except BaseException:
            request.finish(_CLIENT_CLOSED)
            raise
        return _ResponseBody(result, request)


class _Request:
    """The per-request state, finished exactly once (exhaustion, error or close)."""

    __slots__ = (
        "client_ip",
        "done",
        "environ",
        "method",
        "path",
        "progress",
        "recorder",
        "request_id",
        "scope",
        "span",
        "start",
        "status",
    )

    def __init__(
        self,
        recorder: HttpRecorder,
        environ: Environ,
        span: Any,
        method: str,
        path: str,
        client_ip: str | None,
        request_id: str,
        start: int,
        scope: RequestScope,
    ) -> None:
        self.recorder = recorder
        self.environ = environ
        self.span = span
        self.method = method
        self.path = path
        self.client_ip = client_ip
        self.request_id = request_id
        self.start = start
        self.scope = scope
        self.status = 0
        self.done = False

    def finish(self, status: int, error: BaseException | None = None, end: int = 0) -> None:
        if self.done:
            return
        self.done = True
        duration = (end or perf_counter_ns()) - self.start
        environ = self.environ
        if error is None:
            # Flask and Django turn a view's exception into a 500 page; the glue
            # of `instrument_app()` / the Django middleware leaves it here.
            glued = environ.get(ERROR_KEY)
            if isinstance(glued, BaseException):
                error = glued
        self.recorder.in_progress(self.method).dec()
        try:
            self.recorder.finish(
                self.span,
                self.method,
                resolve_route(environ),
                self.path,
                status,
                duration,
                self.client_ip,
                self.request_id,
                error,
                environ.get("QUERY_STRING", ""),
            )
        finally:
            self.scope.close()


class _ResponseBody:
    """The application's response iterable, recorded when exhausted, closed when closed."""

    __slots__ = ("_body", "_request")

    def __init__(self, body: Iterable[bytes], request: _Request) -> None:
        self._body = body
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        request = self._request
        try:
            # Not ``yield from``: it would close the body on GeneratorExit, and
            # closing is `close()`'s job, exactly once.
            for chunk in self._body:  # noqa: UP028
                yield chunk
        except GeneratorExit:
            # The server stopped iterating (the client went away).
            request.finish(_CLIENT_CLOSED)
            raise
        except OSError:
            request.finish(_CLIENT_CLOSED)
            raise
        except Exception as exc:
            request.finish(request.status or 500, exc)
            raise
        request.finish(request.status or 500, end=perf_counter_ns())

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            request = self._request
            if not request.done:
                # Closed before it was exhausted: the server gave up on the body.
                request.finish(_CLIENT_CLOSED if request.status else 500)


def resolve_route(environ: Mapping[str, Any]) -> str:
    """Return the route template that handled a WSGI request, after the app ran.

    Sources: the template Django glue leaves under
    ``environ["kaleem_telemetry.route"]``, then Flask/Werkzeug's
    ``request.url_rule`` (Werkzeug keeps the request in ``environ["werkzeug.request"]``).
    A request that matched nothing is ``"unmatched"``.

    Args:
        environ: The request environ, after the application has run.
    """
    glued = environ.get(ROUTE_SCOPE_KEY)
    if glued is not None:
        return route_template(glued)
    request = environ.get("werkzeug.request")
    rule = getattr(request, "url_rule", None)
    template = getattr(rule, "rule", None)
    if isinstance(template, str):
        return route_template(template)
    return UNMATCHED


def _status_code(status: str) -> int:
    try:
        return int(status[:3])
    except ValueError:
        # A malformed status line is the server's problem; record it as 500.
        return 500
