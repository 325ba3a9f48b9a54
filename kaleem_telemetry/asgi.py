"""Pure ASGI middleware: traces, RED metrics, access log and request id for every request.

Wrap any ASGI application (FastAPI, Starlette, Django's ASGI handler, a bare
callable)::

    from kaleem_telemetry.asgi import TelemetryMiddleware

    app = TelemetryMiddleware(app)

or let `kaleem_telemetry.instrument_app()` do it, which also mounts ``/metrics``
and the health endpoints. Per HTTP request the middleware:

* reads the request id from ``X-Request-ID`` (configurable), keeps it if it is
  well-formed, generates one otherwise, binds it for the request (logs, spans,
  Sentry) and echoes it on the response, 500s included;
* continues the caller's trace (or links to it, with
  ``KALEEM_TELEMETRY_TRUST_TRACE_HEADERS=false``) in one SERVER span
  ``"{METHOD} {route}"``;
* records ``http_requests_total``, ``http_request_duration_seconds`` (with a
  ``trace_id`` exemplar when sampled), ``http_errors_total`` and
  ``http_requests_in_progress`` with the route *template*, resolved after routing;
* writes one ``http_request`` access-log event;
* records an unhandled exception on the span, counts it, sends it to Sentry once,
  and re-raises it unchanged.

A streamed response is timed until its last body chunk. A client that goes away
mid-response is recorded with status 499 and is not an error. WebSocket
connections are counted in ``websocket_connections_active`` and their messages in
``websocket_messages_total``. ``lifespan`` passes through; when the application
answers ``lifespan.shutdown``, buffered spans and Sentry events are flushed
(within the shutdown bound) before the server is told, so a server that then
dies of SIGTERM (uvicorn) has lost nothing.

It never uses Starlette's ``BaseHTTPMiddleware`` (which runs the app in another
task and breaks context variables), keeps per-request state in locals, and imports
no framework.

Added in 0.1.0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

from kaleem_telemetry._guard import internal_errors
from kaleem_telemetry._http import (
    ACTIVE_KEY,
    DEFAULT_EXCLUDED_PATHS,
    ERROR_KEY,
    METHOD_LABELS,
    OTHER_METHOD,
    ROUTE_SCOPE_KEY,
    UNMATCHED,
    HttpRecorder,
    RequestScope,
    client_ip_from_scope,
    request_id_or_new,
    route_template,
)
from kaleem_telemetry.context import telemetry_context

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from kaleem_telemetry._types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["TelemetryMiddleware"]

_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})
_ERROR_BODY = b"Internal Server Error"
_ERROR_HEADERS = (
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", str(len(_ERROR_BODY)).encode()),
)
#: Exceptions (by class name) that servers and frameworks raise when the client is gone.
_DISCONNECT_NAMES = frozenset({"ClientDisconnect", "ClientDisconnected"})
_CLIENT_CLOSED = 499


class TelemetryMiddleware:
    """Instrument an ASGI application: spans, RED metrics, access log, request id.

    Args:
        app: The ASGI application to wrap.
        registry: The Prometheus registry for the metrics; the process-wide
            metrics on the default registry when ``None``.
        request_id_header: The request-id header name; the configured one
            (``KALEEM_TELEMETRY_REQUEST_ID_HEADER``, default ``X-Request-ID``)
            when ``None``.
        excluded_paths: Paths served without telemetry (compared with the path
            below ``root_path``). Defaults to ``/metrics``, ``/health/live`` and
            ``/health/ready``.
        endpoints: ASGI apps that answer some of the excluded paths themselves
            (``{"/metrics": metrics_asgi_app()}``), in front of the application
            and its router; `instrument_app()` passes the metrics and health apps.

    Added in 0.1.0.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        registry: CollectorRegistry | None = None,
        request_id_header: str | None = None,
        excluded_paths: Iterable[str] = DEFAULT_EXCLUDED_PATHS,
        endpoints: Mapping[str, ASGIApp] | None = None,
    ) -> None:
        self.app = app
        self._endpoints = dict(endpoints or {})
        excluded_paths = (*excluded_paths, *self._endpoints)
        self._recorder = HttpRecorder(
            registry=registry,
            request_id_header=request_id_header,
            excluded_paths=excluded_paths,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one connection (HTTP, WebSocket or lifespan) through the application."""
        kind = scope["type"]
        if kind != "http":
            if kind == "websocket":
                await self._websocket(scope, receive, send)
            elif kind == "lifespan":
                await self.app(scope, receive, _flushing_at_shutdown(send))
            else:
                await self.app(scope, receive, send)
            return
        recorder = self._recorder
        path: str = scope.get("path", "")
        root_path: str = scope.get("root_path", "")
        if path in recorder.excluded or (
            root_path and path.startswith(root_path) and path[len(root_path) :] in recorder.excluded
        ):
            await self._untraced(scope, receive, send, path, root_path)
            return

        start = perf_counter_ns()
        settings = recorder.settings()
        raw_method: str = scope.get("method", "GET")
        method = METHOD_LABELS.get(raw_method, OTHER_METHOD)
        rid_key = settings.header_key
        raw_rid: bytes | None = None
        user_agent: bytes | None = None
        traced = False
        headers = scope.get("headers") or ()
        for name, value in headers:
            if name == rid_key:
                raw_rid = value
            elif name == b"user-agent":
                user_agent = value
            elif name in _TRACE_HEADERS:
                traced = True
        request_id = request_id_or_new(raw_rid)
        rid_header = (rid_key, request_id.encode("latin-1"))
        client_ip = client_ip_from_scope(scope)
        scope[ACTIVE_KEY] = True

        span = recorder.start_span(
            settings,
            method,
            raw_method,
            path,
            client_ip,
            user_agent.decode("latin-1") if user_agent else None,
            headers if traced else None,
            request_id,
        )
        request_scope = RequestScope(span, request_id)
        progress = recorder.in_progress(method)
        progress.inc()

        status = 0
        started = False
        finished_ns = 0
        gone = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started, finished_ns, gone
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
                started = True
                extra = message.get("headers")
                message["headers"] = [*extra, rid_header] if extra else [rid_header]
            elif kind == "http.response.body":
                if not message.get("more_body", False):
                    finished_ns = perf_counter_ns()
            elif kind == "http.response.pathsend":
                finished_ns = perf_counter_ns()
            try:
                await send(message)
            except OSError:
                # The server could not write: the client has gone away.
                gone = True
                raise

        async def receive_wrapper() -> Message:
            nonlocal gone
            message = await receive()
            if message["type"] == "http.disconnect" and not finished_ns:
                gone = True
            return message

        error: BaseException | None = None
        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except Exception as exc:
            if gone or type(exc).__name__ in _DISCONNECT_NAMES:
                gone = True
            else:
                error = exc
                if not started and self._answers_errors(scope):
                    await _send_error(send_wrapper)
            raise
        except BaseException:
            # Cancelled (the server dropped the connection) or the process is
            # stopping: not an application error.
            gone = True
            raise
        finally:
            progress.dec()
            if error is not None and not started:
                status = 500
            elif gone and not finished_ns:
                status = _CLIENT_CLOSED
            elif not started:
                # The app returned without a response; servers answer 500.
                status = 500
            if error is None:
                # A framework that turned the exception into a 500 page (Django).
                glued = scope.get(ERROR_KEY)
                if isinstance(glued, Exception):
                    error = glued
            route = resolve_route(scope, path, root_path)
            recorder.finish(
                span,
                method,
                route,
                path,
                status,
                (finished_ns or perf_counter_ns()) - start,
                client_ip,
                request_id,
                error,
                _text(scope.get("query_string")),
            )
            request_scope.close()

    async def _untraced(
        self, scope: Scope, receive: Receive, send: Send, path: str, root_path: str
    ) -> None:
        endpoint = self._endpoints.get(path)
        if endpoint is None and root_path and path.startswith(root_path):
            endpoint = self._endpoints.get(path[len(root_path) :])
        await (endpoint or self.app)(scope, receive, send)

    def _answers_errors(self, scope: Scope) -> bool:
        # Answer a 500 ourselves (carrying the request id) only when no error
        # middleware sits outside us: inside a Starlette app built with
        # ``add_middleware`` the ServerErrorMiddleware outside us renders the
        # application's own error handler, which we must not pre-empt.
        app = scope.get("app")
        if app is None:
            return True
        stack = getattr(app, "middleware_stack", None)
        return stack is None or stack is self

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        recorder = self._recorder
        path: str = scope.get("path", "")
        root_path: str = scope.get("root_path", "")
        if path in recorder.excluded:
            await self.app(scope, receive, send)
            return
        settings = recorder.settings()
        raw_rid: bytes | None = None
        for name, value in scope.get("headers") or ():
            if name == settings.header_key:
                raw_rid = value
                break
        request_id = request_id_or_new(raw_rid)
        route: str | None = None
        active: Any = None

        def current_route() -> str:
            nonlocal route
            if route is None:
                route = resolve_route(scope, path, root_path)
            return route

        async def send_wrapper(message: Message) -> None:
            nonlocal active
            kind = message["type"]
            with internal_errors("websocket telemetry"):
                if kind == "websocket.send":
                    recorder.websocket_message(current_route(), "out")
                elif kind == "websocket.accept" and active is None:
                    active = recorder.websocket_active(current_route())
                    active.inc()
            await send(message)

        async def receive_wrapper() -> Message:
            message = await receive()
            if message["type"] == "websocket.receive":
                with internal_errors("websocket telemetry"):
                    recorder.websocket_message(current_route(), "in")
            return message

        with telemetry_context(request_id=request_id):
            try:
                await self.app(scope, receive_wrapper, send_wrapper)
            except Exception as exc:
                if type(exc).__name__ not in _DISCONNECT_NAMES and not isinstance(exc, OSError):
                    with internal_errors("sentry capture from middleware"):
                        from kaleem_telemetry import sentry

                        sentry.capture_exception(exc, route=current_route())
                raise
            finally:
                if active is not None:
                    active.dec()


def _flushing_at_shutdown(send: Send) -> Send:
    """Wrap a lifespan ``send`` so that telemetry is flushed when the application has stopped.

    The server sends ``lifespan.shutdown`` after its last request; the
    application answers once its own shutdown handlers have run, and that
    answer is where what they logged and traced is complete. uvicorn then
    raises SIGTERM again and the process dies of it, with no ``atexit``.
    """

    async def send_wrapper(message: Message) -> None:
        if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            with internal_errors("telemetry flush at lifespan shutdown"):
                from kaleem_telemetry._setup import flush_before_stop

                # Blocking on purpose: the server serves nothing more, and the
                # flush is bounded by the shutdown timeout.
                flush_before_stop()
        await send(message)

    return send_wrapper


def resolve_route(scope: Scope, path: str, root_path: str) -> str:
    """Return the route template that handled a request, after routing.

    Sources, in order: a template left by framework glue under
    ``scope["kaleem_telemetry.route"]`` (Django); the ``scope["route"]`` object that
    Starlette and FastAPI set while routing; and, for mounted sub-applications
    or Starlette versions that do not set it, a walk of the application's
    routes with the request's original path. A request that matched nothing is
    ``"unmatched"``.

    Args:
        scope: The request scope, after the application has run.
        path: ``scope["path"]`` as it was when the request arrived.
        root_path: ``scope["root_path"]`` as it was when the request arrived.
    """
    glued = scope.get(ROUTE_SCOPE_KEY)
    if glued:
        return route_template(glued)
    route = scope.get("route")
    if route is not None and scope.get("root_path", "") == root_path:
        template = getattr(route, "path", None)
        if isinstance(template, str) and template:
            return route_template(template)
    with internal_errors("route resolution"):
        router = scope.get("router") or scope.get("app")
        routes = getattr(router, "routes", None)
        if routes:
            walked = _walk(routes, {**scope, "path": path, "root_path": root_path})
            if walked:
                return route_template(walked)
    return UNMATCHED


def _walk(routes: Any, scope: dict[str, Any]) -> str | None:
    partial: tuple[Any, dict[str, Any]] | None = None
    for route in routes:
        try:
            match, child = route.matches(scope)
        except Exception:  # noqa: BLE001 - a custom route that cannot match is skipped.
            continue
        name = getattr(match, "name", "")
        if name == "FULL":
            return _join(route, scope, child)
        if name == "PARTIAL" and partial is None:
            partial = (route, child)
    if partial is not None:
        return _join(partial[0], scope, partial[1])
    return None


def _join(route: Any, scope: dict[str, Any], child: dict[str, Any]) -> str | None:
    prefix = getattr(route, "path", "") or ""
    inner_routes = getattr(route, "routes", None)
    if inner_routes:
        inner = _walk(inner_routes, {**scope, **child})
        return None if inner is None else prefix + inner
    return prefix or None


async def _send_error(send: Send) -> None:
    try:
        await send({"type": "http.response.start", "status": 500, "headers": list(_ERROR_HEADERS)})
        await send({"type": "http.response.body", "body": _ERROR_BODY, "more_body": False})
    except Exception:  # noqa: BLE001 - the client is gone; the app's exception still propagates.
        return


def _text(value: Any) -> str:
    if not value:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)
