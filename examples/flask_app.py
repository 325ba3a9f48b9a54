"""The kaleem-telemetry demo for Flask: a WSGI service that telemeters itself.

Run it::

    python examples/flask_app.py                  # serves 10 s, then stops
    python examples/flask_app.py --duration 0     # serves until Ctrl-C
    gunicorn examples.flask_app:app               # as in production

Run as a script, it serves the app on 127.0.0.1 (a threaded stdlib WSGI server),
sends itself some traffic, then keeps serving ``/metrics``,
``/health/live`` and ``/health/ready``. Logs are JSON lines on stdout; spans go to
stderr unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.

Needs ``pip install 'kaleem-telemetry[flask]'``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response

from kaleem_telemetry import (
    bind_context,
    get_logger,
    instrument_app,
    record_cache,
    setup_telemetry,
)

setup_telemetry(
    service_name="kaleem-flask-demo",
    traces_exporter="otlp" if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") else "console",
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


app = build_app()


if __name__ == "__main__":
    from _serve import run_example

    raise SystemExit(
        run_example(
            app,
            paths=[
                "/items/1",
                "/merchants/m-1/orders/7",
                "/merchants/m-1/orders/7",
                "/stream",
                "/fail",
                "/nope",
                "/health/live",
                "/health/ready",
            ],
        )
    )
