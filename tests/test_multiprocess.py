from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from kaleem_telemetry import exposition, metrics
from kaleem_telemetry._metrics_server import configure_metrics
from kaleem_telemetry.config import TelemetryConfig
from kaleem_telemetry.exposition import render_metrics
from kaleem_telemetry.metrics import get_metrics

WORKERS = 4
PER_WORKER = 250

# Each worker imports the package with PROMETHEUS_MULTIPROC_DIR already in its
# environment, as a gunicorn worker does, then records and exits.
WORKER_SOURCE = textwrap.dedent(
    """
    import os, sys
    from kaleem_telemetry.metrics import get_metrics

    m = get_metrics()
    assert m.multiprocess, "the worker must be in multiprocess mode"
    for _ in range(int(sys.argv[1])):
        m.http_requests_total.labels("GET", "/items/{item_id}", 200).inc()
        m.http_request_duration_seconds.labels("GET", "/items/{item_id}", 200).observe(
            0.01, {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}
        )
    m.http_requests_in_progress.labels("GET").inc()
    m.app_info.labels("svc", "1.0.0", "test").set(1)
    print(os.getpid())
    """
)


@pytest.fixture(name="mp_dir")
def _mp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty multiprocess directory named in this process's environment."""
    path = tmp_path / "prometheus"
    path.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(path))
    return path


def _run_workers(mp_dir: Path) -> list[int]:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp_dir)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER_SOURCE, str(PER_WORKER)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(WORKERS)
    ]
    pids = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        pids.append(int(out.strip()))
    return pids


def _samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


class TestMultiprocess:
    def test_workers_aggregate_exactly(self, mp_dir: Path) -> None:
        """Several processes incrementing one counter scrape as exactly their sum."""
        _run_workers(mp_dir)
        samples = _samples(render_metrics()[0])

        labels = (("method", "GET"), ("route", "/items/{item_id}"), ("status_code", "200"))
        assert samples[("http_requests_total", labels)] == WORKERS * PER_WORKER
        assert samples[("http_request_duration_seconds_count", labels)] == WORKERS * PER_WORKER
        assert samples[("http_requests_in_progress", (("method", "GET"),))] == WORKERS
        app_info = (("environment", "test"), ("service", "svc"), ("version", "1.0.0"))
        assert samples[("app_info", app_info)] == 1

    def test_openmetrics_has_no_exemplars(self, mp_dir: Path) -> None:
        """Multiprocess mode drops exemplars: the OpenMetrics scrape has none."""
        _run_workers(mp_dir)
        body, headers = render_metrics(accept="application/openmetrics-text; version=1.0.0")

        assert dict(headers)["Content-Type"].startswith("application/openmetrics-text")
        assert b"http_requests_total" in body
        assert b"trace_id" not in body

    def test_child_exit_drops_live_gauges(self, mp_dir: Path) -> None:
        """The gunicorn child_exit hook removes a dead worker's live gauge values."""
        pids = _run_workers(mp_dir)

        class Worker:
            def __init__(self, pid: int) -> None:
                self.pid = pid

        for pid in pids[:-1]:
            exposition.child_exit(None, Worker(pid))
        samples = _samples(render_metrics()[0])

        assert samples[("http_requests_in_progress", (("method", "GET"),))] == 1
        labels = (("method", "GET"), ("route", "/items/{item_id}"), ("status_code", "200"))
        assert samples[("http_requests_total", labels)] == WORKERS * PER_WORKER

    def test_explicit_registry_is_not_aggregated(self, mp_dir: Path) -> None:
        """An explicit registry is exposed as is, even in multiprocess mode."""
        _run_workers(mp_dir)
        body, _ = render_metrics(CollectorRegistry())

        assert body == b""


class TestConfiguredMultiprocess:
    def test_config_switches_this_process(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A directory given only in the config switches the process metrics to files."""
        monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
        before = get_metrics()
        assert not before.multiprocess
        # configure_metrics exports the variable; monkeypatch restores it afterwards.
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
        configure_metrics(TelemetryConfig.from_env({}, prometheus_multiproc_dir=str(tmp_path)))
        after = get_metrics()
        after.http_requests_total.labels("GET", "/", "200").inc()

        assert after is not before
        assert after.multiprocess
        assert not after.exemplars_enabled
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path)
        assert list(tmp_path.glob("counter_*.db"))
        assert (
            b'http_requests_total{method="GET",route="/",status_code="200"} 1.0'
            in render_metrics()[0]
        )

    def test_reset_returns_to_memory(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Once the variable is gone, reset_for_tests() brings back in-memory values."""
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        configure_metrics(TelemetryConfig.from_env({}, prometheus_multiproc_dir=str(tmp_path)))
        assert metrics.is_multiprocess()
        monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
        metrics.reset_for_tests()

        assert not metrics.is_multiprocess()
        assert not get_metrics().multiprocess
