"""Cost of one log event through the full pipeline, as a ratio to bare structlog + orjson.

Both loggers write to the same null stream in the same run, interleaved over
several rounds; the report gives the median per-event time of each and their
ratio. The event carries five bound context keys, and redaction is on (the
default) for ours.

    python benchmarks/bench_logs.py [--events 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from typing import Any

import orjson
import structlog

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    logs.configure_logging(
        TelemetryConfig.from_env(environ={"OTEL_SERVICE_NAME": "bench"}, log_format="json")
    )
    ours = logs.get_logger("bench")
    bare = _bare_logger()
    context = {
        "request_id": "req-8b1f",
        "merchant_id": "m-42",
        "user_id": "u-7",
        "tenant": "eu-1",
        "job": "checkout",
    }
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


if __name__ == "__main__":
    main()
