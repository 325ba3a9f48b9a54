"""The pytest plugin: the ``telemetry_capture`` fixture.

Registered through the ``pytest11`` entry point, so it is active wherever
kaleem-telemetry is installed. Importing it is cheap and has no side effects.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from kaleem_telemetry.testing import TelemetryCapture

__all__: list[str] = []  # the fixture is reached by its name, telemetry_capture


@pytest.fixture(name="telemetry_capture")
def _telemetry_capture() -> Iterator[TelemetryCapture]:
    """Capture logs, spans, metrics and Sentry events for one test."""
    from kaleem_telemetry.testing import capture_telemetry

    with capture_telemetry() as captured:
        yield captured
