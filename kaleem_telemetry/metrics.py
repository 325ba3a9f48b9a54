"""The Prometheus metric families of docs/reference.md (Metrics), with a per-family series cap.

`TelemetryMetrics` creates every family of the metric contract on one
`prometheus_client.CollectorRegistry`. Each family is wrapped in a `CappedFamily`
whose ``labels(*values)`` returns the ordinary prometheus_client child
(``inc``/``dec``/``set``/``observe``, exemplars included), so callers use the
API they already know::

    metrics = get_metrics()
    metrics.http_requests_total.labels("GET", "/items/{item_id}", "200").inc()
    metrics.http_request_duration_seconds.labels("GET", "/items/{item_id}", "200").observe(
        0.012, {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}
    )

**Hot path.** ``labels()`` is one dictionary lookup on the tuple of values it was
called with; prometheus_client's own ``labels()`` (a lock and a ``str()`` per
value) runs only the first time a label set is seen.

**Series cap.** A family admits at most ``series_limit`` distinct label sets
(default 2000). Past the cap a new label set is recorded as the label set whose
values are all ``"other"``, a warning is logged once per family, and
``telemetry_series_overflow_total{metric}`` is incremented on every folded
``labels()`` call. A family therefore never holds more than ``series_limit + 1``
series, whatever its callers feed it.

**Multiprocess mode.** prometheus_client picks its value storage when
``prometheus_client.values`` is first imported: in-memory values, or memory-mapped
files in ``PROMETHEUS_MULTIPROC_DIR`` when that environment variable is set.
Pre-fork servers (gunicorn) must therefore have the variable in the environment
before the interpreter starts. `configure_metrics()` also accepts it from the
configuration: it then exports the variable, switches prometheus_client's value
class and rebuilds the process metrics, so every family kaleem_telemetry owns is
multiprocess-aware. Metrics that other code created before that stay in memory.
Exemplars are dropped in multiprocess mode (prometheus_client cannot store them in
its files); ``trace_id`` still reaches the logs. Gauges are aggregated with a mode
chosen per gauge (see ``docs/metrics.md``).

Added in 0.1.0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable, Sequence
from time import monotonic
from typing import Any, Generic, TypeVar, cast

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from kaleem_telemetry import _compat
from kaleem_telemetry._metric_specs import (
    CACHE_BUCKETS,
    DB_BUCKETS,
    FAMILIES,
    FUNCTION_BUCKETS,
    HTTP_BUCKETS,
    JOB_BUCKETS,
    SERIES_OVERFLOW,
    MetricSpec,
)

__all__ = [
    "CACHE_BUCKETS",
    "DB_BUCKETS",
    "FUNCTION_BUCKETS",
    "HTTP_BUCKETS",
    "JOB_BUCKETS",
    "CappedFamily",
    "TelemetryMetrics",
    "get_metrics",
]

_LOGGER = logging.getLogger(__name__)

DEFAULT_SERIES_LIMIT = 2000
"""Distinct label sets a family admits before folding new ones into ``"other"``."""

OTHER = "other"
"""The label value that replaces every value of a label set past the cap."""

EXEMPLAR_REFRESH_SECONDS = 1.0
"""Seconds a bucket's ``trace_id`` exemplar stands before a newer one replaces it."""

M = TypeVar("M", bound=MetricWrapperBase)

# Raw-value tuples (for example with an int status code) are cached next to their
# string form; this bounds that cache to a few times the series cap.
_RAW_KEYS_PER_SERIES = 4


