"""The kaleem-telemetry demo for Flask: a WSGI service that telemeters itself.

Run it::

    python examples/flask_app.py                  # serves 10 s, then stops
    python examples/flask_app.py --duration 0     # serves until Ctrl-C

It serves a Flask app on 127.0.0.1 (a threaded stdlib WSGI server; use gunicorn
in production), sends itself some traffic, then keeps serving ``/metrics``,
``/health/live`` and ``/health/ready``. Logs are JSON lines on stdout; spans go to
stderr unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.

Needs ``pip install 'kaleem-telemetry[flask]'``.
"""

from __future__ import annotations

import argparse
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from flask import Flask, Response

from kaleem_telemetry import (
    bind_context,
    get_logger,
    instrument_app,
    record_cache,
    setup_telemetry,
    shutdown_telemetry,
)

log = get_logger("demo")
_CACHE: dict[str, str] = {}


def build_app() -> Flask:
    """Return the demo application, instrumented."""
    app = Flask("kaleem-flask-demo")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, Any]:
        return {"item_id": item_id}

    @app.get("/merchants/<merchant_id>/orders/<int:order_id>")
    def order(merchant_id: str, order_id: int) -> dict[str, Any]:
        bind_context(merchant_id=merchant_id)
        key = f"order:{order_id}"
        record_cache(key in _CACHE, level="l1", key_prefix=key)
        _CACHE.setdefault(key, "open")
        log.info("order_viewed", order_id=order_id)
        return {"order_id": order_id, "state": _CACHE[key]}

    @app.get("/fail")
    def fail() -> str:
        msg = "the demo fails on purpose"
        raise RuntimeError(msg)

    @app.get("/stream")
    def stream() -> Response:
        def lines() -> Iterator[str]:
            for i in range(3):
                yield f"line {i}\n"

        return Response(lines(), mimetype="text/plain")

    return instrument_app(app)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the middleware writes the access log."""


def drive(base_url: str) -> None:
    """Send the demo's traffic to ``base_url``."""
    for path in (
        "/items/1",
        "/merchants/m-1/orders/7",
        "/merchants/m-1/orders/7",
        "/stream",
        "/fail",
        "/nope",
        "/health/live",
        "/health/ready",
    ):
        try:
            with urllib.request.urlopen(base_url + path, timeout=5) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            exc.read()
    with urllib.request.urlopen(base_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    series = [line for line in text.splitlines() if line.startswith("http_requests_total{")]
    log.info("demo_metrics_scraped", http_requests_total_series=len(series))


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the demo, drive traffic at it, keep serving for ``--duration`` seconds."""
    parser = argparse.ArgumentParser(description="The kaleem-telemetry Flask demo.")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds; 0 = forever")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "0")))
    args = parser.parse_args(argv)

    exporter = "otlp" if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") else "console"
    setup_telemetry(service_name="kaleem-flask-demo", traces_exporter=exporter)
    server = make_server(
        "127.0.0.1", args.port, build_app(), server_class=_Server, handler_class=_QuietHandler
    )
    port = server.server_port
    thread = threading.Thread(target=server.serve_forever, name="wsgi", daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    drive(base_url)
    log.info("demo_ready", url=base_url, metrics=f"{base_url}/metrics", duration=args.duration)
    try:
        if args.duration > 0:
            time.sleep(args.duration)
        else:
            while True:
                time.sleep(1)
    except KeyboardInterrupt:
        pass
    server.shutdown()
    server.server_close()
    shutdown_telemetry()
    return 0


if __name__ == "__main__":
    socket.setdefaulttimeout(30)
    raise SystemExit(main())
