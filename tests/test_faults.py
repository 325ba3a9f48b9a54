"""Backend failures: the application must not notice a dead, black-holed or slow backend.

The asserts are bounds only a hang or a blocking call breaks: a blocking exporter
costs the collector's answer delay or the export timeout per operation, whole
seconds. What the faults cost as a ratio to a healthy backend is measured by
benchmarks/bench_faults.py (``nox -s bench``), not here.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import pytest

from kaleem_telemetry import context, sentry, tracing
from kaleem_telemetry.config import TelemetryConfig
from kaleem_telemetry.decorators import instrument
from tests.receivers import Mode, OTLPReceiver, SentryIngest

OPS = 1000
SHUTDOWN_TIMEOUT = 2.0
# Generous for a busy machine; a blocking call per operation takes minutes.
RUN_BOUND = 10.0
# One operation blocked on a black hole waits for the whole export timeout.
OPERATION_BOUND = 5.0
# shutdown() honours its timeout; a hang would be the 10 s export timeout or more.
SHUTDOWN_SLACK = 5.0


@instrument
def _operation(i: int) -> int:
    """Stand for one instrumented request-path operation."""
    return i * 2


def _run(op: Callable[[int], object], n: int = OPS) -> tuple[float, float]:
    # Collect the garbage the previous scenario left (abandoned exporters, their
    # queues) first: otherwise a full collection lands inside this run's timing
    # and shows up as a 50-150 ms "slow operation" that has nothing to do with
    # the backend under test.
    gc.collect()
    worst = 0.0
    start = time.perf_counter()
    with context.telemetry_context(merchant_id="m-1", request_id="r-1"):
        for i in range(n):
            began = time.perf_counter()
            op(i)
            worst = max(worst, time.perf_counter() - began)
    return time.perf_counter() - start, worst


def _tracing_run(protocol: str, mode: Mode) -> tuple[float, float, float]:
    with OTLPReceiver(protocol, mode=mode, delay=0.5) as receiver:
        cfg = TelemetryConfig.from_env(environ=receiver.env())
        component = tracing.configure_tracing(cfg)
        assert component is not None
        _run(_operation, 100)  # warm-up: metric children, first export
        total, worst = _run(_operation)
        began = time.monotonic()
        component.shutdown(SHUTDOWN_TIMEOUT)
        shutdown = time.monotonic() - began
    tracing.reset_for_tests()
    return total, worst, shutdown


class TestCollectorFaults:
    @pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
    @pytest.mark.parametrize("mode", ["closed", "blackhole", "slow"])
    def test_faulty_collector_does_not_slow_the_application(
        self, protocol: str, mode: Mode
    ) -> None:
        """A dead, black-holed or slow collector neither raises, blocks nor stalls shutdown."""
        total, worst, shutdown = _tracing_run(protocol, mode)

        assert total < RUN_BOUND
        assert worst < OPERATION_BOUND
        assert shutdown < SHUTDOWN_TIMEOUT + SHUTDOWN_SLACK


def _sentry_run(mode: Mode) -> tuple[float, float, float]:
    with SentryIngest(mode=mode, delay=0.5) as ingest:
        cfg = TelemetryConfig.from_env(
            environ={"SENTRY_DSN": ingest.dsn, "OTEL_TRACES_EXPORTER": "none"}
        )
        component = sentry.configure_sentry(cfg)
        assert component is not None

        def fail(i: int) -> None:
            try:
                raise ValueError(f"failure {i}")
            except ValueError as exc:
                sentry.capture_exception(exc)

        _run(fail, 10)
        total, worst = _run(fail, 200)
        began = time.monotonic()
        component.shutdown(SHUTDOWN_TIMEOUT)
        shutdown = time.monotonic() - began
    sentry.reset_for_tests()
    return total, worst, shutdown


class TestSentryFaults:
    @pytest.mark.parametrize("mode", ["blackhole", "closed", "slow"])
    def test_faulty_sentry_host_does_not_slow_the_application(self, mode: Mode) -> None:
        """A black-holed, dead or slow Sentry host neither blocks captures nor shutdown."""
        total, worst, shutdown = _sentry_run(mode)

        assert total < RUN_BOUND
        assert worst < OPERATION_BOUND
        assert shutdown < SHUTDOWN_TIMEOUT + SHUTDOWN_SLACK
