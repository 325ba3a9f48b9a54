"""Health checks and the ``/health/live`` and ``/health/ready`` endpoints (docs/reference.md).

Register checks once, at startup::

    from kaleem_telemetry import health

    health.register("postgres", health.sqlalchemy_check(engine))
    health.register("redis", health.redis_check(redis_client), timeout=1.0)
    health.register("search", qdrant_is_up, critical=False)

A check is any sync or async callable taking no arguments. It passes unless it
returns ``False``, raises, or runs longer than its timeout. On each readiness
probe every check runs concurrently: async checks as tasks on the running loop,
sync checks each in its own daemon thread. A check that is cut by its timeout
keeps running in the background, and the next probe waits for that same run
instead of starting another, so a hung backend cannot pile up threads.

`health_asgi_app()` and `health_wsgi_app()` answer both endpoints, dispatching on
the last path segment (``.../live`` and ``.../ready``), so they work mounted at
``/health`` or served on their own. Liveness never runs checks: it reports that
the process answers. Readiness answers ``503`` when a critical check fails, and
sets ``health_check_status{check}`` to 1 or 0 for every check it ran. Error texts
are passed through the redaction policy and cut to 300 characters.

Added in 0.1.0.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from kaleem_telemetry._asgi_endpoints import send_response, serve_lifespan
from kaleem_telemetry._guard import internal_errors
from kaleem_telemetry._types import ASGIApp, Environ, Receive, Scope, Send, StartResponse, WSGIApp
from kaleem_telemetry.exceptions import TelemetryConfigError

__all__ = [
    "health_asgi_app",
    "health_wsgi_app",
    "live_report",
    "pymongo_check",
    "rabbitmq_check",
    "ready_report",
    "ready_report_sync",
    "redis_check",
    "register",
    "registered",
    "sqlalchemy_check",
    "unregister",
]

_LOGGER = logging.getLogger(__name__)

Check = Callable[[], Any]
"""A health check: a sync or async callable without arguments."""

_MAX_ERROR = 300


@dataclass(frozen=True)
class HealthCheck:
    """A registered check.

    Attributes:
        name: The name shown in ``/health/ready`` and the ``check`` label.
        check: The callable.
        critical: Whether its failure makes the service not ready (503).
        timeout: Seconds before the check counts as failed.
    """

    name: str
    check: Check
    critical: bool
    timeout: float


_LOCK = threading.Lock()
_CHECKS: dict[str, HealthCheck] = {}
_INFLIGHT: dict[str, concurrent.futures.Future[Any]] = {}


def register(name: str, check: Check, *, critical: bool = True, timeout: float = 2.0) -> None:
    """Register (or replace) the check called ``name``.

    Args:
        name: The check name, for example ``"postgres"``.
        check: A sync or async callable without arguments; it fails when it
            returns ``False``, raises, or times out.
        critical: Whether a failure answers ``503`` on ``/health/ready``; a
            non-critical failure is reported but the service stays ready.
        timeout: Seconds the check may take.

    Raises:
        TelemetryConfigError: ``name`` is empty, ``check`` is not callable, or
            ``timeout`` is not positive.
    """
    if not isinstance(name, str) or not name:
        msg = f"A health check needs a non-empty name, got {name!r}."
        raise TelemetryConfigError(msg)
    candidate: object = check  # typed callers cannot get this wrong; untyped ones can
    if not callable(candidate):
        msg = f"Health check {name!r} must be callable, got {check!r}."
        raise TelemetryConfigError(msg)
    if not timeout > 0:
        msg = f"Health check {name!r} needs a positive timeout, got {timeout!r}."
        raise TelemetryConfigError(msg)
    with _LOCK:
        _CHECKS[name] = HealthCheck(name, check, critical, float(timeout))


def unregister(name: str) -> None:
    """Remove the check called ``name``; a name that is not registered is ignored.

    Args:
        name: The check name.
    """
    with _LOCK:
        _CHECKS.pop(name, None)


def registered() -> dict[str, HealthCheck]:
    """Return a snapshot of the registered checks by name."""
    with _LOCK:
        return dict(_CHECKS)


def reset_for_tests() -> None:
    """Forget every registered check."""
    with _LOCK:
        _CHECKS.clear()
        _INFLIGHT.clear()


# --- running checks ---------------------------------------------------------


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    try:
        from kaleem_telemetry.redaction import get_redactor
    except ImportError:  # a partial install: without the policy, show only the type.
        text = type(exc).__name__
    else:
        text = get_redactor().redact_string(text)  # never raises, by its contract
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 3] + "..."


def _is_async_callable(check: Check) -> bool:
    return inspect.iscoroutinefunction(check) or inspect.iscoroutinefunction(
        getattr(check, "__call__", None)  # noqa: B004 -- async __call__ of a callable object
    )


def _run_sync(check: Check, future: concurrent.futures.Future[Any]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = check()
    except BaseException as exc:  # noqa: BLE001 -- handed to the waiting probe
        future.set_exception(exc)
    else:
        future.set_result(result)


async def _in_thread(hc: HealthCheck) -> Any:
    with _LOCK:
        future = _INFLIGHT.get(hc.name)
        if future is None or future.done():
            future = concurrent.futures.Future()
            _INFLIGHT[hc.name] = future
            threading.Thread(
                target=_run_sync,
                args=(hc.check, future),
                name=f"kaleem-telemetry-health-{hc.name}",
                daemon=True,
            ).start()
    # The thread owns the future (it is "running"), so a probe that gives up
    # cannot cancel it: the next probe joins the same run.
    return await asyncio.wrap_future(future)


async def _execute(hc: HealthCheck) -> Any:
    if _is_async_callable(hc.check):
        result = await hc.check()
    else:
        result = await _in_thread(hc)
    if inspect.isawaitable(result):
        result = await result
    return result


def _consume(task: asyncio.Future[Any]) -> None:
    # Retrieve the outcome of an abandoned run so asyncio does not log it.
    if not task.cancelled():
        task.exception()


async def _run_one(hc: HealthCheck) -> tuple[bool, dict[str, Any]]:
    started = time.perf_counter()
    task = asyncio.ensure_future(_execute(hc))
    done, _ = await asyncio.wait({task}, timeout=hc.timeout)
    error: str | None = None
    if not done:
        task.cancel()
        task.add_done_callback(_consume)
        error = f"timed out after {hc.timeout:g}s"
    else:
        exc = task.exception()
        if exc is not None:
            error = _describe(exc)
        elif task.result() is False:
            error = "check returned False"
    entry: dict[str, Any] = {
        "status": "ok" if error is None else "error",
        "critical": hc.critical,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
    }
    if error is not None:
        entry["error"] = error
    return error is None, entry


async def ready_report(
    registry: CollectorRegistry | None = None,
) -> tuple[int, dict[str, Any]]:
    """Run every registered check concurrently and return ``(status code, body)``.

    Args:
        registry: Where ``health_check_status`` is set; the default is the process one.

    Returns:
        ``200`` and ``{"status": "ready", "checks": {...}}``, or ``503`` and
        ``"not_ready"`` when a critical check failed.
    """
    checks = list(registered().values())
    results = await asyncio.gather(*(_run_one(hc) for hc in checks))
    ready = True
    body: dict[str, Any] = {"status": "ready", "checks": {}}
    for hc, (ok, entry) in zip(checks, results, strict=True):
        body["checks"][hc.name] = entry
        if not ok and hc.critical:
            ready = False
    with internal_errors("health_check_status"):
        from kaleem_telemetry.metrics import get_metrics

        gauge = get_metrics(registry).health_check_status
        for hc, (ok, _) in zip(checks, results, strict=True):
            gauge.labels(hc.name).set(1 if ok else 0)
    if not ready:
        body["status"] = "not_ready"
    return (200 if ready else 503), body


def ready_report_sync(
    registry: CollectorRegistry | None = None,
) -> tuple[int, dict[str, Any]]:
    """Run `ready_report` from synchronous code (WSGI, Django views).

    The checks run on a private event loop in a helper thread, so this works
    whether or not the calling thread already runs a loop. Async checks must
    therefore not depend on a particular loop.

    Args:
        registry: Where ``health_check_status`` is set; the default is the process one.
    """
    with concurrent.futures.ThreadPoolExecutor(1, "kaleem-telemetry-ready") as pool:
        return pool.submit(asyncio.run, ready_report(registry)).result()


# --- liveness ---------------------------------------------------------------


def _process_age() -> float:
    # Linux: the process start time in clock ticks since boot, against the uptime.
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0  # elsewhere, count from the import of this module.


_STARTED_AT = time.time() - _process_age()


def _memory_usage_mb() -> float | None:
    try:
        with open("/proc/self/statm", "rb") as f:
            resident_pages = int(f.read().split()[1])
        return round(resident_pages * os.sysconf("SC_PAGE_SIZE") / 1048576, 1)
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import resource
    except ImportError:  # Windows: no portable way without psutil.
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is the peak, in bytes on macOS and kilobytes elsewhere.
    return round(peak / (1048576 if sys.platform == "darwin" else 1024), 1)


def live_report() -> dict[str, Any]:
    """Return the ``/health/live`` body: status, process uptime and resident memory."""
    return {
        "status": "alive",
        "uptime_seconds": round(time.time() - _STARTED_AT, 3),
        "memory_usage_mb": _memory_usage_mb(),
    }


# --- ASGI / WSGI apps --------------------------------------------------------

_JSON_HEADERS = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def _endpoint(path: str) -> str | None:
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return last if last in ("live", "ready") else None


def _not_found() -> tuple[int, dict[str, Any]]:
    return 404, {"error": "not found: use /health/live or /health/ready"}


def health_asgi_app(*, registry: CollectorRegistry | None = None) -> ASGIApp:
    """Return a pure ASGI app answering ``.../live`` and ``.../ready``.

    Args:
        registry: Where ``health_check_status`` is set; the default is the process one.
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method = scope.get("method", "GET")
        endpoint = _endpoint(scope.get("path", ""))
        if endpoint is None:
            status, body = _not_found()
        elif method not in ("GET", "HEAD"):
            status, body = 405, {"error": "method not allowed"}
        elif endpoint == "live":
            status, body = 200, live_report()
        else:
            status, body = await ready_report(registry)
        payload = orjson.dumps(body)
        headers = [*_JSON_HEADERS, ("Content-Length", str(len(payload)))]
        await send_response(send, status, headers, b"" if method == "HEAD" else payload)

    return app


