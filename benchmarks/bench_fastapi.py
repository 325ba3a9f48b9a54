"""Per-request cost of `instrument_app()` on a FastAPI that traces by itself (0.165 and later).

The same FastAPI app is driven directly through ASGI (no server) in one worker
process per variant, every exporting variant sending its spans with the real
OTLP/HTTP exporter to an OTLP receiver in another process (so the encoding and
the export thread are paid, as in production):

* ``bare``: the app, no telemetry at all;
* ``fastapi_native``: FastAPI's own tracing alone (an SDK tracer provider with a
  batch processor and the OTLP exporter, no kaleem-telemetry);
* ``ours_native_off``: ``setup_telemetry()`` + `instrument_app()` on
  ``FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})``:
  the target cost;
* ``ours``: ``setup_telemetry()`` + `instrument_app()` on a plain ``FastAPI()``,
  the default: FastAPI's own telemetry is switched off by `instrument_app()`;
* ``ours_operation_spans``: the same with ``fastapi_operation_spans=True``:
  FastAPI's operation spans nested under ours;
* ``ours_split``: an application that configured ``FastAPI(telemetry=...)``
  itself with FastAPI's tracing on, which `instrument_app()` keeps (two server
  spans per request, with a warning): what every request cost before
  `instrument_app()` handled FastAPI's telemetry.

The four ``ours*`` applications live in one worker process, set up once: they
differ only in the application, and one process keeps process-level noise
(memory layout, hash seeds) out of the ratio between them.
The parent interleaves the variants over several rounds and prints the median
wall-clock and process-CPU time per request, what each adds to ``bare``, and the
ratio of ``ours`` to ``ours_native_off`` (the bar: at most 1.10).

    python benchmarks/bench_fastapi.py [--requests 2000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench_http import _drive

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = (
    "bare",
    "fastapi_native",
    "ours_native_off",
    "ours",
    "ours_operation_spans",
    "ours_split",
)
_RECEIVER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from tests.receivers import OTLPReceiver
with OTLPReceiver("http") as receiver:
    print(receiver.endpoint, flush=True)
    sys.stdin.read()
"""


def _app(telemetry: dict[str, Any] | None) -> Any:
    from fastapi import FastAPI

    app = FastAPI() if telemetry is None else FastAPI(telemetry=telemetry)  # type: ignore[call-arg]

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    return app


def _build(variant: str, endpoint: str) -> Any:
    if variant == "bare":
        return _app(None)
    if variant == "fastapi_native":
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        trace.set_tracer_provider(provider)
        return _app(None)
    from kaleem_telemetry import instrument_app, setup_telemetry

    setup_telemetry(
        service_name="bench",
        traces_exporter="otlp",
        otlp_protocol="http/protobuf",
        otlp_traces_endpoint=endpoint,
        traces_sampler="always_on",
        log_format="json",
    )
    if variant == "ours_native_off":
        return instrument_app(_app({"tracing": False, "metrics": False, "logs": False}))
    if variant == "ours_split":
        # Not FastAPI's default (an exclude function), so instrument_app() keeps it.
        return instrument_app(_app({"exclude": lambda scope: False}))
    return instrument_app(_app(None), fastapi_operation_spans=variant == "ours_operation_spans")


#: Worker process -> the variants it serves (the ours* ones share one setup).
_PROCESSES = {
    "bare": ("bare",),
    "fastapi_native": ("fastapi_native",),
    "ours": ("ours_native_off", "ours", "ours_operation_spans", "ours_split"),
}


def _worker(process: str, endpoint: str) -> None:
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the access logs go nowhere
    apps = {variant: _build(variant, endpoint) for variant in _PROCESSES[process]}
    loop = asyncio.new_event_loop()
    for app in apps.values():
        loop.run_until_complete(_drive(app, 200))
    reply.write("ready\n")
    for line in sys.stdin:
        command, variant, count = [*line.split(), "", "", ""][:3]
        if command != "run":
            break
        wall, cpu = loop.run_until_complete(_drive(apps[variant], int(count)))
        reply.write(f"{wall} {cpu}\n")
    loop.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(*args.worker)
        return 0
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SENTRY_"))}
    env["PYTHONPATH"] = str(ROOT)
    receiver = subprocess.Popen(
        [sys.executable, "-c", _RECEIVER, str(ROOT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert receiver.stdout is not None
    endpoint = receiver.stdout.readline().strip()
    workers = {
        name: subprocess.Popen(
            [sys.executable, __file__, "--worker", name, endpoint],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name in _PROCESSES
    }
    process_of = {v: name for name, variants in _PROCESSES.items() for v in variants}
    wall: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    try:
        for name, proc in workers.items():
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                print(f"worker {name} failed to start", file=sys.stderr)
                return 1
        for round_no in range(args.rounds):
            shift = round_no % len(VARIANTS)
            for name in VARIANTS[shift:] + VARIANTS[:shift]:
                proc = workers[process_of[name]]
                assert proc.stdin is not None
                assert proc.stdout is not None
                proc.stdin.write(f"run {name} {args.requests}\n")
                proc.stdin.flush()
                w, c = (int(v) for v in proc.stdout.readline().split())
                wall[name].append(w / args.requests / 1000)
                cpu[name].append(c / args.requests / 1000)
    finally:
        for proc in (*workers.values(), receiver):
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=60)
    w_med = {name: statistics.median(v) for name, v in wall.items()}
    c_med = {name: statistics.median(v) for name, v in cpu.items()}
    print(f"{args.requests} requests x {args.rounds} interleaved rounds, median per request")
    print(f"{'variant':<22} {'wall µs':>8} {'added':>8} {'cpu µs':>8} {'added':>8}")
    for name in VARIANTS:
        print(
            f"{name:<22} {w_med[name]:>8.1f} {w_med[name] - w_med['bare']:>8.1f}"
            f" {c_med[name]:>8.1f} {c_med[name] - c_med['bare']:>8.1f}"
        )
    for label, med in (("wall clock", w_med), ("process CPU", c_med)):
        target = med["ours_native_off"] - med["bare"]
        ours = med["ours"] - med["bare"]
        print(f"added cost ours / ours_native_off, {label}: {ours / target:.3f} (bar: <= 1.10)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
