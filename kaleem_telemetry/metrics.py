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
import functools
import inspect
import logging
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, cast

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from kaleem_telemetry import _compat
from kaleem_telemetry.exceptions import TelemetryConfigError

if TYPE_CHECKING:
    from kaleem_telemetry.config import TelemetryConfig
    from kaleem_telemetry.exposition import MetricsServer

__all__ = [
    "CACHE_BUCKETS",
    "DB_BUCKETS",
    "DEFAULT_SERIES_LIMIT",
    "FUNCTION_BUCKETS",
    "HTTP_BUCKETS",
    "JOB_BUCKETS",
    "OTHER",
    "CappedFamily",
    "MetricsComponent",
    "OperationTracker",
    "TelemetryMetrics",
    "configure_metrics",
    "configured_token",
    "get_metrics",
    "is_multiprocess",
    "multiproc_dir",
    "reset_for_tests",
]

_LOGGER = logging.getLogger(__name__)

DEFAULT_SERIES_LIMIT = 2000
"""Distinct label sets a family admits before folding new ones into ``"other"``."""

OTHER = "other"
"""The label value that replaces every value of a label set past the cap."""

HTTP_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""Buckets of the HTTP server and client duration histograms (docs/reference.md, Metrics)."""

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
    """

    __slots__ = (
        "_cache",
        "_lock",
        "_other",
        "_overflow",
        "_series",
        "_warned",
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
        self._series: set[tuple[str, ...]] = set()
        self._other = (OTHER,) * len(self.labelnames)
        self._lock = threading.Lock()
        self._warned = False

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
            self.metric.remove(*key)

    def clear(self) -> None:
        """Remove every child (and its series) from the family; in-memory mode only."""
        with self._lock:
            self._cache.clear()
            self._series.clear()
            self._warned = False
            self.metric.clear()


class TelemetryMetrics:
    """Every metric family of docs/reference.md (Metrics) on one registry.

    Attribute names are the metric names (counters included with ``_total``).
    Create one per registry (tests use a fresh `CollectorRegistry`); the process
    one comes from `get_metrics()`.

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

        overflow = self._register(
            Counter(
                "telemetry_series_overflow_total",
                "Label sets folded into 'other' because the family reached its series cap.",
                ["metric"],
                registry=None,
                namespace=namespace,
            )
        )
        self._overflow_metric = overflow
        self.series_overflow_total: CappedFamily[Counter] = CappedFamily(
            overflow, "telemetry_series_overflow_total", series_limit, labelnames=["metric"]
        )

        http = ["method", "route", "status_code"]
        self.http_requests_total = self._counter(
            "http_requests_total", "HTTP requests served.", http
        )
        self.http_request_duration_seconds = self._histogram(
            "http_request_duration_seconds",
            "HTTP request duration until the last body byte, in seconds.",
            http,
            HTTP_BUCKETS,
        )
        self.http_errors_total = self._counter(
            "http_errors_total",
            "HTTP requests that ended in a 5xx status or an unhandled exception.",
            [*http, "error_type"],
        )
        self.http_requests_in_progress = self._gauge(
            "http_requests_in_progress", "HTTP requests being served.", ["method"], "livesum"
        )
        self.http_client_request_duration_seconds = self._histogram(
            "http_client_request_duration_seconds",
            "Outgoing HTTP request duration, in seconds.",
            ["method", "host", "status_code"],
            HTTP_BUCKETS,
        )
        self.database_query_duration_seconds = self._histogram(
            "database_query_duration_seconds",
            "Database operation duration, in seconds.",
            ["db_system", "operation", "collection", "status"],
            DB_BUCKETS,
        )
        cache = ["cache_level", "cache_key_prefix"]
        self.cache_hit_total = self._counter("cache_hit_total", "Cache hits.", cache)
        self.cache_miss_total = self._counter("cache_miss_total", "Cache misses.", cache)
        self.cache_operations_total = self._counter(
            "cache_operations_total", "Cache operations.", ["operation", "result", "cache_level"]
        )
        self.cache_operation_duration_seconds = self._histogram(
            "cache_operation_duration_seconds",
            "Cache operation duration, in seconds.",
            ["operation", "cache_level"],
            CACHE_BUCKETS,
        )
        job = ["queue", "job"]
        self.job_runs_total = self._counter(
            "job_runs_total", "Background job runs.", [*job, "status"]
        )
        self.job_duration_seconds = self._histogram(
            "job_duration_seconds",
            "Background job duration, in seconds.",
            [*job, "status"],
            JOB_BUCKETS,
        )
        self.job_queue_lag_seconds = self._histogram(
            "job_queue_lag_seconds",
            "Time from enqueueing a job (x-enqueued-at) to its start, in seconds.",
            job,
            JOB_BUCKETS,
        )
        self.jobs_in_progress = self._gauge(
            "jobs_in_progress", "Background jobs running.", job, "livesum"
        )
        self.websocket_connections_active = self._gauge(
            "websocket_connections_active", "Open WebSocket connections.", ["route"], "livesum"
        )
        self.websocket_messages_total = self._counter(
            "websocket_messages_total", "WebSocket messages.", ["route", "direction"]
        )
        self.function_calls_total = self._counter(
            "function_calls_total",
            "Calls of @instrument functions.",
            ["function", "module", "result"],
        )
        self.function_duration_seconds = self._histogram(
            "function_duration_seconds",
            "Duration of @instrument functions, in seconds.",
            ["function", "module"],
            FUNCTION_BUCKETS,
        )
        self.business_events_total = self._counter(
            "business_events_total", "Business KPI events.", ["event"]
        )
        self.health_check_status = self._gauge(
            "health_check_status",
            "Result of the last run of a health check: 1 passed, 0 failed.",
            ["check"],
            "livemostrecent",
        )
        self.app_info = self._gauge(
            "app_info",
            "Always 1; labels name the running service.",
            ["service", "version", "environment"],
            "livemax",
        )

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
        labels = ["event", *names]
        metric = Counter(
            "business_events_total",
            "Business KPI events.",
            labels,
            registry=None,
            namespace=self._namespace,
        )
        self.registry.unregister(old.metric)
        self._collectors.remove(old.metric)
        self._families.remove(old)
        self.business_events_total = self._wrap(
            self._register(metric), "business_events_total", labels
        )

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

    def _wrap(self, metric: M, name: str, labels: Sequence[str]) -> CappedFamily[M]:
        family = CappedFamily(
            metric,
            name,
            self._series_limit,
            self._overflow_metric.labels(name),
            labelnames=labels,
        )
        self._families.append(family)
        return family

    def _counter(self, name: str, doc: str, labels: list[str]) -> CappedFamily[Counter]:
        metric = self._register(
            Counter(name, doc, labels, registry=None, namespace=self._namespace)
        )
        return self._wrap(metric, name, labels)

    def _histogram(
        self, name: str, doc: str, labels: list[str], buckets: Sequence[float]
    ) -> CappedFamily[Histogram]:
        metric = self._register(
            Histogram(name, doc, labels, registry=None, namespace=self._namespace, buckets=buckets)
        )
        return self._wrap(metric, name, labels)

    def _gauge(self, name: str, doc: str, labels: list[str], mode: str) -> CappedFamily[Gauge]:
        metric = self._register(
            Gauge(
                name,
                doc,
                labels,
                registry=None,
                namespace=self._namespace,
                multiprocess_mode=mode,  # type: ignore[arg-type]
            )
        )
        return self._wrap(metric, name, labels)


def is_multiprocess() -> bool:
    """Return whether prometheus_client stores values in ``PROMETHEUS_MULTIPROC_DIR`` files."""
    return _compat.prometheus_is_multiprocess()


def multiproc_dir() -> str | None:
    """Return ``PROMETHEUS_MULTIPROC_DIR`` from the environment, or None when unset."""
    # prometheus_client still honours the deprecated lower-case spelling.
    lower = os.environ.get("prometheus_multiproc_dir")  # noqa: SIM112
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or lower


def _sync_value_class() -> bool:
    """Make prometheus_client's value class follow the environment; return whether it changed."""
    return _compat.prometheus_sync_value_class()


_LOCK = threading.Lock()
_PROCESS_METRICS: TelemetryMetrics | None = None
_PER_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, TelemetryMetrics] = (
    weakref.WeakKeyDictionary()
)
_SERVER: MetricsServer | None = None
_TOKEN: str | None = None


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
                _sync_value_class()
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


