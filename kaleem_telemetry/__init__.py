"""kaleem_telemetry: one call for traces, RED metrics, JSON logs and Sentry errors.

>>> from kaleem_telemetry import setup_telemetry
>>> telemetry = setup_telemetry(service_name="kaleem-api")  # doctest: +SKIP

See the README and docs/ for the whole picture; `__all__` below is the public API.
"""

from __future__ import annotations

from kaleem_telemetry._metrics_server import start_metrics_server
from kaleem_telemetry._setup import Telemetry, setup_telemetry, shutdown_telemetry
from kaleem_telemetry._version import __version__
from kaleem_telemetry.apps import instrument_app
from kaleem_telemetry.business import business_event, declare_business_labels
from kaleem_telemetry.cache import record_cache, track_cache
from kaleem_telemetry.config import TelemetryConfig
from kaleem_telemetry.context import bind_context, clear_context, get_context, telemetry_context
from kaleem_telemetry.db import track_db
from kaleem_telemetry.decorators import RetryJob, instrument, instrument_job
from kaleem_telemetry.exceptions import MissingDependencyError, TelemetryConfigError, TelemetryError
from kaleem_telemetry.exposition import metrics_asgi_app, metrics_wsgi_app
from kaleem_telemetry.logs import get_logger
from kaleem_telemetry.propagation import extract_context, inject_context
from kaleem_telemetry.sentry import capture_exception

__all__ = [
    "MissingDependencyError",
    "RetryJob",
    "Telemetry",
    "TelemetryConfig",
    "TelemetryConfigError",
    "TelemetryError",
    "__version__",
    "bind_context",
    "business_event",
    "capture_exception",
    "clear_context",
    "declare_business_labels",
    "extract_context",
    "get_context",
    "get_logger",
    "inject_context",
    "instrument",
    "instrument_app",
    "instrument_job",
    "metrics_asgi_app",
    "metrics_wsgi_app",
    "record_cache",
    "setup_telemetry",
    "shutdown_telemetry",
    "start_metrics_server",
    "telemetry_context",
    "track_cache",
    "track_db",
]
