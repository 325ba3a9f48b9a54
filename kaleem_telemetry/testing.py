"""Assert on the telemetry your code emits, with no network.

`capture_telemetry()` collects, while it is active, every log event (shaped and
redacted, exactly as it would be printed), every finished span, the Sentry events
that would have been sent, and lets you read metric samples::

    from kaleem_telemetry.testing import capture_telemetry

    def test_checkout_logs_the_merchant():
        with capture_telemetry() as captured:
            checkout(merchant_id="m-1")

        assert captured.logs[-1]["merchant_id"] == "m-1"
        assert captured.spans[0].name == "checkout"
        assert captured.metric_value("function_calls_total", function="checkout") == 1

With pytest, the ``telemetry_capture`` fixture (registered by the package's pytest
plugin) does the same::

    def test_checkout(telemetry_capture):
        checkout(merchant_id="m-1")
        assert telemetry_capture.logs

If `setup_telemetry()` has not been called, the capture sets up a tracer provider
of its own so spans are still recorded; logs are captured either way. This module
imports no pytest.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kaleem_telemetry import logs

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from prometheus_client import CollectorRegistry
    from prometheus_client.samples import Sample

__all__ = ["TelemetryCapture", "capture_telemetry"]


@dataclass
class TelemetryCapture:
    """What was emitted while `capture_telemetry()` was active.

    Attributes:
        logs: The log events, shaped and redacted, in the order they were emitted.
        sentry_events: The Sentry events (dicts, after redaction) that were or
            would have been sent.
    """

    logs: list[dict[str, Any]] = field(default_factory=list)
    sentry_events: list[dict[str, Any]] = field(default_factory=list)
    _span_exporter: Any = None
    _registry: CollectorRegistry | None = None
    _baseline: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def spans(self) -> list[ReadableSpan]:
        """The finished spans, in the order they ended."""
        if self._span_exporter is None:
            return []
        return list(self._span_exporter.get_finished_spans())

    def events(self, event: str) -> list[dict[str, Any]]:
        """Return the log events whose ``event`` is ``event``."""
        return [entry for entry in self.logs if entry.get("event") == event]

    def metrics(self, name: str) -> list[Sample]:
        """Return the current samples of metric ``name``.

        ``name`` may be a family name (``"http_request_duration_seconds"``) or a
        sample name (``"http_request_duration_seconds_count"``); counters may be
        named with or without ``_total``.

        Args:
            name: The metric name.
        """
        samples = []
        for family in self._get_registry().collect():
            for sample in family.samples:
                if name in (sample.name, family.name) or sample.name == f"{name}_total":
                    samples.append(sample)
        return samples

    def metric_value(self, name: str, **labels: str) -> float:
        """Return how much sample ``name`` with ``labels`` grew while capturing.

        Labels not given are summed over. For a gauge, this is the change of
        its value.

        Args:
            name: A sample name (``"http_requests_total"``,
                ``"http_request_duration_seconds_count"``).
            **labels: The label values to match.
        """
        total = 0.0
        for sample in self.metrics(name):
            if sample.name.endswith(("_created", "_gsum", "_gcount")):
                continue
            if all(sample.labels.get(k) == v for k, v in labels.items()):
                key = (sample.name, tuple(sorted(sample.labels.items())))
                total += sample.value - self._baseline.get(key, 0.0)
        return total

    def clear(self) -> None:
        """Forget what was captured so far (logs, spans, Sentry events, metric baseline)."""
        with self._lock:
            self.logs.clear()
            self.sentry_events.clear()
        if self._span_exporter is not None:
            self._span_exporter.clear()
        self._snapshot()

    def _snapshot(self) -> None:
        self._baseline = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in self._get_registry().collect()
            for sample in family.samples
        }

    def _get_registry(self) -> CollectorRegistry:
        if self._registry is None:
            from prometheus_client import REGISTRY

            return REGISTRY
        return self._registry

    def _on_log(self, event_dict: Mapping[str, Any], _exc_info: Any) -> None:
        with self._lock:
            self.logs.append(dict(event_dict))

    def _on_sentry_event(self, event: Mapping[str, Any]) -> None:
        with self._lock:
            self.sentry_events.append(dict(event))


@contextmanager
def capture_telemetry(registry: CollectorRegistry | None = None) -> Iterator[TelemetryCapture]:
    """Capture logs, spans, metrics and Sentry events inside a ``with`` block.

    Args:
        registry: The Prometheus registry to read metrics from; the default
            registry when ``None``.

    Yields:
        A `TelemetryCapture` that fills up while the block runs and stays
        readable after it.
    """
    from kaleem_telemetry import sentry, tracing

    capture = TelemetryCapture(_registry=registry)
    capture._snapshot()
    removers: list[Callable[[], None]] = [logs.add_tap(capture._on_log)]
    logs.get_logger()  # makes sure structlog points at the pipeline
    exporter, remove_spans = tracing.capture_spans()
    capture._span_exporter = exporter
    removers.append(remove_spans)
    removers.append(sentry.add_event_hook(capture._on_sentry_event))
    try:
        yield capture
    finally:
        for remove in reversed(removers):
            remove()