def configured_token() -> str | None:
    """Return the ``/metrics`` bearer token set by `configure_metrics()`, if any."""
    return _TOKEN


class MetricsComponent:
    """The metrics part of a `setup_telemetry()` handle.

    Attributes:
        metrics: The process `TelemetryMetrics`.
        server: The metrics server started for ``KALEEM_TELEMETRY_METRICS_PORT``, or None.
    """

    def __init__(self, metrics: TelemetryMetrics, server: MetricsServer | None) -> None:
        self.metrics = metrics
        self.server = server

    def force_flush(self, timeout: float) -> bool:
        """Return True: metrics are pulled by the scraper, nothing is buffered."""
        return True

    def shutdown(self, timeout: float) -> None:
        """Stop the metrics server, if this component started one."""
        global _SERVER
        server = self.server
        if server is not None:
            server.stop(timeout)
            with _LOCK:
                if _SERVER is server:
                    _SERVER = None


def _validate_multiproc_dir(path: str) -> None:
    problem = None
    if not os.path.exists(path):
        problem = "it does not exist"
    elif not os.path.isdir(path):
        problem = "it is not a directory"
    elif not os.access(path, os.W_OK | os.X_OK):
        problem = "it is not writable by this process"
    if problem is not None:
        msg = (
            f"PROMETHEUS_MULTIPROC_DIR must be an existing, writable directory, got {path!r} "
            f"({problem}). Create it (and empty it) before the server starts its workers."
        )
        raise TelemetryConfigError(msg)


