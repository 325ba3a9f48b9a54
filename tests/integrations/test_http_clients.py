"""kaleem_telemetry.integrations.httpx and .requests against a local HTTP server."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytest.importorskip("httpx")
pytest.importorskip("requests")

import httpx
import requests
from opentelemetry import baggage
from opentelemetry import context as otel_context

from kaleem_telemetry import telemetry_context, tracing
from kaleem_telemetry.exceptions import MissingDependencyError
from kaleem_telemetry.integrations import httpx as httpx_integration
from kaleem_telemetry.integrations import requests as requests_integration
from kaleem_telemetry.propagation import extract_server_context
from kaleem_telemetry.testing import TelemetryCapture, capture_telemetry

SECRET = "hunter2-never-recorded"


class _Recorder(BaseHTTPRequestHandler):
    received: list[dict[str, str]]

    def do_GET(self) -> None:
        self.server.received.append({k.lower(): v for k, v in self.headers.items()})  # type: ignore[attr-defined]
        if self.path.startswith("/slow"):
            time.sleep(1.0)
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "/ok")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status = 500 if self.path.startswith("/fail") else 200
        try:
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        except OSError:
            pass  # the client gave up (timeout test)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(name="server")
def _server() -> Iterator[Any]:
    """A loopback HTTP server recording the headers of each request it received."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    httpd.daemon_threads = True
    httpd.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(name="cap")
def _cap() -> Iterator[TelemetryCapture]:
    with capture_telemetry() as captured:
        yield captured


@pytest.fixture(name="instrumented")
def _instrumented() -> Iterator[None]:
    httpx_integration.instrument()
    requests_integration.instrument()
    try:
        yield
    finally:
        httpx_integration.uninstrument()
        requests_integration.uninstrument()


def _base(server: Any) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def _client_spans(cap: TelemetryCapture) -> list[Any]:
    return [s for s in cap.spans if s.kind.name == "CLIENT"]


def _duration(span: Any) -> float:
    return float(span.end_time - span.start_time) / 1e9


def _get_httpx(url: str, **kwargs: Any) -> Any:
    with httpx.Client() as client:
        return client.get(url, **kwargs)


def _get_async_httpx(url: str, **kwargs: Any) -> Any:
    async def run() -> Any:
        async with httpx.AsyncClient() as client:
            return await client.get(url, **kwargs)

    return asyncio.run(run())


def _get_requests(url: str, **kwargs: Any) -> Any:
    return requests.get(url, **kwargs)


CLIENTS = {"httpx": _get_httpx, "httpx-async": _get_async_httpx, "requests": _get_requests}
TIMEOUTS = {"httpx": httpx.TimeoutException, "httpx-async": httpx.TimeoutException}


class TestInstrument:
    def test_repeat_warns_and_uninstrument_restores_exactly(
        self, caplog: pytest.LogCaptureFixture, server: Any, cap: TelemetryCapture
    ) -> None:
        """A second instrument() warns; uninstrument() puts the originals back, unobserved."""
        owners = [(httpx.Client, "send"), (httpx.AsyncClient, "send"), (requests.Session, "send")]
        originals = [owner.__dict__[name] for owner, name in owners]
        httpx_integration.instrument()
        requests_integration.instrument()
        with caplog.at_level(logging.WARNING):
            httpx_integration.instrument()
            requests_integration.instrument()
        patched = [owner.__dict__[name] for owner, name in owners]
        httpx_integration.uninstrument()
        requests_integration.uninstrument()
        _get_httpx(f"{_base(server)}/ok")
        _get_requests(f"{_base(server)}/ok")

        assert all(p is not o for p, o in zip(patched, originals, strict=True))
        assert caplog.text.count("already instrumented") == 2
        assert [owner.__dict__[name] for owner, name in owners] == originals
        assert _client_spans(cap) == []
        assert all("traceparent" not in headers for headers in server.received)

    @pytest.mark.parametrize(("library", "extra"), [("httpx", "httpx"), ("requests", "requests")])
    def test_missing_library_names_the_extra(
        self, monkeypatch: pytest.MonkeyPatch, library: str, extra: str
    ) -> None:
        """Without the library, importing the integration says which extra to install."""
        monkeypatch.setitem(sys.modules, library, None)
        monkeypatch.delitem(sys.modules, f"kaleem_telemetry.integrations.{library}")

        with pytest.raises(MissingDependencyError, match=rf"kaleem-telemetry\[{extra}\]"):
            importlib.import_module(f"kaleem_telemetry.integrations.{library}")


