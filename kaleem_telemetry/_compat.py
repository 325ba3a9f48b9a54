"""Every touch of another library's private names, each with a public fallback.

Upgrades change private names without notice. Each function here names what it
relies on, degrades to a documented public behaviour when that is gone, and is
pinned by a canary test (``tests/test_compat.py``) that fails, naming the
library version, when an upgrade changes it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = [
    "FASTAPI_TELEMETRY_DEFAULTS",
    "fastapi_has_native_telemetry",
    "fastapi_telemetry_config",
    "fastapi_telemetry_is_default",
]

#: FastAPI's ``telemetry=`` settings when the application passed none (0.165).
FASTAPI_TELEMETRY_DEFAULTS: dict[str, Any] = {
    "tracer_provider": None,
    "meter_provider": None,
    "logger_provider": None,
    "tracing": True,
    "metrics": True,
    "logs": True,
    "operation_spans": True,
    "exclude": None,
}


def fastapi_has_native_telemetry(app: Any) -> bool:
    """Return whether ``app`` is a FastAPI that traces by itself (FastAPI 0.165 and later).

    Public signs only: the application is a FastAPI, and FastAPI's public
    ``fastapi.telemetry`` module (which its application module imports) exists.
    """
    is_fastapi = any(cls.__module__.partition(".")[0] == "fastapi" for cls in type(app).__mro__)
    return is_fastapi and "fastapi.telemetry" in sys.modules


def fastapi_telemetry_config(app: Any) -> dict[str, Any] | None:
    """Return the live ``telemetry=`` settings of a FastAPI application, or ``None``.

    FastAPI keeps what ``FastAPI(telemetry={...})`` was given, merged over its
    defaults, in the private dict ``app._telemetry``, and its request handler
    reads that same dict on every request; changing it in place changes what
    the application records from its next request on. There is no public way
    after construction: the public one is ``FastAPI(telemetry=...)``, which
    `kaleem_telemetry.instrument_app` names in its warning when this returns
    ``None`` on a FastAPI that traces by itself.
    """
    config: object = getattr(app, "_telemetry", None)
    read_per_request = getattr(getattr(app, "_native_telemetry", None), "config", None)
    if not isinstance(config, dict) or id(read_per_request) != id(config):
        return None
    return config if all(key in config for key in FASTAPI_TELEMETRY_DEFAULTS) else None


def fastapi_telemetry_is_default(config: dict[str, Any]) -> bool:
    """Return whether ``config`` is FastAPI's default, as if the application passed none."""
    auto = os.getenv("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true"
    return config.get("auto_configure", auto) == auto and all(
        config[key] is value if value is None or isinstance(value, bool) else config[key] == value
        for key, value in FASTAPI_TELEMETRY_DEFAULTS.items()
    )
