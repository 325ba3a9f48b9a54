"""One request is one trace with one SERVER span, ours, on every framework `instrument_app` serves.

The request's log lines and its Sentry event carry that trace's id, the context a
handler binds lands on our server span, and the Sentry event of an unhandled
exception has the same tags everywhere: ``merchant_id``, ``request_id``,
``service`` and ``route`` (the template, ``/crash/{kind}``). FastAPI 0.165 and
later trace by themselves; with them installed this is the test that a second
trace or a second server span would fail.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("flask")
pytest.importorskip("django")
pytest.importorskip("httpx")

import httpx
from opentelemetry.trace import SpanKind

from kaleem_telemetry import bind_context, get_logger, instrument_app, setup_telemetry
from kaleem_telemetry.testing import TelemetryCapture, capture_telemetry
from tests.receivers import SentryIngest

log = get_logger("tests.one_trace")


class Crash(RuntimeError):
    """The handler's own failure."""


def _fastapi(operation_spans: bool = False) -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        bind_context(merchant_id="m-1")
        log.info("item_served", item_id=item_id)
        return {"item_id": item_id}

    @app.get("/crash/{kind}")
    async def crash(kind: str) -> None:
        bind_context(merchant_id="m-1")
        raise Crash(kind)

    return instrument_app(app, fastapi_operation_spans=operation_spans)


def _starlette() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def item(request: Request) -> JSONResponse:
        bind_context(merchant_id="m-1")
        log.info("item_served", item_id=request.path_params["item_id"])
        return JSONResponse({"item_id": request.path_params["item_id"]})

    async def crash(request: Request) -> JSONResponse:
        bind_context(merchant_id="m-1")
        raise Crash(request.path_params["kind"])

    app = Starlette(routes=[Route("/items/{item_id:int}", item), Route("/crash/{kind}", crash)])
    return instrument_app(app)


def _flask() -> Any:
    from flask import Flask

    app = Flask("one-trace")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        bind_context(merchant_id="m-1")
        log.info("item_served", item_id=item_id)
        return {"item_id": item_id}

    @app.get("/crash/<kind>")
    def crash(kind: str) -> None:
        bind_context(merchant_id="m-1")
        raise Crash(kind)

    return instrument_app(app)


def _django_routes() -> None:
    from django.http import JsonResponse
    from django.urls import clear_url_caches, path

    from tests.test_django import URLCONF, _configure

    _configure()
    module = sys.modules[URLCONF]
    if any(getattr(p, "name", None) == "one-trace-item" for p in module.urlpatterns):
        return

    def item(request: Any, item_id: int) -> Any:
        bind_context(merchant_id="m-1")
        log.info("item_served", item_id=item_id)
        return JsonResponse({"item_id": item_id})

    def crash(request: Any, kind: str) -> Any:
        bind_context(merchant_id="m-1")
        raise Crash(kind)

    module.urlpatterns += [
        path("one/items/<int:item_id>/", item, name="one-trace-item"),
        path("one/crash/<str:kind>/", crash),
    ]
    clear_url_caches()


def _django_wsgi() -> Any:
    _django_routes()
    from django.core.wsgi import get_wsgi_application

    return instrument_app(get_wsgi_application())


def _django_asgi() -> Any:
    _django_routes()
    from django.core.asgi import get_asgi_application

    return instrument_app(get_asgi_application())


# name -> (build the app, is it WSGI, the path prefix and suffix of its routes)
FRAMEWORKS: dict[str, tuple[Callable[[], Any], bool, str, str]] = {
    "fastapi": (_fastapi, False, "", ""),
    "fastapi-operation-spans": (lambda: _fastapi(operation_spans=True), False, "", ""),
    "starlette": (_starlette, False, "", ""),
    "flask": (_flask, True, "", ""),
    "django-wsgi": (_django_wsgi, True, "/one", "/"),
    "django-asgi": (_django_asgi, False, "/one", "/"),
}


@pytest.fixture(name="ingest")
def _ingest() -> Iterator[SentryIngest]:
    with SentryIngest() as ingest:
        yield ingest


@pytest.fixture(name="capture")
def _capture(ingest: SentryIngest) -> Iterator[TelemetryCapture]:
    setup_telemetry("one-trace", traces_exporter="none", sentry_dsn=ingest.dsn, log_format="json")
    with capture_telemetry() as captured:
        yield captured


def _get(name: str, path: str) -> httpx.Response:
    build, wsgi, prefix, suffix = FRAMEWORKS[name]
    app = build()
    url = f"http://testserver{prefix}{path}{suffix}"
    if wsgi:
        with httpx.Client(transport=httpx.WSGITransport(app=app, raise_app_exceptions=False)) as c:
            return c.get(url)

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport) as client:
            return await client.get(url)

    import asyncio

    return asyncio.run(call())


def _server_spans(capture: TelemetryCapture) -> list[Any]:
    return [s for s in capture.spans if s.kind is SpanKind.SERVER]


