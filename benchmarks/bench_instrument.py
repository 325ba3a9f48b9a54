"""Per-call cost of ``@instrument`` next to a bare call and OpenTelemetry's own decorator.

All three run in the same process with the same tracer provider (every span
sampled and handed to a no-op exporter through a BatchSpanProcessor, as in
production). OpenTelemetry's ``tracer.start_as_current_span`` used as a decorator
makes a span only; ``@instrument`` also updates two Prometheus metrics and names
the function in ``code.function.name``.

The variants are timed in interleaved rounds (the order rotates), and the median
per call is printed with its ratio to the bare call and to OpenTelemetry's
decorator. On a shared machine only the ratios of one run mean anything;
``--instructions`` counts CPU instructions per call under valgrind instead, which
the machine's load hardly moves. It also counts the other shapes the one wrapper
skeleton serves: ``@instrument`` on an async function (awaited many times in one
event loop) and on a generator (two items, consumed), and a ``with track_db(...)``
block.

    python benchmarks/bench_instrument.py [--number 5000] [--rounds 15]
    python benchmarks/bench_instrument.py --instructions
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import timeit
from collections.abc import Callable, Iterator, Sequence

import _callgrind
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from kaleem_telemetry import tracing
from kaleem_telemetry.config import TelemetryConfig
from kaleem_telemetry.db import track_db
from kaleem_telemetry.decorators import instrument

VARIANTS = ("bare", "@instrument", "otel decorator")
#: Counted with ``--instructions`` only: one operation each, after the same set-up.
SHAPES = ("async @instrument", "generator @instrument", "with track_db")


class _NullExporter(SpanExporter):
    def export(self, spans: Sequence[object]) -> SpanExportResult:  # type: ignore[override]
        return SpanExportResult.SUCCESS


def bare(x: int) -> int:
    return x + 1


@instrument
def instrumented(x: int) -> int:
    return x + 1


@instrument
async def instrumented_async(x: int) -> int:
    return x + 1


@instrument
def instrumented_gen(x: int) -> Iterator[int]:
    yield x
    yield x + 1


def _run_async(calls: int) -> None:
    async def loop() -> None:
        for _ in range(calls):
            await instrumented_async(1)

    asyncio.run(loop())


def _run_gen(calls: int) -> None:
    for _ in range(calls):
        for _item in instrumented_gen(1):
            pass


def _run_track_db(calls: int) -> None:
    for _ in range(calls):
        with track_db("find", collection="orders", system="postgresql"):
            pass


_SHAPE_RUNS: dict[str, Callable[[int], None]] = {
    "async @instrument": _run_async,
    "generator @instrument": _run_gen,
    "with track_db": _run_track_db,
}


def _functions() -> dict[str, Callable[[int], int]]:
    """Set tracing up and return the three variants, warmed up."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    tracing.configure_tracing(TelemetryConfig.from_env(environ={"OTEL_TRACES_EXPORTER": "none"}))
    tracing.add_span_processor(BatchSpanProcessor(_NullExporter(), max_queue_size=100_000))
    tracer = tracing.get_tracer()

    @tracer.start_as_current_span("otel")
    def otel(x: int) -> int:
        return x + 1

    functions = {"bare": bare, "@instrument": instrumented, "otel decorator": otel}
    for fn in functions.values():
        for _ in range(200):
            fn(1)  # warm-up: metric children, first tracer lookup
    return functions


def _count_run(variant: str, calls: int) -> None:
    """Make ``calls`` calls of ``variant`` after the warm-up, then exit (under valgrind)."""
    functions = _functions()
    run = _SHAPE_RUNS.get(variant)
    if run is not None:
        run(200)  # warm-up: the shape's own metric children and code paths
        run(calls)
        return
    fn = functions[variant]
    for _ in range(calls):
        fn(1)


def _report(per_call: dict[str, float], unit: str, scale: float, fmt: str) -> None:
    base = per_call["bare"]
    otel_cost = per_call["otel decorator"]
    for name, value in per_call.items():
        print(
            f"BENCH-INSTRUMENT {name:15s} {value * scale:{fmt}} {unit}  "
            f"x{value / base:7.1f} bare  x{value / otel_cost:5.2f} otel"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=5000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count CPU instructions per call under valgrind (slow)",
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
        print("CPU instructions per call (callgrind: (count at 2,200 calls - at 200) / 2,000)")
        _report(counts, "instructions/call", 1.0, "10,.0f")
        for name in SHAPES:
            count = _callgrind.per_operation(__file__, name, 200, 2200)
            print(f"BENCH-INSTRUMENT {name:22s} {count:10,.0f} instructions/call")
        return 0
    functions = _functions()
    timings: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for round_no in range(args.rounds):
        shift = round_no % len(VARIANTS)
        for name in VARIANTS[shift:] + VARIANTS[:shift]:
            fn = functions[name]
            seconds = timeit.timeit(lambda fn=fn: fn(1), number=args.number)
            timings[name].append(seconds / args.number)
    print(f"{args.number} calls x {args.rounds} interleaved rounds, median per call")
    _report({name: statistics.median(v) for name, v in timings.items()}, "us/call", 1e6, "8.2f")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
