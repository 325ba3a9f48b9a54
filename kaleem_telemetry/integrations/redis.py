"""Trace and measure redis-py commands and pipelines (the ``redis`` extra).

Call `instrument()` once; every client then observes its commands, whether it
was created before or after the call::

    from kaleem_telemetry.integrations import redis as redis_telemetry

    redis_telemetry.instrument()

It covers ``redis.Redis`` and ``redis.asyncio.Redis``, their pipelines (with and
without a transaction, and the commands a watching pipeline runs at once), and
``redis.cluster.RedisCluster`` / ``redis.asyncio.cluster.RedisCluster`` and
their pipelines. Each command runs in a CLIENT span named after the command
(``GET``), and each pipeline in one span named ``PIPELINE``, with the
OpenTelemetry database attributes (``db.system.name``, ``db.operation.name``,
``db.namespace``, ``server.address``, ``server.port``,
``db.operation.batch.size``); the command's arguments are never recorded.

Each command or pipeline observes ``database_query_duration_seconds{db_system=
"redis", operation, collection="", status}`` with the span's duration;
``status="error"`` when it raised (a timeout, a refused connection, a Redis
error reply). The reads of a cache (``GET``, ``GETEX``, ``GETDEL``, ``HGET``,
``HGETALL``, ``MGET``) also count ``cache_hit_total`` / ``cache_miss_total
{cache_level, cache_key_prefix}`` (the part of the key before its first ``:``,
never the key) and time ``cache_operation_duration_seconds``; inside a pipeline
they count their hits and misses.

`uninstrument()` puts redis-py's methods back exactly. The spans are our own
rather than those of ``opentelemetry-instrumentation-redis``: see
docs/integrations.md.

Added in 0.1.0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry.trace import Span

from kaleem_telemetry._guard import report_internal_error
from kaleem_telemetry._optional import import_optional
from kaleem_telemetry.cache import cache_key_prefix, observe_cache
from kaleem_telemetry.db import observe_query
from kaleem_telemetry.integrations._clients import end_call, start_call
from kaleem_telemetry.integrations._health_checks import redis_check as health_check
from kaleem_telemetry.integrations._patching import Patches, Wrapper
from kaleem_telemetry.metrics import TelemetryMetrics, get_metrics

redis = import_optional("redis", module=__name__, package="redis", extra="redis")

__all__ = ["health_check", "instrument", "uninstrument"]

_PATCHES = Patches("redis")
_WHERE = "redis integration"

_BASE: dict[str, Any] = {"db.system.name": "redis", "db.system": "redis"}
#: The reads of a cache: command -> the ``cache_operation`` name they record.
_READS = {
    "GET": "get",
    "GETEX": "getex",
    "GETDEL": "getdel",
    "HGET": "hget",
    "HGETALL": "hgetall",
    "MGET": "mget",
}
_PIPELINE = "PIPELINE"
_MAX_OPERATION = 32

_level = "l2"


def instrument(*, cache_level: str = "l2") -> None:
    """Observe every redis-py command and pipeline, sync, asyncio and cluster.

    A repeated call logs a warning and does nothing.

    Args:
        cache_level: The ``cache_level`` label of the cache metrics.
    """
    global _level
    if _PATCHES.apply(_targets):
        _level = cache_level


def uninstrument() -> None:
    """Restore the methods `instrument()` patched; a no-op when not instrumented."""
    _PATCHES.restore()


def _targets() -> Iterable[tuple[type, str, Wrapper]]:
    import redis.asyncio.client
    import redis.asyncio.cluster
    import redis.client
    import redis.cluster

    yield redis.client.Redis, "execute_command", _command
    yield redis.client.Pipeline, "immediate_execute_command", _command
    yield redis.client.Pipeline, "execute", _pipeline
    yield redis.cluster.RedisCluster, "execute_command", _command
    yield redis.cluster.ClusterPipeline, "execute", _pipeline
    yield redis.asyncio.client.Redis, "execute_command", _async_command
    yield redis.asyncio.client.Pipeline, "immediate_execute_command", _async_command
    yield redis.asyncio.client.Pipeline, "execute", _async_pipeline
    yield redis.asyncio.cluster.RedisCluster, "execute_command", _async_command
    yield redis.asyncio.cluster.ClusterPipeline, "execute", _async_pipeline


def _command(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    call = _begin_command(instance, args)
    if call is None:
        return wrapped(*args, **kwargs)
    try:
        result = wrapped(*args, **kwargs)
    except BaseException as exc:
        _end_command(call, args, exc, None)
        raise
    _end_command(call, args, None, result)
    return result


async def _async_command(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    call = _begin_command(instance, args)
    if call is None:
        return await wrapped(*args, **kwargs)
    try:
        result = await wrapped(*args, **kwargs)
    except BaseException as exc:
        _end_command(call, args, exc, None)
        raise
    _end_command(call, args, None, result)
    return result


def _pipeline(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    call = _begin_pipeline(instance)
    if call is None:
        return wrapped(*args, **kwargs)
    try:
        results = wrapped(*args, **kwargs)
    except BaseException as exc:
        _end_pipeline(call, exc, None)
        raise
    _end_pipeline(call, None, results)
    return results


async def _async_pipeline(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    call = _begin_pipeline(instance)
    if call is None:
        return await wrapped(*args, **kwargs)
    try:
        results = await wrapped(*args, **kwargs)
    except BaseException as exc:
        _end_pipeline(call, exc, None)
        raise
    _end_pipeline(call, None, results)
    return results


_Call = tuple[Span, int, str]
_PipelineCall = tuple[Span, int, list[tuple[int, Sequence[Any]]]]


def _begin_command(instance: Any, args: tuple[Any, ...]) -> _Call | None:
    try:
        operation = _operation(args[0]) if args else ""
        attributes = _attributes(instance)
        attributes["db.operation.name"] = operation
        span, started = start_call(operation, attributes)
    except Exception:  # noqa: BLE001 - our failure: the command runs unobserved.
        report_internal_error(_WHERE)
        return None
    return span, started, operation


def _end_command(
    call: _Call, args: tuple[Any, ...], exc: BaseException | None, result: Any
) -> None:
    span, started, operation = call
    try:
        elapsed = end_call(span, started, exc)
        metrics = get_metrics()
        observe_query(metrics, "redis", operation, "", exc is not None, elapsed, span)
        cache_operation = _READS.get(operation)
        if cache_operation is not None:
            prefix = _prefix(args[1]) if len(args) > 1 else ""
            if operation == "MGET":
                observe_cache(
                    metrics, cache_operation, _level, prefix, None, exc is not None, elapsed
                )
                if exc is None:
                    _count_mget(metrics, args[1:], result)
            else:
                hit = None if exc is not None else _is_hit(operation, result)
                observe_cache(
                    metrics, cache_operation, _level, prefix, hit, exc is not None, elapsed
                )
    except Exception:  # noqa: BLE001 - our failure must not reach the caller.
        report_internal_error(_WHERE)


def _begin_pipeline(instance: Any) -> _PipelineCall | None:
    try:
        stack = _stack(instance)
        attributes = _attributes(instance)
        attributes["db.operation.name"] = _PIPELINE
        attributes["db.operation.batch.size"] = len(stack)
        span, started = start_call(_PIPELINE, attributes)
        reads = []
        for index, command in enumerate(stack):
            if command and _operation(command[0]) in _READS:
                reads.append((index, command))
    except Exception:  # noqa: BLE001 - our failure: the pipeline runs unobserved.
        report_internal_error(_WHERE)
        return None
    return span, started, reads


def _end_pipeline(call: _PipelineCall, exc: BaseException | None, results: Any) -> None:
    span, started, reads = call
    try:
        elapsed = end_call(span, started, exc)
        metrics = get_metrics()
        observe_query(metrics, "redis", _PIPELINE, "", exc is not None, elapsed, span)
        if exc is not None or not isinstance(results, list):
            return
        for index, command in reads:
            if index >= len(results) or isinstance(results[index], Exception):
                continue
            operation = _operation(command[0])
            if operation == "MGET":
                _count_mget(metrics, command[1:], results[index])
            elif len(command) > 1:
                _count(metrics, _prefix(command[1]), _is_hit(operation, results[index]))
    except Exception:  # noqa: BLE001 - our failure must not reach the caller.
        report_internal_error(_WHERE)


def _operation(name: Any) -> str:
    """The command name, upper case, its first word (``CLIENT SETNAME`` is ``CLIENT``)."""
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    elif not isinstance(name, str):
        return "other"
    word: str = name.split(" ", 1)[0]
    return word.upper()[:_MAX_OPERATION]


def _attributes(instance: Any) -> dict[str, Any]:
    attributes = dict(_BASE)
    pool = getattr(instance, "connection_pool", None)
    connection = getattr(pool, "connection_kwargs", None)
    if isinstance(connection, dict):
        host = connection.get("host")
        if host is None:
            host = connection.get("path")
        if isinstance(host, str):
            attributes["server.address"] = host
        port = connection.get("port")
        if isinstance(port, int) and "host" in connection:
            attributes["server.port"] = port
        database = connection.get("db")
        if database is not None:
            attributes["db.namespace"] = str(database)
    return attributes


def _stack(pipeline: Any) -> list[Sequence[Any]]:
    """The arguments of every command queued on ``pipeline`` (before it runs)."""
    strategy = getattr(pipeline, "_execution_strategy", None)
    entries: Any = getattr(strategy, "command_queue", None) if strategy is not None else None
    if entries is None:
        entries = getattr(pipeline, "command_stack", None)
    if entries is None:
        entries = getattr(pipeline, "_command_stack", ())
    return [
        entry[0] if isinstance(entry, tuple) else getattr(entry, "args", ()) for entry in entries
    ]


def _prefix(key: Any) -> str:
    return cache_key_prefix(key) if isinstance(key, (str, bytes)) else ""


def _is_hit(operation: str, result: Any) -> bool:
    if operation == "HGETALL":
        return bool(result)
    return result is not None


def _count(metrics: TelemetryMetrics, prefix: str, hit: bool) -> None:
    family = metrics.cache_hit_total if hit else metrics.cache_miss_total
    family.labels(_level, prefix).inc()


def _count_mget(metrics: TelemetryMetrics, keys: Sequence[Any], values: Any) -> None:
    if len(keys) == 1 and isinstance(keys[0], (list, tuple)):
        keys = keys[0]
    if isinstance(values, list):
        for key, value in zip(keys, values, strict=False):
            _count(metrics, _prefix(key), value is not None)
