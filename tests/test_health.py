from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from kaleem_telemetry import health
from kaleem_telemetry.exceptions import TelemetryConfigError


@pytest.fixture(name="release")
def _release() -> Iterator[threading.Event]:
    """An event that hanging sync checks wait on; set at teardown so their threads end."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture(name="closed_port")
def _closed_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ok() -> bool:
    return True


async def _async_ok() -> None:
    await asyncio.sleep(0)


def _gauge(registry: CollectorRegistry, check: str) -> float | None:
    return registry.get_sample_value("health_check_status", {"check": check})


class TestRegister:
    @pytest.mark.parametrize(
        ("name", "check", "timeout", "match"),
        [
            ("", _ok, 1.0, "non-empty name"),
            ("db", "not callable", 1.0, "must be callable"),
            ("db", _ok, 0, "positive timeout"),
            ("db", _ok, -1.0, "positive timeout"),
        ],
    )
    def test_invalid_registration(self, name: str, check: Any, timeout: float, match: str) -> None:
        """A bad name, a non-callable or a non-positive timeout raises TelemetryConfigError."""
        with pytest.raises(TelemetryConfigError, match=match):
            health.register(name, check, timeout=timeout)

    def test_register_replace_unregister(self) -> None:
        """Registering a name again replaces it; unregister removes it and ignores unknown names."""
        health.register("db", _ok)
        health.register("db", _async_ok, critical=False, timeout=0.5)
        checks = health.registered()
        health.unregister("db")
        health.unregister("never-registered")

        assert checks["db"] == health.HealthCheck("db", _async_ok, False, 0.5)
        assert health.registered() == {}


class TestReady:
    async def test_all_pass(self, registry: CollectorRegistry) -> None:
        """Sync and async passing checks give 200, 'ready', and gauges at 1."""
        health.register("sync", _ok)
        health.register("async", _async_ok)
        health.register("returns-none", lambda: None)

        status, body = await health.ready_report(registry)

        assert status == 200
        assert body["status"] == "ready"
        assert set(body["checks"]) == {"sync", "async", "returns-none"}
        for entry in body["checks"].values():
            assert entry["status"] == "ok"
            assert entry["duration_ms"] >= 0
            assert "error" not in entry
        assert _gauge(registry, "sync") == 1

    async def test_no_checks_is_ready(self, registry: CollectorRegistry) -> None:
        """Without checks the service is ready."""
        assert await health.ready_report(registry) == (200, {"status": "ready", "checks": {}})

    @pytest.mark.parametrize(
        ("check", "error"),
        [
            (lambda: False, "check returned False"),
            (lambda: 1 / 0, "ZeroDivisionError: division by zero"),
        ],
    )
    async def test_critical_failure_is_503(
        self, registry: CollectorRegistry, check: Any, error: str
    ) -> None:
        """A critical check that returns False or raises makes /ready answer 503."""
        health.register("db", check)
        health.register("cache", _ok)

        status, body = await health.ready_report(registry)

        assert status == 503
        assert body["status"] == "not_ready"
        assert body["checks"]["db"]["status"] == "error"
        assert body["checks"]["db"]["error"] == error
        assert body["checks"]["cache"]["status"] == "ok"
        assert _gauge(registry, "db") == 0
        assert _gauge(registry, "cache") == 1

    async def test_non_critical_failure_stays_ready(self, registry: CollectorRegistry) -> None:
        """A failing non-critical check is reported but the answer stays 200."""

        async def broken() -> bool:
            return False

        health.register("search", broken, critical=False)

        status, body = await health.ready_report(registry)

        assert status == 200
        assert body["status"] == "ready"
        assert body["checks"]["search"] == {
            "status": "error",
            "critical": False,
            "duration_ms": body["checks"]["search"]["duration_ms"],
            "error": "check returned False",
        }

    async def test_hanging_sync_check_is_cut(
        self, registry: CollectorRegistry, release: threading.Event
    ) -> None:
        """A sync check that never returns fails by its timeout while the others still report."""
        health.register("hangs", release.wait, timeout=0.3)
        health.register("fine", _ok)
        health.register("fine-async", _async_ok)

        status, body = await health.ready_report(registry)

        assert status == 503
        assert body["checks"]["hangs"]["error"] == "timed out after 0.3s"
        assert body["checks"]["fine"]["status"] == "ok"
        assert body["checks"]["fine-async"]["status"] == "ok"

    async def test_hanging_async_check_is_cut(self, registry: CollectorRegistry) -> None:
        """An async check that never returns is cancelled at its timeout."""
        cancelled = asyncio.Event()

        async def hangs() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                cancelled.set()

        health.register("hangs", hangs, timeout=0.2, critical=False)
        health.register("fine", _ok)

        status, body = await health.ready_report(registry)
        await asyncio.wait_for(cancelled.wait(), 5)

        assert status == 200
        assert body["checks"]["hangs"]["error"] == "timed out after 0.2s"
        assert body["checks"]["fine"]["status"] == "ok"

    async def test_hung_check_is_not_started_twice(
        self, registry: CollectorRegistry, release: threading.Event
    ) -> None:
        """A probe while a sync check still hangs joins that run instead of starting a thread."""
        calls: list[int] = []

        def hangs() -> None:
            calls.append(1)
            release.wait()

        health.register("hangs", hangs, timeout=0.2)
        await health.ready_report(registry)
        await health.ready_report(registry)

        assert calls == [1]

    async def test_checks_run_concurrently(self, registry: CollectorRegistry) -> None:
        """Two checks each waiting for the other can only pass if they run at the same time."""
        barrier = threading.Barrier(2, timeout=5)
        health.register("a", barrier.wait, timeout=5)
        health.register("b", barrier.wait, timeout=5)

        status, _ = await health.ready_report(registry)

        assert status == 200

    async def test_sync_callable_returning_awaitable(self, registry: CollectorRegistry) -> None:
        """A sync callable that returns a coroutine (like redis.asyncio ping) is awaited."""
        health.register("lazy", lambda: _async_ok())

        status, body = await health.ready_report(registry)

        assert status == 200
        assert body["checks"]["lazy"]["status"] == "ok"

    async def test_errors_are_redacted_and_bounded(self, registry: CollectorRegistry) -> None:
        """Error texts never carry URL credentials and are cut to 300 characters."""
        password = "pw-" + "x" * 12

        def leaks() -> None:
            msg = f"cannot reach redis://app:{password}@10.0.0.1:6379/0 " + "y" * 1000
            raise ConnectionError(msg)

        health.register("redis", leaks)

        _, body = await health.ready_report(registry)
        error = body["checks"]["redis"]["error"]

        assert password not in error
        assert error.startswith("ConnectionError: cannot reach redis://")
        assert len(error) <= 300

    def test_ready_report_sync_inside_running_loop(self, registry: CollectorRegistry) -> None:
        """ready_report_sync works from a thread that already runs an event loop."""
        health.register("async", _async_ok)

        async def main() -> tuple[int, dict[str, Any]]:
            return health.ready_report_sync(registry)

        status, body = asyncio.run(main())

        assert status == 200
        assert body["checks"]["async"]["status"] == "ok"


class TestLive:
    def test_live_report(self) -> None:
        """/health/live reports alive, the process uptime and the resident memory."""
        report = health.live_report()

        assert report["status"] == "alive"
        assert report["uptime_seconds"] >= 0
        assert report["memory_usage_mb"] > 0


async def _asgi(app: Any, path: str, method: str = "GET") -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "method": method, "path": path, "headers": []}, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


def _wsgi(app: Any, path: str, method: str = "GET") -> tuple[str, dict[str, str], bytes]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen["status"], seen["headers"] = status, dict(headers)
        return lambda _data: None

    body = b"".join(app({"REQUEST_METHOD": method, "PATH_INFO": path}, start_response))
    return seen["status"], seen["headers"], body


class TestApps:
    @pytest.mark.parametrize("path", ["/health/live", "/live", "/ops/health/live/"])
    async def test_asgi_live(self, path: str) -> None:
        """The ASGI app answers liveness on any path ending in /live."""
        status, headers, body = await _asgi(health.health_asgi_app(), path)

        assert status == 200
        assert headers[b"content-type"] == b"application/json"
        assert orjson.loads(body)["status"] == "alive"

    async def test_asgi_ready_503(self, registry: CollectorRegistry) -> None:
        """The ASGI app answers 503 with the JSON body when a critical check fails."""
        health.register("db", lambda: False)

        status, _, body = await _asgi(health.health_asgi_app(registry=registry), "/health/ready")

        assert status == 503
        assert orjson.loads(body)["checks"]["db"]["status"] == "error"

    @pytest.mark.parametrize(
        ("path", "method", "expected"),
        [("/health/other", "GET", 404), ("/health/live", "POST", 405)],
    )
    async def test_asgi_errors(self, path: str, method: str, expected: int) -> None:
        """Unknown paths answer 404 and other methods 405."""
        status, _, _ = await _asgi(health.health_asgi_app(), path, method)

        assert status == expected

    async def test_asgi_head(self) -> None:
        """HEAD answers headers without a body."""
        status, headers, body = await _asgi(health.health_asgi_app(), "/health/live", "HEAD")

        assert status == 200
        assert int(headers[b"content-length"]) > 0
        assert body == b""

    def test_wsgi_ready_and_live(self, registry: CollectorRegistry) -> None:
        """The WSGI app answers both endpoints, 503 on a critical failure."""
        app = health.health_wsgi_app(registry=registry)
        health.register("db", _ok)
        ok_status, headers, body = _wsgi(app, "/health/ready")
        health.register("db", lambda: False)
        bad_status, _, _ = _wsgi(app, "/health/ready")
        live_status, _, live = _wsgi(app, "/health/live")

        assert ok_status == "200 OK"
        assert headers["Content-Type"] == "application/json"
        assert orjson.loads(body) == {
            "status": "ready",
            "checks": {"db": orjson.loads(body)["checks"]["db"]},
        }
        assert bad_status == "503 Service Unavailable"
        assert live_status == "200 OK"
        assert orjson.loads(live)["status"] == "alive"

    def test_wsgi_404(self) -> None:
        """The WSGI app answers 404 on other paths."""
        status, _, _ = _wsgi(health.health_wsgi_app(), "/nope")

        assert status == "404 Not Found"


class TestRedisCheck:
    def test_sync_client(self, redis_url: str, registry: CollectorRegistry) -> None:
        """redis_check passes against the local Redis with a sync client."""
        redis = pytest.importorskip("redis")
        client = redis.Redis.from_url(redis_url, socket_timeout=2)
        try:
            health.register("redis", health.redis_check(client))
            status, body = health.ready_report_sync(registry)
        finally:
            client.close()

        assert status == 200
        assert body["checks"]["redis"]["status"] == "ok"

    async def test_async_client(self, redis_url: str, registry: CollectorRegistry) -> None:
        """redis_check passes against the local Redis with a redis.asyncio client."""
        redis_asyncio = pytest.importorskip("redis.asyncio")
        client = redis_asyncio.Redis.from_url(redis_url, socket_timeout=2)
        try:
            check = health.redis_check(client)
            health.register("redis", check)
            status, _ = await health.ready_report(registry)
        finally:
            await client.aclose()

        assert asyncio.iscoroutinefunction(check)
        assert status == 200

    def test_down(self, closed_port: int, registry: CollectorRegistry) -> None:
        """redis_check fails when nothing listens on the port."""
        redis = pytest.importorskip("redis")
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = redis.Redis(
            host="127.0.0.1",
            port=closed_port,
            socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            health.register("redis", health.redis_check(client))
            status, body = health.ready_report_sync(registry)
        finally:
            client.close()

        assert status == 503
        assert "ConnectionError" in body["checks"]["redis"]["error"]


def _sqlalchemy_url(postgres_url: str) -> str:
    return "postgresql+psycopg://" + postgres_url.split("://", 1)[1]


class TestSqlalchemyCheck:
    def test_engine(self, postgres_url: str, registry: CollectorRegistry) -> None:
        """sqlalchemy_check runs SELECT 1 on the local PostgreSQL through psycopg."""
        sqlalchemy = pytest.importorskip("sqlalchemy")
        engine = sqlalchemy.create_engine(_sqlalchemy_url(postgres_url))
        try:
            health.register("postgres", health.sqlalchemy_check(engine))
            status, body = health.ready_report_sync(registry)
        finally:
            engine.dispose()

        assert status == 200
        assert body["checks"]["postgres"]["status"] == "ok"

    async def test_async_engine(self, postgres_url: str, registry: CollectorRegistry) -> None:
        """sqlalchemy_check runs SELECT 1 through an AsyncEngine."""
        pytest.importorskip("greenlet")  # SQLAlchemy's asyncio layer needs it
        asyncio_ext = pytest.importorskip("sqlalchemy.ext.asyncio")
        engine = asyncio_ext.create_async_engine(_sqlalchemy_url(postgres_url))
        try:
            health.register("postgres", health.sqlalchemy_check(engine))
            status, body = await health.ready_report(registry)
        finally:
            await engine.dispose()

        assert status == 200, body

    def test_wrong_database(self, postgres_url: str, registry: CollectorRegistry) -> None:
        """A database that does not exist fails the check with the driver's error."""
        sqlalchemy = pytest.importorskip("sqlalchemy")
        url = _sqlalchemy_url(postgres_url).rsplit("/", 1)[0] + "/kt_no_such_database"
        engine = sqlalchemy.create_engine(url)
        try:
            health.register("postgres", health.sqlalchemy_check(engine), timeout=5)
            status, body = health.ready_report_sync(registry)
        finally:
            engine.dispose()

        assert status == 503
        assert "OperationalError" in body["checks"]["postgres"]["error"]