class CappedFamily(Generic[M]):
    """A prometheus_client metric family whose ``labels()`` is cached and capped.

    Args:
        metric: The labelled prometheus_client metric (the parent).
        name: The family name used in ``telemetry_series_overflow_total{metric}``.
        series_limit: Distinct label sets admitted before folding into ``"other"``.
        overflow: The overflow counter child of this family, or None for the
            overflow counter itself.
        labelnames: The label names ``metric`` was created with; read from the
            metric when not given.
        exemplar_buckets: A histogram's bucket bounds, when its observations
            carry the sampled ``trace_id`` as an exemplar (`observe_sampled`).
    """

    __slots__ = (
        "_bounds",
        "_cache",
        "_lock",
        "_other",
        "_overflow",
        "_series",
        "_stamps",
        "_warned",
        "cached",
        "labelnames",
        "metric",
        "name",
        "series_limit",
    )

    def __init__(
        self,
        metric: M,
        name: str,
        series_limit: int,
        overflow: Counter | None = None,
        *,
        labelnames: Sequence[str] | None = None,
        exemplar_buckets: Sequence[float] | None = None,
    ) -> None:
        self.metric = metric
        self.name = name
        self.series_limit = series_limit
        names = _compat.metric_labelnames(metric) if labelnames is None else tuple(labelnames)
        if names is None:
            msg = f"Pass labelnames= for {name}: this prometheus_client does not expose them."
            raise TypeError(msg)
        self.labelnames: tuple[str, ...] = names
        self._overflow = overflow
        self._cache: dict[tuple[Any, ...], M] = {}
        #: The child already made for a tuple of label values, or ``None``:
        #: ``family.cached(values) or family.labels(*values)`` on hot paths,
        #: where a lookup that is a C call saves a Python frame per request.
        self.cached: Callable[[tuple[Any, ...]], M | None] = self._cache.get
        self._series: set[tuple[str, ...]] = set()
        self._other = (OTHER,) * len(self.labelnames)
        self._lock = threading.Lock()
        self._warned = False
        self._bounds = None if exemplar_buckets is None else tuple(exemplar_buckets)
        # Per child: when each of its buckets last took an exemplar (+Inf last).
        # Children are only ever the admitted series and "other", so this is capped too.
        self._stamps: dict[M, list[float]] = {}

    def __repr__(self) -> str:
        return f"<CappedFamily {self.name} series={len(self._series)}/{self.series_limit}>"

    def labels(self, *values: Any) -> M:
        """Return the child for ``values`` (positional, in label order).

        Values are converted with ``str()``. Past the series cap a new label set
        returns the all-``"other"`` child.

        Args:
            *values: One value per label name.

        Raises:
            ValueError: The number of values does not match the label names.
        """
        try:
            child = self._cache.get(values)
        except TypeError:  # an unhashable value: the slow path converts it to str.
            child = None
        if child is None:
            return self._labels_slow(values)
        return child

    def _labels_slow(self, values: tuple[Any, ...]) -> M:
        if len(values) != len(self.labelnames):
            msg = (
                f"{self.name} takes {len(self.labelnames)} label values "
                f"{self.labelnames!r}, got {len(values)}: {values!r}."
            )
            raise ValueError(msg)
        key = tuple(str(v) for v in values)
        with self._lock:
            admitted = key in self._series or len(self._series) < self.series_limit
            if admitted:
                self._series.add(key)
                child: M = self.metric.labels(*key)
                if len(self._cache) < _RAW_KEYS_PER_SERIES * self.series_limit:
                    self._cache[key] = child
                    # Unhashable raw values are only cached in their str form.
                    with contextlib.suppress(TypeError):
                        self._cache[values] = child
                return child
            first = not self._warned
            self._warned = True
        if first:
            _LOGGER.warning(
                "Metric %s reached its limit of %d label sets; new label sets are recorded "
                "with every label set to %r. Check that no unbounded value (an id, a raw "
                "path) is used as a label, or raise KALEEM_TELEMETRY_METRICS_SERIES_LIMIT.",
                self.name,
                self.series_limit,
                OTHER,
            )
        if self._overflow is not None:
            self._overflow.inc()
        # Folded label sets are not cached: the cache would grow with every
        # distinct raw value, which is exactly what the cap exists to prevent.
        return self.metric.labels(*self._other)

    def observe_sampled(self, values: tuple[Any, ...], amount: float, trace_id: str | None) -> None:
        """Observe ``amount`` on the child for ``values``, with ``trace_id`` as its exemplar.

        A bucket keeps one exemplar (OpenMetrics), and a scrape only ever sees the
        latest; so a sampled observation replaces its bucket's exemplar only when
        that one is `EXEMPLAR_REFRESH_SECONDS` old, which spares the exemplar's
        validation and locking on almost every observation of a busy series.
        Without exemplar buckets (multiprocess mode, or a family that carries
        none) or without a ``trace_id``, it is a plain ``observe``.

        Args:
            values: The label values, in label order.
            amount: The observed value (seconds).
            trace_id: The sampled trace's id (32 hex digits), or ``None``.
        """
        child: Any = self._cache.get(values) or self.labels(*values)
        bounds = self._bounds
        if trace_id is None or bounds is None:
            child.observe(amount)
            return
        stamps = self._stamps.get(child)
        if stamps is None:
            stamps = self._stamps.setdefault(child, [-math.inf] * (len(bounds) + 1))
        # The bucket prometheus_client picks: the first bound >= amount (+Inf last).
        index = bisect_left(bounds, amount)
        now = monotonic()
        if now - stamps[index] >= EXEMPLAR_REFRESH_SECONDS:
            stamps[index] = now
            child.observe(amount, {"trace_id": trace_id})
            return
        child.observe(amount)

    @property
    def series_count(self) -> int:
        """The number of distinct admitted label sets (the ``"other"`` set excluded)."""
        return len(self._series)

    def label_sets(self) -> list[tuple[str, ...]]:
        """Return the admitted label sets (as strings)."""
        with self._lock:
            return sorted(self._series)

    def remove(self, *values: Any) -> None:
        """Remove one label set; not possible in multiprocess mode (prometheus_client).

        Args:
            *values: The label values of the set to remove.
        """
        key = tuple(str(v) for v in values)
        with self._lock:
            self._series.discard(key)
            # Raw-value aliases of the set are rare; dropping the whole cache is simpler.
            self._cache.clear()
            self._stamps.clear()
            self.metric.remove(*key)

    def clear(self) -> None:
        """Remove every child (and its series) from the family; in-memory mode only."""
        with self._lock:
            self._cache.clear()
            self._stamps.clear()
            self._series.clear()
            self._warned = False
            self.metric.clear()


