"""Run the Django demo: serve it on 127.0.0.1, drive traffic at it, keep serving a while.

    python examples/django_app/run.py                 # serves 10 s, then stops
    python examples/django_app/run.py --duration 0    # serves until Ctrl-C

Logs are JSON lines on stdout; spans go to stderr unless
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set. Needs ``pip install 'kaleem-telemetry[django]'``.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_app.settings")

from django.core.wsgi import get_wsgi_application

from kaleem_telemetry import (
    get_logger,
    instrument_app,
    setup_telemetry,
    shutdown_telemetry,
)

log = get_logger("demo")


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the middleware writes the access log."""


def drive(base_url: str) -> None:
    """Send the demo's traffic to ``base_url``."""
    for path in (
        "/items/1/",
        "/merchants/m-1/orders/7/",
        "/archive/2024/",
        "/fail/",
        "/nope/",
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
    parser = argparse.ArgumentParser(description="The kaleem-telemetry Django demo.")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds; 0 = forever")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "0")))
    args = parser.parse_args(argv)

    exporter = "otlp" if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") else "console"
    setup_telemetry(service_name="kaleem-django-demo", traces_exporter=exporter)
    application = instrument_app(get_wsgi_application())
    server = make_server(
        "127.0.0.1", args.port, application, server_class=_Server, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="wsgi", daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{server.server_port}"
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
    raise SystemExit(main())
