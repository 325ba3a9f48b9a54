"""Serve ``/metrics``: ASGI and WSGI apps, a stand-alone server, a gunicorn hook.

Every app answers with the Prometheus text format, or with OpenMetrics (which
carries exemplars) when the scraper's ``Accept`` header asks for
``application/openmetrics-text``; the body is gzipped when the scraper accepts
gzip. When ``PROMETHEUS_MULTIPROC_DIR`` is set, each scrape aggregates the files
of every worker with a fresh `MultiProcessCollector` registry.

With a bearer token (the ``token`` argument, else ``KALEEM_TELEMETRY_METRICS_TOKEN``
as configured by `setup_telemetry()` or read from the environment), a request
without ``Authorization: Bearer <token>`` gets ``401``.

Added in 0.1.0.
"""

from __future__ import annotations

import asyncio
import gzip
import hmac
import os
import socket
import threading
from collections.abc import Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from kaleem_telemetry import metrics as _metrics
from kaleem_telemetry._asgi_endpoints import send_response, serve_lifespan
from kaleem_telemetry._types import ASGIApp, Environ, Receive, Scope, Send, StartResponse, WSGIApp

__all__ = [
    "MetricsServer",
    "child_exit",
    "metrics_asgi_app",
    "metrics_wsgi_app",
    "render_metrics",
    "start_metrics_server",
]

_TOKEN_ENV = "KALEEM_TELEMETRY_METRICS_TOKEN"
_UNAUTHORIZED = b"Unauthorized: send the metrics token as 'Authorization: Bearer <token>'.\n"


def _effective_token(token: str | None) -> str | None:
    if token:
        return token
    return _metrics.configured_token() or os.environ.get(_TOKEN_ENV) or None


def _authorized(token: str | None, authorization: str | None) -> bool:
    expected = _effective_token(token)
    if expected is None:
        return True
    if not authorization:
        return False
    scheme, _, supplied = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Constant-time: the comparison must not reveal how much of the token matched.
    return hmac.compare_digest(supplied.strip().encode(), expected.encode())


def _scrape_registry(registry: CollectorRegistry | None) -> CollectorRegistry:
    if registry is not None:
        return registry
    path = _metrics.multiproc_dir()
    if path is not None:
        # A registry per scrape, as prometheus_client recommends: the collector
        # reads every worker's files each time. The environment decides, not this
        # process's value class: the scraping process (a gunicorn master, a
        # sidecar) may never have created a metric itself.
        scrape = CollectorRegistry()
        MultiProcessCollector(scrape, path=path)  # type: ignore[no-untyped-call]
        return scrape
    return REGISTRY


def render_metrics(
    registry: CollectorRegistry | None = None,
    *,
    accept: str | None = None,
    accept_encoding: str | None = None,
) -> tuple[bytes, list[tuple[str, str]]]:
    """Return the exposition body and its headers for one scrape.

    Args:
        registry: The registry to expose; None means the process registry, or the
            multiprocess aggregate when ``PROMETHEUS_MULTIPROC_DIR`` is set.
        accept: The request's ``Accept`` header (OpenMetrics when it asks).
        accept_encoding: The request's ``Accept-Encoding`` header (gzip when it asks).
    """
    encoder, content_type = choose_encoder(accept or "")
    body = encoder(_scrape_registry(registry))
    headers = [("Content-Type", content_type), ("Cache-Control", "no-store")]
    if accept_encoding and "gzip" in accept_encoding.lower():
        body = gzip.compress(body, compresslevel=6)
        headers.append(("Content-Encoding", "gzip"))
    headers.append(("Content-Length", str(len(body))))
    return body, headers