@pytest.mark.usefixtures("instrumented")
class TestRequests:
    @pytest.mark.parametrize("client", sorted(CLIENTS))
    def test_span_metric_and_headers(self, client: str, server: Any, cap: TelemetryCapture) -> None:
        """One CLIENT span under the current one, its duration observed, the headers sent."""
        url = f"http://user:{SECRET}@127.0.0.1:{server.server_address[1]}/ok?token={SECRET}&q=1"
        with (
            telemetry_context(request_id="req-42"),
            tracing.get_tracer().start_as_current_span("handler") as parent,
        ):
            response = CLIENTS[client](url, headers={"Authorization": f"Bearer {SECRET}"})
        [span] = _client_spans(cap)
        received = server.received[0]

        assert response.status_code == 200
        assert span.name == "GET"
        assert span.parent.span_id == parent.get_span_context().span_id
        assert span.attributes["http.response.status_code"] == 200
        assert span.attributes["server.address"] == "127.0.0.1"
        assert SECRET not in str(span.attributes)
        assert "q=1" in span.attributes["url.full"]
        assert received["traceparent"].split("-")[2] == format(span.context.span_id, "016x")
        assert received["x-request-id"] == "req-42"
        labels = {"method": "GET", "host": "127.0.0.1", "status_code": "200"}
        assert cap.metric_value("http_client_request_duration_seconds_count", **labels) == 1
        assert cap.metric_value(
            "http_client_request_duration_seconds_sum", **labels
        ) == pytest.approx(_duration(span), abs=1e-9)

    @pytest.mark.parametrize("client", sorted(CLIENTS))
    def test_server_error_is_an_error_span_with_its_status(
        self, client: str, server: Any, cap: TelemetryCapture
    ) -> None:
        """A 500 answer: the status code label and an ERROR span."""
        CLIENTS[client](f"{_base(server)}/fail")
        [span] = _client_spans(cap)

        assert span.status.status_code.name == "ERROR"
        assert (
            cap.metric_value(
                "http_client_request_duration_seconds_count",
                method="GET",
                host="127.0.0.1",
                status_code="500",
            )
            == 1
        )

    @pytest.mark.parametrize("client", sorted(CLIENTS))
    def test_timeout_is_recorded_with_status_code_error(
        self, client: str, server: Any, cap: TelemetryCapture
    ) -> None:
        """A timeout (no response) is observed with status_code="error"; the error propagates."""
        expected = TIMEOUTS.get(client, requests.Timeout)
        with pytest.raises(expected):
            CLIENTS[client](f"{_base(server)}/slow", timeout=0.2)
        [span] = _client_spans(cap)

        assert span.status.status_code.name == "ERROR"
        assert "error.type" in span.attributes
        assert (
            cap.metric_value(
                "http_client_request_duration_seconds_count",
                method="GET",
                host="127.0.0.1",
                status_code="error",
            )
            == 1
        )

    @pytest.mark.parametrize("client", sorted(CLIENTS))
    def test_redirect_is_one_observation_and_every_hop_carries_the_trace(
        self, client: str, server: Any, cap: TelemetryCapture
    ) -> None:
        """A followed redirect is one call; both hops carry the same traceparent."""
        options = {"follow_redirects": True} if client.startswith("httpx") else {}
        CLIENTS[client](f"{_base(server)}/redirect", **options)
        [span] = _client_spans(cap)

        assert len(server.received) == 2
        assert server.received[0]["traceparent"] == server.received[1]["traceparent"]
        assert (
            cap.metric_value(
                "http_client_request_duration_seconds_count", method="GET", host="127.0.0.1"
            )
            == 1
        )
        assert span.attributes["http.response.status_code"] == 200

    @pytest.mark.parametrize("client", sorted(CLIENTS))
    def test_untrusted_caller_baggage_and_tracestate_are_not_forwarded(
        self, client: str, server: Any, cap: TelemetryCapture
    ) -> None:
        """An edge service (untrusted trace headers) forwards neither baggage nor tracestate."""
        incoming = {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "tracestate": "vendor=caller-state",
            "baggage": f"user={SECRET}",
        }
        parent, links = extract_server_context(incoming, trust=False)
        token = otel_context.attach(parent)
        try:
            with tracing.get_tracer().start_as_current_span("server", links=links):
                CLIENTS[client](f"{_base(server)}/ok")
        finally:
            otel_context.detach(token)
        received = server.received[0]

        assert "baggage" not in received
        assert "tracestate" not in received
        assert "0af7651916cd43dd8448eb211c80319c" not in received["traceparent"]

    @pytest.mark.parametrize("client", sorted(CLIENTS))
    def test_trusted_baggage_is_forwarded(
        self, client: str, server: Any, cap: TelemetryCapture
    ) -> None:
        """Baggage of a trusted trace goes on with the call."""
        token = otel_context.attach(baggage.set_baggage("tier", "gold"))
        try:
            CLIENTS[client](f"{_base(server)}/ok")
        finally:
            otel_context.detach(token)

        assert server.received[0]["baggage"] == "tier=gold"


class TestConfiguredHeader:
    def test_request_id_goes_under_the_configured_header(
        self, monkeypatch: pytest.MonkeyPatch, server: Any
    ) -> None:
        """KALEEM_TELEMETRY_REQUEST_ID_HEADER names the header outgoing calls carry."""
        import kaleem_telemetry

        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
        kaleem_telemetry.setup_telemetry(
            "svc", request_id_header="X-Correlation-ID", integrations=["httpx", "requests"]
        )
        try:
            with telemetry_context(request_id="corr-1"):
                _get_httpx(f"{_base(server)}/ok")
                _get_requests(f"{_base(server)}/ok")
        finally:
            httpx_integration.uninstrument()
            requests_integration.uninstrument()

        assert [h.get("x-correlation-id") for h in server.received] == ["corr-1", "corr-1"]
        assert all("x-request-id" not in h for h in server.received)
