"""The ready-made health checks, one per integration (``integrations.<lib>.health_check``).

Each takes the client the application already has and imports no library of
its own (the RabbitMQ one needs none), so `kaleem_telemetry.health` keeps
offering them under their old names without reaching the integrations.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from kaleem_telemetry.exceptions import TelemetryConfigError

__all__ = ["pymongo_check", "rabbitmq_check", "redis_check", "sqlalchemy_check"]


def _is_async_client(client: object) -> bool:
    module = type(client).__module__
    return ".asyncio" in module or ".asynchronous" in module or module.startswith("motor")


def redis_check(client: Any) -> Callable[[], Any]:
    """Return a check that sends ``PING`` with a redis-py client (sync or ``redis.asyncio``).

    Args:
        client: A ``redis.Redis`` or ``redis.asyncio.Redis`` (or cluster) client.
    """
    if _is_async_client(client):

        async def async_check() -> bool:
            return bool(await client.ping())

        return async_check

    def check() -> bool:
        return bool(client.ping())

    return check


def sqlalchemy_check(engine: Any, *, statement: str = "SELECT 1") -> Callable[[], Any]:
    """Return a check that runs ``SELECT 1`` on a SQLAlchemy ``Engine`` or ``AsyncEngine``.

    SQLAlchemy is imported when the check first runs.

    Args:
        engine: The engine.
        statement: The statement to run.
    """
    if hasattr(engine, "sync_engine"):

        async def async_check() -> None:
            from sqlalchemy import text

            async with engine.connect() as conn:
                await conn.execute(text(statement))

        return async_check

    def check() -> None:
        from sqlalchemy import text

        with engine.connect() as conn:
            conn.execute(text(statement))

    return check


def pymongo_check(client: Any) -> Callable[[], Any]:
    """Return a check that runs the ``ping`` command with a pymongo (or async) client.

    Give the client a short ``serverSelectionTimeoutMS``: the check's own timeout
    cuts the probe, but pymongo keeps its thread busy until its own timeout.

    Args:
        client: A ``pymongo.MongoClient`` or ``pymongo.AsyncMongoClient``.
    """
    if _is_async_client(client):

        async def async_check() -> None:
            await client.admin.command("ping")

        return async_check

    def check() -> None:
        client.admin.command("ping")

    return check


_AMQP_HEADER = b"AMQP\x00\x00\x09\x01"
_CONNECTION_START = (10, 10)


def rabbitmq_check(url: str) -> Callable[[], Awaitable[None]]:
    """Return a check that a RabbitMQ broker at ``url`` answers the AMQP 0-9-1 handshake.

    It opens a TCP (or TLS, for ``amqps://``) connection, sends the protocol
    header and expects ``Connection.Start``, then closes. It proves the broker
    is up and speaking AMQP, without a client library and without logging in:
    credentials in ``url`` are not checked (and never appear in errors).

    Args:
        url: ``amqp://user:password@host:port/vhost`` or ``amqps://...``.

    Raises:
        TelemetryConfigError: ``url`` is not an ``amqp``/``amqps`` URL with a host.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        safe = f"{parts.scheme}://{parts.hostname or ''}"
        msg = f"rabbitmq_check needs an amqp:// or amqps:// URL with a host, got {safe!r}."
        raise TelemetryConfigError(msg)
    host = parts.hostname
    tls = parts.scheme == "amqps"
    port = parts.port or (5671 if tls else 5672)

    async def check() -> None:
        context = ssl.create_default_context() if tls else None
        reader, writer = await asyncio.open_connection(host, port, ssl=context)
        try:
            writer.write(_AMQP_HEADER)
            await writer.drain()
            frame_type, channel, size = struct.unpack(">BHI", await reader.readexactly(7))
            payload = await reader.readexactly(size + 1)
            method = struct.unpack(">HH", payload[:4]) if size >= 4 else None
            if frame_type != 1 or channel != 0 or method != _CONNECTION_START:
                msg = f"{host}:{port} did not answer with AMQP Connection.Start"
                raise ConnectionError(msg)
        finally:
            writer.close()
            # The broker may reset the half-open connection; that does not matter.
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    return check
