"""The metric contract as data: one declaration per metric family.

Every family that kaleem_telemetry exposes is declared here once, with its name,
type, unit, labels, buckets, help text and the signal it belongs to. The
registry that creates the families (`kaleem_telemetry.metrics.TelemetryMetrics`),
the tracing pipeline's dropped-span counter, the metric table of
docs/reference.md (checked against `markdown_table()` by the test suite) and the
dashboard and alert generators all read these declarations, so a name, a label
or a bucket is changed in one place.

Names and labels are public API: dashboards and alert rules query them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ALL_METRICS",
    "CACHE_BUCKETS",
    "DB_BUCKETS",
    "FAMILIES",
    "FUNCTION_BUCKETS",
    "HTTP_BUCKETS",
    "JOB_BUCKETS",
    "METRICS_UNAUTHORIZED",
    "SERIES_OVERFLOW",
    "SPANS_DROPPED",
    "MetricSpec",
    "markdown_table",
]

MetricKind = Literal["counter", "histogram", "gauge"]
GaugeMode = Literal["livesum", "livemax", "livemostrecent"]

HTTP_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""Buckets of the HTTP server and client duration histograms: 5 ms to 10 s."""

DB_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
)  # fmt: skip
"""Buckets of ``database_query_duration_seconds``: 1 ms to 10 s."""

CACHE_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
)  # fmt: skip
"""Buckets of ``cache_operation_duration_seconds``: 100 µs to 1 s."""

JOB_BUCKETS: tuple[float, ...] = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
)  # fmt: skip
"""Buckets of ``job_duration_seconds`` and ``job_queue_lag_seconds``: 10 ms to 1 h."""

FUNCTION_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
)  # fmt: skip
"""Buckets of ``function_duration_seconds``: 1 ms to 60 s."""


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric family of the contract.

    Attributes:
        name: The exposed name; a counter's ends in ``_total`` (prometheus_client
            adds the suffix to the samples, so it is stripped when the family is
            created).
        kind: ``"counter"``, ``"histogram"`` or ``"gauge"``.
        unit: The base unit the name ends in (``"seconds"``), or ``""``. It is
            data for the docs and generators only: prometheus_client is not told,
            so no ``# UNIT`` line appears in the exposition.
        labels: The label names, in the order ``labels()`` takes their values.
        help: The help text of the exposition.
        signal: The part of the service it describes (``"http"``, ``"database"``,
            ``"cache"``, ``"job"``, ...): dashboards group their panels by it.
        buckets: A histogram's bucket bounds, in seconds.
        gauge_mode: How multiprocess mode aggregates a gauge over workers.
        exemplar: Whether an observation carries the sampled ``trace_id``.
        kind_note: Said after the type in the docs (``"(5xx and ...)"``).
        label_notes: ``(label, note)`` pairs: the values a label takes, said
            after it in the docs.
        recorded_by: What records the family, in the docs' words.
    """

    name: str
    kind: MetricKind
    help: str
    labels: tuple[str, ...]
    signal: str
    unit: str = ""
    buckets: tuple[float, ...] | None = None
    gauge_mode: GaugeMode | None = None
    exemplar: bool = False
    kind_note: str = ""
    label_notes: tuple[tuple[str, str], ...] = ()
    recorded_by: str = ""

    @property
    def base_name(self) -> str:
        """The name prometheus_client is given: a counter's without ``_total``."""
        if self.kind == "counter":
            return self.name.removesuffix("_total")
        return self.name


_HTTP = ("method", "route", "status_code")
_JOB = ("queue", "job")
_CACHE = ("cache_level", "cache_key_prefix")
_OK_ERROR = "`ok`/`error`"
_EXEMPLAR = "exemplar `trace_id` when sampled"
_MIDDLEWARE = "the web middleware"
_JOBS = "`instrument_job` (and the pika, aio-pika and Celery consumers it wraps)"

SERIES_OVERFLOW = MetricSpec(
    name="telemetry_series_overflow_total",
    kind="counter",
    help="Label sets folded into 'other' because the family reached its series cap.",
    labels=("metric",),
    signal="telemetry",
    recorded_by="every family, past its series cap",
)
"""Counts ``labels()`` calls folded into ``"other"``; the one family without a cap."""

