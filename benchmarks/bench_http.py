"""Per-request cost of the ASGI middleware next to a bare app and a hand-assembled stack.

Three variants of the same Starlette app are driven directly through ASGI (no
server, no sockets), each in its own worker process so their global state
(tracer provider, Sentry client, structlog configuration) cannot leak into one
another:

* ``bare``: the Starlette app alone;
* ``ours``: the app wrapped the way `instrument_app()` does it, after
  ``setup_telemetry()`` with every sink on: a sampled span through a
  ``BatchSpanProcessor`` exporting to a no-op exporter, the RED metrics, the JSON
  access log (to a null stream), the request id, and Sentry on with a DSN whose
  host is a closed port on 127.0.0.1;
* ``stack``: the usual hand-assembled stack: opentelemetry-instrumentation-asgi's
  ``OpenTelemetryMiddleware`` with a ``BatchSpanProcessor`` (same no-op exporter),
  starlette_exporter's ``PrometheusMiddleware``, asgi_correlation_id's
  ``CorrelationIdMiddleware``, a pure-ASGI structlog + orjson access-log middleware
  (to a null stream) and ``sentry_sdk.init()`` with the same DSN.

The stack's ASGI middleware makes a span for every message the app sends besides
the request's own, so under this load its batch processor's queue fills and the
SDK drops some of them ("Queue full, dropping Span." on stderr). A dropped span
is never exported, so this errs in the stack's favour.

The parent runs the variants in turn for several rounds (interleaved, rotating
the order) and reports, per request, the median wall-clock time of each and the
median CPU time of its whole process (every thread: the span export thread and
Sentry's worker included), the time each adds to the bare app, and the ratio of
the added costs (ours / stack). The bar the middleware is designed for is a ratio
of at most 0.15. On a shared machine the wall clock wanders by tens of percent
between runs; the process CPU time wanders less, and ``--instructions`` not at all.

    python benchmarks/bench_http.py [--requests 3000] [--rounds 25]
    python benchmarks/bench_http.py --instructions     # CPU instructions, via valgrind
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import _callgrind

VARIANTS = ("bare", "ours", "stack")
#: Diagnostic variants, run with ``--variants``: ours with Sentry off.
EXTRA_VARIANTS = ("ours_nosentry",)
#: A DSN whose host is a closed port on this machine: Sentry must not slow requests.
DEAD_DSN = "http://public@127.0.0.1:9/1"
PATH = "/items/{item_id}"

_SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.4"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/items/42",
    "raw_path": b"/items/42",
    "root_path": "",
    "query_string": b"q=shoes&page=2",
    "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 50000),
}
_HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"bench/1.0"),
    (b"accept", b"*/*"),
    (b"x-request-id", b"0f4b5a2c7d9e4e1f8a3b6c5d4e3f2a1b"),
]


class _NullText(io.TextIOBase):
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


class _NullBytes:
    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass


def _starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def item(request: Any) -> Any:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route(PATH, item), Route("/health", item)])


def _noop_exporter() -> Any:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class NoOpExporter(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    return NoOpExporter()


def _build_bare() -> Any:
    return _starlette_app()


def _build_ours(*, sentry: bool = True) -> Any:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from kaleem_telemetry import _setup, tracing
    from kaleem_telemetry.apps import instrument_app

    _setup.setup_telemetry(
        service_name="bench",
        traces_exporter="none",
        traces_sampler="always_on",
        log_format="json",
        sentry_dsn=DEAD_DSN if sentry else None,
    )
    # traces_exporter="none" installs no export processor; add the same batch
    # processor and no-op exporter the stack gets, so both pay the same export.
    tracing.add_span_processor(BatchSpanProcessor(_noop_exporter()))
    return instrument_app(_starlette_app())


def _build_stack() -> Any:
    import orjson
    import sentry_sdk
    import structlog
    from asgi_correlation_id import CorrelationIdMiddleware, correlation_id
    from opentelemetry import trace
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from starlette.middleware import Middleware
    from starlette_exporter import PrometheusMiddleware

    sentry_sdk.init(dsn=DEAD_DSN)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_noop_exporter()))
    trace.set_tracer_provider(provider)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        logger_factory=structlog.BytesLoggerFactory(_NullBytes()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    access = structlog.get_logger("access")

    class AccessLogMiddleware:
        """The usual pure-ASGI structlog access log."""

        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await self.app(scope, receive, send)
                return
            start = time.perf_counter()
            status = 500

            async def send_wrapper(message: Any) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            structlog.contextvars.bind_contextvars(request_id=correlation_id.get())
            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                route = scope.get("route")
                access.info(
                    "http_request",
                    method=scope["method"],
                    route=getattr(route, "path", "unmatched"),
                    path=scope["path"],
                    status_code=status,
                    duration_ms=(time.perf_counter() - start) * 1000,
                    client_ip=scope["client"][0],
                )
                structlog.contextvars.clear_contextvars()

    app = _starlette_app()
    app.user_middleware[:0] = [
        Middleware(CorrelationIdMiddleware),
        Middleware(PrometheusMiddleware, group_paths=True, app_name="bench"),
        Middleware(AccessLogMiddleware),
    ]
    return OpenTelemetryMiddleware(app, tracer_provider=provider)


async def _drive(app: Any, requests: int) -> tuple[int, int]:
    """Serve ``requests`` requests; return (wall, process CPU) nanoseconds."""
    body = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> dict[str, Any]:
        return body

    async def send(message: Any) -> None:
        return None

    wall = time.perf_counter_ns()
    cpu = time.process_time_ns()
    for _ in range(requests):
        scope = dict(_SCOPE)
        scope["headers"] = list(_HEADERS)
        await app(scope, receive, send)
    return time.perf_counter_ns() - wall, time.process_time_ns() - cpu


_BUILDERS = {
    "bare": _build_bare,
    "ours": _build_ours,
    "ours_nosentry": lambda: _build_ours(sentry=False),
    "stack": _build_stack,
}


def _worker(variant: str) -> None:
    """Serve ``run N`` commands on stdin; answer "wall cpu" nanoseconds on the real stdout."""
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout = _NullText()  # the access logs of every variant go nowhere
    app = _BUILDERS[variant]()
    loop = asyncio.new_event_loop()
    loop.run_until_complete(_drive(app, 200))  # warm caches, lazy imports, first-use paths
    reply.write("ready\n")
    for line in sys.stdin:
        command, _, count = line.strip().partition(" ")
        if command != "run":
            break
        wall, cpu = loop.run_until_complete(_drive(app, int(count)))
        reply.write(f"{wall} {cpu}\n")
    loop.close()


def _count_run(variant: str, requests: int) -> None:
    """Build ``variant``, warm it up, drive ``requests`` requests, exit (under valgrind)."""
    sys.stdout = _NullText()
    app = _BUILDERS[variant]()
    loop = asyncio.new_event_loop()
    loop.run_until_complete(_drive(app, 300))
    loop.run_until_complete(_drive(app, requests))
    loop.close()


def _report_instructions(variants: Sequence[str]) -> int:
    """Print instructions per request: (count at 1,200 requests - at 200) / 1,000."""
    if not _callgrind.available():
        print(_callgrind.MISSING, file=sys.stderr)
        return 1
    per_request = {name: _callgrind.per_operation(__file__, name, 200, 1200) for name in variants}
    ours_added = per_request["ours"] - per_request["bare"]
    stack_added = per_request["stack"] - per_request["bare"]
    print("CPU instructions per request (callgrind; load moves it by a few percent at most)")
    for name in variants:
        added = per_request[name] - per_request["bare"]
        print(f"{name:<14} {per_request[name]:>12,.0f} {added:>12,.0f} added")
    print(f"added-cost ratio ours/stack: {ours_added / stack_added:.3f} (bar: <= 0.15)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=25, help="interleaved rounds")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated variants among {', '.join(VARIANTS + EXTRA_VARIANTS)}",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count CPU instructions per request under valgrind (deterministic, slow)",
    )
    parser.add_argument("--worker", choices=VARIANTS + EXTRA_VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--count", nargs=2, metavar=("VARIANT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker)
        return 0
    if args.count:
        _count_run(args.count[0], int(args.count[1]))
        return 0
    variants = tuple(v for v in args.variants.split(",") if v)
    if not {"bare", "ours", "stack"} <= set(variants):
        parser.error("--variants must include bare, ours and stack")
    if args.instructions:
        return _report_instructions(variants)

    env = dict(os.environ, OTEL_SDK_DISABLED="false", PYTHONHASHSEED="0")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    workers = {
        name: subprocess.Popen(
            [sys.executable, __file__, "--worker", name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name in variants
    }
    timings: dict[str, list[float]] = {name: [] for name in variants}
    cpu_timings: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for name, proc in workers.items():
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                print(f"worker {name} failed to start", file=sys.stderr)
                return 1
        for round_no in range(args.rounds):
            shift = round_no % len(variants)
            order = variants[shift:] + variants[:shift]
            for name in order:
                proc = workers[name]
                assert proc.stdin is not None
                assert proc.stdout is not None
                proc.stdin.write(f"run {args.requests}\n")
                proc.stdin.flush()
                wall, cpu = (int(v) for v in proc.stdout.readline().split())
                timings[name].append(wall / args.requests / 1000)
                cpu_timings[name].append(cpu / args.requests / 1000)
    finally:
        for proc in workers.values():
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=30)

    median = {name: statistics.median(values) for name, values in timings.items()}
    cpu_median = {name: statistics.median(values) for name, values in cpu_timings.items()}
    ratio = _added_ratio(median)
    cpu_ratio = _added_ratio(cpu_median)
    if args.json:
        print(
            json.dumps(
                {
                    "median_us": median,
                    "ratio": ratio,
                    "cpu_median_us": cpu_median,
                    "cpu_ratio": cpu_ratio,
                }
            )
        )
        return 0
    print(f"{args.requests} requests x {args.rounds} interleaved rounds, median per request")
    print(
        f"{'variant':<14} {'wall µs':>8} {'added':>8} {'min':>7} {'max':>7}"
        f" {'cpu µs':>8} {'added':>8}"
    )
    for name in variants:
        print(
            f"{name:<14} {median[name]:>8.1f} {median[name] - median['bare']:>8.1f}"
            f" {min(timings[name]):>7.1f} {max(timings[name]):>7.1f}"
            f" {cpu_median[name]:>8.1f} {cpu_median[name] - cpu_median['bare']:>8.1f}"
        )
    print(f"added-cost ratio ours/stack, wall clock: {ratio:.3f} (bar: <= 0.15)")
    print(f"added-cost ratio ours/stack, process CPU: {cpu_ratio:.3f} (bar: <= 0.15)")
    return 0


def _added_ratio(per_request: dict[str, float]) -> float:
    """Return (ours - bare) / (stack - bare), or NaN when the stack adds nothing."""
    stack_added = per_request["stack"] - per_request["bare"]
    if stack_added <= 0:
        return float("nan")
    return (per_request["ours"] - per_request["bare"]) / stack_added


if __name__ == "__main__":
    raise SystemExit(main())
