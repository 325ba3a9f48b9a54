"""Cache metrics: `record_cache` for hits and misses, `track_cache` for timed operations.

::

    value = l1.get(key)
    record_cache(value is not None, level="l1", key_prefix=cache_key_prefix(key))

    with track_cache("get", level="l2", key_prefix="product") as op:
        value = redis.get(key)
        op.hit = value is not None

``record_cache`` counts ``cache_hit_total`` / ``cache_miss_total{cache_level,
cache_key_prefix}``. ``track_cache`` observes ``cache_operation_duration_seconds
{operation, cache_level}`` and counts ``cache_operations_total{operation, result,
cache_level}``, where ``result`` is ``hit``/``miss`` when the block set ``op.hit``,
``error`` when it raised, else ``ok``; setting ``op.hit`` also counts the hit or
miss. ``key_prefix`` is always reduced with `cache_key_prefix`, so passing a whole
key by mistake still gives a bounded label.

Added in 0.1.0.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry

from kaleem_telemetry._guard import internal_errors
from kaleem_telemetry._wrapping import OperationTracker
from kaleem_telemetry.metrics import TelemetryMetrics, get_metrics

__all__ = ["cache_key_prefix", "record_cache", "track_cache"]

MAX_PREFIX_LENGTH = 64
"""Longest ``cache_key_prefix`` label value; longer prefixes are cut."""


def cache_key_prefix(key: str | bytes) -> str:
    """Return the part of a cache key before its first ``:`` (at most 64 characters).

    A key without ``:`` is returned whole (cut to 64 characters); the series cap
    bounds what such keys can cost.

    Args:
        key: The cache key, for example ``"product:42:en"`` (gives ``"product"``).
    """
    if isinstance(key, bytes):
        key = key.decode("utf-8", "replace")
    return key.split(":", 1)[0][:MAX_PREFIX_LENGTH]


def record_cache(
    hit: bool,
    *,
    level: str = "l1",
    key_prefix: str,
    registry: CollectorRegistry | None = None,
) -> None:
    """Count a cache hit or miss.

    Args:
        hit: True for a hit, False for a miss.
        level: The cache level, for example ``"l1"`` (in-process) or ``"l2"`` (Redis).
        key_prefix: The key prefix (reduced with `cache_key_prefix`).
        registry: The registry; the default is the process one.
    """
    with internal_errors("record_cache"):
        metrics = get_metrics(registry)
        family = metrics.cache_hit_total if hit else metrics.cache_miss_total
        family.labels(level, cache_key_prefix(key_prefix)).inc()


class CacheTracker(OperationTracker):
    """One tracked cache operation; made by `track_cache`.

    Attributes:
        hit: Set it to True or False inside the block to record a hit or a miss.
    """

    _where = "track_cache"

    def __init__(
        self, operation: str, level: str, key_prefix: str, registry: CollectorRegistry | None
    ) -> None:
        self.operation = operation
        self.level = level
        self.key_prefix = key_prefix
        self.registry = registry
        self.hit: bool | None = None
        self._started = 0.0

    def _copy(self) -> CacheTracker:
        return CacheTracker(self.operation, self.level, self.key_prefix, self.registry)

    def _start(self) -> None:
        self.hit = None
        self._started = time.perf_counter()

    def _finish(self, exc: BaseException | None) -> None:
        elapsed = time.perf_counter() - self._started
        with internal_errors("track_cache"):
            observe_cache(
                get_metrics(self.registry),
                self.operation,
                self.level,
                self.key_prefix,
                self.hit,
                exc is not None,
                elapsed,
            )


def observe_cache(
    metrics: TelemetryMetrics,
    operation: str,
    level: str,
    key_prefix: str,
    hit: bool | None,
    failed: bool,
    elapsed: float,
) -> None:
    """Record one timed cache operation (and its hit or miss when ``hit`` is not None)."""
    if failed:
        result = "error"
    elif hit is None:
        result = "ok"
    else:
        result = "hit" if hit else "miss"
        family = metrics.cache_hit_total if hit else metrics.cache_miss_total
        family.labels(level, cache_key_prefix(key_prefix)).inc()
    metrics.cache_operations_total.labels(operation, result, level).inc()
    metrics.cache_operation_duration_seconds.labels(operation, level).observe(elapsed)


def track_cache(
    operation: str,
    *,
    level: str,
    key_prefix: str,
    registry: CollectorRegistry | None = None,
) -> CacheTracker:
    """Time a cache operation; a context manager (sync and async) and a decorator.

    Args:
        operation: The operation, for example ``"get"``, ``"set"``, ``"delete"``.
        level: The cache level, for example ``"l1"`` or ``"l2"``.
        key_prefix: The key prefix (reduced with `cache_key_prefix`), used when
            the block records a hit or a miss.
        registry: The registry; the default is the process one.

    Returns:
        A tracker; inside ``with``, set ``.hit`` to record a hit or a miss.
    """
    return CacheTracker(operation, level, key_prefix, registry)
