"""Nothing finished is lost when a real server or worker process is stopped with SIGTERM.

Each test starts a real process (uvicorn, uvicorn with ``--workers``, gunicorn with
sync or uvicorn workers, a plain worker loop) that exports to the OTLP receiver of
``tests/receivers.py`` over a socket, serves N requests, and gets SIGTERM, as
Kubernetes and ``docker stop`` send it. The batch processor's schedule delay is set
far beyond the test, so every span the receiver gets was exported by the flush on
the way out, not by the periodic export.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.receivers import OTLPReceiver, SentryIngest

ROOT = Path(__file__).resolve().parent.parent
# The exit status of a process that the default action of SIGTERM ended.
KILLED_BY_SIGTERM = -signal.SIGTERM
# opentelemetry-proto's Span.SpanKind.SPAN_KIND_SERVER.
PROTO_SPAN_KIND_SERVER = 2
# Far beyond any test: only a flush exports.
NO_PERIODIC_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "600000", "OTEL_BSP_MAX_QUEUE_SIZE": "20000"}

_FASTAPI_APP = """
from fastapi import FastAPI
from kaleem_telemetry import instrument_app, setup_telemetry

setup_telemetry(service_name="sigterm-api", log_format="json")
app = FastAPI()


@app.get("/items/{item_id}")
async def item(item_id: int) -> dict[str, int]:
    return {"item_id": item_id}


instrument_app(app)
"""

_FLASK_APP = """
from flask import Flask
from kaleem_telemetry import instrument_app, setup_telemetry

setup_telemetry(service_name="sigterm-flask", log_format="json")
app = Flask("sigterm-flask")


@app.get("/items/<int:item_id>")
def item(item_id):
    return {"item_id": item_id}


instrument_app(app)
"""

_UVICORN_RUN = """
import sys
import uvicorn
from app import app

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_config=None)
"""

_GUNICORN_CONF = """
from kaleem_telemetry.gunicorn import worker_exit  # noqa: F401 - gunicorn hook

workers = 2
accesslog = None
graceful_timeout = 20
"""

_WORKER = """
import sys, time
from kaleem_telemetry import capture_exception, instrument, setup_telemetry

setup_telemetry(service_name="sigterm-worker", log_format="json")


@instrument
def handle(i):
    return i


for i in range(int(sys.argv[1])):
    handle(i)
if len(sys.argv) > 2:
    try:
        raise RuntimeError("job failed before SIGTERM")
    except RuntimeError as exc:
        capture_exception(exc)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _env(receiver: OTLPReceiver, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SENTRY_"))}
    env.update(receiver.env(**NO_PERIODIC_EXPORT))
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _wait_until_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode} before answering")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"no answer at {url}")


def _serve_and_stop(
    command: list[str], cwd: Path, env: dict[str, str], port: int, requests: int
) -> tuple[int, float]:
    """Start ``command``, send ``requests`` requests, SIGTERM it; return (status, seconds)."""
    import httpx

    with subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ) as proc:
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_until_up(url + "/health/live", proc)
            with (
                httpx.Client(timeout=10) as client,
                ThreadPoolExecutor(max_workers=4) as pool,
            ):
                statuses = list(
                    pool.map(lambda i: client.get(f"{url}/items/{i}").status_code, range(requests))
                )
            assert statuses == [200] * requests
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            status = proc.wait(timeout=60)
            return status, time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()


def _signal_when_ready(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, float]:
    """Run a script until it prints "ready", SIGTERM it; return (exit status, seconds to exit)."""
    with subprocess.Popen(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=60)
        return status, time.monotonic() - started


def _server_spans(receiver: OTLPReceiver, n: int) -> list[str]:
    spans = receiver.wait_for(n, timeout=15)
    return sorted(s.name for s in spans if s.kind == PROTO_SPAN_KIND_SERVER)


