from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("flask")

from flask import Flask, Response, stream_with_context
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry
from werkzeug.test import Client

from kaleem_telemetry.apps import instrument_app
from kaleem_telemetry.context import bind_context, get_context
from kaleem_telemetry.testing import TelemetryCapture
from kaleem_telemetry.wsgi import TelemetryMiddleware


class Boom(RuntimeError):
    """The application's own failure."""


def _flask() -> Flask:
    app = Flask("kt-test")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, Any]:
        bind_context(merchant_id="m-7")
        return {"item": item_id, "ctx": get_context()}

    @app.get("/files/<path:name>")
    def files(name: str) -> str:
        return name

    @app.get("/boom")
    def boom() -> str:
        raise Boom("flask kaboom")

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[str]:
            yield "a"
            yield "b"

        return Response(stream_with_context(chunks()))

    return app


class TestFlask:
    def test_flask_rule_becomes_the_template(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """A Flask rule with a converter is counted as /items/{item_id}."""
        app = instrument_app(_flask(), registry=registry)
        client = Client(app)
        response = client.get("/items/3", headers={"X-Request-ID": "flask-1"}, buffered=True)

        assert response.status_code == 200
        assert response.headers["X-Request-ID"] == "flask-1"
        assert response.json is not None
        assert response.json["ctx"]["request_id"] == "flask-1"
        assert captured.metric_value("http_requests_total", route="/items/{item_id}") == 1
        (span,) = captured.spans
        assert span.name == "GET /items/{item_id}"
        (event,) = captured.events("http_request")
        assert event["merchant_id"] == "m-7"
        assert event["route"] == "/items/{item_id}"

    def test_path_converter_is_normalised(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """A <path:name> rule becomes /files/{name}."""
        client = Client(instrument_app(_flask(), registry=registry))
        client.get("/files/a/b/c.txt", buffered=True)

        assert captured.metric_value("http_requests_total", route="/files/{name}") == 1

    def test_unmatched_flask_request(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """A 404 in Flask is route="unmatched"."""
        client = Client(instrument_app(_flask(), registry=registry))
        response = client.get("/nowhere/1", buffered=True)

        assert response.status_code == 404
        assert captured.metric_value("http_requests_total", route="unmatched") == 1
        assert captured.events("http_request")[0]["level"] == "warning"

    def test_exception_flask_turns_into_500_is_recorded(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """Flask's 500 page still yields an error span, an error count and one Sentry event."""
        client = Client(instrument_app(_flask(), registry=registry))
        response = client.get("/boom", headers={"X-Request-ID": "flask-err"}, buffered=True)

        assert response.status_code == 500
        assert response.headers["X-Request-ID"] == "flask-err"
        assert captured.metric_value("http_errors_total", route="/boom", error_type="Boom") == 1
        (span,) = captured.spans
        assert span.status.status_code is StatusCode.ERROR
        events = [e for e in captured.sentry_events if e["tags"].get("route") == "/boom"]
        assert len(events) == 1
        assert events[0]["tags"]["request_id"] == "flask-err"

    def test_streamed_flask_response(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """A streamed Flask body is one request, recorded when exhausted."""
        client = Client(instrument_app(_flask(), registry=registry))
        response = client.get("/stream", buffered=True)

        assert response.get_data() == b"ab"
        assert captured.metric_value("http_requests_total", route="/stream") == 1
        assert len(captured.events("http_request")) == 1

    def test_endpoints_are_served_and_not_recorded(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """/metrics and /health/* are served in front of Flask and leave no telemetry."""
        client = Client(instrument_app(_flask(), registry=registry))

        live = client.get("/health/live", buffered=True).json

        assert client.get("/metrics", buffered=True).status_code == 200
        assert live is not None
        assert live["status"] == "alive"
        assert client.get("/health/ready", buffered=True).status_code == 200
        assert captured.spans == []
        assert captured.events("http_request") == []

    def test_instrumenting_twice_adds_one_layer(self, registry: CollectorRegistry) -> None:
        """A second instrument_app() call on the same app changes nothing."""
        app = instrument_app(_flask(), registry=registry)
        wsgi_app = app.wsgi_app

        assert instrument_app(app, registry=registry) is app
        assert app.wsgi_app is wsgi_app


class _Body:
    """A response body that records how it was used."""

    def __init__(self, chunks: list[bytes], *, fail_at: int | None = None) -> None:
        self.chunks = chunks
        self.fail_at = fail_at
        self.closed = 0

    def __iter__(self) -> Iterator[bytes]:
        for index, chunk in enumerate(self.chunks):
            if index == self.fail_at:
                raise Boom("mid-body")
            yield chunk

    def close(self) -> None:
        self.closed += 1


def _wsgi_app(body: _Body, status: str = "200 OK") -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> _Body:
        start_response(status, [("Content-Type", "text/plain")])
        return body

    return app


def _environ(path: str = "/raw", **extra: Any) -> dict[str, Any]:
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
    }
    environ.update(extra)
    return environ


class TestResponseBody:
    def test_body_is_closed_and_recorded_after_exhaustion(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """The request is recorded when the body is exhausted and close() reaches the body."""
        body = _Body([b"a", b"b"])
        statuses: list[str] = []
        result = TelemetryMiddleware(_wsgi_app(body), registry=registry)(
            _environ(), lambda status, headers, exc_info=None: statuses.append(status)
        )
        chunks = list(result)
        assert captured.events("http_request") != []
        result.close()  # type: ignore[attr-defined]

        assert chunks == [b"a", b"b"]
        assert body.closed == 1
        assert statuses == ["200 OK"]
        assert captured.metric_value("http_requests_total", status_code="200") == 1
        assert len(captured.events("http_request")) == 1

    def test_close_before_exhaustion_is_499(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """A server that closes the body early (client gone) records 499 and closes the body."""
        body = _Body([b"a", b"b", b"c"])
        result = TelemetryMiddleware(_wsgi_app(body), registry=registry)(
            _environ(), lambda *args: None
        )
        iterator = iter(result)
        next(iterator)
        result.close()  # type: ignore[attr-defined]

        assert body.closed == 1
        assert captured.metric_value("http_requests_total", status_code="499") == 1
        assert captured.sentry_events == []

    def test_error_while_iterating_is_recorded_and_raised(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """A body that raises mid-iteration is an error; close() still reaches the body."""
        body = _Body([b"a", b"b"], fail_at=1)
        result = TelemetryMiddleware(_wsgi_app(body), registry=registry)(
            _environ(), lambda *args: None
        )
        with pytest.raises(Boom):
            list(result)
        result.close()  # type: ignore[attr-defined]

        assert body.closed == 1
        assert captured.metric_value("http_errors_total", error_type="Boom") == 1
        assert len(captured.sentry_events) == 1

    def test_app_raising_is_500_and_reraised(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """An app that raises before returning a body is a 500 and the exception propagates."""

        def broken(environ: Any, start_response: Any) -> list[bytes]:
            raise Boom("early")

        with pytest.raises(Boom):
            TelemetryMiddleware(broken, registry=registry)(_environ(), lambda *args: None)

        assert captured.metric_value("http_requests_total", status_code="500") == 1
        assert get_context() == {}

    def test_request_id_and_trace_headers_from_environ(
        self, registry: CollectorRegistry, captured: TelemetryCapture
    ) -> None:
        """The request id and traceparent are read from the WSGI environ."""
        headers: list[list[tuple[str, str]]] = []
        environ = _environ(
            HTTP_X_REQUEST_ID="wsgi-rid",
            HTTP_TRACEPARENT="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        result = TelemetryMiddleware(_wsgi_app(_Body([b"x"])), registry=registry)(
            environ, lambda status, h, exc_info=None: headers.append(h)
        )
        list(result)
        result.close()  # type: ignore[attr-defined]

        assert ("X-Request-ID", "wsgi-rid") in headers[0]
        (span,) = captured.spans
        assert span.context is not None
        assert f"{span.context.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert captured.metric_value("http_requests_total", route="unmatched") == 1