class TelemetryMetrics:
    """Every metric family of docs/reference.md (Metrics) on one registry.

    The families are created from their declarations
    (``kaleem_telemetry._metric_specs.FAMILIES``); attribute names are the metric
    names (counters included with ``_total``). Create one per registry (tests
    use a fresh `CollectorRegistry`); the process one comes from `get_metrics()`.

    Args:
        registry: Where the families are registered; the default is
            ``prometheus_client.REGISTRY``.
        series_limit: Distinct label sets per family before folding into ``"other"``.
        namespace: An optional prefix for every metric name (off by default, so the
            names match the dashboards).

    Raises:
        ValueError: ``series_limit`` is smaller than 1, or a family of the same
            name is already registered on ``registry``.
    """

    # One annotation per declared family, for type checkers; __init__ fills them
    # from the declarations, and the test suite checks the two name the same set.
    http_requests_total: CappedFamily[Counter]
    http_request_duration_seconds: CappedFamily[Histogram]
    http_errors_total: CappedFamily[Counter]
    http_requests_in_progress: CappedFamily[Gauge]
    http_client_request_duration_seconds: CappedFamily[Histogram]
    database_query_duration_seconds: CappedFamily[Histogram]
    cache_hit_total: CappedFamily[Counter]
    cache_miss_total: CappedFamily[Counter]
    cache_operations_total: CappedFamily[Counter]
    cache_operation_duration_seconds: CappedFamily[Histogram]
    job_runs_total: CappedFamily[Counter]
    job_duration_seconds: CappedFamily[Histogram]
    job_queue_lag_seconds: CappedFamily[Histogram]
    jobs_in_progress: CappedFamily[Gauge]
    websocket_connections_active: CappedFamily[Gauge]
    websocket_messages_total: CappedFamily[Counter]
    function_calls_total: CappedFamily[Counter]
    function_duration_seconds: CappedFamily[Histogram]
    business_events_total: CappedFamily[Counter]
    health_check_status: CappedFamily[Gauge]
    app_info: CappedFamily[Gauge]

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        series_limit: int = DEFAULT_SERIES_LIMIT,
        namespace: str = "",
    ) -> None:
        if series_limit < 1:
            msg = f"series_limit must be at least 1, got {series_limit!r}."
            raise ValueError(msg)
        self.registry = REGISTRY if registry is None else registry
        self.multiprocess = is_multiprocess()
        self._series_limit = series_limit
        self._namespace = namespace
        self._families: list[CappedFamily[Any]] = []
        self._collectors: list[MetricWrapperBase] = []

        overflow = self._register(create_metric(SERIES_OVERFLOW, namespace=namespace))
        self._overflow_metric = cast("Counter", overflow)
        self.series_overflow_total: CappedFamily[Counter] = CappedFamily(
            self._overflow_metric, SERIES_OVERFLOW.name, series_limit, labelnames=["metric"]
        )
        for spec in FAMILIES:
            setattr(self, spec.name, self._family(spec))

    def __repr__(self) -> str:
        mode = "multiprocess" if self.multiprocess else "in-memory"
        return f"<TelemetryMetrics {mode} series_limit={self._series_limit}>"

    @property
    def series_limit(self) -> int:
        """Distinct label sets per family before folding into ``"other"``; settable."""
        return self._series_limit

    @series_limit.setter
    def series_limit(self, value: int) -> None:
        if value < 1:
            msg = f"series_limit must be at least 1, got {value!r}."
            raise ValueError(msg)
        self._series_limit = value
        for family in self._families:
            family.series_limit = value

    @property
    def exemplars_enabled(self) -> bool:
        """Whether exemplars are stored (False in multiprocess mode, where they are dropped)."""
        return not self.multiprocess

    @property
    def families(self) -> tuple[CappedFamily[Any], ...]:
        """Every capped family, the overflow counter included."""
        return (*self._families, self.series_overflow_total)

    @property
    def business_labels(self) -> tuple[str, ...]:
        """The extra label names of ``business_events_total`` (after ``event``)."""
        return self.business_events_total.labelnames[1:]

    def declare_business_labels(self, labelnames: Sequence[str]) -> None:
        """Give ``business_events_total`` extra labels after ``event``.

        Prometheus allows one label set per metric name, so the extra labels are
        declared once, before the first event is counted.

        Args:
            labelnames: The extra label names, for example ``("plan",)``.

        Raises:
            ValueError: Events were already counted with other labels, or a name
                is not a valid label name.
        """
        names = tuple(labelnames)
        if names == self.business_labels:
            return
        old = self.business_events_total
        if old.series_count:
            msg = (
                f"business_events_total already counts events with labels "
                f"{old.labelnames!r}; declare the labels {names!r} before the first event."
            )
            raise ValueError(msg)
        spec = dataclasses.replace(_BUSINESS, labels=(*_BUSINESS.labels, *names))
        # Built first: an invalid label name raises before the old family is gone.
        metric = cast("Counter", create_metric(spec, namespace=self._namespace))
        self.registry.unregister(old.metric)
        self._collectors.remove(old.metric)
        self._families.remove(old)
        self.business_events_total = self._wrap(self._register(metric), spec)

    def unregister(self) -> None:
        """Remove every family from the registry (tests, reconfiguration)."""
        for collector in self._collectors:
            # Already gone is fine: unregistering is idempotent here.
            with contextlib.suppress(KeyError):
                self.registry.unregister(collector)
        self._collectors.clear()

    def _register(self, metric: M) -> M:
        self.registry.register(metric)
        self._collectors.append(metric)
        return metric

    def _family(self, spec: MetricSpec) -> CappedFamily[Any]:
        return self._wrap(self._register(create_metric(spec, namespace=self._namespace)), spec)

    def _wrap(self, metric: M, spec: MetricSpec) -> CappedFamily[M]:
        family = CappedFamily(
            metric,
            spec.name,
            self._series_limit,
            self._overflow_metric.labels(spec.name),
            labelnames=spec.labels,
            exemplar_buckets=spec.buckets if spec.exemplar and not self.multiprocess else None,
        )
        self._families.append(family)
        return family