def metrics_asgi_app(
    registry: CollectorRegistry | None = None, *, token: str | None = None
) -> ASGIApp:
    """Return a pure ASGI app that serves the metrics on any path it is mounted at.

    Args:
        registry: The registry to expose (see `render_metrics`).
        token: The bearer token to require; None means the configured
            ``KALEEM_TELEMETRY_METRICS_TOKEN``, if any.
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if not _authorized(token, headers.get("authorization")):
            await send_response(
                send,
                401,
                [("Content-Type", "text/plain; charset=utf-8"), ("WWW-Authenticate", "Bearer")],
                _UNAUTHORIZED,
            )
            return
        # Collecting reads every worker's files in multiprocess mode: keep it off
        # the event loop.
        body, response_headers = await asyncio.to_thread(
            render_metrics,
            registry,
            accept=headers.get("accept"),
            accept_encoding=headers.get("accept-encoding"),
        )
        if scope.get("method") == "HEAD":
            body = b""
        await send_response(send, 200, response_headers, body)

    return app


def metrics_wsgi_app(
    registry: CollectorRegistry | None = None, *, token: str | None = None
) -> WSGIApp:
    """Return a WSGI app that serves the metrics on any path it is mounted at.

    Args:
        registry: The registry to expose (see `render_metrics`).
        token: The bearer token to require; None means the configured
            ``KALEEM_TELEMETRY_METRICS_TOKEN``, if any.
    """

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if not _authorized(token, environ.get("HTTP_AUTHORIZATION")):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain; charset=utf-8"), ("WWW-Authenticate", "Bearer")],
            )
            return [_UNAUTHORIZED]
        body, headers = render_metrics(
            registry,
            accept=environ.get("HTTP_ACCEPT"),
            accept_encoding=environ.get("HTTP_ACCEPT_ENCODING"),
        )
        start_response("200 OK", headers)
        if environ.get("REQUEST_METHOD") == "HEAD":
            return [b""]
        return [body]

    return app


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _IPv6Server(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Drop the per-request line: scrapes are not access-logged (docs/reference.md)."""


def _server_app(registry: CollectorRegistry | None, token: str | None) -> WSGIApp:
    metrics_app = metrics_wsgi_app(registry, token=token)

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path in ("/", "/metrics"):
            return metrics_app(environ, start_response)
        if path.startswith("/health/"):
            from kaleem_telemetry.health import health_wsgi_app

            health_app: WSGIApp = health_wsgi_app(registry=registry)
            return health_app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"Not found: metrics are served at /metrics.\n"]

    return app


class MetricsServer:
    """A running metrics server (see `start_metrics_server`); stop it with `stop()`.

    Attributes:
        addr: The address it is bound to.
        port: The port it is bound to (the real one when 0 was asked for).
    """

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self._stopped = False
        self._lock = threading.Lock()
        address = server.server_address
        self.addr: str = str(address[0])
        self.port: int = int(address[1])

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "serving"
        return f"<MetricsServer {self.url} {state}>"

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The ``/metrics`` URL of this server."""
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and close the socket; idempotent, waits at most ``timeout`` seconds.

        Args:
            timeout: How long to wait for the serving thread to end, in seconds.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        # shutdown() waits for serve_forever() to notice; it polls every 0.5 s.
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)


def start_metrics_server(
    port: int,
    addr: str = "0.0.0.0",
    *,
    registry: CollectorRegistry | None = None,
    token: str | None = None,
) -> MetricsServer:
    """Serve ``/metrics`` (and ``/health/live``, ``/health/ready``) from a daemon thread.

    For processes without a web server of their own (workers, consumers). It
    binds exactly where told: ``0.0.0.0`` (all IPv4 interfaces, the default, so a
    Prometheus in another container can scrape it), ``127.0.0.1`` for local
    only, or an IPv6 address such as ``::``.

    Args:
        port: The TCP port; 0 picks a free one (read it from ``.port``).
        addr: The address to bind.
        registry: The registry to expose (see `render_metrics`).
        token: The bearer token to require; None means the configured
            ``KALEEM_TELEMETRY_METRICS_TOKEN``, if any.

    Returns:
        The running server; call ``stop()`` to end it.

    Raises:
        OSError: The address cannot be bound (for example the port is in use).
    """
    server_class = _IPv6Server if ":" in addr else _ThreadingWSGIServer
    server = make_server(
        addr, port, _server_app(registry, token), server_class, handler_class=_QuietHandler
    )
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.2},
        name=f"kaleem-telemetry-metrics-{server.server_port}",
        daemon=True,
    )
    thread.start()
    return MetricsServer(server, thread)


def child_exit(server: object, worker: Any) -> None:
    """Gunicorn ``child_exit`` hook: drop a dead worker's live gauges.

    Use it in ``gunicorn.conf.py``: ``from kaleem_telemetry.exposition import
    child_exit``. Without it, the ``live*`` gauges (in-progress requests, health)
    of dead workers stay in the aggregate.

    Args:
        server: The gunicorn arbiter (unused).
        worker: The worker that exited; its ``pid`` is used.
    """
    path = _metrics.multiproc_dir()
    if path is not None:
        mark_process_dead(worker.pid, path)  # type: ignore[no-untyped-call]
