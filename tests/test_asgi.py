from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("starlette")

import httpx
from fastapi import APIRouter, FastAPI
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from kaleem_telemetry import _setup
from kaleem_telemetry.apps import instrument_app
from kaleem_telemetry.asgi import TelemetryMiddleware
from kaleem_telemetry.context import bind_context, get_context
from kaleem_telemetry.testing import TelemetryCapture

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Boom(RuntimeError):
    """The application's own failure."""


async def _item(request: Request) -> JSONResponse:
    return JSONResponse({"params": request.path_params, "ctx": get_context()})


async def _merchant(request: Request) -> PlainTextResponse:
    bind_context(merchant_id="m-42")
    return PlainTextResponse("ok")


async def _boom(request: Request) -> PlainTextResponse:
    raise Boom("kaboom")


async def _stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            await asyncio.sleep(0)
            yield f"chunk-{i}\n".encode()

    return StreamingResponse(chunks())


async def _echo(websocket: WebSocket) -> None:
    await websocket.accept()
    text = await websocket.receive_text()
    await websocket.send_text(text.upper())
    await websocket.send_text("bye")
    await websocket.close()


def _starlette() -> Starlette:
    inner = Starlette(routes=[Route("/things/{thing_id:int}", _item)])
    return Starlette(
        routes=[
            Route("/items/{item_id}", _item),
            Route("/merchant", _merchant),
            Route("/boom", _boom),
            Route("/stream", _stream),
            WebSocketRoute("/ws/{room}", _echo),
            Mount("/sub", inner),
        ]
    )


def _client(app: Any, *, raise_errors: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_errors)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def _value(captured: TelemetryCapture, name: str, **labels: str) -> float:
    return captured.metric_value(name, **labels)


