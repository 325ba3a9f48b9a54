from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from kaleem_telemetry.cache import cache_key_prefix, record_cache, track_cache


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


class TestCacheKeyPrefix:
    @pytest.mark.parametrize(
        ("key", "prefix"),
        [
            ("product:42:en", "product"),
            ("product", "product"),
            (":42", ""),
            (b"session:abc", "session"),
            ("x" * 100 + ":1", "x" * 64),
        ],
    )
    def test_prefix(self, key: str | bytes, prefix: str) -> None:
        """The prefix is the part before the first ':' cut to 64 characters."""
        assert cache_key_prefix(key) == prefix


class TestRecordCache:
    def test_hit_and_miss(self, registry: CollectorRegistry) -> None:
        """Hits and misses land in their counters with level and prefix labels."""
        record_cache(True, key_prefix="product", registry=registry)
        record_cache(False, level="l2", key_prefix="product", registry=registry)
        record_cache(False, level="l2", key_prefix="product", registry=registry)

        assert (
            _value(registry, "cache_hit_total", cache_level="l1", cache_key_prefix="product") == 1
        )
        assert (
            _value(registry, "cache_miss_total", cache_level="l2", cache_key_prefix="product") == 2
        )

    def test_whole_key_is_reduced(self, registry: CollectorRegistry) -> None:
        """Passing a whole key by mistake still records only its prefix."""
        record_cache(True, key_prefix="product:123", registry=registry)

        assert (
            _value(registry, "cache_hit_total", cache_level="l1", cache_key_prefix="product") == 1
        )


class TestTrackCache:
    def test_hit_recorded_from_block(self, registry: CollectorRegistry) -> None:
        """Setting .hit records the operation result and the hit counter."""
        with track_cache("get", level="l2", key_prefix="product", registry=registry) as op:
            op.hit = True

        assert (
            _value(
                registry, "cache_operations_total", operation="get", result="hit", cache_level="l2"
            )
            == 1
        )
        assert (
            _value(registry, "cache_hit_total", cache_level="l2", cache_key_prefix="product") == 1
        )
        assert (
            _value(
                registry,
                "cache_operation_duration_seconds_count",
                operation="get",
                cache_level="l2",
            )
            == 1
        )

    def test_ok_and_error(self, registry: CollectorRegistry) -> None:
        """Without .hit the result is ok; an exception is re-raised and counted as error."""
        with track_cache("set", level="l1", key_prefix="p", registry=registry):
            pass
        with (
            pytest.raises(KeyError),
            track_cache("set", level="l1", key_prefix="p", registry=registry),
        ):
            raise KeyError("k")

        assert (
            _value(
                registry, "cache_operations_total", operation="set", result="ok", cache_level="l1"
            )
            == 1
        )
        assert (
            _value(
                registry,
                "cache_operations_total",
                operation="set",
                result="error",
                cache_level="l1",
            )
            == 1
        )

    def test_decorators(self, registry: CollectorRegistry) -> None:
        """As a decorator it times every call of a sync function."""

        @track_cache("delete", level="l2", key_prefix="p", registry=registry)
        def delete() -> str:
            return "gone"

        assert delete() == "gone"
        assert delete() == "gone"
        assert (
            _value(
                registry,
                "cache_operations_total",
                operation="delete",
                result="ok",
                cache_level="l2",
            )
            == 2
        )

    async def test_async_forms(self, registry: CollectorRegistry) -> None:
        """Both `async with` and async decorated functions are tracked."""

        @track_cache("get", level="l2", key_prefix="p", registry=registry)
        async def get() -> int:
            return 1

        async with track_cache("get", level="l2", key_prefix="p", registry=registry) as op:
            op.hit = False
        assert await get() == 1

        assert (
            _value(
                registry, "cache_operations_total", operation="get", result="miss", cache_level="l2"
            )
            == 1
        )
        assert (
            _value(
                registry, "cache_operations_total", operation="get", result="ok", cache_level="l2"
            )
            == 1
        )
        assert _value(registry, "cache_miss_total", cache_level="l2", cache_key_prefix="p") == 1
