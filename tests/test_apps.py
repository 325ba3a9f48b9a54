from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

pytest.importorskip("starlette")

from starlette.applications import Starlette

from kaleem_telemetry.apps import instrument_app
from kaleem_telemetry.asgi import TelemetryMiddleware


class TestInstrumentApp:
    def test_starlette_app_is_returned_instrumented(self, registry: CollectorRegistry) -> None:
        """A Starlette app comes back as the same object, its stack wrapped by the middleware."""
        app = Starlette()

        assert instrument_app(app, registry=registry) is app
        assert isinstance(app.build_middleware_stack(), TelemetryMiddleware)

    def test_unknown_application_is_refused(self) -> None:
        """Something that is not a supported framework raises a TypeError naming the fix."""

        async def bare(scope: Any, receive: Any, send: Any) -> None:
            return None

        with pytest.raises(TypeError, match=r"TelemetryMiddleware"):
            instrument_app(bare)

    def test_second_call_does_nothing(self, registry: CollectorRegistry) -> None:
        """Instrumenting an app twice keeps a single middleware layer."""
        app = Starlette()
        instrument_app(app, registry=registry)
        build = app.build_middleware_stack
        instrument_app(app, registry=registry)

        assert app.build_middleware_stack is build