@pytest.fixture(name="project")
def _project(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(_FASTAPI_APP)
    (tmp_path / "flask_app.py").write_text(_FLASK_APP)
    (tmp_path / "run.py").write_text(_UVICORN_RUN)
    (tmp_path / "gunicorn_conf.py").write_text(_GUNICORN_CONF)
    (tmp_path / "worker.py").write_text(_WORKER)
    return tmp_path


UVICORN_RUN = "uvicorn.run() from the application's main"
UVICORN_CLI = "uvicorn app:app"
UVICORN_WORKERS = "uvicorn app:app --workers 2"
GUNICORN_UVICORN = "gunicorn -k uvicorn.workers.UvicornWorker"
GUNICORN_SYNC = "gunicorn sync workers"


def _command(kind: str, port: int) -> list[str]:
    bind = ["--host", "127.0.0.1", "--port", str(port)]
    if kind == UVICORN_RUN:
        return [sys.executable, "run.py", str(port)]
    if kind == UVICORN_CLI:
        return [sys.executable, "-m", "uvicorn", "app:app", *bind, "--no-access-log"]
    if kind == UVICORN_WORKERS:
        return [sys.executable, "-m", "uvicorn", "app:app", *bind, "--workers", "2"]
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", "gunicorn_conf.py"]
    if kind == GUNICORN_UVICORN:
        return [
            *gunicorn,
            "-k",
            "uvicorn.workers.UvicornWorker",
            "-b",
            f"127.0.0.1:{port}",
            "app:app",
        ]
    return [*gunicorn, "-b", f"127.0.0.1:{port}", "flask_app:app"]


def _bare_status(kind: str, project: Path, port: int) -> int:
    """The exit status the same server gives on SIGTERM with the same app, untraced."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SENTRY_"))}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "OTEL_SDK_DISABLED": "true",
            "KALEEM_TELEMETRY_FLUSH_ON_SIGTERM": "false",
        }
    )
    status, _seconds = _serve_and_stop(_command(kind, port), project, env, port, 1)
    return status


@pytest.mark.parametrize(
    "kind", [UVICORN_RUN, UVICORN_CLI, UVICORN_WORKERS, GUNICORN_UVICORN, GUNICORN_SYNC]
)
class TestServersOnSigterm:
    def test_every_finished_span_is_exported(self, kind: str, project: Path) -> None:
        """N requests, SIGTERM: all N server spans arrive; the exit status is the server's own."""
        requests = 120
        with OTLPReceiver("http") as receiver:
            port = _free_port()
            status, _seconds = _serve_and_stop(
                _command(kind, port), project, _env(receiver), port, requests
            )
            names = _server_spans(receiver, requests)

        assert names == ["GET /items/{item_id}"] * requests
        assert status == _bare_status(kind, project, _free_port())


class TestPlainWorker:
    def test_queued_spans_and_sentry_events_are_sent_and_the_signal_kills(
        self, project: Path
    ) -> None:
        """A worker loop's spans and pending Sentry event arrive on SIGTERM, and it dies of it."""
        jobs = 500
        with OTLPReceiver("grpc") as receiver, SentryIngest() as sentry:
            env = _env(receiver, SENTRY_DSN=sentry.dsn)
            status, _seconds = _signal_when_ready(["worker.py", str(jobs), "fail"], project, env)
            spans = receiver.wait_for(jobs, timeout=15)
            events = sentry.wait_for_events(1, timeout=15)

        assert status == KILLED_BY_SIGTERM
        assert len(spans) == jobs
        assert [e["exception"]["values"][-1]["value"] for e in events] == [
            "job failed before SIGTERM"
        ]

    def test_a_black_holed_collector_bounds_the_exit(self, project: Path) -> None:
        """Thousands of spans queued for a black hole: SIGTERM still ends the process in time."""
        with OTLPReceiver("grpc", mode="blackhole") as receiver:
            env = _env(receiver, KALEEM_TELEMETRY_SHUTDOWN_TIMEOUT="2")
            status, seconds = _signal_when_ready(["worker.py", "5000"], project, env)

        assert status == KILLED_BY_SIGTERM
        # The bound is 2 s; a hang would take the 60 s wait. Generous for a busy machine.
        assert seconds < 15


class TestHandlerChain:
    def test_a_previous_handler_is_called_and_the_flush_follows_at_exit(
        self, project: Path
    ) -> None:
        """A handler installed before setup runs, decides the exit, and the spans are flushed."""
        script = textwrap.dedent(
            """
            import signal, sys, time
            stop = []
            signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
            from kaleem_telemetry import instrument, setup_telemetry
            setup_telemetry(service_name="chained", log_format="json")

            @instrument
            def job():
                return 1

            for _ in range(50):
                job()
            print("ready", flush=True)
            while not stop:
                time.sleep(0.05)
            sys.exit(3)
            """
        )
        (project / "chained.py").write_text(script)
        with OTLPReceiver("grpc") as receiver:
            status, _seconds = _signal_when_ready(["chained.py"], project, _env(receiver))
            spans = receiver.wait_for(50, timeout=15)

        assert status == 3
        assert len(spans) == 50

    def test_an_ignored_sigterm_stays_ignored(self, project: Path) -> None:
        """A process that ignores SIGTERM before setup keeps running after one."""
        script = textwrap.dedent(
            """
            import signal, sys, time
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            from kaleem_telemetry import setup_telemetry
            setup_telemetry(service_name="ignoring", traces_exporter="none", log_format="json")
            print("ready", flush=True)
            sys.stdin.readline()
            print("still here", flush=True)
            """
        )
        (project / "ignoring.py").write_text(script)
        with subprocess.Popen(
            [sys.executable, "ignoring.py"],
            cwd=project,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        ) as proc:
            assert proc.stdout is not None
            assert proc.stdin is not None
            assert proc.stdout.readline().strip() == b"ready"
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            out, _ = proc.communicate(b"\n", timeout=30)

        assert out.strip() == b"still here"
        assert proc.returncode == 0

    def test_the_setting_turns_the_handler_off(self, project: Path) -> None:
        """KALEEM_TELEMETRY_FLUSH_ON_SIGTERM=false leaves the default action of SIGTERM alone."""
        script = textwrap.dedent(
            """
            import signal
            from kaleem_telemetry import setup_telemetry
            setup_telemetry(service_name="off", traces_exporter="none", log_format="json")
            print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, flush=True)
            """
        )
        (project / "off.py").write_text(script)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "KALEEM_TELEMETRY_FLUSH_ON_SIGTERM": "false"}
        out = subprocess.run(
            [sys.executable, "off.py"], cwd=project, env=env, capture_output=True, check=True
        ).stdout

        assert out.strip() == b"True"
