"""``kaleem-telemetry demo``: a FastAPI service that telemeters itself.

Run it::

    kaleem-telemetry demo                  # serves 10 s after its traffic, then stops
    kaleem-telemetry demo --duration 0     # serves until Ctrl-C
    kaleem-telemetry demo --port 8000

It starts uvicorn on 127.0.0.1, sends itself some traffic (path parameters, a
database query and a cache, a failing route, a streamed response, a WebSocket,
an order that enqueues a job for an in-process worker thread: the request, its
job and the job's log line share one trace and the request's ids), then keeps
serving ``/metrics``, ``/health/live`` and ``/health/ready``. Logs are
JSON lines on stdout (one ``http_request`` event per request); spans go to stderr
(console exporter) unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, in which case
they go over OTLP. The database is SQLite in memory (stdlib ``sqlite3``), so the
demo needs no server.

Needs ``pip install 'kaleem-telemetry[fastapi]' uvicorn``; without them the command
says so and exits 1. FastAPI and uvicorn are imported only when the demo runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, WebSocket
from fastapi.responses import StreamingResponse

from kaleem_telemetry import (
    bind_context,
    get_logger,
    inject_context,
    instrument_app,
    instrument_job,
    record_cache,
    setup_telemetry,
    shutdown_telemetry,
    track_db,
)

__all__ = ["build_app", "drive", "free_port", "run_demo"]

log = get_logger("demo")


class Catalogue:
    """Products in an in-memory SQLite database, behind an in-process cache."""

    def __init__(self) -> None:
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[Any, ...]] = {}
        with self._lock:
            self._db.execute("CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT)")
            self._db.executemany(
                "INSERT INTO products VALUES (?, ?)",
                [(1, "shoes"), (2, "hat"), (3, "scarf")],
            )

    def product(self, product_id: int) -> tuple[Any, ...] | None:
        """Return the product row, from the cache when it is there."""
        key = f"product:{product_id}"
        cached = self._cache.get(key)
        record_cache(cached is not None, level="l1", key_prefix=key)
        if cached is not None:
            return cached
        with track_db("SELECT", collection="products", system="sqlite"), self._lock:
            row = self._db.execute(
                "SELECT id, name FROM products WHERE id = ?", (product_id,)
            ).fetchone()
        if row is not None:
            self._cache[key] = tuple(row)
        return None if row is None else tuple(row)


class Worker:
    """A worker thread consuming jobs from an in-process queue, as a RabbitMQ consumer would.

    The producer puts ``(headers, body)`` on the queue, with the headers from
    `inject_context`; the handler, under `instrument_job`, continues the
    request's trace and binds its ids while the job runs.
    """

    def __init__(self) -> None:
        self.jobs: queue.Queue[tuple[dict[str, Any], dict[str, Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="demo-worker", daemon=True)
        self._thread.start()

    def publish(self, body: dict[str, Any]) -> None:
        """Enqueue a job with the current trace, request id and merchant id in its headers."""
        self.jobs.put((inject_context({}), body))

    def stop(self) -> None:
        """Let the thread finish the jobs already queued, then end it (bounded)."""
        self.jobs.put(None)
        self._thread.join(5)

    def _run(self) -> None:
        while (item := self.jobs.get()) is not None:
            headers, body = item
            # instrument_job has logged, counted and reported a failure already.
            with contextlib.suppress(Exception):
                send_receipt(body, headers=headers)


@instrument_job(queue="receipts")
def send_receipt(body: dict[str, Any], *, headers: dict[str, Any]) -> None:
    """The demo's job: its log line carries the ordering request's ids and trace."""
    time.sleep(0.005)
    log.info("receipt_sent", order_id=body["order_id"])


def build_app(worker: Worker | None = None) -> FastAPI:
    """Return the demo application, instrumented.

    Args:
        worker: Where ``POST /merchants/{id}/orders`` enqueues its job; a new
            worker thread when ``None``.
    """
    app = FastAPI(title="kaleem-demo")
    catalogue = Catalogue()
    jobs = worker if worker is not None else Worker()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @app.get("/merchants/{merchant_id}/products/{product_id}")
    async def product(merchant_id: str, product_id: int) -> dict[str, Any]:
        bind_context(merchant_id=merchant_id)
        row = catalogue.product(product_id)
        if row is None:
            raise HTTPException(status_code=404, detail="no such product")
        log.info("product_viewed", product_id=product_id)
        return {"id": row[0], "name": row[1]}

    @app.post("/merchants/{merchant_id}/orders")
    async def order(merchant_id: str) -> dict[str, Any]:
        bind_context(merchant_id=merchant_id)
        order_id = int(time.time() * 1000) % 100_000
        jobs.publish({"order_id": order_id})
        log.info("order_placed", order_id=order_id)
        return {"order_id": order_id, "receipt": "queued"}

    @app.get("/fail")
    async def fail() -> None:
        msg = "the demo fails on purpose"
        raise RuntimeError(msg)

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(5):
                await asyncio.sleep(0.01)
                yield f"line {i}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.websocket("/ws/echo")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text(text.upper())

    instrument_app(app)  # FastAPI apps are instrumented in place
    return app


def drive(base_url: str) -> None:
    """Send the demo's traffic to ``base_url``."""
    paths = [
        "/items/1",
        "/items/2",
        "/merchants/m-1/products/1",
        "/merchants/m-1/products/1",
        "/merchants/m-2/products/9",
        "/stream",
        "/fail",
        "/does-not-exist",
        "/health/live",
        "/health/ready",
    ]
    for method, path in [("GET", p) for p in paths] + [("POST", "/merchants/m-1/orders")]:
        request = urllib.request.Request(
            base_url + path, method=method, headers={"X-Request-ID": "demo-1"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            exc.read()
    try:
        from websockets.sync.client import connect
    except ImportError:
        log.info("demo_websocket_skipped", reason="the websockets package is not installed")
    else:
        with connect(base_url.replace("http", "ws", 1) + "/ws/echo") as websocket:
            websocket.send("hello")
            websocket.recv()
    with urllib.request.urlopen(base_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    series = [line for line in text.splitlines() if line.startswith("http_requests_total{")]
    log.info("demo_metrics_scraped", http_requests_total_series=len(series))


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_demo(*, duration: float = 10.0, port: int = 0) -> int:
    """Serve the demo, drive traffic at it, keep serving for ``duration`` seconds.

    Args:
        duration: Seconds to keep serving after the traffic; 0 serves until
            interrupted.
        port: The port on 127.0.0.1; 0 picks a free one.

    Returns:
        The exit code: 0, or 1 when the server did not start.
    """
    exporter = "otlp" if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") else "console"
    setup_telemetry(service_name="kaleem-demo", traces_exporter=exporter)
    port = port or free_port()
    worker = Worker()
    config = uvicorn.Config(
        build_app(worker), host="127.0.0.1", port=port, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
    if not server.started:
        log.error("demo_failed", reason="uvicorn did not start")
        return 1
    base_url = f"http://127.0.0.1:{port}"
    drive(base_url)
    log.info("demo_ready", url=base_url, metrics=f"{base_url}/metrics", duration=duration)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (docker stop, a test's terminate()) ends the demo like Ctrl-C:
        # the server stops and telemetry is flushed.
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(duration if duration > 0 else 1.0) and duration <= 0:
            if not thread.is_alive():
                break
    except KeyboardInterrupt:
        pass
    server.should_exit = True
    thread.join(10)
    worker.stop()
    shutdown_telemetry()
    return 0
