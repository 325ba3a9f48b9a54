"""Shared fixtures: global-state resets and the local services on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from prometheus_client import CollectorRegistry

from kaleem_telemetry.testing import TelemetryCapture, capture_telemetry


@pytest.fixture(autouse=True)
def _reset_telemetry_globals() -> Iterator[None]:
    """Give every test a process without live telemetry, and clean up after it."""
    yield
    from kaleem_telemetry import _setup, context, logs, redaction

    live = _setup.current()
    if live is not None:
        live.shutdown(2.0)
    _setup.reset_for_tests()
    for name in ("tracing", "_metrics_server", "metrics", "sentry", "health"):
        module = sys.modules.get(f"kaleem_telemetry.{name}")
        reset = getattr(module, "reset_for_tests", None)
        if reset is not None:
            reset()
    logs.reset_for_tests()
    context.clear_context()
    redaction.set_redactor(redaction.Redactor())


@pytest.fixture(name="registry")
def _registry() -> CollectorRegistry:
    """A fresh Prometheus registry per test, so counts start at zero."""
    return CollectorRegistry()


@pytest.fixture(name="captured")
def _captured(registry: CollectorRegistry) -> Iterator[TelemetryCapture]:
    """Capture logs, spans, Sentry events and the test registry's metrics."""
    with capture_telemetry(registry) as captured:
        yield captured


@pytest.fixture(name="span_exporter")
def _span_exporter() -> Iterator[Any]:
    """Configure tracing with no exporter and collect its finished spans in memory."""
    from kaleem_telemetry import tracing
    from kaleem_telemetry.config import TelemetryConfig

    tracing.configure_tracing(TelemetryConfig.from_env(environ={"OTEL_TRACES_EXPORTER": "none"}))
    exporter, remove = tracing.capture_spans()
    yield exporter
    remove()


def _require_service(url: str, what: str, env: str) -> str:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port
    assert port is not None, f"{env}={url!r} needs an explicit port"
    try:
        with socket.create_connection((host, port), timeout=2.0):
            pass
    except OSError as exc:
        pytest.fail(
            f"{what} is not reachable at {host}:{port} ({exc}). Start it (see .ci/run) "
            f"or point {env} at a running one.",
            pytrace=False,
        )
    return url


@pytest.fixture(name="postgres_url", scope="session")
def _postgres_url() -> str:
    """The URL of the local PostgreSQL server (trust auth)."""
    url = os.environ.get("KT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    return _require_service(url, "PostgreSQL", "KT_TEST_POSTGRES_URL")


@pytest.fixture(name="redis_url", scope="session")
def _redis_url() -> str:
    """The URL of the local Redis server."""
    url = os.environ.get("KT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    return _require_service(url, "Redis", "KT_TEST_REDIS_URL")


@pytest.fixture(name="rabbitmq_url", scope="session")
def _rabbitmq_url() -> str:
    """The URL of the local RabbitMQ broker."""
    url = os.environ.get("KT_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
    return _require_service(url, "RabbitMQ", "KT_TEST_RABBITMQ_URL")