def _set_app_info(metrics: TelemetryMetrics, key: tuple[str, str, str]) -> None:
    family = metrics.app_info
    for old in family.label_sets():
        if old == key:
            continue
        if metrics.multiprocess:
            # Files cannot drop a series; a zero says "no longer this version".
            family.labels(*old).set(0)
        else:
            family.remove(*old)
    family.labels(*key).set(1)


def configure_metrics(cfg: TelemetryConfig) -> MetricsComponent:
    """Apply the metrics part of ``cfg`` to this process.

    Validates and exports ``PROMETHEUS_MULTIPROC_DIR``, sets the series cap and
    ``app_info``, and starts the metrics server when ``metrics_port`` is set.

    Args:
        cfg: The effective configuration.

    Raises:
        TelemetryConfigError: ``PROMETHEUS_MULTIPROC_DIR`` is not an existing,
            writable directory.
    """
    global _PROCESS_METRICS, _SERVER, _TOKEN
    path = cfg.prometheus_multiproc_dir
    if path is not None:
        _validate_multiproc_dir(path)
        # prometheus_client reads the directory from the environment when it opens
        # its files, and the exposition reads it there too.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    else:
        env_path = multiproc_dir()
        if env_path is not None:
            _validate_multiproc_dir(env_path)
    with _LOCK:
        if _sync_value_class() and _PROCESS_METRICS is not None:
            # The existing families hold in-memory (or file) values of the old mode.
            _PROCESS_METRICS.unregister()
            _PROCESS_METRICS = None
    metrics = get_metrics()
    metrics.series_limit = cfg.metrics_series_limit
    _set_app_info(metrics, (cfg.service_name, cfg.version, cfg.environment))
    _TOKEN = cfg.metrics_token or None
    server = None
    if cfg.metrics_port is not None:
        with _LOCK:
            old, _SERVER = _SERVER, None
        if old is not None:
            old.stop(1.0)
        from kaleem_telemetry.exposition import start_metrics_server

        try:
            server = start_metrics_server(
                cfg.metrics_port, cfg.metrics_addr, token=cfg.metrics_token
            )
        except OSError as exc:
            # A port already bound (another worker of a pre-fork server) is not a
            # reason to stop the application; the scraper will say it is down.
            _LOGGER.warning(
                "Could not start the metrics server on %s:%s: %s",
                cfg.metrics_addr,
                cfg.metrics_port,
                exc,
            )
        else:
            with _LOCK:
                _SERVER = server
    return MetricsComponent(metrics, server)


def reset_for_tests() -> None:
    """Stop the metrics server and drop the process metrics; safe when never configured."""
    global _PROCESS_METRICS, _SERVER, _TOKEN
    with _LOCK:
        server, _SERVER = _SERVER, None
        metrics, _PROCESS_METRICS = _PROCESS_METRICS, None
        _TOKEN = None
    if server is not None:
        server.stop(1.0)
    if metrics is not None:
        metrics.unregister()
    _sync_value_class()


P = ParamSpec("P")
R = TypeVar("R")


class OperationTracker:
    """Base of `track_db` and `track_cache`: a context manager and a decorator.

    As a context manager (``with``/``async with``) it times one block; as a
    decorator it times every call of a sync or async function, with a fresh
    tracker per call. Subclasses implement ``_start()``, ``_finish()`` and
    ``_copy()``. The application's exceptions propagate unchanged.
    """

    def _start(self) -> None:
        raise NotImplementedError

    def _finish(self, exc: BaseException | None) -> None:
        raise NotImplementedError

    def _copy(self) -> OperationTracker:
        raise NotImplementedError

    def __enter__(self) -> Any:
        self._start()
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self._finish(exc)

    async def __aenter__(self) -> Any:
        return self.__enter__()

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self._finish(exc)

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        """Time every call of ``func`` (sync or async) with a fresh copy of this tracker.

        Args:
            func: The function to wrap.
        """
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                async with self._copy():
                    return await func(*args, **kwargs)

            return cast("Callable[P, R]", async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with self._copy():
                return func(*args, **kwargs)

        return wrapper
