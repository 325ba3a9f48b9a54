"""Canaries: each private name of another library that the package relies on is still there.

A failure here names the library and its version: an upgrade changed what
`kaleem_telemetry._compat` reaches for, and its public fallback is now in use.
"""

from __future__ import annotations

import importlib.metadata

import pytest

from kaleem_telemetry import _compat


def _version(dist: str) -> str:
    return importlib.metadata.version(dist)


class TestFastAPITelemetrySettings:
    def test_the_live_settings_dict_is_found(self) -> None:
        """On a FastAPI that traces by itself, the settings its requests read are reachable."""
        pytest.importorskip("fastapi.telemetry")
        from fastapi import FastAPI

        app = FastAPI()
        config = _compat.fastapi_telemetry_config(app)

        assert config is not None, (
            f"fastapi {_version('fastapi')} no longer keeps its telemetry settings in "
            "app._telemetry read by app._native_telemetry.config"
        )
        assert _compat.fastapi_has_native_telemetry(app)
        assert _compat.fastapi_telemetry_is_default(config), (
            f"fastapi {_version('fastapi')} changed its telemetry defaults: {config!r}"
        )

    def test_changing_the_dict_changes_what_a_request_records(self) -> None:
        """Switching tracing off in the dict switches FastAPI's request telemetry off."""
        pytest.importorskip("fastapi.telemetry")
        from fastapi import FastAPI
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider

        app = FastAPI(telemetry={"tracer_provider": TracerProvider()})
        config = _compat.fastapi_telemetry_config(app)
        assert config is not None
        native = app._native_telemetry

        assert native.enabled()
        config.update(tracing=False, metrics=False, logs=False)
        assert not native.enabled(), f"fastapi {_version('fastapi')} copies its settings"
        assert trace.get_tracer_provider() is not config["tracer_provider"]

    def test_a_configured_application_is_not_the_default(self) -> None:
        """An application that passed telemetry= settings of its own is recognised as such."""
        pytest.importorskip("fastapi.telemetry")
        from fastapi import FastAPI

        config = _compat.fastapi_telemetry_config(FastAPI(telemetry={"operation_spans": False}))

        assert config is not None
        assert not _compat.fastapi_telemetry_is_default(config)

    def test_an_older_fastapi_or_another_app_has_none(self) -> None:
        """Without FastAPI's own telemetry there is nothing to find, and no error."""

        class App:
            pass

        assert _compat.fastapi_telemetry_config(App()) is None
        assert not _compat.fastapi_has_native_telemetry(App())
