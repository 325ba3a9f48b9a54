"""Per-operation cost of the integrations next to the bare client call and the contrib one.

Three operations against local services: a redis ``GET`` (Redis on 127.0.0.1:6379),
a SQLAlchemy ``SELECT 1`` (PostgreSQL on 127.0.0.1:5432, psycopg 3) and an httpx
``GET`` to a loopback HTTP server started here. Each runs three ways in the
same process with the same tracer provider (every span sampled and handed to a
no-op exporter through a BatchSpanProcessor, as in production):

* ``bare``: not instrumented;
* ``ours``: ``kaleem_telemetry.integrations.<lib>.instrument()`` (span + metrics);
* ``contrib``: the OpenTelemetry contrib instrumentation alone (span only), when
  installed (the ``bench`` dependency group).

The variants are timed in interleaved rounds (instrumenting and uninstrumenting
between them; the order rotates), and the median per operation is printed with
the added cost over the bare call and the ratio to the contrib instrumentation.
On a shared machine only the figures of one run mean anything.

    python benchmarks/bench_integrations.py [--number 300] [--rounds 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import redis
import sqlalchemy as sa
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from kaleem_telemetry import tracing
from kaleem_telemetry.config import TelemetryConfig
from kaleem_telemetry.integrations import httpx as httpx_integration
from kaleem_telemetry.integrations import redis as redis_integration
from kaleem_telemetry.integrations import sqlalchemy as sqlalchemy_integration

VARIANTS = ("bare", "ours", "contrib")
REDIS_URL = os.environ.get("KT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "KT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
).replace("postgresql://", "postgresql+psycopg://", 1)


class _NullExporter(SpanExporter):
    def export(self, spans: Sequence[object]) -> SpanExportResult:  # type: ignore[override]
        return SpanExportResult.SUCCESS


class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        # One write: headers and body in separate segments would meet the
        # client's delayed ACK and time that instead of the call.
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _http_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/ok"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _contrib(name: str) -> tuple[Callable[[], None], Callable[[], None]] | None:
    """Return (instrument, uninstrument) of the contrib instrumentation, or None."""
    try:
        if name == "redis":
            from opentelemetry.instrumentation.redis import RedisInstrumentor

            inst: Any = RedisInstrumentor()
        elif name == "sqlalchemy":
            from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

            inst = SQLAlchemyInstrumentor()
        else:
            from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

            inst = HTTPXClientInstrumentor()
    except ImportError:
        return None
    inst.instrument()
    fits = inst.is_instrumented_by_opentelemetry
    inst.uninstrument()
    if not fits:
        print(f"BENCH-INTEGRATIONS {name}: the contrib instrumentation refuses this version")
        return None
    return inst.instrument, inst.uninstrument


def _modes(
    ours: Any, contrib: tuple[Callable[[], None], Callable[[], None]] | None
) -> dict[str, tuple[Callable[[], None], Callable[[], None]]]:
    def nothing() -> None:
        pass

    modes = {"bare": (nothing, nothing), "ours": (ours.instrument, ours.uninstrument)}
    if contrib is not None:
        modes["contrib"] = contrib
    return modes


def _time(operation: Callable[[], object], number: int) -> float:
    started = time.perf_counter()
    for _ in range(number):
        operation()
    return (time.perf_counter() - started) / number


def _measure(
    label: str,
    operation: Callable[[], object],
    modes: dict[str, tuple[Callable[[], None], Callable[[], None]]],
    number: int,
    rounds: int,
) -> None:
    names = [name for name in VARIANTS if name in modes]
    timings: dict[str, list[float]] = {name: [] for name in names}
    for round_no in range(rounds):
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            instrument, uninstrument = modes[name]
            instrument()
            try:
                for _ in range(20):
                    operation()  # warm-up: metric children, first lookups
                timings[name].append(_time(operation, number))
            finally:
                uninstrument()
    median = {name: statistics.median(values) for name, values in timings.items()}
    base = median["bare"]
    for name in names:
        line = (
            f"BENCH-INTEGRATIONS {label:12s} {name:8s} {median[name] * 1e6:8.1f} us/op  "
            f"+{(median[name] - base) * 1e6:6.1f} us over bare  x{median[name] / base:5.2f} bare"
        )
        if "contrib" in median and name == "ours":
            line += f"  x{median[name] / median['contrib']:5.2f} contrib"
        print(line)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=300, help="operations per round")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds")
    args = parser.parse_args(argv)

    tracing.configure_tracing(TelemetryConfig.from_env(environ={"OTEL_TRACES_EXPORTER": "none"}))
    tracing.add_span_processor(BatchSpanProcessor(_NullExporter(), max_queue_size=100_000))
    print(f"{args.number} operations x {args.rounds} interleaved rounds, median per operation")

    client = redis.Redis.from_url(REDIS_URL)
    client.set("bench:1", "v")
    try:
        modes = _modes(redis_integration, _contrib("redis"))
        _measure("redis GET", lambda: client.get("bench:1"), modes, args.number, args.rounds)
    finally:
        client.delete("bench:1")
        client.close()

    engine = sa.create_engine(POSTGRES_URL)
    select = sa.text("SELECT 1")
    try:
        with engine.connect() as conn:
            modes = _modes(sqlalchemy_integration, _contrib("sqlalchemy"))
            _measure(
                "SQL SELECT", lambda: conn.execute(select).scalar(), modes, args.number, args.rounds
            )
    finally:
        engine.dispose()

    with _http_server() as url, httpx.Client() as http:
        modes = _modes(httpx_integration, _contrib("httpx"))
        _measure("httpx GET", lambda: http.get(url), modes, args.number, args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