_BUSINESS = next(spec for spec in FAMILIES if spec.name == "business_events_total")


def create_metric(spec: MetricSpec, *, namespace: str = "") -> MetricWrapperBase:
    """Return the unregistered prometheus_client metric that ``spec`` declares.

    Args:
        spec: The declaration.
        namespace: An optional prefix for the name.
    """
    labels = list(spec.labels)
    if spec.kind == "counter":
        return Counter(spec.base_name, spec.help, labels, registry=None, namespace=namespace)
    if spec.kind == "histogram":
        buckets = spec.buckets if spec.buckets is not None else Histogram.DEFAULT_BUCKETS
        return Histogram(
            spec.name, spec.help, labels, registry=None, namespace=namespace, buckets=buckets
        )
    return Gauge(
        spec.name,
        spec.help,
        labels,
        registry=None,
        namespace=namespace,
        multiprocess_mode=spec.gauge_mode or "all",
    )


def is_multiprocess() -> bool:
    """Return whether prometheus_client stores values in ``PROMETHEUS_MULTIPROC_DIR`` files."""
    return _compat.prometheus_is_multiprocess()


def multiproc_dir() -> str | None:
    """Return ``PROMETHEUS_MULTIPROC_DIR`` from the environment, or None when unset."""
    # prometheus_client still honours the deprecated lower-case spelling.
    lower = os.environ.get("prometheus_multiproc_dir")  # noqa: SIM112
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or lower


