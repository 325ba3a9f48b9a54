"""Gunicorn stops in bounded time when every backend is a black hole.

Two uvicorn workers under gunicorn queue thousands of spans for a collector that
accepts connections and never answers, and Sentry events for a DSN whose host does
the same. SIGTERM to the arbiter must end every worker within
``KALEEM_TELEMETRY_SHUTDOWN_TIMEOUT`` plus a margin, on their own: gunicorn's
graceful timeout is set far beyond it, so a worker that hung would be killed by the
arbiter (and gunicorn would log it) instead of exiting.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("gunicorn")
pytest.importorskip("httpx")

from tests.receivers import OTLPReceiver, SentryIngest
from tests.reliability._support import FASTAPI_APP, clean_env, free_port, run_load, serve

SHUTDOWN_TIMEOUT = 2
# Far beyond the bound: only a worker that hangs reaches it.
GRACEFUL_TIMEOUT = 60
# Generous for a loaded machine (two workers, interpreter exit, the arbiter's own
# loop); a worker blocked on a black hole waits for the graceful timeout.
MARGIN = 13
REQUESTS = 1500

_APP = (
    FASTAPI_APP
    + """

from kaleem_telemetry import capture_exception


@app.get("/report/{n}")
async def report(n: int) -> dict[str, int]:
    try:
        raise ValueError(f"reported {n}")
    except ValueError as exc:
        capture_exception(exc)
    return {"n": n}
"""
)

_GUNICORN_CONF = f"""
from kaleem_telemetry.gunicorn import worker_exit  # noqa: F401 - gunicorn hook

workers = 2
worker_class = "uvicorn.workers.UvicornWorker"
accesslog = None
loglevel = "info"
graceful_timeout = {GRACEFUL_TIMEOUT}
"""


def test_sigterm_ends_every_worker_within_the_bound(tmp_path: Path) -> None:
    """Thousands of spans queued for a black hole: the arbiter exits 0, no worker killed."""
    (tmp_path / "app.py").write_text(_APP)
    (tmp_path / "gunicorn_conf.py").write_text(_GUNICORN_CONF)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "gunicorn_conf.py",
        "-b",
        f"127.0.0.1:{port}",
        "app:app",
    ]
    with (
        OTLPReceiver("grpc", mode="blackhole") as collector,
        SentryIngest(mode="blackhole") as sentry,
    ):
        env = clean_env(
            **collector.env(),
            SENTRY_DSN=sentry.dsn,
            KALEEM_TELEMETRY_SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT),
            # Room for every span: they stay queued for the flush on the way out.
            OTEL_BSP_MAX_QUEUE_SIZE="20000",
            OTEL_BSP_SCHEDULE_DELAY="600000",
        )
        with serve(command, tmp_path, env, port) as server:
            load = run_load(server.url, REQUESTS)
            for n in range(5):
                server.get(f"/report/{n}")
            began = time.monotonic()
            status = server.terminate(timeout=GRACEFUL_TIMEOUT + 30)
            seconds = time.monotonic() - began
            log = server.log()

    print(f"\n[bounded shutdown] arbiter exited {status} after {seconds:.2f} s")
    assert load.failures == []
    assert "WORKER TIMEOUT" not in log
    assert "SIGKILL" not in log
    # Each uvicorn worker finished its own shutdown (the arbiter did not cut it short).
    assert log.count("Finished server process") == 2, log
    assert status == 0
    assert seconds < SHUTDOWN_TIMEOUT + MARGIN
