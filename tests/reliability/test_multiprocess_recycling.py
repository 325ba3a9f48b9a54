"""Multiprocess metrics stay exact while gunicorn recycles its workers.

Gunicorn runs two sync workers with the WSGI middleware, ``PROMETHEUS_MULTIPROC_DIR``
set and ``max_requests`` small, so workers exit and are replaced during the load.
The counters a scrape shows must equal the requests sent so far (the files of dead
workers still count), never go down, and the in-progress gauge must be back at 0
(``child_exit`` removes a dead worker's live-gauge files). A directory left with
hundreds of dead workers' files still scrapes in bounded time.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("flask")
pytest.importorskip("gunicorn")
pytest.importorskip("httpx")

from kaleem_telemetry import setup_telemetry
from kaleem_telemetry.exceptions import TelemetryConfigError
from tests.reliability._support import clean_env, free_port, run_load, sample, serve

ROUNDS = 4
PER_ROUND = 60
MAX_REQUESTS = 20
DEAD_WORKERS = 300
# Generous for a loaded machine: a scrape that reads 300 workers' files takes well
# under a second; a quadratic merge or a lock on the directory would not.
SCRAPE_BOUND = 15.0
ROUTE = "/items/{item_id}"

_APP = """
from flask import Flask
from kaleem_telemetry import instrument_app, setup_telemetry

setup_telemetry(service_name="recycling", traces_exporter="none", log_format="json")
app = Flask("recycling")


@app.get("/items/<int:item_id>")
def item(item_id):
    return {"item_id": item_id}


instrument_app(app)
"""

_CONF = f"""
from kaleem_telemetry.gunicorn import child_exit, worker_exit  # noqa: F401 - gunicorn hooks

workers = 2
worker_class = "sync"
max_requests = {MAX_REQUESTS}
max_requests_jitter = 0
accesslog = None
loglevel = "info"
"""


def _gunicorn(tmp_path: Path, port: int) -> list[str]:
    (tmp_path / "app.py").write_text(_APP)
    (tmp_path / "gunicorn_conf.py").write_text(_CONF)
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "gunicorn_conf.py",
        "-b",
        f"127.0.0.1:{port}",
        "app:app",
    ]


def _multiproc_dir(tmp_path: Path) -> Path:
    path = tmp_path / "prometheus"
    path.mkdir()
    return path


class TestRecycledWorkers:
    def test_counters_are_exact_and_never_decrease(self, tmp_path: Path) -> None:
        """After each round, the scrape counts every request sent; workers were replaced."""
        mp_dir = _multiproc_dir(tmp_path)
        port = free_port()
        env = clean_env(PROMETHEUS_MULTIPROC_DIR=str(mp_dir))
        counts: list[float] = []
        in_progress: list[float] = []
        with serve(_gunicorn(tmp_path, port), tmp_path, env, port) as server:
            for _ in range(ROUNDS):
                load = run_load(server.url, PER_ROUND, threads=2)
                assert load.failures == []
                metrics = server.get("/metrics")
                counts.append(sample(metrics, "http_requests_total", route=ROUTE))
                in_progress.append(sample(metrics, "http_requests_in_progress"))
            server.terminate()
            booted = server.log().count("Booting worker")

        assert counts == [PER_ROUND * (i + 1) for i in range(ROUNDS)]
        assert in_progress == [0.0] * ROUNDS
        assert booted > 2, "max_requests should have recycled the workers"

    def test_hundreds_of_dead_worker_files_scrape_in_bounded_time(self, tmp_path: Path) -> None:
        """Files of 300 dead workers in the directory: a scrape still answers, in bounded time."""
        import httpx

        mp_dir = _multiproc_dir(tmp_path)
        port = free_port()
        env = clean_env(PROMETHEUS_MULTIPROC_DIR=str(mp_dir))
        with serve(_gunicorn(tmp_path, port), tmp_path, env, port) as server:
            assert run_load(server.url, MAX_REQUESTS, threads=2).failures == []
            # Copies of real value files under pids that no longer run, as a
            # directory that is never emptied between deployments accumulates.
            originals = [p for p in mp_dir.glob("*.db") if not p.name.startswith("gauge_live")]
            assert originals
            for n in range(DEAD_WORKERS):
                for original in originals:
                    kind = original.name.rsplit("_", 1)[0]
                    shutil.copyfile(original, mp_dir / f"{kind}_{4_000_000 + n}.db")
            began = time.monotonic()
            response = httpx.get(server.url + "/metrics", timeout=SCRAPE_BOUND * 2)
            seconds = time.monotonic() - began
            files = len(list(mp_dir.glob("*.db")))

        print(f"\n[multiprocess] scrape of {files} value files took {seconds:.2f} s")
        assert response.status_code == 200
        assert sample(response.text, "http_requests_total", route=ROUTE) >= MAX_REQUESTS
        assert seconds < SCRAPE_BOUND


class TestUnusableDirectory:
    @pytest.mark.parametrize("problem", ["missing", "a file"])
    def test_setup_names_the_variable(
        self, problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A directory the process cannot write is a TelemetryConfigError naming the variable."""
        path = tmp_path / "prometheus"
        if problem == "a file":
            path.write_text("")
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(path))

        with pytest.raises(TelemetryConfigError, match="PROMETHEUS_MULTIPROC_DIR") as raised:
            setup_telemetry(service_name="unwritable", traces_exporter="none")
        assert str(path) in str(raised.value)

    def test_a_read_only_directory_is_refused_unless_the_process_may_write_it(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Mode 0555 is refused, naming the variable; root, which may write it anyway, is not."""
        path = tmp_path / "prometheus"
        path.mkdir(mode=0o555)
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(path))

        if os.access(path, os.W_OK | os.X_OK):
            # The check asks the kernel, as prometheus_client's writes will: a user
            # that may write the directory (root) must not be refused.
            setup_telemetry(service_name="root-may-write", traces_exporter="none")
            (path / "probe.db").write_bytes(b"")
            assert (path / "probe.db").exists()
        else:
            with pytest.raises(TelemetryConfigError, match="PROMETHEUS_MULTIPROC_DIR") as raised:
                setup_telemetry(service_name="unwritable", traces_exporter="none")
            assert "not writable" in str(raised.value)
