from __future__ import annotations

import gzip
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from kaleem_telemetry import exposition
from kaleem_telemetry._metrics_server import MetricsServer, configure_metrics, start_metrics_server
from kaleem_telemetry.config import TelemetryConfig
from kaleem_telemetry.exposition import metrics_asgi_app, metrics_wsgi_app, render_metrics
from kaleem_telemetry.metrics import TelemetryMetrics

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


@pytest.fixture(name="registry")
def _registry() -> CollectorRegistry:
    """A fresh registry with one request recorded, with an exemplar."""
    registry = CollectorRegistry()
    tm = TelemetryMetrics(registry)
    tm.http_requests_total.labels("GET", "/items/{item_id}", "200").inc()
    tm.http_request_duration_seconds.labels("GET", "/items/{item_id}", "200").observe(
        0.003, {"trace_id": TRACE_ID}
    )
    return registry


@pytest.fixture(name="server")
def _server(registry: CollectorRegistry) -> Iterator[MetricsServer]:
    """A metrics server on a free loopback port."""
    with start_metrics_server(0, "127.0.0.1", registry=registry) as server:
        yield server


@pytest.fixture(name="token_server")
def _token_server(registry: CollectorRegistry) -> Iterator[MetricsServer]:
    """A metrics server that requires a bearer token."""
    with start_metrics_server(0, "127.0.0.1", registry=registry, token="s3cret-token") as server:
        yield server


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


class TestServer:
    def test_prometheus_text_by_default(self, server: MetricsServer) -> None:
        """Without an Accept header the scrape is Prometheus text, without exemplars."""
        status, headers, body = _get(server.url)

        assert status == 200
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert (
            b'http_requests_total{method="GET",route="/items/{item_id}",status_code="200"} 1.0'
            in body
        )
        assert TRACE_ID.encode() not in body

    def test_openmetrics_with_exemplar(self, server: MetricsServer) -> None:
        """An OpenMetrics Accept header gets OpenMetrics with the trace_id exemplar."""
        status, headers, body = _get(server.url, {"Accept": OPENMETRICS})

        assert status == 200
        assert headers["Content-Type"].startswith("application/openmetrics-text")
        assert f'# {{trace_id="{TRACE_ID}"}} 0.003'.encode() in body
        assert body.endswith(b"# EOF\n")

    def test_gzip_when_accepted(self, server: MetricsServer) -> None:
        """A scraper that accepts gzip gets a gzipped body."""
        status, headers, body = _get(server.url, {"Accept-Encoding": "gzip"})

        assert status == 200
        assert headers["Content-Encoding"] == "gzip"
        assert b"http_requests_total" in gzip.decompress(body)

    def test_binds_where_told(self, server: MetricsServer) -> None:
        """The server binds the address and reports the real port chosen for port 0."""
        assert server.addr == "127.0.0.1"
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"

    def test_root_path_serves_metrics(self, server: MetricsServer) -> None:
        """'/' serves the metrics like '/metrics' does."""
        status, _, body = _get(f"http://127.0.0.1:{server.port}/")

        assert status == 200
        assert b"http_requests_total" in body

    def test_unknown_path_is_404(self, server: MetricsServer) -> None:
        """Any other path answers 404."""
        status, _, _ = _get(f"http://127.0.0.1:{server.port}/nope")

        assert status == 404

    def test_health_live_served(self, server: MetricsServer) -> None:
        """Workers get /health/live from the same server."""
        status, _, body = _get(f"http://127.0.0.1:{server.port}/health/live")

        assert status == 200
        assert orjson.loads(body)["status"] == "alive"

    def test_stop_is_idempotent(self, registry: CollectorRegistry) -> None:
        """stop() closes the socket and may be called twice."""
        server = start_metrics_server(0, "127.0.0.1", registry=registry)
        server.stop()
        server.stop()

        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(server.url, timeout=2)
        assert "stopped" in repr(server)


