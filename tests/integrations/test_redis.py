"""kaleem_telemetry.integrations.redis against the real Redis, sync and asyncio."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("redis")

import redis
import redis.asyncio.client
import redis.asyncio.cluster
import redis.client
import redis.cluster

from kaleem_telemetry import tracing
from kaleem_telemetry.exceptions import MissingDependencyError
from kaleem_telemetry.integrations import redis as integration
from kaleem_telemetry.testing import TelemetryCapture, capture_telemetry

PATCHED = [
    (redis.client.Redis, "execute_command"),
    (redis.client.Pipeline, "immediate_execute_command"),
    (redis.client.Pipeline, "execute"),
    (redis.cluster.RedisCluster, "execute_command"),
    (redis.cluster.ClusterPipeline, "execute"),
    (redis.asyncio.client.Redis, "execute_command"),
    (redis.asyncio.client.Pipeline, "immediate_execute_command"),
    (redis.asyncio.client.Pipeline, "execute"),
    (redis.asyncio.cluster.RedisCluster, "execute_command"),
    (redis.asyncio.cluster.ClusterPipeline, "execute"),
]
SECRET = "s3cr3t-value-never-recorded"


@pytest.fixture(name="cap")
def _cap() -> Iterator[TelemetryCapture]:
    with capture_telemetry() as captured:
        yield captured


@pytest.fixture(name="client")
def _client(redis_url: str) -> Iterator[Any]:
    """A sync client made before instrument(), and a key namespace deleted afterwards."""
    client = redis.Redis.from_url(redis_url)
    integration.instrument()
    try:
        yield client
    finally:
        integration.uninstrument()
        for key in client.scan_iter(match="kt-*"):
            client.delete(key)
        client.close()


def _ns() -> str:
    return f"kt-{uuid.uuid4().hex[:8]}"


def _duration(span: Any) -> float:
    return float(span.end_time - span.start_time) / 1e9


def _leaks(cap: TelemetryCapture, needle: str) -> list[str]:
    found = []
    for span in cap.spans:
        texts = [str(span.attributes), str(span.status.description)]
        texts += [str(event.attributes) for event in span.events]
        found += [text for text in texts if needle in text]
    return found


class TestInstrument:
    def test_repeat_warns_and_uninstrument_restores_exactly(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Every patched method (sync, asyncio, cluster) is the original object again."""
        originals = [owner.__dict__[name] for owner, name in PATCHED]
        integration.instrument()
        patched = [owner.__dict__[name] for owner, name in PATCHED]
        with caplog.at_level(logging.WARNING):
            integration.instrument()
        again = [owner.__dict__[name] for owner, name in PATCHED]
        integration.uninstrument()
        integration.uninstrument()

        assert all(p is not o for p, o in zip(patched, originals, strict=True))
        assert again == patched
        assert "already instrumented" in caplog.text
        assert [owner.__dict__[name] for owner, name in PATCHED] == originals

    def test_missing_redis_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without redis-py, importing the integration says which extra to install."""
        monkeypatch.setitem(sys.modules, "redis", None)
        monkeypatch.delitem(sys.modules, "kaleem_telemetry.integrations.redis")

        with pytest.raises(MissingDependencyError, match=r"kaleem-telemetry\[redis\]"):
            importlib.import_module("kaleem_telemetry.integrations.redis")

    def test_uninstrumented_client_records_nothing(
        self, redis_url: str, cap: TelemetryCapture
    ) -> None:
        """After uninstrument(), a client records no span and no metric."""
        client = redis.Redis.from_url(redis_url)
        integration.instrument()
        integration.uninstrument()
        client.get(f"{_ns()}:x")
        client.close()

        assert cap.spans == []
        assert cap.metric_value("database_query_duration_seconds_count", db_system="redis") == 0


class TestCommands:
    def test_get_hit_and_miss_exact_metrics_span_parent_and_duration(
        self, client: Any, cap: TelemetryCapture
    ) -> None:
        """A hit and a miss: exact counts, the current span as parent, the span's duration."""
        ns = _ns()
        client.set(f"{ns}:1", SECRET)
        with tracing.get_tracer().start_as_current_span("request") as parent:
            client.get(f"{ns}:1")
            client.get(f"{ns}:missing")
        gets = [s for s in cap.spans if s.name == "GET"]
        labels = {"db_system": "redis", "operation": "GET", "collection": "", "status": "ok"}

        assert len(gets) == 2
        assert all(s.parent.span_id == parent.get_span_context().span_id for s in gets)
        assert gets[0].attributes["db.system.name"] == "redis"
        assert gets[0].attributes["db.operation.name"] == "GET"
        assert gets[0].attributes["server.port"] == 6379
        assert cap.metric_value("database_query_duration_seconds_count", **labels) == 2
        assert cap.metric_value("database_query_duration_seconds_sum", **labels) == pytest.approx(
            sum(_duration(s) for s in gets), abs=1e-9
        )
        assert cap.metric_value("cache_hit_total", cache_level="l2", cache_key_prefix=ns) == 1
        assert cap.metric_value("cache_miss_total", cache_level="l2", cache_key_prefix=ns) == 1
        assert (
            cap.metric_value(
                "cache_operations_total", operation="get", result="hit", cache_level="l2"
            )
            == 1
        )
        assert _leaks(cap, SECRET) == []
        assert _leaks(cap, ns) == []

    def test_error_reply_and_timeout_are_errors_without_arguments(
        self, client: Any, redis_url: str, cap: TelemetryCapture
    ) -> None:
        """An error reply and a socket timeout count status=error; no argument reaches a span."""
        with pytest.raises(redis.ResponseError):
            client.execute_command("NOSUCHCOMMAND", SECRET)
        slow = redis.Redis.from_url(redis_url, socket_timeout=0.2)
        with pytest.raises(redis.TimeoutError):
            slow.blpop([f"{_ns()}:empty"], timeout=5)
        slow.close()

        assert (
            cap.metric_value(
                "database_query_duration_seconds_count",
                db_system="redis",
                operation="NOSUCHCOMMAND",
                collection="",
                status="error",
            )
            == 1
        )
        assert (
            cap.metric_value(
                "database_query_duration_seconds_count",
                db_system="redis",
                operation="BLPOP",
                collection="",
                status="error",
            )
            == 1
        )
        blpop = next(s for s in cap.spans if s.name == "BLPOP")
        assert blpop.attributes["error.type"] == "TimeoutError"
        assert _leaks(cap, SECRET) == []

    def test_failed_get_counts_an_error_not_a_miss(
        self, client: Any, cap: TelemetryCapture
    ) -> None:
        """A GET that fails (WRONGTYPE) is an error operation, not a miss."""
        ns = _ns()
        client.rpush(f"{ns}:list", "x")
        with pytest.raises(redis.ResponseError):
            client.get(f"{ns}:list")  # WRONGTYPE

        assert cap.metric_value("cache_miss_total", cache_level="l2", cache_key_prefix=ns) == 0
        assert (
            cap.metric_value(
                "cache_operations_total", operation="get", result="error", cache_level="l2"
            )
            == 1
        )

    def test_mget_counts_each_key(self, client: Any, cap: TelemetryCapture) -> None:
        """MGET counts one hit or miss per key."""
        ns = _ns()
        client.set(f"{ns}:a", "1")
        client.mget(f"{ns}:a", f"{ns}:b", f"{ns}:c")

        assert cap.metric_value("cache_hit_total", cache_level="l2", cache_key_prefix=ns) == 1
        assert cap.metric_value("cache_miss_total", cache_level="l2", cache_key_prefix=ns) == 2


