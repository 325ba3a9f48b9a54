"""Per-message cost of ``instrument_job`` next to a bare handler, in the same run.

The handler receives what a pika consumer gets, ``(channel, method, properties,
body)``, with the headers a producer's ``inject_context()`` writes (trace
context, request id, merchant id, enqueue time). The variants:

* ``bare``: the handler alone;
* ``instrument_job``: the same handler decorated: the headers found and
  extracted, a CONSUMER span, the context bound and restored, a Sentry scope
  (when Sentry is on; off here), the four job metrics;
* ``instrument_job, no headers``: decorated, called with a plain argument (no
  message to read), which still gets a span and the metrics;
* ``@instrument``: the same handler under `instrument` (a span and two metric
  updates), for scale.

Every span is sampled and handed to a no-op exporter through a
BatchSpanProcessor, as in production. Rounds are interleaved (the order
rotates) and the median per message is printed with its ratio to the bare
handler; on a shared machine only the ratios of one run mean anything, and
``--instructions`` counts CPU instructions per message under valgrind instead.

    python benchmarks/bench_jobs.py [--number 5000] [--rounds 15]
    python benchmarks/bench_jobs.py --instructions
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit
from collections.abc import Callable, Sequence
from typing import Any

import _callgrind
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from kaleem_telemetry import inject_context, instrument, instrument_job, telemetry_context, tracing
from kaleem_telemetry.config import TelemetryConfig

VARIANTS = ("bare", "instrument_job", "instrument_job, no headers", "@instrument")


class _NullExporter(SpanExporter):
    def export(self, spans: Sequence[object]) -> SpanExportResult:  # type: ignore[override]
        return SpanExportResult.SUCCESS


class _Properties:
    """The part of pika's BasicProperties a consumer reads."""

    def __init__(self, headers: dict[str, Any]) -> None:
        self.headers = headers


def bare(channel: Any, method: Any, properties: Any, body: bytes) -> int:
    return len(body)


@instrument_job(queue="bench", name="handle")
def instrumented(channel: Any, method: Any, properties: Any, body: bytes) -> int:
    return len(body)


@instrument(name="handle")
def instrumented_function(channel: Any, method: Any, properties: Any, body: bytes) -> int:
    return len(body)


@instrument_job(queue="bench", name="plain")
def instrumented_plain(body: bytes) -> int:
    return len(body)


def _calls() -> dict[str, Callable[[], int]]:
    """Set tracing up and return one zero-argument call per variant, warmed up."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    tracing.configure_tracing(TelemetryConfig.from_env(environ={"OTEL_TRACES_EXPORTER": "none"}))
    tracing.add_span_processor(BatchSpanProcessor(_NullExporter(), max_queue_size=100_000))
    with (
        telemetry_context(request_id="req-1", merchant_id="m-1"),
        tracing.get_tracer().start_as_current_span("publish"),
    ):
        headers = inject_context({})
    properties = _Properties(headers)
    body = b'{"order": 1}'
    calls: dict[str, Callable[[], int]] = {
        "bare": lambda: bare(None, None, properties, body),
        "instrument_job": lambda: instrumented(None, None, properties, body),
        "instrument_job, no headers": lambda: instrumented_plain(body),
        "@instrument": lambda: instrumented_function(None, None, properties, body),
    }
    for call in calls.values():
        for _ in range(200):
            call()  # warm-up: metric children, first tracer lookup
    return calls


def _count_run(variant: str, calls: int) -> None:
    """Make ``calls`` calls of ``variant`` after the warm-up, then exit (under valgrind)."""
    call = _calls()[variant]
    for _ in range(calls):
        call()


def _report(per_call: dict[str, float], unit: str, scale: float, fmt: str) -> None:
    base, function = per_call["bare"], per_call["@instrument"]
    for name, value in per_call.items():
        print(
            f"BENCH-JOBS {name:27s} {value * scale:{fmt}} {unit}  "
            f"x{value / base:7.1f} bare  x{value / function:5.2f} @instrument"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=5000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count CPU instructions per message under valgrind (slow)",
    )
    parser.add_argument("--count", nargs=2, metavar=("VARIANT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.count:
        _count_run(args.count[0], int(args.count[1]))
        return 0
    if args.instructions:
        if not _callgrind.available():
            print(_callgrind.MISSING, file=sys.stderr)
            return 1
        counts = {name: _callgrind.per_operation(__file__, name, 200, 2200) for name in VARIANTS}
        print("CPU instructions per message (callgrind: (count at 2,200 - at 200) / 2,000)")
        _report(counts, "instructions/msg", 1.0, "10,.0f")
        return 0
    calls = _calls()
    timings: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for round_no in range(args.rounds):
        shift = round_no % len(VARIANTS)
        for name in VARIANTS[shift:] + VARIANTS[:shift]:
            seconds = timeit.timeit(calls[name], number=args.number)
            timings[name].append(seconds / args.number)
    print(f"{args.number} messages x {args.rounds} interleaved rounds, median per message")
    _report({name: statistics.median(v) for name, v in timings.items()}, "us/msg", 1e6, "8.2f")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