def health_wsgi_app(*, registry: CollectorRegistry | None = None) -> WSGIApp:
    """Return a WSGI app answering ``.../live`` and ``.../ready``.

    Args:
        registry: Where ``health_check_status`` is set; the default is the process one.
    """

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = (environ.get("SCRIPT_NAME") or "") + (environ.get("PATH_INFO") or "")
        endpoint = _endpoint(path)
        if endpoint is None:
            status, body = _not_found()
        elif method not in ("GET", "HEAD"):
            status, body = 405, {"error": "method not allowed"}
        elif endpoint == "live":
            status, body = 200, live_report()
        else:
            status, body = ready_report_sync(registry)
        payload = orjson.dumps(body)
        start_response(
            f"{status} {_REASONS[status]}",
            [*_JSON_HEADERS, ("Content-Length", str(len(payload)))],
        )
        return [b"" if method == "HEAD" else payload]

    return app


# --- ready-made checks -------------------------------------------------------
# Each lives next to its integration (kaleem_telemetry.integrations.<lib>.health_check);
# these names stay for the code that imports them from here.


def redis_check(client: Any) -> Check:
    """Return a check that sends ``PING`` with a redis-py client (sync or ``redis.asyncio``).

    The same as `kaleem_telemetry.integrations.redis.health_check`.

    Args:
        client: A ``redis.Redis`` or ``redis.asyncio.Redis`` (or cluster) client.
    """
    from kaleem_telemetry.integrations._health_checks import redis_check as check

    return check(client)


