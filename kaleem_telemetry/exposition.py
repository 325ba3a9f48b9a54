"""Serve ``/metrics``: ASGI and WSGI apps and a gunicorn hook.

Every app answers with the Prometheus text format, or with OpenMetrics (which
carries exemplars) when the scraper's ``Accept`` header asks for
``application/openmetrics-text``; the body is gzipped when the scraper accepts
gzip. When ``PROMETHEUS_MULTIPROC_DIR`` is set, each scrape aggregates the files
of every worker with a fresh `MultiProcessCollector` registry.

With a bearer token (the ``token`` argument, else ``KALEEM_TELEMETRY_METRICS_TOKEN``
as configured by `setup_telemetry()` or read from the environment), a request
without ``Authorization: Bearer <token>`` gets ``401``. Each refusal is counted in
``telemetry_metrics_unauthorized_total`` (on the default registry), and each app
logs a warning at most once a minute saying how many it refused since its last
one and the client address, never the token that was sent.

A process without a web server of its own serves these with
`kaleem_telemetry.start_metrics_server`.

Added in 0.1.0.
"""

from __future__ import annotations

import asyncio
import gzip
import hmac
import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from kaleem_telemetry import _compat
from kaleem_telemetry import metrics as _metrics
from kaleem_telemetry._asgi_endpoints import send_response, serve_lifespan
from kaleem_telemetry._guard import internal_errors
from kaleem_telemetry._metric_specs import METRICS_UNAUTHORIZED
from kaleem_telemetry._types import ASGIApp, Environ, Receive, Scope, Send, StartResponse, WSGIApp

__all__ = ["metrics_asgi_app", "metrics_wsgi_app"]

_TOKEN_ENV = "KALEEM_TELEMETRY_METRICS_TOKEN"
# The token `setup_telemetry()` configured; apps made without one of their own use it.
_CONFIGURED_TOKEN: str | None = None
_UNAUTHORIZED = b"Unauthorized: send the metrics token as 'Authorization: Bearer <token>'.\n"
_LOGGER = logging.getLogger("kaleem_telemetry.metrics")
# At most one warning per app per interval: a scanner sending thousands of wrong
# tokens must cost one log line a minute, not one per request.
_REFUSAL_LOG_INTERVAL_SECONDS = 60.0
_REFUSED_COUNTER: Any = None
_REFUSED_COUNTER_LOCK = threading.Lock()


def configure_token(token: str | None) -> None:
    """Set the bearer token of apps made without one (`setup_telemetry()` calls this)."""
    global _CONFIGURED_TOKEN
    _CONFIGURED_TOKEN = token or None


def _effective_token(token: str | None) -> str | None:
    if token:
        return token
    return _CONFIGURED_TOKEN or os.environ.get(_TOKEN_ENV) or None


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


class _Refusals:
    """Count one app's refused requests and log them, at most once per interval.

    The first refusal is logged at once; the ones after it are added up and
    logged with the next refusal that comes at least an interval later.
    """

    __slots__ = ("_last", "_lock", "_pending")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = 0
        self._last: float | None = None

    def refused(self, client: str | None) -> None:
        """Record one refused request from ``client`` (an address, or ``None``)."""
        with internal_errors("metrics refusal"):
            _refused_counter().inc()
            now = time.monotonic()
            with self._lock:
                self._pending += 1
                if self._last is not None and now - self._last < _REFUSAL_LOG_INTERVAL_SECONDS:
                    return
                count, self._pending, self._last = self._pending, 0, now
            # Never the Authorization header: a near-miss token is a secret too.
            _LOGGER.warning(
                "Refused %d /metrics request(s) without the right bearer token since the "
                "last such warning (latest from %s); %s counts them.",
                count,
                client or "an unknown address",
                METRICS_UNAUTHORIZED.name,
            )


def _refused_counter() -> Any:
    global _REFUSED_COUNTER
    counter = _REFUSED_COUNTER
    if counter is not None:
        return counter
    with _REFUSED_COUNTER_LOCK:
        if _REFUSED_COUNTER is None:
            _REFUSED_COUNTER = _register_refused_counter()
        return _REFUSED_COUNTER


def _register_refused_counter() -> Any:
    try:
        collector = _metrics.create_metric(METRICS_UNAUTHORIZED)
        REGISTRY.register(collector)
        return collector
    except ValueError:
        # Already registered in this process (a module reload); reuse that one, or
        # count in an unregistered one where it cannot be found.
        collector = _compat.registered_collector(REGISTRY, METRICS_UNAUTHORIZED.base_name)
        if collector is None:
            collector = _metrics.create_metric(METRICS_UNAUTHORIZED)
        return collector


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
    refusals = _Refusals()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if not _authorized(token, headers.get("authorization")):
            client = scope.get("client")
            refusals.refused(str(client[0]) if client else None)
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
    refusals = _Refusals()

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if not _authorized(token, environ.get("HTTP_AUTHORIZATION")):
            refusals.refused(environ.get("REMOTE_ADDR") or None)
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


def child_exit(server: object, worker: Any) -> None:
    """Gunicorn ``child_exit`` hook: drop a dead worker's live gauges.

    Use it in ``gunicorn.conf.py``: ``from kaleem_telemetry.gunicorn import
    child_exit``. Without it, the ``live*`` gauges (in-progress requests, health)
    of dead workers stay in the aggregate.

    Args:
        server: The gunicorn arbiter (unused).
        worker: The worker that exited; its ``pid`` is used.
    """
    path = _metrics.multiproc_dir()
    if path is not None:
        mark_process_dead(worker.pid, path)  # type: ignore[no-untyped-call]
