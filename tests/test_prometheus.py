"""A real Prometheus scrapes an instrumented app served by uvicorn, and PromQL sees the truth."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")

from starlette.applications import Starlette  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from kaleem_telemetry import instrument_app  # noqa: E402
from kaleem_telemetry.metrics import get_metrics  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        reason = "prometheus is not installed (Debian package 'prometheus'; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def _get(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@pytest.fixture(name="served_app")
def _served_app() -> Iterator[int]:
    """A Starlette app with instrument_app(), served by uvicorn on 127.0.0.1."""

    async def item(request: Any) -> JSONResponse:
        return JSONResponse({"id": request.path_params["item_id"]})

    app = Starlette(routes=[Route("/items/{item_id}", item)])
    get_metrics()
    instrument_app(app)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(10)


@pytest.fixture(name="prometheus")
def _prometheus(tmp_path: Path, served_app: int) -> Iterator[str]:
    """A real Prometheus scraping the served app every second."""
    binary = _prometheus_binary()
    port = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: app\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{served_app}']\n"
    )
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2):
                    break
            except OSError:
                assert process.poll() is None, "prometheus exited"
                assert time.monotonic() < deadline, "prometheus did not become ready"
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _query(base: str, promql: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    body = _get(url)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def _wait_for(base: str, promql: str, want: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    result: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        result = _query(base, promql)
        if result and float(result[0]["value"][1]) == want:
            return result
        time.sleep(0.5)
    pytest.fail(f"{promql} never became {want}: {result}")


class TestRealPrometheus:
    def test_scraped_counters_match_the_requests(self, served_app, prometheus):
        """Prometheus sees exactly the requests sent, under the route template, and no /metrics."""
        for i in range(7):
            with urllib.request.urlopen(f"http://127.0.0.1:{served_app}/items/{i}", timeout=5):
                pass
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{served_app}/nowhere", timeout=5)

        ok = _wait_for(
            prometheus,
            'sum(http_requests_total{route="/items/{item_id}",status_code="200"})',
            7.0,
        )
        unmatched = _wait_for(prometheus, 'sum(http_requests_total{route="unmatched"})', 1.0)
        routes = _query(prometheus, "count by (route) (http_requests_total)")
        p95 = _query(
            prometheus,
            "histogram_quantile(0.95, sum by (le) "
            '(http_request_duration_seconds_bucket{route="/items/{item_id}"}))',
        )
        up = _query(prometheus, 'up{job="app"}')

        assert ok
        assert unmatched
        assert {r["metric"]["route"] for r in routes} == {"/items/{item_id}", "unmatched"}
        assert 0 < float(p95[0]["value"][1]) <= 10, "the duration histogram answers a p95 query"
        assert float(up[0]["value"][1]) == 1.0
