"""Shared helpers of the reliability tests: real servers, a load client, a fixed-port receiver.

Every process started here is bounded: servers are stopped by PID (SIGTERM, then
SIGKILL after a timeout) when their context exits, and the load client runs under a
subprocess timeout with a bounded number of requests.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.receivers import HOST, OTLPReceiver

__all__ = [
    "FASTAPI_APP",
    "ROOT",
    "Load",
    "ReceiverOnPort",
    "Server",
    "clean_env",
    "free_port",
    "percentile",
    "run_load",
    "sample",
    "serve",
    "start_load",
]

ROOT = Path(__file__).resolve().parents[2]

# The application every test serves: full telemetry from the environment, JSON logs.
FASTAPI_APP = """
from fastapi import FastAPI
from kaleem_telemetry import instrument_app, setup_telemetry

setup_telemetry(service_name="reliability-api", log_format="json")
app = FastAPI()


@app.get("/items/{item_id}")
async def item(item_id: int) -> dict[str, int]:
    return {"item_id": item_id}


instrument_app(app)
"""

# A load client in its own process, so the server's event loop and the client's
# never share a GIL: N requests over a few threads, each one's status (or the
# exception's name) and latency printed as JSON.
_LOAD_CLIENT = """
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
import httpx

url, n, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def call(client, i):
    began = time.perf_counter()
    try:
        status = client.get(f"{url}/items/{i}").status_code
    except Exception as exc:
        status = type(exc).__name__
    return status, time.perf_counter() - began

with httpx.Client(timeout=10) as client, ThreadPoolExecutor(threads) as pool:
    results = list(pool.map(lambda i: call(client, i), range(n)))
print(json.dumps({"statuses": [r[0] for r in results], "latencies": [r[1] for r in results]}))
"""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """Return this environment minus telemetry settings, the package importable, plus ``extra``."""
    prefixes = ("OTEL_", "SENTRY_", "KALEEM_TELEMETRY_", "PROMETHEUS_MULTIPROC_DIR")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def sample(metrics: str, name: str, **labels: str) -> float:
    """Sum the samples of ``name`` (with or without labels) that carry all ``labels``."""
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("#") or not (line.startswith((name + "{", name + " "))):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile of ``values`` (0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class Load:
    """What the load client saw: one status (or exception name) and latency per request."""

    statuses: list[Any]
    latencies: list[float]

    @property
    def failures(self) -> list[Any]:
        """The statuses that are not 200."""
        return [s for s in self.statuses if s != 200]


def _load_command(url: str, requests: int, threads: int) -> list[str]:
    return [sys.executable, "-c", _LOAD_CLIENT, url, str(requests), str(threads)]


def run_load(url: str, requests: int, threads: int = 4, timeout: float = 120.0) -> Load:
    """Send ``requests`` GETs to ``url`` from another process and return what it saw."""
    done = subprocess.run(
        _load_command(url, requests, threads),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
        env=clean_env(),
    )
    data = json.loads(done.stdout)
    return Load(data["statuses"], data["latencies"])


@contextmanager
def start_load(url: str, requests: int, threads: int = 2, timeout: float = 120.0) -> Iterator[Any]:
    """Run the load client in the background; yield a function that waits for its result."""
    with subprocess.Popen(
        _load_command(url, requests, threads),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    ) as proc:

        def result() -> Load:
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, err
            data = json.loads(out)
            return Load(data["statuses"], data["latencies"])

        try:
            yield result
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


class Server:
    """A server process started in ``cwd`` whose stdout and stderr go to files there."""

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str], port: int) -> None:
        self.command = command
        self.cwd = cwd
        self.env = env
        self.url = f"http://{HOST}:{port}"
        self.out_path = cwd / f"server-{port}.out"
        self.err_path = cwd / f"server-{port}.err"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_path: str = "/health/live", timeout: float = 60.0) -> None:
        """Start the process and wait until ``ready_path`` answers 200."""
        import httpx

        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                self.command, cwd=self.cwd, env=self.env, stdout=out, stderr=err
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + ready_path, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        pytest.fail(f"no answer at {self.url}{ready_path}:\n{self.log()}")

    @property
    def pid(self) -> int:
        """The server's (for gunicorn: the arbiter's) process id."""
        assert self.proc is not None
        return self.proc.pid

    def get(self, path: str) -> str:
        """GET ``path`` from the server and return the body."""
        import httpx

        return httpx.get(self.url + path, timeout=10).text

    def log(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        return self.out_path.read_text(errors="replace") + self.err_path.read_text(errors="replace")

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM the process by its PID and return its exit status (SIGKILL past ``timeout``)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the process if it still runs; safe to call twice."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextmanager
def serve(command: list[str], cwd: Path, env: dict[str, str], port: int) -> Iterator[Server]:
    """Start a `Server`, yield it once it answers, and stop it whatever happens."""
    server = Server(command, cwd, env, port)
    try:
        server.start()
        yield server
    finally:
        server.kill()


class ReceiverOnPort(OTLPReceiver):
    """The OTLP/HTTP receiver of ``tests/receivers.py``, listening on a port chosen beforehand.

    For a collector that comes back: the application keeps its endpoint, and the
    receiver starts on that port later.
    """

    def __init__(self, port: int) -> None:
        super().__init__("http/protobuf")
        self._wanted_port = port

    def _start_http(self) -> None:
        # Build the receiver's own handler on an ephemeral port, then serve the
        # same handler class on the wanted port instead.
        super()._start_http()
        ephemeral = self._closers.pop().__self__
        handler = ephemeral.httpd.RequestHandlerClass
        ephemeral.close()
        httpd = ThreadingHTTPServer((HOST, self._wanted_port), handler)
        httpd.daemon_threads = True
        thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        self.port = self._wanted_port

        def close() -> None:
            httpd.shutdown()
            httpd.server_close()
            thread.join(2.0)

        self._closers.append(close)