class TestRabbitmqCheck:
    async def test_broker_up(self, rabbitmq_url: str, registry: CollectorRegistry) -> None:
        """rabbitmq_check passes against the local RabbitMQ."""
        health.register("rabbitmq", health.rabbitmq_check(rabbitmq_url))

        status, body = await health.ready_report(registry)

        assert status == 200, body

    async def test_broker_down(self, closed_port: int, registry: CollectorRegistry) -> None:
        """Nothing on the port fails the check without echoing the password."""
        health.register(
            "rabbitmq", health.rabbitmq_check(f"amqp://u:hunter2@127.0.0.1:{closed_port}/")
        )

        status, body = await health.ready_report(registry)

        assert status == 503
        assert "ConnectionRefusedError" in body["checks"]["rabbitmq"]["error"]
        assert "hunter2" not in body["checks"]["rabbitmq"]["error"]

    async def test_not_amqp(self, redis_url: str, registry: CollectorRegistry) -> None:
        """A server that does not speak AMQP (here Redis) fails the check."""
        port = redis_url.rsplit(":", 1)[1].split("/", 1)[0]
        health.register("rabbitmq", health.rabbitmq_check(f"amqp://127.0.0.1:{port}/"))

        status, body = await health.ready_report(registry)

        assert status == 503
        assert body["checks"]["rabbitmq"]["status"] == "error"

    def test_bad_url(self) -> None:
        """A URL that is not amqp:// raises without echoing credentials."""
        with pytest.raises(TelemetryConfigError, match="amqp://") as info:
            health.rabbitmq_check("http://user:hunter2@127.0.0.1/")

        assert "hunter2" not in str(info.value)


class TestPymongoCheck:
    def test_unreachable(self, closed_port: int, registry: CollectorRegistry) -> None:
        """No MongoDB runs in the tests: a client on a closed port fails fast with an error."""
        pymongo = pytest.importorskip("pymongo")
        client = pymongo.MongoClient(
            "127.0.0.1", closed_port, serverSelectionTimeoutMS=300, connect=False
        )
        try:
            health.register("mongo", health.pymongo_check(client), timeout=5)
            started = time.monotonic()
            status, body = health.ready_report_sync(registry)
            elapsed = time.monotonic() - started
        finally:
            client.close()

        assert status == 503
        assert "ServerSelectionTimeoutError" in body["checks"]["mongo"]["error"]
        assert elapsed < 5
