"""Every example and the CLI demo run, serve traffic, print JSON logs and expose /metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("flask")
pytest.importorskip("django")
pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = {
    "fastapi": ROOT / "examples" / "fastapi_app.py",
    "flask": ROOT / "examples" / "flask_app.py",
    "django": ROOT / "examples" / "django_app" / "run.py",
}


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _example_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "PROMETHEUS_MULTIPROC_DIR", "SENTRY_DSN", "PORT"):
        env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _run(
    *args: str, timeout: float = 90
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    """Run ``python *args`` from the checkout (bounded); return it and its JSON log lines."""
    result = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_example_env(),
        cwd=ROOT,
        check=False,
    )
    return result, _json_lines(result.stdout)


class TestExamples:
    @pytest.mark.parametrize("name", sorted(EXAMPLES))
    def test_example_serves_logs_and_metrics(self, name: str) -> None:
        """Each example serves, drives traffic, logs JSON access events and scrapes /metrics."""
        result, events = _run(str(EXAMPLES[name]), "--duration", "0.2")
        access = [e for e in events if e.get("event") == "http_request"]
        scraped = [e for e in events if e.get("event") == "demo_metrics_scraped"]

        assert result.returncode == 0, result.stderr[-2000:]
        assert {e["status_code"] for e in access} >= {200, 404, 500}
        assert "unmatched" in {e["route"] for e in access}
        assert all(
            "{" in e["route"] or e["route"].startswith(("/", "^", "unmatched")) for e in access
        )
        assert not [e for e in access if e["path"].startswith(("/metrics", "/health"))]
        assert scraped
        assert scraped[0]["http_requests_total_series"] >= 3

    def test_demo_order_and_its_job_share_one_trace(self) -> None:
        """The CLI demo's order enqueues a job whose log line carries the request's ids."""
        result, events = _run("-m", "kaleem_telemetry", "demo", "--duration", "0.5")
        [order] = [e for e in events if e.get("event") == "order_placed"]
        [receipt] = [e for e in events if e.get("event") == "receipt_sent"]

        assert result.returncode == 0, result.stderr[-2000:]
        assert receipt["order_id"] == order["order_id"]
        assert receipt["trace_id"] == order["trace_id"]
        assert receipt["span_id"] != order["span_id"]
        assert (receipt["request_id"], receipt["merchant_id"]) == ("demo-1", "m-1")
        # The console exporter prints the job's CONSUMER span on stderr.
        assert '"name": "process receipts"' in result.stderr

    def test_worker_consumes_in_the_request_trace(self, rabbitmq_url: str) -> None:
        """The worker example's jobs log the request's trace and ids, and /metrics counts them."""
        pytest.importorskip("pika")
        args = ["--jobs", "3", "--port", "0", "--url", rabbitmq_url]
        result, events = _run(str(ROOT / "examples" / "worker.py"), *args)
        request = next(e for e in events if e.get("event") == "orders_enqueued")
        jobs = [e for e in events if e.get("event") == "order_job_done"]
        scraped = [e for e in events if e.get("event") == "worker_metrics_scraped"]

        assert result.returncode == 0, result.stderr[-2000:]
        assert [e["order"] for e in jobs] == ["order-0", "order-1", "order-2"]
        assert {e["trace_id"] for e in jobs} == {request["trace_id"]}
        assert {e["request_id"] for e in jobs} == {request["request_id"]}
        assert {e["merchant_id"] for e in jobs} == {"m-42"}
        assert scraped[0]["job_runs"] == 3

    def test_celery_app_runs_tasks_in_the_request_trace(self, rabbitmq_url: str) -> None:
        """The Celery example's tasks, run by a prefork worker, log the request's trace and ids."""
        pytest.importorskip("celery")
        url = rabbitmq_url.rstrip("/") + "//"
        example = str(ROOT / "examples" / "celery_app.py")
        result, events = _run(example, "--tasks", "3", "--url", url, timeout=150)
        request = next(e for e in events if e.get("event") == "invoices_enqueued")
        tasks = [e for e in events if e.get("event") == "invoice_sent"]
        scraped = [e for e in events if e.get("event") == "celery_metrics_scraped"]

        assert result.returncode == 0, result.stderr[-2000:]
        assert sorted(e["invoice"] for e in tasks) == ["invoice-0", "invoice-1", "invoice-2"]
        assert {e["trace_id"] for e in tasks} == {request["trace_id"]}
        assert {e["request_id"] for e in tasks} == {request["request_id"]}
        assert {e["merchant_id"] for e in tasks} == {"m-42"}
        assert scraped[0]["job_runs"] == 3

    def test_demo_keeps_serving_metrics_and_health(self) -> None:
        """While the CLI demo serves, a scraper reads /metrics and the health endpoints."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "kaleem_telemetry", "demo", "--duration", "20"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=_example_env(),
            cwd=ROOT,
        )
        try:
            assert proc.stdout is not None
            url = None
            deadline = time.monotonic() + 60
            while url is None and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                if line.startswith("{") and json.loads(line).get("event") == "demo_ready":
                    url = json.loads(line)["url"]
            assert url is not None
            with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
                metrics = response.read().decode()
            with urllib.request.urlopen(url + "/health/ready", timeout=10) as response:
                ready = json.loads(response.read())
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            if proc.stdout is not None:
                proc.stdout.close()

        assert 'route="/merchants/{merchant_id}/products/{product_id}"' in metrics
        assert 'websocket_messages_total{direction="in",route="/ws/echo"}' in metrics
        assert "database_query_duration_seconds" in metrics
        assert ready["status"] == "ready"