def sqlalchemy_check(engine: Any, *, statement: str = "SELECT 1") -> Check:
    """Return a check that runs ``SELECT 1`` on a SQLAlchemy ``Engine`` or ``AsyncEngine``.

    The same as `kaleem_telemetry.integrations.sqlalchemy.health_check`.

    Args:
        engine: The engine.
        statement: The statement to run.
    """
    from kaleem_telemetry.integrations._health_checks import sqlalchemy_check as check

    return check(engine, statement=statement)


def pymongo_check(client: Any) -> Check:
    """Return a check that runs the ``ping`` command with a pymongo (or async) client.

    The same as `kaleem_telemetry.integrations.pymongo.health_check`.

    Args:
        client: A ``pymongo.MongoClient`` or ``pymongo.AsyncMongoClient``.
    """
    from kaleem_telemetry.integrations._health_checks import pymongo_check as check

    return check(client)


def rabbitmq_check(url: str) -> Callable[[], Awaitable[None]]:
    """Return a check that a RabbitMQ broker at ``url`` answers the AMQP 0-9-1 handshake.

    The same as `kaleem_telemetry.integrations.pika.health_check` (and aio_pika's);
    it needs no client library.

    Args:
        url: ``amqp://user:password@host:port/vhost`` or ``amqps://...``.

    Raises:
        TelemetryConfigError: ``url`` is not an ``amqp``/``amqps`` URL with a host.
    """
    from kaleem_telemetry.integrations._health_checks import rabbitmq_check as check

    return check(url)
