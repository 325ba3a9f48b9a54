"""Serve an example on 127.0.0.1, send it some traffic, keep serving for a while.

Shared by the examples so each of them shows only the application code. Not part
of kaleem-telemetry: in production you run gunicorn or uvicorn instead.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from kaleem_telemetry import get_logger, shutdown_telemetry

__all__ = ["run_example"]

log = get_logger("example")


def run_example(
    app: Any,
    *,
    paths: Sequence[str],
    argv: Sequence[str] | None = None,
    asgi: bool = False,
    websocket_path: str | None = None,
) -> int:
    """Serve ``app``, request ``paths`` from it, scrape /metrics, serve ``--duration`` seconds.

    Args:
        app: The instrumented WSGI or ASGI application.
        paths: The paths to request once the server is up, each optionally
            preceded by a method (``"POST /refunds"``).
        argv: The command line (``--duration``, ``--port``).
        asgi: Serve with uvicorn instead of the stdlib WSGI server.
        websocket_path: A WebSocket path to send one message to (ASGI only).

    Returns:
        The exit code.
    """
    parser = argparse.ArgumentParser(description="Run a kaleem-telemetry example.")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds; 0 = forever")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "0")))
    args = parser.parse_args(argv)

    base_url, stop = _serve_asgi(app, args.port) if asgi else _serve_wsgi(app, args.port)
    try:
        _drive(base_url, paths, websocket_path)
        log.info("demo_ready", url=base_url, metrics=f"{base_url}/metrics", duration=args.duration)
        _wait(args.duration)
    finally:
        stop()
        shutdown_telemetry()
    return 0


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the middleware writes the access log."""


def _serve_wsgi(app: Any, port: int) -> tuple[str, Callable[[], None]]:
    server = make_server("127.0.0.1", port, app, server_class=_Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="wsgi", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return f"http://127.0.0.1:{server.server_port}", stop


def _serve_asgi(app: Any, port: int) -> tuple[str, Callable[[], None]]:
    import socket

    import uvicorn

    if not port:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
    # log_config=None keeps uvicorn's records on the telemetry log pipeline.
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            msg = "uvicorn did not start"
            raise RuntimeError(msg)
        time.sleep(0.05)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    return f"http://127.0.0.1:{port}", stop


def _drive(base_url: str, paths: Sequence[str], websocket_path: str | None) -> None:
    for entry in paths:
        method, _, path = entry.rpartition(" ")
        request = urllib.request.Request(
            base_url + path, method=method or "GET", headers={"X-Request-ID": "example-1"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            exc.read()
    if websocket_path is not None:
        from websockets.sync.client import connect

        with connect(base_url.replace("http", "ws", 1) + websocket_path) as websocket:
            websocket.send("hello")
            websocket.recv()
    with urllib.request.urlopen(base_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    series = [line for line in text.splitlines() if line.startswith("http_requests_total{")]
    log.info("demo_metrics_scraped", http_requests_total_series=len(series))


def _wait(duration: float) -> None:
    try:
        if duration > 0:
            time.sleep(duration)
        else:
            while True:
                time.sleep(1)
    except KeyboardInterrupt:
        pass
