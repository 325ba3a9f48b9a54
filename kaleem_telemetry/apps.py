"""`instrument_app()`: one call for a FastAPI, Starlette, Flask or Django application.

::

    app = FastAPI()
    instrument_app(app)                      # the same object, now instrumented

    application = instrument_app(get_wsgi_application())   # Django: serve what it returns

It adds the telemetry middleware (`kaleem_telemetry.asgi.TelemetryMiddleware` or
`kaleem_telemetry.wsgi.TelemetryMiddleware`) in front of the application, and
serves ``/metrics``, ``/health/live`` and ``/health/ready`` from it, in front of
the application's router; those three paths are never traced, logged per request
or counted. The framework is recognised by the module of the application's type,
so no framework is imported here.

What it does per framework:

* **FastAPI / Starlette**: the middleware wraps the whole middleware stack
  (outside ``ServerErrorMiddleware``), so the 500 page the app renders also
  carries the request id. FastAPI's own telemetry (0.165 and later) is switched
  off unless the application configured it, so each request is one trace with
  one server span, ours (`kaleem_telemetry._fastapi`). Returns the same object.
* **Flask**: wraps ``app.wsgi_app`` and listens to ``got_request_exception`` so
  an exception Flask turns into a 500 page is still recorded. Returns the same
  object.
* **Django**: wraps the WSGI or ASGI handler (``get_wsgi_application()`` /
  ``get_asgi_application()``), reads the route from ``resolver_match`` and the
  view's exception from ``got_request_exception``. Returns the wrapped handler:
  serve that one.

Calling it twice on one application does nothing the second time.

Added in 0.1.0.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["instrument_app"]

_LOGGER = logging.getLogger(__name__)

# The same paths as kaleem_telemetry._http.DEFAULT_EXCLUDED_PATHS, spelled out so
# that importing this module (the package root does) stays cheap.
METRICS_PATH = "/metrics"
HEALTH_LIVE_PATH = "/health/live"
HEALTH_READY_PATH = "/health/ready"
_MARK = "_kaleem_telemetry_instrumented"


def instrument_app(
    app: Any,
    *,
    registry: CollectorRegistry | None = None,
    request_id_header: str | None = None,
    endpoints: bool = True,
    fastapi_operation_spans: bool = False,
) -> Any:
    """Instrument a FastAPI, Starlette, Flask or Django application.

    Args:
        app: A ``FastAPI``/``Starlette`` app, a ``Flask`` app, or a Django
            ``WSGIHandler``/``ASGIHandler``.
        registry: The Prometheus registry for the HTTP metrics and ``/metrics``;
            the default registry when ``None``.
        request_id_header: The request-id header; the configured one when
            ``None``.
        endpoints: Serve ``/metrics``, ``/health/live`` and ``/health/ready``.
        fastapi_operation_spans: On a FastAPI that traces by itself (0.165 and
            later), keep its ``fastapi.dependencies``, ``fastapi.endpoint`` and
            ``fastapi.serialization`` spans, nested under our server span. Off by
            default: FastAPI's own telemetry is switched off, which keeps one
            trace per request at the cost of the request without FastAPI's
            tracing. An application created with ``FastAPI(telemetry=...)``
            keeps what it asked for (see docs/web.md).

    Returns:
        The application to serve: ``app`` itself for FastAPI, Starlette and
        Flask, the wrapped handler for Django.

    Raises:
        TypeError: ``app`` is none of the supported frameworks; wrap it with
            `kaleem_telemetry.asgi.TelemetryMiddleware` or
            `kaleem_telemetry.wsgi.TelemetryMiddleware` instead.
    """
    if getattr(app, _MARK, False):
        return app
    framework = _framework(app)
    options: dict[str, Any] = {"registry": registry, "request_id_header": request_id_header}
    if framework == "starlette":
        from kaleem_telemetry import _fastapi

        _fastapi.tame(app, operation_spans=fastapi_operation_spans)
        _instrument_starlette(app, options, endpoints)
        result = app
    elif framework == "flask":
        _instrument_flask(app, options, endpoints)
        result = app
    elif framework == "django-wsgi":
        result = _instrument_django(app, options, endpoints, asgi=False)
    elif framework == "django-asgi":
        result = _instrument_django(app, options, endpoints, asgi=True)
    else:
        msg = (
            f"instrument_app() supports FastAPI, Starlette, Flask and Django applications, "
            f"got {type(app).__module__}.{type(app).__qualname__}. Wrap it with "
            "kaleem_telemetry.asgi.TelemetryMiddleware or "
            "kaleem_telemetry.wsgi.TelemetryMiddleware."
        )
        raise TypeError(msg)
    for target in {id(app): app, id(result): result}.values():
        # A slotted handler cannot carry the mark; instrumenting it twice would
        # only add a second (harmless) middleware layer.
        with contextlib.suppress(AttributeError, TypeError):
            setattr(target, _MARK, True)
    return result


def _framework(app: Any) -> str | None:
    for cls in type(app).__mro__:
        module = cls.__module__
        top = module.partition(".")[0]
        if top in ("starlette", "fastapi") and hasattr(app, "build_middleware_stack"):
            return "starlette"
        if top == "flask" and hasattr(app, "wsgi_app"):
            return "flask"
        if module == "django.core.handlers.wsgi" and cls.__name__ == "WSGIHandler":
            return "django-wsgi"
        if module == "django.core.handlers.asgi" and cls.__name__ == "ASGIHandler":
            return "django-asgi"
    return None


def _asgi_endpoints(registry: CollectorRegistry | None) -> dict[str, Any]:
    from kaleem_telemetry.exposition import metrics_asgi_app
    from kaleem_telemetry.health import health_asgi_app

    health = health_asgi_app(registry=registry)
    return {
        METRICS_PATH: metrics_asgi_app(registry),
        HEALTH_LIVE_PATH: health,
        HEALTH_READY_PATH: health,
    }


def _wsgi_endpoints(registry: CollectorRegistry | None) -> dict[str, Any]:
    from kaleem_telemetry.exposition import metrics_wsgi_app
    from kaleem_telemetry.health import health_wsgi_app

    health = health_wsgi_app(registry=registry)
    return {
        METRICS_PATH: metrics_wsgi_app(registry),
        HEALTH_LIVE_PATH: health,
        HEALTH_READY_PATH: health,
    }


def _instrument_starlette(app: Any, options: dict[str, Any], endpoints: bool) -> None:
    from kaleem_telemetry.asgi import TelemetryMiddleware

    served = _asgi_endpoints(options["registry"]) if endpoints else {}
    build = app.build_middleware_stack

    def build_middleware_stack() -> Any:
        return TelemetryMiddleware(build(), endpoints=served, **options)

    # Starlette builds its middleware stack on the first request and rebuilds it
    # when middleware is added; wrapping the builder (on this instance only) puts
    # our middleware outside ServerErrorMiddleware, so its 500 pages pass through
    # us and carry the request id.
    app.build_middleware_stack = build_middleware_stack
    if getattr(app, "middleware_stack", None) is not None:
        app.middleware_stack = TelemetryMiddleware(
            app.middleware_stack, endpoints=served, **options
        )


def _instrument_flask(app: Any, options: dict[str, Any], endpoints: bool) -> None:
    from flask import got_request_exception, request, request_started

    from kaleem_telemetry._http import ERROR_KEY, ROUTE_SCOPE_KEY, remember_route
    from kaleem_telemetry.wsgi import TelemetryMiddleware

    def stamp(sender: Any, **extra: Any) -> None:
        # Flask has matched the URL when it sends request_started, and drops the
        # request object from the environ when the request ends: keep the rule.
        # The current request gets the template too, so that a Sentry event
        # raised before the request ends (Flask logs the exception with
        # exc_info, which reaches Sentry first) is tagged with its route.
        rule = request.url_rule
        if rule is not None:
            request.environ[ROUTE_SCOPE_KEY] = rule.rule
            remember_route(rule.rule)

    def remember(sender: Any, exception: BaseException, **extra: Any) -> None:
        request.environ[ERROR_KEY] = exception

    # Flask turns an unhandled exception into a 500 page inside wsgi_app; the
    # signal is the public way to see it. weak=False: the receivers are closures
    # that only the signals hold.
    request_started.connect(stamp, app, weak=False)
    got_request_exception.connect(remember, app, weak=False)
    served = _wsgi_endpoints(options["registry"]) if endpoints else {}
    app.wsgi_app = TelemetryMiddleware(app.wsgi_app, endpoints=served, **options)


def _instrument_django(app: Any, options: dict[str, Any], endpoints: bool, *, asgi: bool) -> Any:
    # django ships no type information; import the signal module untyped.
    got_request_exception = importlib.import_module("django.core.signals").got_request_exception
    from kaleem_telemetry._http import remember_route
    from kaleem_telemetry.django import record_exception, stamp_route

    def remember(sender: Any, request: Any = None, **extra: Any) -> None:
        exception = sys.exc_info()[1]
        if request is not None and exception is not None:
            record_exception(request, exception)
            route = stamp_route(request)
            if route is not None:
                remember_route(route)

    # Django sends got_request_exception from inside the except block that turns
    # a view's exception into a 500 page, before it logs the exception (which
    # reaches Sentry): the route is left on the current request for that event.
    got_request_exception.connect(remember, weak=False, dispatch_uid="kaleem_telemetry")
    if asgi:
        from kaleem_telemetry.asgi import TelemetryMiddleware as AsgiMiddleware

        get_response_async = app.get_response_async

        async def routed_async(request: Any) -> Any:
            response = await get_response_async(request)
            stamp_route(request)
            return response

        # The handler resolves the URL inside get_response; the route template is
        # read off the request right after (this handler instance only).
        app.get_response_async = routed_async
        served = _asgi_endpoints(options["registry"]) if endpoints else {}
        return AsgiMiddleware(app, endpoints=served, **options)

    from kaleem_telemetry.wsgi import TelemetryMiddleware as WsgiMiddleware

    get_response = app.get_response

    def routed(request: Any) -> Any:
        response = get_response(request)
        stamp_route(request)
        return response

    app.get_response = routed
    served = _wsgi_endpoints(options["registry"]) if endpoints else {}
    return WsgiMiddleware(app, endpoints=served, **options)