class TestPipelines:
    @pytest.mark.parametrize("transaction", [True, False])
    def test_one_span_one_observation_and_hits(
        self, client: Any, cap: TelemetryCapture, transaction: bool
    ) -> None:
        """A pipeline is one span and one observation; its reads count hits and misses."""
        ns = _ns()
        pipe = client.pipeline(transaction=transaction)
        pipe.get(f"{ns}:1").set(f"{ns}:1", "v").get(f"{ns}:1").hgetall(f"{ns}:h")
        pipe.execute()
        spans = [s for s in cap.spans if s.name == "PIPELINE"]

        assert len(spans) == 1
        assert spans[0].attributes["db.operation.batch.size"] == 4
        assert [s.name for s in cap.spans] == ["PIPELINE"]
        assert cap.metric_value(
            "database_query_duration_seconds_sum",
            db_system="redis",
            operation="PIPELINE",
            collection="",
            status="ok",
        ) == pytest.approx(_duration(spans[0]), abs=1e-9)
        assert cap.metric_value("cache_hit_total", cache_level="l2", cache_key_prefix=ns) == 1
        assert cap.metric_value("cache_miss_total", cache_level="l2", cache_key_prefix=ns) == 2

    def test_failing_pipeline_is_an_error(self, client: Any, cap: TelemetryCapture) -> None:
        """A pipeline that raises counts status=error."""
        key = f"{_ns()}:list"
        client.rpush(key, "x")
        pipe = client.pipeline(transaction=False)
        pipe.get(key)
        with pytest.raises(redis.ResponseError):
            pipe.execute()

        assert (
            cap.metric_value(
                "database_query_duration_seconds_count",
                db_system="redis",
                operation="PIPELINE",
                collection="",
                status="error",
            )
            == 1
        )

    def test_watching_pipeline_runs_its_commands_observed(
        self, client: Any, cap: TelemetryCapture
    ) -> None:
        """After WATCH a pipeline runs commands at once: each is observed, then the pipeline."""
        key = f"{_ns()}:w"
        with client.pipeline() as pipe:
            pipe.watch(key)
            pipe.get(key)
            pipe.multi()
            pipe.set(key, "1")
            pipe.execute()

        assert [s.name for s in cap.spans] == ["WATCH", "GET", "PIPELINE"]


