"""The metrics server and the metrics part of `setup_telemetry()`.

Layers: the metric families (`kaleem_telemetry.metrics`) know nothing of how they
are served; the exposition apps (`kaleem_telemetry.exposition`) render them; this
module serves those apps from a thread of its own (`start_metrics_server`) and
applies the metrics settings of a configuration (`configure_metrics`), which
`_setup` calls.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from kaleem_telemetry import exposition
from kaleem_telemetry import metrics as _metrics
from kaleem_telemetry.exceptions import TelemetryConfigError
from kaleem_telemetry.metrics import TelemetryMetrics, follow_environment, multiproc_dir

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from kaleem_telemetry._types import Environ, StartResponse, WSGIApp
    from kaleem_telemetry.config import TelemetryConfig

__all__ = ["MetricsComponent", "MetricsServer", "configure_metrics", "start_metrics_server"]

# The metrics module's name: what the warnings have always been logged under.
_LOGGER = logging.getLogger("kaleem_telemetry.metrics")
_LOCK = threading.Lock()
_SERVER: MetricsServer | None = None


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _IPv6Server(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Drop the per-request line: scrapes are not access-logged (docs/reference.md)."""


def _server_app(registry: CollectorRegistry | None, token: str | None) -> WSGIApp:
    metrics_app = exposition.metrics_wsgi_app(registry, token=token)

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
        # shutdown() waits for serve_forever() to notice; it polls every _POLL_SECONDS.
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)


_POLL_SECONDS = 0.2


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
        registry: The registry to expose (see `kaleem_telemetry.exposition.render_metrics`).
        token: The bearer token to require; None means the configured
            ``KALEEM_TELEMETRY_METRICS_TOKEN``, if any.

    Returns:
        The running server; call ``stop()`` to end it.

    Raises:
        OSError: The address cannot be bound (for example the port is in use).

    Added in 0.1.0.
    """
    server_class = _IPv6Server if ":" in addr else _ThreadingWSGIServer
    server = make_server(
        addr, port, _server_app(registry, token), server_class, handler_class=_QuietHandler
    )
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": _POLL_SECONDS},
        name=f"kaleem-telemetry-metrics-{server.server_port}",
        daemon=True,
    )
    thread.start()
    return MetricsServer(server, thread)


class MetricsComponent:
    """The metrics part of a `setup_telemetry()` handle.

    Attributes:
        metrics: The process `TelemetryMetrics`.
        server: The metrics server started for ``KALEEM_TELEMETRY_METRICS_PORT``, or None.
    """

    def __init__(self, metrics: TelemetryMetrics, server: MetricsServer | None) -> None:
        self.metrics = metrics
        self.server = server

    def force_flush(self, timeout: float) -> bool:
        """Return True: metrics are pulled by the scraper, nothing is buffered."""
        return True

    def shutdown(self, timeout: float) -> None:
        """Stop the metrics server, if this component started one."""
        global _SERVER
        server = self.server
        if server is not None:
            server.stop(timeout)
            with _LOCK:
                if _SERVER is server:
                    _SERVER = None


def configure_metrics(cfg: TelemetryConfig) -> MetricsComponent:
    """Apply the metrics part of ``cfg`` to this process.

    Validates and exports ``PROMETHEUS_MULTIPROC_DIR``, sets the series cap,
    ``app_info`` and the ``/metrics`` token, and starts the metrics server when
    ``metrics_port`` is set.

    Args:
        cfg: The effective configuration.

    Raises:
        TelemetryConfigError: ``PROMETHEUS_MULTIPROC_DIR`` is not an existing,
            writable directory.
    """
    global _SERVER
    path = cfg.prometheus_multiproc_dir
    if path is not None:
        _validate_multiproc_dir(path)
        # prometheus_client reads the directory from the environment when it opens
        # its files, and the exposition reads it there too.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    else:
        env_path = multiproc_dir()
        if env_path is not None:
            _validate_multiproc_dir(env_path)
    metrics = follow_environment()
    metrics.series_limit = cfg.metrics_series_limit
    _set_app_info(metrics, (cfg.service_name, cfg.version, cfg.environment))
    exposition.configure_token(cfg.metrics_token or None)
    server = None
    if cfg.metrics_port is not None:
        with _LOCK:
            old, _SERVER = _SERVER, None
        if old is not None:
            old.stop(1.0)
        try:
            server = start_metrics_server(
                cfg.metrics_port, cfg.metrics_addr, token=cfg.metrics_token
            )
        except OSError as exc:
            # A port already bound (another worker of a pre-fork server) is not a
            # reason to stop the application; the scraper will say it is down.
            _LOGGER.warning(
                "Could not start the metrics server on %s:%s: %s",
                cfg.metrics_addr,
                cfg.metrics_port,
                exc,
            )
        else:
            with _LOCK:
                _SERVER = server
    return MetricsComponent(metrics, server)


def reset_for_tests() -> None:
    """Stop the metrics server, forget the token, drop the process metrics."""
    global _SERVER
    with _LOCK:
        server, _SERVER = _SERVER, None
    if server is not None:
        server.stop(1.0)
    exposition.configure_token(None)
    _metrics.reset_for_tests()


def _validate_multiproc_dir(path: str) -> None:
    problem = None
    if not os.path.exists(path):
        problem = "it does not exist"
    elif not os.path.isdir(path):
        problem = "it is not a directory"
    elif not os.access(path, os.W_OK | os.X_OK):
        problem = "it is not writable by this process"
    if problem is not None:
        msg = (
            f"PROMETHEUS_MULTIPROC_DIR must be an existing, writable directory, got {path!r} "
            f"({problem}). Create it (and empty it) before the server starts its workers."
        )
        raise TelemetryConfigError(msg)


def _set_app_info(metrics: TelemetryMetrics, key: tuple[str, str, str]) -> None:
    family = metrics.app_info
    for old in family.label_sets():
        if old == key:
            continue
        if metrics.multiprocess:
            # Files cannot drop a series; a zero says "no longer this version".
            family.labels(*old).set(0)
        else:
            family.remove(*old)
    family.labels(*key).set(1)