SPANS_DROPPED = MetricSpec(
    name="telemetry_spans_dropped_total",
    kind="counter",
    help="Spans dropped because the trace export queue was full.",
    labels=(),
    signal="telemetry",
    recorded_by="the tracing pipeline",
)
"""Registered by the tracing pipeline itself, on the default registry."""

METRICS_UNAUTHORIZED = MetricSpec(
    name="telemetry_metrics_unauthorized_total",
    kind="counter",
    help="Requests to /metrics refused for a missing or wrong bearer token.",
    labels=(),
    signal="telemetry",
    recorded_by="the /metrics apps and server",
)
"""Registered by the exposition apps on the default registry at their first refusal."""

FAMILIES: tuple[MetricSpec, ...] = (
    MetricSpec(
        name="http_requests_total",
        kind="counter",
        help="HTTP requests served.",
        labels=_HTTP,
        signal="http",
        recorded_by=_MIDDLEWARE,
    ),
    MetricSpec(
        name="http_request_duration_seconds",
        kind="histogram",
        help="HTTP request duration until the last body byte, in seconds.",
        labels=_HTTP,
        signal="http",
        unit="seconds",
        buckets=HTTP_BUCKETS,
        exemplar=True,
        recorded_by=_MIDDLEWARE,
    ),
    MetricSpec(
        name="http_errors_total",
        kind="counter",
        help="HTTP requests that ended in a 5xx status or an unhandled exception.",
        labels=(*_HTTP, "error_type"),
        signal="http",
        kind_note="(5xx and unhandled exceptions)",
        recorded_by=_MIDDLEWARE,
    ),
    MetricSpec(
        name="http_requests_in_progress",
        kind="gauge",
        help="HTTP requests being served.",
        labels=("method",),
        signal="http",
        gauge_mode="livesum",
        recorded_by=_MIDDLEWARE,
    ),
    MetricSpec(
        name="http_client_request_duration_seconds",
        kind="histogram",
        help="Outgoing HTTP request duration, in seconds.",
        labels=("method", "host", "status_code"),
        signal="http_client",
        unit="seconds",
        buckets=HTTP_BUCKETS,
        recorded_by="the httpx and requests integrations",
    ),
    MetricSpec(
        name="database_query_duration_seconds",
        kind="histogram",
        help="Database operation duration, in seconds.",
        labels=("db_system", "operation", "collection", "status"),
        signal="database",
        unit="seconds",
        buckets=DB_BUCKETS,
        exemplar=True,
        label_notes=(("status", _OK_ERROR),),
        recorded_by="`track_db()`, the redis, SQLAlchemy and pymongo integrations",
    ),
    MetricSpec(
        name="cache_hit_total",
        kind="counter",
        help="Cache hits.",
        labels=_CACHE,
        signal="cache",
        recorded_by="`record_cache()`, `track_cache()`, the redis integration",
    ),
    MetricSpec(
        name="cache_miss_total",
        kind="counter",
        help="Cache misses.",
        labels=_CACHE,
        signal="cache",
        recorded_by="`record_cache()`, `track_cache()`, the redis integration",
    ),
    MetricSpec(
        name="cache_operations_total",
        kind="counter",
        help="Cache operations.",
        labels=("operation", "result", "cache_level"),
        signal="cache",
        label_notes=(("result", "`hit`/`miss`/`ok`/`error`"),),
        recorded_by="`track_cache()`, the redis integration",
    ),
    MetricSpec(
        name="cache_operation_duration_seconds",
        kind="histogram",
        help="Cache operation duration, in seconds.",
        labels=("operation", "cache_level"),
        signal="cache",
        unit="seconds",
        buckets=CACHE_BUCKETS,
        recorded_by="`track_cache()`, the redis integration",
    ),
    MetricSpec(
        name="job_runs_total",
        kind="counter",
        help="Background job runs.",
        labels=(*_JOB, "status"),
        signal="job",
        label_notes=(("status", "`ok`/`error`/`retry`"),),
        recorded_by=_JOBS,
    ),
    MetricSpec(
        name="job_duration_seconds",
        kind="histogram",
        help="Background job duration, in seconds.",
        labels=(*_JOB, "status"),
        signal="job",
        unit="seconds",
        buckets=JOB_BUCKETS,
        recorded_by=_JOBS,
    ),
    MetricSpec(
        name="job_queue_lag_seconds",
        kind="histogram",
        help="Time from enqueueing a job (x-enqueued-at) to its start, in seconds.",
        labels=_JOB,
        signal="job",
        unit="seconds",
        buckets=JOB_BUCKETS,
        kind_note="(from the `x-enqueued-at` header to the start, less a declared delay)",
        recorded_by=_JOBS,
    ),
    MetricSpec(
        name="jobs_in_progress",
        kind="gauge",
        help="Background jobs running.",
        labels=_JOB,
        signal="job",
        gauge_mode="livesum",
        recorded_by=_JOBS,
    ),
    MetricSpec(
        name="websocket_connections_active",
        kind="gauge",
        help="Open WebSocket connections.",
        labels=("route",),
        signal="websocket",
        gauge_mode="livesum",
        recorded_by="the ASGI middleware",
    ),
    MetricSpec(
        name="websocket_messages_total",
        kind="counter",
        help="WebSocket messages.",
        labels=("route", "direction"),
        signal="websocket",
        label_notes=(("direction", "`in`/`out`"),),
        recorded_by="the ASGI middleware",
    ),
    MetricSpec(
        name="function_calls_total",
        kind="counter",
        help="Calls of @instrument functions.",
        labels=("function", "module", "result"),
        signal="function",
        label_notes=(("result", _OK_ERROR),),
        recorded_by="`@instrument`",
    ),
    MetricSpec(
        name="function_duration_seconds",
        kind="histogram",
        help="Duration of @instrument functions, in seconds.",
        labels=("function", "module"),
        signal="function",
        unit="seconds",
        buckets=FUNCTION_BUCKETS,
        recorded_by="`@instrument`",
    ),
    MetricSpec(
        name="business_events_total",
        kind="counter",
        help="Business KPI events.",
        labels=("event",),
        signal="business",
        label_notes=(("event", "then the labels given to `declare_business_labels()`"),),
        recorded_by="`business_event()`",
    ),
    MetricSpec(
        name="health_check_status",
        kind="gauge",
        help="Result of the last run of a health check: 1 passed, 0 failed.",
        labels=("check",),
        signal="health",
        gauge_mode="livemostrecent",
        kind_note=", 1 passed or 0 failed",
        recorded_by="`/health/ready`",
    ),
    MetricSpec(
        name="app_info",
        kind="gauge",
        help="Always 1; labels name the running service.",
        labels=("service", "version", "environment"),
        signal="app",
        gauge_mode="livemax",
        kind_note=", always 1",
        recorded_by="`setup_telemetry()`",
    ),
)
"""The labelled, capped families `TelemetryMetrics` creates, in the docs' order."""