@pytest.mark.parametrize("name", sorted(FRAMEWORKS))
class TestOneTracePerRequest:
    def test_one_server_span_one_trace_and_the_bound_context_on_it(
        self, name: str, capture: TelemetryCapture
    ) -> None:
        """One SERVER span, one trace, merchant.id on that span, the handler's log in the trace."""
        response = _get(name, "/items/7")
        (server,) = _server_spans(capture)
        trace_id = f"{server.context.trace_id:032x}"
        (logged,) = capture.events("item_served")

        assert response.status_code == 200
        assert {f"{s.context.trace_id:032x}" for s in capture.spans} == {trace_id}
        assert server.name == f"GET {FRAMEWORKS[name][2]}/items/{{item_id}}"
        assert server.attributes["merchant.id"] == "m-1"
        assert server.attributes["request.id"] == response.headers["x-request-id"]
        assert logged["trace_id"] == trace_id
        assert logged["merchant_id"] == "m-1"

    def test_an_unhandled_exception_is_one_sentry_event_with_the_same_tags(
        self, name: str, capture: TelemetryCapture, ingest: SentryIngest
    ) -> None:
        """A crash is one Sentry event in the trace, tagged merchant, request, service and route."""
        response = _get(name, "/crash/disk")
        from kaleem_telemetry import shutdown_telemetry

        shutdown_telemetry(10)
        (server,) = _server_spans(capture)
        events = ingest.wait_for_events(1, timeout=10)
        (event,) = events

        assert response.status_code == 500
        assert event["contexts"]["trace"]["trace_id"] == f"{server.context.trace_id:032x}"
        assert {
            k: event["tags"].get(k) for k in ("merchant_id", "request_id", "service", "route")
        } == {
            "merchant_id": "m-1",
            "request_id": response.headers["x-request-id"],
            "service": "one-trace",
            "route": f"{FRAMEWORKS[name][2]}/crash/{{kind}}",
        }


class TestFastAPIOperationSpans:
    def test_operation_spans_nest_under_our_server_span(self, capture: TelemetryCapture) -> None:
        """With fastapi_operation_spans=True, FastAPI's endpoint span is under our server span."""
        pytest.importorskip("fastapi.telemetry")
        _get("fastapi-operation-spans", "/items/7")
        (server,) = _server_spans(capture)
        operations = {s.name: s for s in capture.spans if s.name.startswith("fastapi.")}

        assert "fastapi.endpoint" in operations
        assert all(s.parent is not None for s in operations.values())
        assert operations["fastapi.endpoint"].parent.span_id in {
            server.context.span_id,
            *(s.context.span_id for s in operations.values()),
        }
        assert all(s.kind is not SpanKind.SERVER for s in operations.values())

    def test_by_default_fastapi_records_nothing_of_its_own(self, capture: TelemetryCapture) -> None:
        """Without the option, no fastapi.* span is recorded."""
        _get("fastapi", "/items/7")

        assert [s.name for s in capture.spans if s.name.startswith("fastapi.")] == []


class TestFastAPIConfiguredByTheApplication:
    def test_its_own_tracing_is_kept_with_a_warning(self, capture: TelemetryCapture) -> None:
        """An app that configured FastAPI's telemetry keeps FastAPI's server span, and is warned."""
        pytest.importorskip("fastapi.telemetry")
        from fastapi import FastAPI

        app = FastAPI(telemetry={"operation_spans": False})

        @app.get("/items/{item_id}")
        async def item(item_id: int) -> dict[str, int]:
            return {"item_id": item_id}

        instrument_app(app)
        transport = httpx.ASGITransport(app=app)

        async def call() -> int:
            async with httpx.AsyncClient(transport=transport) as client:
                return (await client.get("http://testserver/items/1")).status_code

        import asyncio

        assert asyncio.run(call()) == 200
        warnings = [e for e in capture.logs if "traces by itself" in str(e.get("event"))]

        assert len(warnings) == 1
        assert warnings[0]["level"] == "warning"
        assert len(_server_spans(capture)) == 2

    def test_its_log_records_are_redacted(self, capture: TelemetryCapture) -> None:
        """FastAPI's OTel log record of an unhandled exception reaches its processor redacted."""
        pytest.importorskip("fastapi.telemetry")
        from fastapi import FastAPI
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs import export as log_export

        in_memory = getattr(log_export, "InMemoryLogRecordExporter", None)
        exporter = (in_memory or log_export.InMemoryLogExporter)()
        provider = LoggerProvider()
        provider.add_log_record_processor(log_export.SimpleLogRecordProcessor(exporter))
        app = FastAPI(telemetry={"tracing": False, "metrics": False, "logger_provider": provider})

        @app.get("/pay")
        async def pay() -> None:
            raise Crash("charge failed for card 4111 1111 1111 1111, password=hunter2")

        instrument_app(app)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

        async def call() -> int:
            async with httpx.AsyncClient(transport=transport) as client:
                return (await client.get("http://testserver/pay")).status_code

        import asyncio

        assert asyncio.run(call()) == 500
        (record,) = [getattr(r, "log_record", r) for r in exporter.get_finished_logs()]
        attributes = dict(record.attributes or {})
        text = repr(attributes) + repr(record.body)

        assert attributes["exception.type"] == "Crash"
        assert "REDACTED" in attributes["exception.message"]
        assert "4111" not in text
        assert "hunter2" not in text
