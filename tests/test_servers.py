from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("flask")
pytest.importorskip("httpx")

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, WebSocket
from fastapi.responses import StreamingResponse
from prometheus_client import CollectorRegistry

from kaleem_telemetry.apps import instrument_app

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _api() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @app.get("/fail")
    async def fail() -> None:
        raise RuntimeError("server-side failure")

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(3):
                await asyncio.sleep(0.01)
                yield f"{i}\n".encode()

        return StreamingResponse(chunks())

    @app.websocket("/ws/{room}")
    async def ws(websocket: WebSocket, room: str) -> None:
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text())
        await websocket.close()

    return app


@pytest.fixture(name="uvicorn_url")
def _uvicorn_url() -> Iterator[tuple[str, CollectorRegistry]]:
    """An instrumented FastAPI app served by uvicorn in a thread on 127.0.0.1."""
    registry = CollectorRegistry()
    port = _free_port()
    config = uvicorn.Config(
        instrument_app(_api(), registry=registry),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", registry
    server.should_exit = True
    thread.join(15)


def _sample(metrics: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


class TestUvicorn:
    def test_real_requests_are_recorded_and_scraped(
        self, uvicorn_url: tuple[str, CollectorRegistry]
    ) -> None:
        """Requests over real sockets are counted per route and scraped from /metrics."""
        url, _registry = uvicorn_url
        # uvicorn closes the connection after an application exception, so the
        # failing request gets a connection of its own.
        failed = httpx.get(url + "/fail", headers={"X-Request-ID": "uv-500"}, timeout=10)
        with httpx.Client(base_url=url, timeout=10) as client:
            ok = client.get("/items/1", headers={"X-Request-ID": "uv-1"})
            client.get("/items/2")
            streamed = client.get("/stream")
            missing = client.get("/missing")
            metrics = client.get("/metrics").text

        assert ok.headers["x-request-id"] == "uv-1"
        assert failed.status_code == 500
        assert failed.headers["x-request-id"] == "uv-500"
        assert streamed.text == "0\n1\n2\n"
        assert missing.status_code == 404
        assert _sample(metrics, "http_requests_total", route="/items/{item_id}") == 2
        assert _sample(metrics, "http_errors_total", route="/fail", error_type="RuntimeError") == 1
        assert _sample(metrics, "http_requests_total", route="unmatched") == 1
        assert _sample(metrics, "http_requests_total", route="/metrics") == 0

    def test_websocket_over_a_real_connection(
        self, uvicorn_url: tuple[str, CollectorRegistry]
    ) -> None:
        """A real WebSocket session is counted in both directions and leaves no active gauge."""
        from websockets.sync.client import connect

        url, _registry = uvicorn_url
        with connect(url.replace("http", "ws", 1) + "/ws/lobby") as websocket:
            websocket.send("ping")
            assert websocket.recv() == "ping"
        time.sleep(0.2)
        metrics = httpx.get(url + "/metrics", timeout=10).text

        assert _sample(metrics, "websocket_messages_total", route="/ws/{room}", direction="in") == 1
        assert (
            _sample(metrics, "websocket_messages_total", route="/ws/{room}", direction="out") == 1
        )
        assert _sample(metrics, "websocket_connections_active", route="/ws/{room}") == 0

    def test_openmetrics_scrape_has_trace_id_exemplars(
        self, uvicorn_url: tuple[str, CollectorRegistry]
    ) -> None:
        """An OpenMetrics scrape shows the trace_id exemplar of a sampled request."""
        from kaleem_telemetry import _setup

        _setup.setup_telemetry(service_name="uv", traces_exporter="none")
        url, _registry = uvicorn_url
        httpx.get(url + "/items/5", timeout=10)
        metrics = httpx.get(
            url + "/metrics",
            headers={"Accept": "application/openmetrics-text; version=1.0.0"},
            timeout=10,
        ).text

        assert re.search(
            r'http_request_duration_seconds_bucket\{.*# \{trace_id="[0-9a-f]{32}"\}', metrics
        )


_GUNICORN_APP = """
import os
from flask import Flask
from kaleem_telemetry import instrument_app

app = Flask("kt-gunicorn")

@app.get("/items/<int:item_id>")
def item(item_id):
    return {"item_id": item_id, "pid": os.getpid()}

instrument_app(app)
"""

_GUNICORN_CONF = """
from kaleem_telemetry.exposition import child_exit  # noqa: F401 - gunicorn hook

workers = 2
worker_class = "sync"
accesslog = None
"""


class TestGunicornMultiprocess:
    def test_counts_are_exact_across_workers(self, tmp_path: Path) -> None:
        """With PROMETHEUS_MULTIPROC_DIR, N requests over 2 workers scrape as exactly N."""
        multiproc = tmp_path / "prom"
        multiproc.mkdir()
        (tmp_path / "gunicorn_app.py").write_text(_GUNICORN_APP)
        (tmp_path / "gunicorn_conf.py").write_text(_GUNICORN_CONF)
        port = _free_port()
        env = dict(os.environ)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc)
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
        env.pop("SENTRY_DSN", None)
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(tmp_path / "gunicorn_conf.py"),
            "-b",
            f"127.0.0.1:{port}",
            "gunicorn_app:app",
        ]
        with subprocess.Popen(
            command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        ) as proc:
            try:
                url = f"http://127.0.0.1:{port}"
                _wait_until_up(url + "/health/live")
                requests = 60

                def call(i: int) -> int:
                    response = httpx.get(
                        f"{url}/items/{i}", timeout=10, headers={"Connection": "close"}
                    )
                    return int(response.json()["pid"])

                with ThreadPoolExecutor(max_workers=8) as pool:
                    pids = set(pool.map(call, range(requests)))
                metrics = httpx.get(url + "/metrics", timeout=10).text
            finally:
                proc.terminate()
                proc.wait(timeout=30)

        assert len(pids) == 2
        assert _sample(metrics, "http_requests_total", route="/items/{item_id}") == requests
        assert (
            _sample(metrics, "http_request_duration_seconds_count", route="/items/{item_id}")
            == requests
        )


def _wait_until_up(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    pytest.fail(f"gunicorn did not answer at {url}")
