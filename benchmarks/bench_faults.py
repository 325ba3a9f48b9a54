"""What a dead, black-holed or slow backend costs the application, as ratios to a healthy one.

Collector faults: 1,000 ``@instrument``-ed operations against an OTLP collector
(gRPC and HTTP) that is closed, black-holed (accepts, never answers) or slow
(answers after 0.5 s), timed as a ratio to the same run against a healthy
collector in the same process, with the slowest single operation and how long
``shutdown()`` took against its timeout. Sentry faults: the same for 200
``capture_exception()`` calls. Shutdown bounds: how far ``shutdown()`` and
``force_flush()`` overshoot their timeout when the collector is down or a
component hangs.

The tests (tests/test_faults.py, tests/test_setup.py) only check bounds a hang
or a blocking call would break; these figures are what the release notes quote.
On a shared machine only the ratios of one run mean anything.

    python benchmarks/bench_faults.py [--ops 1000] [--captures 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kaleem_telemetry import _setup, context, sentry, tracing
from kaleem_telemetry.config import TelemetryConfig
from kaleem_telemetry.decorators import instrument
from tests.receivers import Mode, OTLPReceiver, SentryIngest

SHUTDOWN_TIMEOUT = 2.0
PROTOCOLS = ("grpc", "http/protobuf")
FAULTS: tuple[Mode, ...] = ("closed", "blackhole", "slow")


@instrument
def _operation(i: int) -> int:
    """Stand for one instrumented request-path operation."""
    return i * 2


def _run(op: Callable[[int], object], n: int) -> tuple[float, float]:
    """Time ``n`` calls of ``op``; return (total seconds, slowest call in seconds)."""
    # A full collection of the previous scenario's garbage (abandoned exporters,
    # their queues) would otherwise land inside this run as a "slow operation".
    gc.collect()
    worst = 0.0
    start = time.perf_counter()
    with context.telemetry_context(merchant_id="m-1", request_id="r-1"):
        for i in range(n):
            began = time.perf_counter()
            op(i)
            worst = max(worst, time.perf_counter() - began)
    return time.perf_counter() - start, worst


def _tracing_run(protocol: str, mode: Mode, ops: int) -> tuple[float, float, float]:
    with OTLPReceiver(protocol, mode=mode, delay=0.5) as receiver:
        component = tracing.configure_tracing(TelemetryConfig.from_env(environ=receiver.env()))
        assert component is not None
        _run(_operation, 100)  # warm-up: metric children, first export
        total, worst = _run(_operation, ops)
        began = time.monotonic()
        component.shutdown(SHUTDOWN_TIMEOUT)
        shutdown = time.monotonic() - began
    tracing.reset_for_tests()
    return total, worst, shutdown


def _fail(i: int) -> None:
    try:
        msg = f"failure {i}"
        raise ValueError(msg)
    except ValueError as exc:
        sentry.capture_exception(exc)


def _sentry_run(mode: Mode, captures: int) -> tuple[float, float, float]:
    with SentryIngest(mode=mode, delay=0.5) as ingest:
        cfg = TelemetryConfig.from_env(
            environ={"SENTRY_DSN": ingest.dsn, "OTEL_TRACES_EXPORTER": "none"}
        )
        component = sentry.configure_sentry(cfg)
        assert component is not None
        _run(_fail, 10)
        total, worst = _run(_fail, captures)
        began = time.monotonic()
        component.shutdown(SHUTDOWN_TIMEOUT)
        shutdown = time.monotonic() - began
    sentry.reset_for_tests()
    return total, worst, shutdown


def _median_runs(
    run: Callable[[], tuple[float, float, float]], rounds: int
) -> tuple[float, float, float]:
    """Median total and shutdown, and the worst single operation, over ``rounds`` runs."""
    results = [run() for _ in range(rounds)]
    return (
        statistics.median(r[0] for r in results),
        max(r[1] for r in results),
        statistics.median(r[2] for r in results),
    )


def _collector_faults(ops: int, rounds: int) -> None:
    print(f"collector faults: {ops} instrumented operations, median of {rounds} rounds")
    print(
        f"  {'protocol':<14} {'mode':<10} {'healthy ms':>10} {'faulty ms':>10} {'ratio':>6}"
        f" {'worst op ms':>11} {'shutdown s':>10}"
    )
    for protocol in PROTOCOLS:
        healthy, _, _ = _median_runs(partial(_tracing_run, protocol, "healthy", ops), rounds)
        for mode in FAULTS:
            faulty, worst, shutdown = _median_runs(
                partial(_tracing_run, protocol, mode, ops), rounds
            )
            print(
                f"  {protocol:<14} {mode:<10} {healthy * 1e3:>10.1f} {faulty * 1e3:>10.1f}"
                f" {faulty / healthy:>6.2f} {worst * 1e3:>11.2f} {shutdown:>10.2f}"
            )
    print(f"  shutdown timeout {SHUTDOWN_TIMEOUT}s")


def _sentry_faults(captures: int, rounds: int) -> None:
    print(f"sentry faults: {captures} capture_exception() calls, median of {rounds} rounds")
    print(
        f"  {'mode':<10} {'healthy ms':>10} {'faulty ms':>10} {'ratio':>6}"
        f" {'worst ms':>9} {'shutdown s':>10}"
    )
    healthy, _, _ = _median_runs(partial(_sentry_run, "healthy", captures), rounds)
    for mode in ("blackhole", "closed", "slow"):
        faulty, worst, shutdown = _median_runs(partial(_sentry_run, mode, captures), rounds)
        print(
            f"  {mode:<10} {healthy * 1e3:>10.1f} {faulty * 1e3:>10.1f} {faulty / healthy:>6.2f}"
            f" {worst * 1e3:>9.2f} {shutdown:>10.2f}"
        )
    print(f"  shutdown timeout {SHUTDOWN_TIMEOUT}s")


class _Hanging:
    """A component whose flush and shutdown never return, like a black-holed exporter."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def force_flush(self, timeout: float) -> bool:
        self.release.wait()
        return True

    def shutdown(self, timeout: float) -> None:
        self.release.wait()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _shutdown_bounds() -> None:
    print("shutdown bounds: seconds taken against the timeout")
    quiet = {"OTEL_TRACES_EXPORTER": "none", "KALEEM_TELEMETRY_LOG_FORMAT": "json"}

    # The collector is down: nobody listens on the OTLP endpoint.
    os.environ.update(quiet)
    os.environ.pop("SENTRY_DSN", None)
    os.environ["OTEL_TRACES_EXPORTER"] = "otlp"
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{_closed_port()}"
    telemetry = _setup.setup_telemetry("bench")
    with tracing.get_tracer().start_as_current_span("op"):
        pass
    began = time.monotonic()
    telemetry.shutdown(timeout=3.0)
    print(f"  collector down, shutdown(3.0)       : {time.monotonic() - began:5.2f}s")
    _setup.reset_for_tests()
    tracing.reset_for_tests()
    os.environ["OTEL_TRACES_EXPORTER"] = "none"

    for action, timeout in (("shutdown", 0.5), ("force_flush", 0.3)):
        hanging = _Hanging()
        config = TelemetryConfig.from_env(environ=quiet)
        telemetry = _setup.Telemetry(config, {"hang": hanging})  # type: ignore[dict-item]
        began = time.monotonic()
        getattr(telemetry, action)(timeout=timeout)
        elapsed = time.monotonic() - began
        hanging.release.set()
        label = f"a component hangs, {action}({timeout})"
        print(f"  {label:<36}: {elapsed:5.2f}s (overshoot {elapsed - timeout:.3f}s)")
    _setup.reset_for_tests()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=1000)
    parser.add_argument("--captures", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args, _ = parser.parse_known_args(argv)
    # The exporters' retry warnings are the expected symptom here, not news.
    logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)

    _collector_faults(args.ops, args.rounds)
    _sentry_faults(args.captures, args.rounds)
    _shutdown_bounds()


if __name__ == "__main__":
    main()