class TestAsyncio:
    def test_async_commands_and_pipeline(self, redis_url: str, cap: TelemetryCapture) -> None:
        """The asyncio client: commands, a pipeline and an error reply, under the current span."""
        ns = _ns()

        async def run() -> None:
            client = redis.asyncio.Redis.from_url(redis_url)
            try:
                await client.set(f"{ns}:1", "v")
                with tracing.get_tracer().start_as_current_span("job"):
                    await client.get(f"{ns}:1")
                async with client.pipeline() as pipe:
                    pipe.get(f"{ns}:2")
                    await pipe.execute()
                with pytest.raises(redis.ResponseError):
                    await client.execute_command("NOSUCHCOMMAND", SECRET)
                await client.delete(f"{ns}:1")
            finally:
                await client.aclose()

        integration.instrument()
        try:
            asyncio.run(run())
        finally:
            integration.uninstrument()
        job = next(s for s in cap.spans if s.name == "job")
        get = next(s for s in cap.spans if s.name == "GET")

        assert get.parent.span_id == job.context.span_id
        assert [s.name for s in cap.spans if s.kind.name == "CLIENT"] == [
            "SET",
            "GET",
            "PIPELINE",
            "NOSUCHCOMMAND",
            "DEL",
        ]
        assert cap.metric_value("cache_hit_total", cache_level="l2", cache_key_prefix=ns) == 1
        assert cap.metric_value("cache_miss_total", cache_level="l2", cache_key_prefix=ns) == 1
        assert (
            cap.metric_value(
                "database_query_duration_seconds_count",
                db_system="redis",
                operation="NOSUCHCOMMAND",
                collection="",
                status="error",
            )
            == 1
        )
        assert _leaks(cap, SECRET) == []


class TestSetup:
    def test_setup_auto_instruments_redis(
        self, monkeypatch: pytest.MonkeyPatch, redis_url: str
    ) -> None:
        """setup_telemetry(integrations='auto') instruments redis-py."""
        import kaleem_telemetry

        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
        from kaleem_telemetry.integrations import INTEGRATIONS, _installed

        instrumented = [name for name, (library, _) in INTEGRATIONS.items() if _installed(library)]
        original = redis.client.Redis.__dict__["execute_command"]
        try:
            kaleem_telemetry.setup_telemetry("svc", integrations="auto")
            patched = redis.client.Redis.__dict__["execute_command"]
        finally:
            for name in instrumented:
                importlib.import_module(f"kaleem_telemetry.integrations.{name}").uninstrument()

        assert "redis" in instrumented
        assert patched is not original
        assert redis.client.Redis.__dict__["execute_command"] is original

    def test_named_integration_without_its_library_names_the_extra(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A named integration whose library is missing raises naming the extra."""
        import kaleem_telemetry

        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
        monkeypatch.setitem(sys.modules, "redis", None)
        monkeypatch.delitem(sys.modules, "kaleem_telemetry.integrations.redis")

        with pytest.raises(MissingDependencyError, match=r"kaleem-telemetry\[redis\]"):
            kaleem_telemetry.setup_telemetry("svc", integrations=["redis"])

    def test_unknown_integration_name_is_a_config_error(self) -> None:
        """An unknown integration name is a TelemetryConfigError naming the variable."""
        from kaleem_telemetry.config import TelemetryConfig
        from kaleem_telemetry.exceptions import TelemetryConfigError

        with pytest.raises(TelemetryConfigError, match="KALEEM_TELEMETRY_INTEGRATIONS"):
            TelemetryConfig.from_env({"KALEEM_TELEMETRY_INTEGRATIONS": "redis,nosuch"})
        assert TelemetryConfig.from_env({"KALEEM_TELEMETRY_INTEGRATIONS": "auto"}).integrations == (
            "auto",
        )


class TestHealthCheck:
    def test_health_check_lives_here_and_the_old_path_still_works(self, redis_url: str) -> None:
        """integrations.redis.health_check and health.redis_check both PING the real Redis."""
        from kaleem_telemetry import health

        client = redis.Redis.from_url(redis_url)
        try:
            assert integration.health_check(client)() is True
            assert health.redis_check(client)() is True
        finally:
            client.close()