class TestRoutes:
    async def test_path_parameters_become_the_route_template(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """Two ids on one route are counted under the template, never the raw path."""
        app = TelemetryMiddleware(_starlette(), registry=registry)
        async with _client(app) as client:
            await client.get("/items/1")
            await client.get("/items/2")

        assert _value(captured, "http_requests_total", route="/items/{item_id}") == 2
        assert _value(captured, "http_requests_total", route="/items/1") == 0

    async def test_mounted_sub_application_gets_the_full_template(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """A route inside a Mount is recorded with the mount prefix and no converter."""
        app = TelemetryMiddleware(_starlette(), registry=registry)
        async with _client(app) as client:
            response = await client.get("/sub/things/7")

        assert response.status_code == 200
        assert _value(captured, "http_requests_total", route="/sub/things/{thing_id}") == 1

    async def test_root_path_is_not_part_of_the_template(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """Behind a proxy prefix (root_path) the template is the app's own route."""
        app = TelemetryMiddleware(_starlette(), registry=registry)
        transport = httpx.ASGITransport(app=app, root_path="/api")
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/api/items/5")

        assert response.status_code == 200
        assert _value(captured, "http_requests_total", route="/items/{item_id}") == 1

    async def test_fastapi_router_prefix_is_in_the_template(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """FastAPI routes included from an APIRouter keep their prefix."""
        router = APIRouter(prefix="/v1/orders")

        @router.get("/{order_id}")
        async def order(order_id: int) -> dict[str, int]:
            return {"order": order_id}

        api = FastAPI()
        api.include_router(router)
        async with _client(TelemetryMiddleware(api, registry=registry)) as client:
            response = await client.get("/v1/orders/12")

        assert response.json() == {"order": 12}
        assert _value(captured, "http_requests_total", route="/v1/orders/{order_id}") == 1

    async def test_unmatched_request_is_labelled_unmatched(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """A 404 for a path no route matches gets route="unmatched", whatever the path."""
        app = TelemetryMiddleware(_starlette(), registry=registry)
        async with _client(app) as client:
            for i in range(5):
                await client.get(f"/random/{i}")

        assert _value(captured, "http_requests_total", route="unmatched", status_code="404") == 5
        assert captured.spans[-1].name == "GET"

    async def test_nonstandard_method_is_other(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """A method outside the standard set is recorded as _OTHER."""
        app = TelemetryMiddleware(_starlette(), registry=registry)
        async with _client(app) as client:
            await client.request("PURGE", "/items/1")

        assert _value(captured, "http_requests_total", method="_OTHER") == 1
        assert captured.spans[-1].attributes["http.request.method_original"] == "PURGE"


class TestRequestId:
    @pytest.mark.parametrize("incoming", ["abc-123", "A.b:c_d-9", "x" * 128])
    async def test_valid_request_id_is_kept_and_echoed(
        self, incoming: str, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """A well-formed X-Request-ID is bound for the request and echoed."""
        app = TelemetryMiddleware(_starlette(), registry=registry)
        async with _client(app) as client:
            response = await client.get("/items/1", headers={"X-Request-ID": incoming})

        assert response.headers["x-request-id"] == incoming
        assert response.json()["ctx"]["request_id"] == incoming
        assert captured.events("http_request")[0]["request_id"] == incoming

    @pytest.mark.parametrize("incoming", [None, "", "bad id", "x" * 129, "a\nb", "é"])
    async def test_invalid_or_missing_request_id_is_replaced(
        self, incoming: str | None, registry: CollectorRegistry
    ) -> None:
        """A missing or malformed request id is replaced by a generated 32-hex one."""
        app = TelemetryMiddleware(_starlette(), registry=registry)
        headers = {} if incoming is None else {"X-Request-ID": incoming.encode()}
        async with _client(app) as client:
            response = await client.get("/items/1", headers=headers)

        generated = response.headers["x-request-id"]
        assert len(generated) == 32
        assert int(generated, 16) >= 0
        assert generated != incoming

    async def test_configured_header_name_is_used(self, registry: CollectorRegistry) -> None:
        """KALEEM_TELEMETRY_REQUEST_ID_HEADER renames the header that is read and echoed."""
        _setup.setup_telemetry(service_name="t", request_id_header="X-Correlation-ID")
        app = TelemetryMiddleware(_starlette(), registry=registry)
        async with _client(app) as client:
            response = await client.get("/items/1", headers={"X-Correlation-ID": "corr-1"})

        assert response.headers["x-correlation-id"] == "corr-1"
        assert "x-request-id" not in response.headers

    async def test_context_is_cleared_after_the_request(self, registry: CollectorRegistry) -> None:
        """Values bound during the request do not leak into the caller's context."""
        app = TelemetryMiddleware(_starlette(), registry=registry)
        async with _client(app) as client:
            await client.get("/merchant")

        assert get_context() == {}


class TestSpans:
    async def test_server_span_has_the_contract_attributes(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """One SERVER span named after the route carries the attributes of docs/reference.md."""
        app = TelemetryMiddleware(_starlette(), registry=registry)
        async with _client(app) as client:
            await client.get(
                "/items/3?q=shoes&token=s3cr3t",
                headers={"User-Agent": "pytest-agent", "X-Request-ID": "rid-1"},
            )

        (span,) = captured.spans
        attributes = dict(span.attributes or {})
        assert span.name == "GET /items/{item_id}"
        assert span.kind is SpanKind.SERVER
        assert attributes["http.request.method"] == "GET"
        assert attributes["http.route"] == "/items/{item_id}"
        assert attributes["url.path"] == "/items/3"
        assert "s3cr3t" not in attributes["url.query"]
        assert "q=shoes" in attributes["url.query"]
        assert attributes["http.response.status_code"] == 200
        assert attributes["client.address"] == "127.0.0.1"
        assert attributes["user_agent.original"] == "pytest-agent"
        assert attributes["request.id"] == "rid-1"

    async def test_bound_merchant_reaches_span_and_access_log(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """A merchant bound by the handler shows up on the span and in the access event."""
        app = TelemetryMiddleware(_starlette(), registry=registry)
        async with _client(app) as client:
            await client.get("/merchant")

        (span,) = captured.spans
        assert (span.attributes or {})["merchant.id"] == "m-42"
        assert captured.events("http_request")[0]["merchant_id"] == "m-42"

    async def test_incoming_traceparent_is_continued(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """A trusted traceparent makes the server span a child of the caller's span."""
        app = TelemetryMiddleware(_starlette(), registry=registry)
        async with _client(app) as client:
            await client.get("/items/1", headers={"traceparent": TRACEPARENT})

        (span,) = captured.spans
        assert span.context is not None
        assert span.parent is not None
        assert f"{span.context.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert f"{span.parent.span_id:016x}" == "00f067aa0ba902b7"

    async def test_untrusted_traceparent_starts_a_linked_trace(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """With trust_trace_headers off, the span starts a new trace linked to the caller's."""
        _setup.setup_telemetry(service_name="edge", trust_trace_headers=False)
        app = TelemetryMiddleware(_starlette(), registry=registry)
        async with _client(app) as client:
            await client.get("/items/1", headers={"traceparent": TRACEPARENT})

        (span,) = captured.spans
        assert span.parent is None
        assert span.context is not None
        assert f"{span.context.trace_id:032x}" != "4bf92f3577b34da6a3ce929d0e0e4736"
        assert [f"{link.context.trace_id:032x}" for link in span.links] == [
            "4bf92f3577b34da6a3ce929d0e0e4736"
        ]

    async def test_sampled_request_leaves_a_trace_id_exemplar(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """The duration histogram carries the request's trace_id as an exemplar."""
        app = TelemetryMiddleware(_starlette(), registry=registry)
        async with _client(app) as client:
            await client.get("/items/1")

        (span,) = captured.spans
        assert span.context is not None
        exemplars = [
            sample.exemplar.labels["trace_id"]
            for sample in captured.metrics("http_request_duration_seconds")
            if sample.exemplar is not None
        ]
        assert exemplars == [f"{span.context.trace_id:032x}"]


class TestAccessLog:
    @pytest.mark.parametrize(
        ("path", "status", "level"),
        [("/items/1", 200, "info"), ("/nope", 404, "warning"), ("/boom", 500, "error")],
    )
    async def test_one_access_event_per_request(
        self,
        path: str,
        status: int,
        level: str,
        registry: CollectorRegistry,
        captured: TelemetryCapture,
    ) -> None:
        """Each request writes exactly one http_request event, its level set by the status."""
        app = TelemetryMiddleware(_starlette(), registry=registry)
        async with _client(app, raise_errors=False) as client:
            response = await client.get(path, headers={"X-Request-ID": "rid-7"})

        (event,) = captured.events("http_request")
        assert response.status_code == status
        assert event["level"] == level
        assert event["status_code"] == status
        assert event["path"] == path
        assert event["method"] == "GET"
        assert event["request_id"] == "rid-7"
        assert event["client_ip"] == "127.0.0.1"
        assert event["duration_ms"] >= 0
        assert event["logger"] == "kaleem_telemetry.access"
        assert len(event["trace_id"]) == 32


class TestErrors:
    async def test_unhandled_exception_is_recorded_once_and_reraised(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """An exception marks the span, counts its type, goes to Sentry once and propagates."""
        app = TelemetryMiddleware(_starlette(), registry=registry)
        async with _client(app) as client:
            with pytest.raises(Boom):
                await client.get("/boom", headers={"X-Request-ID": "rid-err"})

        (span,) = captured.spans
        assert span.status.status_code is StatusCode.ERROR
        assert [e.name for e in span.events] == ["exception"]
        assert (
            _value(
                captured, "http_errors_total", route="/boom", status_code="500", error_type="Boom"
            )
            == 1
        )
        assert _value(captured, "http_requests_total", route="/boom", status_code="500") == 1
        (event,) = captured.sentry_events
        assert event["tags"]["route"] == "/boom"
        assert event["tags"]["request_id"] == "rid-err"
        assert event["exception"]["values"][-1]["type"] == "Boom"

    async def test_error_response_carries_the_request_id(self, registry: CollectorRegistry) -> None:
        """The 500 page of an instrumented Starlette app echoes the request id."""
        app = instrument_app(_starlette(), registry=registry)
        async with _client(app, raise_errors=False) as client:
            response = await client.get("/boom", headers={"X-Request-ID": "rid-500"})

        assert response.status_code == 500
        assert response.headers["x-request-id"] == "rid-500"

    async def test_bare_app_that_raises_gets_a_500_with_request_id(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """With no error middleware outside, the middleware answers 500 itself, then re-raises."""

        async def broken(scope: Any, receive: Any, send: Any) -> None:
            raise Boom("early")

        async with _client(TelemetryMiddleware(broken, registry=registry)) as client:
            with pytest.raises(Boom):
                await client.get("/x", headers={"X-Request-ID": "rid-early"})

        assert _value(captured, "http_requests_total", status_code="500") == 1

    async def test_handled_5xx_counts_as_error_without_exception(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """A 503 returned by the app is an error with error_type set to the status."""

        async def unavailable(request: Request) -> PlainTextResponse:
            return PlainTextResponse("down", status_code=503)

        app = Starlette(routes=[Route("/down", unavailable)])
        async with _client(TelemetryMiddleware(app, registry=registry)) as client:
            await client.get("/down")

        assert _value(captured, "http_errors_total", error_type="503") == 1
        assert captured.sentry_events == []


class TestStreaming:
    async def test_streamed_response_is_counted_once(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """A streamed body is one request with its final status."""
        app = TelemetryMiddleware(_starlette(), registry=registry)
        async with _client(app) as client:
            response = await client.get("/stream")

        assert response.text == "chunk-0\nchunk-1\nchunk-2\n"
        assert _value(captured, "http_requests_total", route="/stream", status_code="200") == 1

    async def test_client_disconnect_mid_stream_is_499_without_error(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """A client gone mid-stream is counted as 499 and reported to nobody."""
        app = TelemetryMiddleware(_starlette(), registry=registry)
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and message.get("body") == b"chunk-1\n":
                raise OSError("connection reset by peer")
            sent.append(message)

        raised: BaseException | None = None
        try:
            await app(_scope("/stream"), receive, send)
        except Exception as exc:  # noqa: BLE001 - Starlette before 0.38 wraps it in a group
            raised = exc

        assert _is_disconnect(raised)
        assert _value(captured, "http_requests_total", route="/stream", status_code="499") == 1
        assert _value(captured, "http_errors_total") == 0
        assert captured.sentry_events == []
        assert captured.spans[0].status.status_code is not StatusCode.ERROR

    async def test_disconnect_message_before_the_end_is_499(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """An app that stops because receive() said http.disconnect is a 499."""

        async def polling(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"a", "more_body": True})
            message = await receive()
            assert message["type"] == "http.disconnect"

        async def receive() -> dict[str, Any]:
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            return None

        await TelemetryMiddleware(polling, registry=registry)(_scope("/poll"), receive, send)

        assert _value(captured, "http_requests_total", status_code="499") == 1


class TestInProgress:
    async def test_gauge_counts_requests_being_served(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """http_requests_in_progress is 1 inside the handler and 0 after it."""
        seen: list[float] = []

        async def slow(request: Request) -> PlainTextResponse:
            seen.append(captured.metric_value("http_requests_in_progress", method="GET"))
            return PlainTextResponse("ok")

        app = TelemetryMiddleware(Starlette(routes=[Route("/slow", slow)]), registry=registry)
        async with _client(app) as client:
            await client.get("/slow")

        assert seen == [1.0]
        assert _value(captured, "http_requests_in_progress", method="GET") == 0


class TestExcludedPaths:
    async def test_endpoints_are_served_and_not_recorded(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """/metrics and /health/* answer but leave no span, access event or count."""
        app = instrument_app(_starlette(), registry=registry)
        async with _client(app) as client:
            metrics = await client.get("/metrics")
            live = await client.get("/health/live")
            ready = await client.get("/health/ready")

        assert metrics.status_code == 200
        assert live.json()["status"] == "alive"
        assert ready.json()["status"] == "ready"
        assert captured.spans == []
        assert captured.events("http_request") == []
        assert _value(captured, "http_requests_total") == 0


class TestWebSockets:
    async def test_connections_and_messages_are_counted_per_route(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """A WebSocket session moves the active gauge and counts messages each way."""
        app = TelemetryMiddleware(_starlette(), registry=registry)
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for message in (
            {"type": "websocket.connect"},
            {"type": "websocket.receive", "text": "hello"},
        ):
            inbox.put_nowait(message)
        outbox: list[dict[str, Any]] = []
        during: list[float] = []

        async def send(message: dict[str, Any]) -> None:
            outbox.append(message)
            if message["type"] == "websocket.send":
                during.append(
                    captured.metric_value("websocket_connections_active", route="/ws/{room}")
                )

        scope = _scope("/ws/lobby", kind="websocket")
        await app(scope, inbox.get, send)

        assert [m.get("text") for m in outbox if m["type"] == "websocket.send"] == ["HELLO", "bye"]
        assert during == [1.0, 1.0]
        assert _value(captured, "websocket_connections_active", route="/ws/{room}") == 0
        assert _value(captured, "websocket_messages_total", route="/ws/{room}", direction="in") == 1
        assert (
            _value(captured, "websocket_messages_total", route="/ws/{room}", direction="out") == 2
        )


class TestLifespan:
    async def test_lifespan_passes_through(self, registry: CollectorRegistry) -> None:
        """Startup and shutdown messages reach the app unchanged."""
        events: list[str] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            assert scope["type"] == "lifespan"
            while True:
                message = await receive()
                events.append(message["type"])
                if message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
                await send({"type": "lifespan.startup.complete"})

        messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

        async def receive() -> dict[str, Any]:
            return next(messages)

        async def send(message: dict[str, Any]) -> None:
            events.append(message["type"])

        await TelemetryMiddleware(app, registry=registry)({"type": "lifespan"}, receive, send)

        assert events == [
            "lifespan.startup",
            "lifespan.startup.complete",
            "lifespan.shutdown",
            "lifespan.shutdown.complete",
        ]


class TestWithoutSetup:
    async def test_middleware_works_before_setup(self, registry: CollectorRegistry) -> None:
        """Without setup_telemetry() the request is served and counted with defaults."""
        assert _setup.current() is None
        app = TelemetryMiddleware(_starlette(), registry=registry)
        async with _client(app) as client:
            response = await client.get("/items/9")

        assert response.status_code == 200
        assert trace.get_current_span() is trace.INVALID_SPAN


def _scope(path: str, *, kind: str = "http") -> dict[str, Any]:
    return {
        "type": kind,
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http" if kind == "http" else "ws",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


class TestSentryIsolation:
    async def test_breadcrumbs_do_not_cross_requests(self, registry, captured):
        """A log line of one request never shows up in another request's Sentry event."""
        from kaleem_telemetry.logs import get_logger

        async def chatty(request: Request) -> PlainTextResponse:
            get_logger("shop").warning("merchant_a_detail", merchant="m-a")
            return PlainTextResponse("ok")

        async def failing(request: Request) -> PlainTextResponse:
            get_logger("shop").warning("merchant_b_detail", merchant="m-b")
            raise Boom("kaboom")

        app = Starlette(routes=[Route("/a", chatty), Route("/b", failing)])
        wrapped = TelemetryMiddleware(app, registry=registry)
        transport = httpx.ASGITransport(app=wrapped, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await client.get("/a")
            await client.get("/b")

        [event] = captured.sentry_events
        crumbs = [c.get("message") for c in event.get("breadcrumbs", {}).get("values", [])]
        assert "merchant_b_detail" in crumbs
        assert "merchant_a_detail" not in crumbs


class TestCardinality:
    async def test_ten_thousand_raw_paths_and_random_methods_stay_bounded(self, registry):
        """Distinct raw paths and made-up methods never become label values."""
        import random
        import string

        rng = random.Random(7)
        app = TelemetryMiddleware(
            Starlette(routes=[Route("/items/{item_id}", _item, methods=["GET", "POST"])]),
            registry=registry,
        )

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Any) -> None:
            return None

        methods = ["GET", "POST", "DELETE"]
        for i in range(10_000):
            path = (
                f"/items/{i}" if i % 2 else f"/{''.join(rng.choices(string.ascii_letters, k=12))}"
            )
            method = (
                rng.choice(methods)
                if i % 3
                else "".join(rng.choices(string.ascii_uppercase, k=rng.randint(3, 9)))
            )
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": method,
                "scheme": "http",
                "path": path,
                "raw_path": path.encode(),
                "root_path": "",
                "query_string": b"",
                "headers": [],
                "client": ("127.0.0.1", 1234),
                "server": ("127.0.0.1", 80),
            }
            await app(scope, receive, send)

        label_sets = {
            tuple(sorted(s.labels.items()))
            for family in registry.collect()
            if family.name == "http_requests"
            for s in family.samples
            if s.name == "http_requests_total"
        }
        routes = {dict(labels)["route"] for labels in label_sets}
        methods_seen = {dict(labels)["method"] for labels in label_sets}
        assert routes <= {"/items/{item_id}", "unmatched"}
        assert methods_seen <= {"GET", "POST", "DELETE", "_OTHER"}
        assert len(label_sets) <= 2 * 4 * 3


def _is_disconnect(exc: BaseException | None) -> bool:
    """Return whether ``exc`` is the client going away, alone or in an exception group."""
    if isinstance(exc, OSError | ClientDisconnect):
        return True
    return any(_is_disconnect(inner) for inner in getattr(exc, "exceptions", ()))
