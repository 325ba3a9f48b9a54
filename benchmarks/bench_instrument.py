"""Per-call cost of ``@instrument`` next to a bare call and OpenTelemetry's own decorator.

Run: ``python benchmarks/bench_instrument.py``. All three run in the same process with
the same tracer provider (every span sampled and handed to a no-op exporter through a
BatchSpanProcessor, as in production), and the figures are printed as ratios to the
bare call. OpenTelemetry's ``tracer.start_as_current_span`` used as a decorator makes a
span only; ``@instrument`` also updates two Prometheus metrics.
"""

from __future__ import annotations

import timeit
from collections.abc import Sequence

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from kaleem_telemetry import tracing
from kaleem_telemetry.config import TelemetryConfig
from kaleem_telemetry.decorators import instrument

N = 20_000


class _NullExporter(SpanExporter):
    def export(self, spans: Sequence[object]) -> SpanExportResult:  # type: ignore[override]
        return SpanExportResult.SUCCESS


def bare(x: int) -> int:
    return x + 1


@instrument
def instrumented(x: int) -> int:
    return x + 1


def main() -> None:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    tracing.configure_tracing(TelemetryConfig.from_env(environ={"OTEL_TRACES_EXPORTER": "none"}))
    tracing.add_span_processor(BatchSpanProcessor(_NullExporter(), max_queue_size=100_000))
    tracer = tracing.get_tracer()

    @tracer.start_as_current_span("otel")
    def otel(x: int) -> int:
        return x + 1

    for fn in (bare, instrumented, otel):
        fn(1)  # warm-up: metric children, first tracer lookup
    results = {}
    for name, fn in (("bare", bare), ("@instrument", instrumented), ("otel decorator", otel)):
        best = min(timeit.repeat(lambda fn=fn: fn(1), number=N, repeat=5))
        results[name] = best / N
    base = results["bare"]
    otel_cost = results["otel decorator"]
    for name, seconds in results.items():
        print(
            f"BENCH-INSTRUMENT {name:15s} {seconds * 1e6:8.2f} us/call  "
            f"x{seconds / base:7.1f} bare  x{seconds / otel_cost:5.2f} otel"
        )


if __name__ == "__main__":
    main()
