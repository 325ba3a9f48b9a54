"""End to end: the generated dashboards and rules against a real Prometheus.

A real Prometheus scrapes the demo API and a worker; the latency exemplars name
traces the OTLP receiver got.

Prometheus (Debian's ``prometheus``) listens on loopback, scrapes every second with
exemplar storage on, and loads the generated rules. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kaleem_telemetry._observability import build_rules, write_rules
from tests._promtools import tool
from tests._selectors import generated_expressions
from tests.receivers import OTLPReceiver

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[1]
WORKER = textwrap.dedent(
    """
    import sys, time
    from kaleem_telemetry import RetryJob, instrument_job, setup_telemetry, start_metrics_server
    setup_telemetry(service_name="e2e-worker", traces_exporter="none")
    start_metrics_server(int(sys.argv[1]), addr="127.0.0.1")

    @instrument_job(queue="orders")
    def send_receipt(headers, n):
        if n % 5 == 0:
            raise ValueError("boom")
        if n % 7 == 0:
            raise RetryJob()

    for n in range(40):
        try:
            send_receipt(headers={"x-enqueued-at": str(time.time() - 2)}, n=n)
        except (ValueError, RetryJob):
            pass
    time.sleep(120)
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def _wait_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            assert process.poll() is None, f"{what} exited"
            assert time.monotonic() < deadline, f"{what} did not listen"
            time.sleep(0.2)


@pytest.fixture(name="stack")
def _stack(tmp_path: Path) -> Iterator[tuple[str, OTLPReceiver]]:
    prometheus = tool("prometheus")
    receiver = OTLPReceiver("grpc")
    receiver.start()
    api_port, worker_port, prom_port = _free_port(), _free_port(), _free_port()
    env = {
        **os.environ,
        **receiver.env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("OTEL_TRACES_EXPORTER", None)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        api = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kaleem_telemetry",
                "demo",
                "--duration",
                "0",
                "--port",
                str(api_port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(api)
        worker = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(worker_port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(worker)
        _wait_port(api_port, api, "the demo")
        _wait_port(worker_port, worker, "the worker")
        write_rules(build_rules(), tmp_path / "rules")
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {tmp_path / 'rules'}/*.yml\n"
            "scrape_configs:\n"
            f"  - job_name: api\n    static_configs:\n      - targets: ['127.0.0.1:{api_port}']\n"
            "  - job_name: worker\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{worker_port}']\n"
        )
        prom = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--enable-feature=exemplar-storage",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(prom)
        base = f"http://127.0.0.1:{prom_port}"
        _wait_port(prom_port, prom, "prometheus")
        yield base, receiver
    finally:
        for process in reversed(processes):
            _stop(process)
        receiver.stop()


def _query(base: str, promql: str) -> dict[str, Any]:
    return _get(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}")


def _concrete(expr: str) -> str:
    return (
        expr.replace('=~"$job"', '=~".+"')
        .replace('=~"$route"', '=~".+"')
        .replace('=~"$environment"', '=~".*"')
        .replace("$__rate_interval", "1m")
        .replace("$__range", "5m")
    )


def _until(check: Any, what: str, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(1)


def test_the_generated_queries_answer_from_a_real_prometheus(stack) -> None:
    """Every expression evaluates; API, worker and data-store panels have data; exemplars link."""
    base, receiver = stack
    _until(lambda: _query(base, "job_runs_total")["data"]["result"], "no job metrics scraped")
    _until(
        lambda: _query(base, "sum(rate(http_requests_total[1m]))")["data"]["result"],
        "no request rate",
    )
    time.sleep(3)  # a few more scrapes, so rate() has two samples on every series

    answers = {}
    for where, expr in generated_expressions():
        body = _query(base, _concrete(expr))
        assert body["status"] == "success", (where, body)
        answers[where] = body["data"]["result"]

    with_data = {where for where, result in answers.items() if result}
    for panel in (
        "kaleem-api-health: Requests per second by route and method",
        "kaleem-api-health: 5xx ratio",
        "kaleem-api-health: Latency p50 / p95 / p99 by route",
        "kaleem-api-health: Database p95 by operation",
        "kaleem-api-health: Cache hit rate by level",
        "kaleem-workers: Job throughput",
        "kaleem-workers: Job failure rate",
        "kaleem-workers: Queue lag p95",
        "kaleem-data-stores: Database operations per second",
        "kaleem-data-stores: Database p95",
    ):
        assert panel in with_data, panel

    rules = _until(
        lambda: [
            rule
            for group in _get(f"{base}/api/v1/rules")["data"]["groups"]
            for rule in group["rules"]
            if rule.get("lastEvaluation", "").startswith("2")
            and not rule["lastEvaluation"].startswith("0001")
        ],
        "the rules were never evaluated",
    )
    assert [r["name"] for r in rules if r.get("lastError")] == []

    now = time.time()
    params = urllib.parse.urlencode(
        {"query": "http_request_duration_seconds_bucket", "start": now - 600, "end": now + 60}
    )
    exemplars = _until(
        lambda: _get(f"{base}/api/v1/query_exemplars?{params}")["data"], "no exemplars"
    )
    traced = {e["labels"]["trace_id"] for series in exemplars for e in series["exemplars"]}
    _until(lambda: receiver.spans, "no span reached the OTLP receiver")
    received = _until(
        lambda: traced & {span.trace_id for span in receiver.spans},
        f"no exemplar trace id reached the receiver: {sorted(traced)[:3]}",
        30,
    )
    assert received