ALL_METRICS: tuple[MetricSpec, ...] = (
    *FAMILIES,
    SERIES_OVERFLOW,
    SPANS_DROPPED,
    METRICS_UNAUTHORIZED,
)
"""Every family kaleem_telemetry exposes (prometheus_client's own collectors aside)."""


def markdown_table(specs: tuple[MetricSpec, ...] = (*FAMILIES, SERIES_OVERFLOW)) -> str:
    """Return the metric table of docs/reference.md (Metrics) for ``specs``."""
    lines = [
        "| metric | type | labels | buckets (seconds) | recorded today by |",
        "| --- | --- | --- | --- | --- |",
    ]
    for spec in specs:
        kind: str = spec.kind
        if spec.exemplar:
            kind += f", {_EXEMPLAR}"
        if spec.kind_note:
            separator = "" if spec.kind_note.startswith(",") else " "
            kind += separator + spec.kind_note
        notes = dict(spec.label_notes)
        labels = ", ".join(
            f"`{label}` ({notes[label]})" if label in notes else f"`{label}`"
            for label in spec.labels
        )
        buckets = " ".join(f"{bound:g}" for bound in spec.buckets or ())
        lines.append(f"| `{spec.name}` | {kind} | {labels} | {buckets} | {spec.recorded_by} |")
    return "\n".join(lines) + "\n"
