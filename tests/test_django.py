from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

django = pytest.importorskip("django")

pytest.importorskip("httpx")

import httpx  # noqa: E402
from django.conf import settings  # noqa: E402
from opentelemetry.trace import StatusCode  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from werkzeug.test import Client  # noqa: E402

from kaleem_telemetry.apps import instrument_app  # noqa: E402
from kaleem_telemetry.context import bind_context  # noqa: E402
from kaleem_telemetry.testing import TelemetryCapture, capture_telemetry  # noqa: E402

URLCONF = "kt_test_django_urls"
MIDDLEWARE = "kaleem_telemetry.django.TelemetryMiddleware"


class Boom(RuntimeError):
    """The view's own failure."""


def _configure() -> None:
    if settings.configured:
        return
    from django.http import HttpResponse, JsonResponse
    from django.urls import include, path, re_path

    def item(request: Any, item_id: int) -> Any:
        bind_context(merchant_id="m-dj")
        return JsonResponse({"item": item_id})

    def boom(request: Any) -> Any:
        raise Boom("django kaboom")

    def year(request: Any, year: str) -> Any:
        return HttpResponse(year)

    async def async_item(request: Any, item_id: int) -> Any:
        return JsonResponse({"item": item_id})

    api = [path("orders/<int:order_id>/", item, kwargs={"item_id": 0})]
    module = types.ModuleType(URLCONF)
    module.urlpatterns = [  # type: ignore[attr-defined]
        path("items/<int:item_id>/", item),
        path("boom/", boom),
        path("async/<int:item_id>/", async_item),
        re_path(r"^archive/(?P<year>[0-9]{4})/$", year),
        path("api/", include(api)),
    ]
    sys.modules[URLCONF] = module
    settings.configure(
        DEBUG=False,
        SECRET_KEY="kt-test-only",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=URLCONF,
        MIDDLEWARE=[MIDDLEWARE],
        DATABASES={},
        INSTALLED_APPS=[],
        LOGGING_CONFIG=None,
        USE_TZ=True,
    )
    django.setup()


@pytest.fixture(name="captured")
def _captured(registry: CollectorRegistry) -> Iterator[TelemetryCapture]:
    """Capture logs, spans, Sentry events and the test registry's metrics."""
    _configure()
    with capture_telemetry(registry) as captured:
        yield captured


@pytest.fixture(name="captured_default")
def _captured_default() -> Iterator[TelemetryCapture]:
    """Capture with the process registry, which the settings middleware records to."""
    _configure()
    with capture_telemetry() as captured:
        yield captured


@pytest.fixture(name="middleware")
def _middleware(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Set settings.MIDDLEWARE for the handler the test builds."""
    _configure()
    saved = list(settings.MIDDLEWARE)
    settings.MIDDLEWARE = list(getattr(request, "param", [MIDDLEWARE]))
    yield settings.MIDDLEWARE
    settings.MIDDLEWARE = saved


def _wsgi_handler() -> Any:
    from django.core.handlers.wsgi import WSGIHandler

    return WSGIHandler()


class TestInstrumentedHandler:
    @pytest.mark.parametrize("middleware", [[], [MIDDLEWARE]], indirect=True)
    @pytest.mark.usefixtures("middleware")
    def test_route_template_with_and_without_settings_middleware(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """instrument_app(WSGIHandler) records the Django route, settings middleware or not."""
        client = Client(instrument_app(_wsgi_handler(), registry=registry))
        response = client.get("/items/4/", headers={"X-Request-ID": "dj-1"}, buffered=True)

        assert response.status_code == 200
        assert response.headers["X-Request-ID"] == "dj-1"
        assert captured.metric_value("http_requests_total", route="/items/{item_id}") == 1
        (event,) = captured.events("http_request")
        assert event["merchant_id"] == "m-dj"
        assert len(captured.spans) == 1

    @pytest.mark.usefixtures("middleware")
    def test_included_and_regex_routes(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """include() prefixes are kept and re_path routes keep their pattern."""
        client = Client(instrument_app(_wsgi_handler(), registry=registry))
        client.get("/api/orders/9/", buffered=True)
        client.get("/archive/2024/", buffered=True)
        client.get("/nothing/", buffered=True)

        assert captured.metric_value("http_requests_total", route="/api/orders/{order_id}") == 1
        assert (
            captured.metric_value("http_requests_total", route="^archive/(?P<year>[0-9]{4})/$") == 1
        )
        assert captured.metric_value("http_requests_total", route="unmatched") == 1

    @pytest.mark.parametrize("middleware", [[], [MIDDLEWARE]], indirect=True)
    @pytest.mark.usefixtures("middleware")
    def test_view_exception_is_recorded_once(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """A view's exception, turned into a 500 page by Django, is an error sent to Sentry once."""
        client = Client(instrument_app(_wsgi_handler(), registry=registry))
        response = client.get("/boom/", headers={"X-Request-ID": "dj-err"}, buffered=True)

        assert response.status_code == 500
        assert captured.metric_value("http_errors_total", route="/boom", error_type="Boom") == 1
        (span,) = captured.spans
        assert span.status.status_code is StatusCode.ERROR
        assert len(captured.sentry_events) == 1
        assert captured.sentry_events[0]["tags"]["request_id"] == "dj-err"

    @pytest.mark.usefixtures("middleware")
    async def test_asgi_handler(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """instrument_app(ASGIHandler) records Django routes served over ASGI."""
        from django.core.handlers.asgi import ASGIHandler

        app = instrument_app(ASGIHandler(), registry=registry)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/async/5/", headers={"X-Request-ID": "dj-asgi"})
            metrics = await client.get("/metrics")

        assert response.status_code == 200
        assert response.headers["x-request-id"] == "dj-asgi"
        assert metrics.status_code == 200
        assert captured.metric_value("http_requests_total", route="/async/{item_id}") == 1


class TestSettingsMiddleware:
    @pytest.mark.usefixtures("middleware")
    def test_middleware_alone_does_the_whole_job(self, captured_default: TelemetryCapture) -> None:
        """The settings.MIDDLEWARE class alone records span, metrics, access log and request id."""
        client = Client(_wsgi_handler())
        response = client.get("/items/8/", headers={"X-Request-ID": "dj-alone"}, buffered=True)

        assert response.status_code == 200
        assert response.headers["X-Request-ID"] == "dj-alone"
        assert captured_default.metric_value("http_requests_total", route="/items/{item_id}") == 1
        (span,) = captured_default.spans
        assert span.name == "GET /items/{item_id}"
        (event,) = captured_default.events("http_request")
        assert event["request_id"] == "dj-alone"

    @pytest.mark.usefixtures("middleware")
    def test_middleware_alone_records_view_exceptions(
        self, captured_default: TelemetryCapture
    ) -> None:
        """Alone, the middleware sees the view's exception through process_exception."""
        client = Client(_wsgi_handler())
        response = client.get("/boom/", buffered=True)

        assert response.status_code == 500
        assert captured_default.metric_value("http_errors_total", error_type="Boom") == 1
        assert len(captured_default.sentry_events) == 1

    @pytest.mark.usefixtures("middleware")
    async def test_middleware_alone_under_asgi(self, captured_default: TelemetryCapture) -> None:
        """The middleware runs async under Django's ASGI handler."""
        from django.core.handlers.asgi import ASGIHandler

        transport = httpx.ASGITransport(app=ASGIHandler())
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/async/6/")

        assert response.status_code == 200
        assert len(response.headers["x-request-id"]) == 32
        assert captured_default.metric_value("http_requests_total", route="/async/{item_id}") == 1
