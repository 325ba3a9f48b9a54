"""kaleem_telemetry: one call for traces, RED metrics, JSON logs and Sentry errors."""

from __future__ import annotations

from kaleem_telemetry._version import __version__

__all__ = ["__version__"]
