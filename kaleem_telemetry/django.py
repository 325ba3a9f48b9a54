"""Django middleware: the route template, handled exceptions, and full telemetry on its own.

Add it to ``settings.MIDDLEWARE`` (first, so it sees every response)::

    MIDDLEWARE = [
        "kaleem_telemetry.django.TelemetryMiddleware",
        ...
    ]

It works in two modes, chosen per request:

* under `kaleem_telemetry.wsgi.TelemetryMiddleware` or
  `kaleem_telemetry.asgi.TelemetryMiddleware` (what `instrument_app()` sets up),
  it only tells the outer middleware the route template
  (``resolver_match.route``) and the exception a view raised (Django turns it into
  a 500 page, so the outer middleware would not see it);
* on its own, it does the whole job: request id, SERVER span, RED metrics,
  access log and Sentry, with the route template. A streamed body is then timed
  until its headers, not its last chunk; serve through the WSGI/ASGI middleware
  for that.

It is sync and async capable, so Django runs it without a thread switch under
both WSGI and ASGI.

Added in 0.1.0.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from time import perf_counter_ns
from typing import Any

from kaleem_telemetry._http import (
    ACTIVE_KEY,
    ERROR_KEY,
    ROUTE_SCOPE_KEY,
    UNMATCHED,
    HttpRecorder,
    RequestScope,
    normalise_method,
    request_id_or_new,
    route_template,
)

__all__ = ["TelemetryMiddleware"]

_TRACE_META = (
    ("HTTP_TRACEPARENT", "traceparent"),
    ("HTTP_TRACESTATE", "tracestate"),
    ("HTTP_BAGGAGE", "baggage"),
)


def stamp_route(request: Any) -> str | None:
    """Leave the request's route template where the outer middleware looks for it.

    Args:
        request: A Django ``HttpRequest`` after URL resolution.

    Returns:
        The raw Django route (``"items/<int:item_id>/"``), or ``None`` when the
        request matched no URL pattern.
    """
    match = getattr(request, "resolver_match", None)
    route = getattr(match, "route", None)
    if isinstance(route, str):
        _store(request)[ROUTE_SCOPE_KEY] = route
        return route
    return None


def record_exception(request: Any, exception: BaseException) -> None:
    """Leave the exception a view raised where the outer middleware looks for it.

    Args:
        request: The Django request.
        exception: The exception Django is about to turn into an error page.
    """
    _store(request)[ERROR_KEY] = exception


def _store(request: Any) -> MutableMapping[str, Any]:
    # WSGIRequest.META *is* the WSGI environ; ASGIRequest keeps the ASGI scope.
    scope = getattr(request, "scope", None)
    if isinstance(scope, dict):
        return scope
    meta: MutableMapping[str, Any] = request.META
    return meta


class TelemetryMiddleware:
    """Django middleware for ``settings.MIDDLEWARE`` (sync and async capable).

    Args:
        get_response: The next handler in Django's middleware chain.

    Added in 0.1.0.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        from asgiref.sync import iscoroutinefunction, markcoroutinefunction

        self.get_response = get_response
        self._is_async = iscoroutinefunction(get_response)
        if self._is_async:
            markcoroutinefunction(self)
        self._recorder = HttpRecorder()

    def __call__(self, request: Any) -> Any:
        """Handle one request (returns a coroutine in an async middleware chain)."""
        if self._is_async:
            return self._acall(request)
        store = _store(request)
        if store.get(ACTIVE_KEY) or request.path_info in self._recorder.excluded:
            response = self.get_response(request)
            stamp_route(request)
            return response
        state = self._start(request, store)
        try:
            response = self.get_response(request)
        except Exception as exc:
            self._finish(request, state, 500, exc)
            raise
        return self._respond(request, state, response)

    async def _acall(self, request: Any) -> Any:
        get_response: Callable[[Any], Awaitable[Any]] = self.get_response
        store = _store(request)
        if store.get(ACTIVE_KEY) or request.path_info in self._recorder.excluded:
            response = await get_response(request)
            stamp_route(request)
            return response
        state = self._start(request, store)
        try:
            response = await get_response(request)
        except Exception as exc:
            self._finish(request, state, 500, exc)
            raise
        return self._respond(request, state, response)

    def process_exception(self, request: Any, exception: Exception) -> None:
        """Remember the view's exception; Django then renders its error page.

        Args:
            request: The Django request.
            exception: What the view raised.
        """
        record_exception(request, exception)

    def _start(self, request: Any, store: MutableMapping[str, Any]) -> tuple[Any, ...]:
        recorder = self._recorder
        start = perf_counter_ns()
        settings = recorder.settings()
        meta = request.META
        raw_method: str = request.method or "GET"
        method = normalise_method(raw_method)
        request_id = request_id_or_new(meta.get(settings.environ_key))
        client_ip = meta.get("REMOTE_ADDR") or None
        carrier = {name: meta[key] for key, name in _TRACE_META if key in meta} or None
        store[ACTIVE_KEY] = True
        span = recorder.start_span(
            settings,
            method,
            raw_method,
            request.path,
            client_ip,
            meta.get("HTTP_USER_AGENT"),
            carrier,
            request_id,
        )
        request_scope = RequestScope(span, request_id)
        recorder.in_progress(method).inc()
        return (start, method, request_id, client_ip, request_scope, span, settings.header_name)

    def _respond(self, request: Any, state: tuple[Any, ...], response: Any) -> Any:
        response[state[6]] = state[2]
        glued = _store(request).get(ERROR_KEY)
        error = glued if isinstance(glued, BaseException) else None
        self._finish(request, state, response.status_code, error)
        return response

    def _finish(
        self, request: Any, state: tuple[Any, ...], status: int, error: BaseException | None
    ) -> None:
        start, method, request_id, client_ip, request_scope, span, _header = state
        route = stamp_route(request)
        try:
            self._recorder.in_progress(method).dec()
            self._recorder.finish(
                span,
                method,
                UNMATCHED if route is None else route_template(route),
                request.path,
                status,
                perf_counter_ns() - start,
                client_ip,
                request_id,
                error,
                request.META.get("QUERY_STRING", ""),
            )
        finally:
            request_scope.close()
