"""The exceptions that kaleem_telemetry raises to its callers.

Only configuration mistakes and missing optional packages are raised; a backend
that is down never is (docs/reference.md, Public API).
"""

from __future__ import annotations

__all__ = ["MissingDependencyError", "TelemetryConfigError", "TelemetryError"]


class TelemetryError(Exception):
    """Base class of every error raised by kaleem_telemetry."""


class TelemetryConfigError(TelemetryError, ValueError):
    """A setting has an invalid value; the message names the setting and the value."""


class MissingDependencyError(TelemetryError, ImportError):
    """An optional integration was asked for but its library is not installed."""
