"""A FastAPI service instrumented with kaleem-telemetry: the code you write in your own service.

Serve it as you would in production (from the repository root)::

    uvicorn examples.fastapi_app:app

or let it serve itself on 127.0.0.1, send itself a few requests and stop::

    python examples/fastapi_app.py --duration 5

Logs are JSON lines on stdout, spans go to stderr (console exporter) unless
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, and ``/metrics``, ``/health/live`` and
``/health/ready`` are served next to the routes. Needs
``pip install 'kaleem-telemetry[fastapi]' uvicorn``.
"""

from __future__ import annotations

import os

from fastapi import FastAPI, HTTPException

from kaleem_telemetry import (
    bind_context,
    business_event,
    get_logger,
    instrument,
    instrument_app,
    setup_telemetry,
)

setup_telemetry(
    service_name="orders-api",
    traces_exporter="otlp" if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") else "console",
)
log = get_logger(__name__)

app = FastAPI(title="orders-api")

_ORDERS = {"o-1": {"id": "o-1", "total": 42.0}, "o-2": {"id": "o-2", "total": 7.5}}


@instrument
def load_order(order_id: str) -> dict[str, float | str] | None:
    """Load one order: a child span and function metrics come with the decorator."""
    return _ORDERS.get(order_id)


@app.get("/merchants/{merchant_id}/orders/{order_id}")
async def get_order(merchant_id: str, order_id: str) -> dict[str, float | str]:
    """Return one order of one merchant."""
    bind_context(merchant_id=merchant_id)  # on every log line, span and Sentry event from here
    order = load_order(order_id)
    if order is None:
        raise HTTPException(status_code=404, detail="no such order")
    log.info("order_viewed", order_id=order_id)
    business_event("order_viewed")
    return order


@app.post("/merchants/{merchant_id}/refunds")
async def refund(merchant_id: str) -> None:
    """Fail, to show an error span, an error log and a Sentry event tied together."""
    bind_context(merchant_id=merchant_id)
    msg = "the payment provider is down"
    raise RuntimeError(msg)


instrument_app(app)


if __name__ == "__main__":
    from _serve import run_example

    raise SystemExit(
        run_example(
            app,
            asgi=True,
            paths=[
                "/merchants/m-1/orders/o-1",
                "/merchants/m-1/orders/o-9",
                "/merchants/m-2/orders/o-2",
                "POST /merchants/m-1/refunds",
                "/nowhere",
            ],
        )
    )