class TestToken:
    def test_401_without_token(self, token_server: MetricsServer) -> None:
        """Without the bearer token the server answers 401 and no metrics."""
        status, headers, body = _get(token_server.url)

        assert status == 401
        assert headers["WWW-Authenticate"] == "Bearer"
        assert b"http_requests_total" not in body

    @pytest.mark.parametrize(
        "value", ["Bearer wrong", "Basic czNjcmV0LXRva2Vu", "s3cret-token", "Bearer"]
    )
    def test_401_with_wrong_credentials(self, token_server: MetricsServer, value: str) -> None:
        """A wrong token, another scheme or a bare token is refused."""
        status, _, _ = _get(token_server.url, {"Authorization": value})

        assert status == 401

    def test_200_with_token(self, token_server: MetricsServer) -> None:
        """The right bearer token gets the metrics (scheme case-insensitive)."""
        status, _, body = _get(token_server.url, {"Authorization": "bearer s3cret-token"})

        assert status == 200
        assert b"http_requests_total" in body

    def test_configured_token_applies(self, registry: CollectorRegistry) -> None:
        """The token set through configure_metrics protects apps made without one."""
        configure_metrics(TelemetryConfig.from_env({}, metrics_token="from-config"))
        app = metrics_wsgi_app(registry)

        assert _call_wsgi(app, {})[0].startswith("401")
        assert _call_wsgi(app, {"HTTP_AUTHORIZATION": "Bearer from-config"})[0].startswith("200")

    def test_env_token_applies_without_setup(
        self, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without setup, the token is read from the environment."""
        monkeypatch.setenv("KALEEM_TELEMETRY_METRICS_TOKEN", "from-env")
        app = metrics_wsgi_app(registry)

        assert _call_wsgi(app, {})[0].startswith("401")
        assert _call_wsgi(app, {"HTTP_AUTHORIZATION": "Bearer from-env"})[0].startswith("200")


def _call_wsgi(app: Any, extra: dict[str, str]) -> tuple[str, dict[str, str], bytes]:
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured["status"] = status
        captured["headers"] = dict(headers)
        return lambda _data: None

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", **extra}
    body = b"".join(app(environ, start_response))
    return captured["status"], captured["headers"], body


async def _call_asgi(
    app: Any, headers: list[tuple[bytes, bytes]], method: str = "GET", **scope_extra: Any
) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": "/metrics", "headers": headers}
    scope.update(scope_extra)
    await app(scope, receive, send)
    return (
        sent[0]["status"],
        dict(sent[0]["headers"]),
        b"".join(m.get("body", b"") for m in sent[1:]),
    )


class TestApps:
    async def test_asgi_content_negotiation(self, registry: CollectorRegistry) -> None:
        """The ASGI app negotiates text versus OpenMetrics from Accept."""
        app = metrics_asgi_app(registry)
        _, text_headers, text = await _call_asgi(app, [])
        _, om_headers, om = await _call_asgi(app, [(b"accept", OPENMETRICS.encode())])

        assert text_headers[b"content-type"].startswith(b"text/plain")
        assert TRACE_ID.encode() not in text
        assert om_headers[b"content-type"].startswith(b"application/openmetrics-text")
        assert TRACE_ID.encode() in om

    async def test_asgi_token(self, registry: CollectorRegistry) -> None:
        """The ASGI app answers 401 without the token and 200 with it."""
        app = metrics_asgi_app(registry, token="t0k")

        assert (await _call_asgi(app, []))[0] == 401
        assert (await _call_asgi(app, [(b"authorization", b"Bearer t0k")]))[0] == 200

    async def test_asgi_head_has_no_body(self, registry: CollectorRegistry) -> None:
        """HEAD answers the headers only."""
        status, headers, body = await _call_asgi(metrics_asgi_app(registry), [], method="HEAD")

        assert status == 200
        assert int(headers[b"content-length"]) > 0
        assert body == b""

    async def test_asgi_lifespan(self) -> None:
        """The ASGI app completes the lifespan protocol when served alone."""
        messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
        sent: list[str] = []

        async def receive() -> dict[str, Any]:
            return next(messages)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message["type"])

        await metrics_asgi_app()({"type": "lifespan"}, receive, send)

        assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]

    def test_wsgi_openmetrics(self, registry: CollectorRegistry) -> None:
        """The WSGI app serves OpenMetrics with exemplars when asked."""
        status, headers, body = _call_wsgi(metrics_wsgi_app(registry), {"HTTP_ACCEPT": OPENMETRICS})

        assert status == "200 OK"
        assert headers["Content-Type"].startswith("application/openmetrics-text")
        assert TRACE_ID.encode() in body

    def test_default_registry_is_the_process_one(self) -> None:
        """Without a registry the process registry is exposed."""
        from kaleem_telemetry.metrics import get_metrics

        get_metrics().business_events_total.labels("exposition_probe").inc()
        body, _ = render_metrics()

        assert b'business_events_total{event="exposition_probe"} 1.0' in body


class TestChildExit:
    @pytest.mark.parametrize("env", [None, ""])
    def test_noop_without_multiproc_dir(
        self, env: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """child_exit does nothing when multiprocess mode is off: no live-gauge file is removed."""
        monkeypatch.delenv("prometheus_multiproc_dir", raising=False)
        if env is None:
            monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
        else:
            monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", env)
        monkeypatch.chdir(tmp_path)
        # The files mark_process_dead() would delete for this pid, were a directory used.
        names = ["gauge_livesum_12345.db", "gauge_liveall_12345.db", "gauge_livemax_12345.db"]
        for name in names:
            (tmp_path / name).write_bytes(b"")

        class Worker:
            pid = 12345

        exposition.child_exit(None, Worker())

        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


WRONG_TOKEN = "wrong-" + "x" * 24


def _refused_total() -> float:
    return REGISTRY.get_sample_value("telemetry_metrics_unauthorized_total") or 0.0


def _refusal_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "/metrics request" in r.getMessage()]


class TestRefusals:
    async def test_asgi_counts_and_logs_once(self, caplog: pytest.LogCaptureFixture) -> None:
        """500 wrong tokens on the ASGI app: counter +500, one warning, no token in it."""
        app = metrics_asgi_app(CollectorRegistry(), token="right-token")
        before = _refused_total()
        header = [(b"authorization", f"Bearer {WRONG_TOKEN}".encode())]
        with caplog.at_level(logging.WARNING, logger="kaleem_telemetry.metrics"):
            statuses = {
                (await _call_asgi(app, header, client=("10.1.2.3", 5555)))[0] for _ in range(500)
            }

        assert statuses == {401}
        assert _refused_total() - before == 500
        lines = _refusal_lines(caplog)
        assert len(lines) == 1
        assert "Refused 1 " in lines[0]
        assert "10.1.2.3" in lines[0]
        assert "telemetry_metrics_unauthorized_total" in lines[0]
        assert WRONG_TOKEN not in caplog.text
        assert "right-token" not in caplog.text

    def test_wsgi_counts_and_logs_once(self, caplog: pytest.LogCaptureFixture) -> None:
        """500 wrong tokens on the WSGI app: counter +500, one warning, no token in it."""
        app = metrics_wsgi_app(CollectorRegistry(), token="right-token")
        before = _refused_total()
        environ = {"HTTP_AUTHORIZATION": f"Bearer {WRONG_TOKEN}", "REMOTE_ADDR": "10.9.8.7"}
        with caplog.at_level(logging.WARNING, logger="kaleem_telemetry.metrics"):
            statuses = {_call_wsgi(app, environ)[0] for _ in range(500)}

        assert statuses == {"401 Unauthorized"}
        assert _refused_total() - before == 500
        lines = _refusal_lines(caplog)
        assert len(lines) == 1
        assert "10.9.8.7" in lines[0]
        assert WRONG_TOKEN not in caplog.text

    def test_server_counts_and_logs_once(
        self, token_server: MetricsServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        """500 wrong tokens on the metrics server: counter +500, one warning, no token in it."""
        before = _refused_total()
        with caplog.at_level(logging.WARNING, logger="kaleem_telemetry.metrics"):
            statuses = {
                _get(token_server.url, {"Authorization": f"Bearer {WRONG_TOKEN}"})[0]
                for _ in range(500)
            }

        assert statuses == {401}
        assert _refused_total() - before == 500
        lines = _refusal_lines(caplog)
        assert len(lines) == 1
        assert "127.0.0.1" in lines[0]
        assert WRONG_TOKEN not in caplog.text
        assert "s3cret-token" not in caplog.text

    def test_next_warning_says_how_many_since_the_last(
        self, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Once the interval has passed, the next warning counts every refusal since the last."""
        app = metrics_wsgi_app(CollectorRegistry(), token="right-token")
        with caplog.at_level(logging.WARNING, logger="kaleem_telemetry.metrics"):
            for _ in range(500):
                _call_wsgi(app, {"HTTP_AUTHORIZATION": f"Bearer {WRONG_TOKEN}"})
            monkeypatch.setattr(exposition, "_REFUSAL_LOG_INTERVAL_SECONDS", 0.0)
            _call_wsgi(app, {})

        lines = _refusal_lines(caplog)
        assert len(lines) == 2
        assert "Refused 1 " in lines[0]
        assert "Refused 500 " in lines[1]
        assert "an unknown address" in lines[1]

    def test_each_app_has_its_own_rate_limit(self, caplog: pytest.LogCaptureFixture) -> None:
        """Two apps refusing requests log one warning each."""
        one = metrics_wsgi_app(CollectorRegistry(), token="right-token")
        two = metrics_wsgi_app(CollectorRegistry(), token="right-token")
        with caplog.at_level(logging.WARNING, logger="kaleem_telemetry.metrics"):
            for _ in range(3):
                _call_wsgi(one, {})
                _call_wsgi(two, {})

        assert len(_refusal_lines(caplog)) == 2

    def test_authorized_requests_are_not_counted(self) -> None:
        """The right token and an app without a token leave the counter alone."""
        before = _refused_total()
        _call_wsgi(
            metrics_wsgi_app(CollectorRegistry(), token="t"), {"HTTP_AUTHORIZATION": "Bearer t"}
        )
        _call_wsgi(metrics_wsgi_app(CollectorRegistry()), {})

        assert _refused_total() == before