_LOCK = threading.Lock()
_PROCESS_METRICS: TelemetryMetrics | None = None
_PER_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, TelemetryMetrics] = (
    weakref.WeakKeyDictionary()
)


def get_metrics(registry: CollectorRegistry | None = None) -> TelemetryMetrics:
    """Return the `TelemetryMetrics` of ``registry``, creating it once, thread-safely.

    Args:
        registry: A registry (tests); None means the process one on
            ``prometheus_client.REGISTRY``.
    """
    global _PROCESS_METRICS
    if registry is None or registry is REGISTRY:
        metrics = _PROCESS_METRICS
        if metrics is not None:
            return metrics
        with _LOCK:
            if _PROCESS_METRICS is None:
                _compat.prometheus_sync_value_class()
                _PROCESS_METRICS = TelemetryMetrics(REGISTRY)
            return _PROCESS_METRICS
    found = _PER_REGISTRY.get(registry)
    if found is not None:
        return found
    with _LOCK:
        found = _PER_REGISTRY.get(registry)
        if found is None:
            found = TelemetryMetrics(registry)
            _PER_REGISTRY[registry] = found
        return found


def follow_environment() -> TelemetryMetrics:
    """Make the process families store values the way the environment says; return them.

    prometheus_client's value class (in memory, or files in
    ``PROMETHEUS_MULTIPROC_DIR``) is switched to match the environment, and when
    it changed, the process families (which hold values of the old kind) are
    created anew.
    """
    global _PROCESS_METRICS
    with _LOCK:
        if _compat.prometheus_sync_value_class() and _PROCESS_METRICS is not None:
            _PROCESS_METRICS.unregister()
            _PROCESS_METRICS = None
    return get_metrics()


def reset_for_tests() -> None:
    """Drop the process families and follow the environment again; safe when never used."""
    global _PROCESS_METRICS
    with _LOCK:
        metrics, _PROCESS_METRICS = _PROCESS_METRICS, None
    if metrics is not None:
        metrics.unregister()
    _compat.prometheus_sync_value_class()
