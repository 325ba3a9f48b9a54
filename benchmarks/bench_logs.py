"""Cost of one log event through the full pipeline, as a ratio to bare structlog + orjson.

Both loggers write to the same null stream in the same run, interleaved over
several rounds; the report gives the median per-event time of each and their
ratio. The event carries five bound context keys, and redaction is on (the
default) for ours.

``--instructions`` counts the CPU instructions of one event of each kind under
valgrind instead: a structlog call, a library event (``emit_event``), the web
middleware's access event (``emit_access``) and a call below the configured level.
The count does not move with machine load, so it is the one to compare commits by.

    python benchmarks/bench_logs.py [--events 20000] [--rounds 7]
    python benchmarks/bench_logs.py --instructions     # CPU instructions, via valgrind
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import _callgrind
import orjson
import structlog
from opentelemetry.trace import SpanContext, TraceFlags

from kaleem_telemetry import logs
from kaleem_telemetry.config import TelemetryConfig
from kaleem_telemetry.context import telemetry_context


class _Null(io.TextIOBase):
    def write(self, text: str) -> int:
        return len(text)


class _NullBytes:
    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass


def _bare_logger() -> Any:
    """The usual hand-assembled structlog + orjson JSON configuration."""
    return structlog.wrap_logger(
        structlog.BytesLogger(_NullBytes()),  # type: ignore[arg-type]
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(20),
        cache_logger_on_first_use=True,
    )


def _time(log: Any, events: int) -> float:
    started = time.perf_counter()
    for i in range(events):
        log.info("order_created", order_id=i, amount=12.5, currency="EUR")
    return (time.perf_counter() - started) / events


#: The five bound context keys every measured event carries.
CONTEXT = {
    "request_id": "req-8b1f",
    "merchant_id": "m-42",
    "user_id": "u-7",
    "tenant": "eu-1",
    "job": "checkout",
}
#: The event kinds ``--instructions`` measures, in report order.
VARIANTS = ("structlog", "event", "access", "filtered")
_SPAN = SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(1))


def _configure() -> None:
    logs.configure_logging(
        TelemetryConfig.from_env(environ={"OTEL_SERVICE_NAME": "bench"}, log_format="json")
    )


def _operation(variant: str) -> Callable[[int], None]:
    """Return a function that emits ``n`` events of ``variant``."""
    log = logs.get_logger("bench")

    def structlog_call(n: int) -> None:
        for i in range(n):
            log.info("order_created", order_id=i)

    def library_event(n: int) -> None:
        for i in range(n):
            logs.emit_event("kaleem_telemetry.bench", "info", "job_done", {"job_id": i})

    def access_event(n: int) -> None:
        for _ in range(n):
            logs.emit_access(
                "info", "GET", "/items/{id}", "/items/7", 200, 1.5, "10.0.0.1", "req-8b1f", _SPAN
            )

    def filtered_call(n: int) -> None:
        for i in range(n):
            log.debug("cache_probe", key=i)

    return {
        "structlog": structlog_call,
        "event": library_event,
        "access": access_event,
        "filtered": filtered_call,
    }[variant]


def _count_run(variant: str, events: int) -> None:
    """Set up, warm up, emit ``events`` events of ``variant``, exit (under valgrind)."""
    _configure()
    operation = _operation(variant)
    sys.stdout = _Null()
    with telemetry_context(**CONTEXT):
        operation(300)
        operation(events)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count CPU instructions per event of each kind under valgrind (slow)",
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated kinds for --instructions among {', '.join(VARIANTS)}",
    )
    parser.add_argument("--count", nargs=2, metavar=("VARIANT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.count:
        _count_run(args.count[0], int(args.count[1]))
        return 0
    if args.instructions:
        variants = [v for v in args.variants.split(",") if v]
        unknown = set(variants) - set(VARIANTS)
        if unknown:
            parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
        return _callgrind.report(__file__, variants, 200, 1200, "event, 5 bound context keys")

    _configure()
    ours = logs.get_logger("bench")
    bare = _bare_logger()
    context = CONTEXT
    structlog.contextvars.bind_contextvars(**context)
    real_stdout, sys.stdout = sys.stdout, _Null()
    try:
        with telemetry_context(**context):
            _time(ours, 2_000)
            _time(bare, 2_000)
            ours_t, bare_t = [], []
            for _ in range(args.rounds):
                ours_t.append(_time(ours, args.events))
                bare_t.append(_time(bare, args.events))
    finally:
        sys.stdout = real_stdout
        structlog.contextvars.clear_contextvars()
    ours_us, bare_us = statistics.median(ours_t) * 1e6, statistics.median(bare_t) * 1e6
    print("one log event, 5 bound context keys (median of rounds, same run)")
    print(f"  bare structlog + orjson : {bare_us:6.2f} us/event")
    print(f"  kaleem_telemetry        : {ours_us:6.2f} us/event  (redaction on)")
    print(f"  ratio ours / bare       : {ours_us / bare_us:6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
