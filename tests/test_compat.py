"""Canaries: each private name of another library that the package relies on is still there.

A failure here names the library and its version: an upgrade changed what
`kaleem_telemetry._compat` reaches for, and its public fallback is now in use.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import pytest

from kaleem_telemetry import _compat


def _version(dist: str) -> str:
    return importlib.metadata.version(dist)


def _at_least(dist: str, floor: tuple[int, ...]) -> bool:
    """Return whether ``dist`` is at least the version ``floor`` where a canary was verified."""
    parts = tuple(int(p) for p in _version(dist).split(".")[: len(floor)] if p.isdigit())
    return parts >= floor


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


class TestSpanAttributeStore:
    def test_the_fast_path_is_on(self) -> None:
        """The import-time probe found the SDK span and its private attribute store."""
        from opentelemetry.sdk import trace as sdk_trace

        assert _compat.SDK_SPAN is not None, (
            f"opentelemetry-sdk {_version('opentelemetry-sdk')} changed _Span, "
            "span._attributes (BoundedAttributes with _dict and _immutable) or span._name: "
            "spans now take the slower public set_attributes path"
        )
        assert _compat.SDK_SPAN is getattr(sdk_trace, "_Span", None)

    def test_the_fast_path_stores_what_the_public_path_would(self) -> None:
        """Attributes and the name written directly read back through the public API."""
        from opentelemetry.sdk.trace import TracerProvider

        span: Any = TracerProvider(shutdown_on_exit=False).get_tracer("t").start_span("a")
        _compat.set_span_attributes(span, {"s": "x", "i": 1, "b": True, "f": 1.5}, "b")
        span.end()

        version = _version("opentelemetry-sdk")
        assert dict(span.attributes) == {"s": "x", "i": 1, "b": True, "f": 1.5}, version
        assert span.name == "b", f"opentelemetry-sdk {version} no longer names spans by _name"

    def test_the_probe_works_with_the_sdk_disabled_at_import(self) -> None:
        """OTEL_SDK_DISABLED=true in the environment does not switch the fast path off."""
        import os
        import subprocess
        import sys

        code = "from kaleem_telemetry import _compat; print(_compat.SDK_SPAN is not None)"
        env = {**os.environ, "OTEL_SDK_DISABLED": "true"}
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )

        assert result.stdout.strip() == "True", (
            f"opentelemetry-sdk {_version('opentelemetry-sdk')} no longer has "
            f"TracerProvider._disabled: {result.stderr}"
        )

    def test_without_the_private_class_the_public_path_is_used(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When the probe finds nothing, attributes still arrive, through set_attributes."""
        from opentelemetry.sdk.trace import TracerProvider

        monkeypatch.setattr(_compat, "SDK_SPAN", None)
        span: Any = TracerProvider(shutdown_on_exit=False).get_tracer("t").start_span("a")
        _compat.set_span_attributes(span, {"s": "x"}, "b")
        span.end()

        assert dict(span.attributes) == {"s": "x"}
        assert span.name == "b"


class TestBatchSpanQueue:
    def test_the_queue_is_found(self) -> None:
        """The BatchSpanProcessor's bounded deque is reachable and sized as configured."""
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        processor = BatchSpanProcessor(
            InMemorySpanExporter(), max_queue_size=7, max_export_batch_size=7
        )
        try:
            queue = _compat.batch_span_queue(processor)
        finally:
            processor.shutdown()

        assert queue is not None, (
            f"opentelemetry-sdk {_version('opentelemetry-sdk')} no longer keeps its span "
            "queue in processor._batch_processor._queue (or processor.queue)"
        )
        assert queue.maxlen == 7, (
            f"opentelemetry-sdk {_version('opentelemetry-sdk')} no longer keeps its span "
            "queue in processor._batch_processor._queue (or processor.queue): dropped "
            "spans are not counted"
        )

    def test_another_processor_has_none(self) -> None:
        """Without the private deque there is no queue, and no error."""
        assert _compat.batch_span_queue(object()) is None


class TestGlobalTracerProvider:
    def test_the_global_provider_can_be_unset(self) -> None:
        """The set-once global tracer provider is reset, so another one can be installed."""
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider

        first = TracerProvider(shutdown_on_exit=False)
        assert _compat.reset_global_tracer_provider()
        trace.set_tracer_provider(first)
        try:
            assert trace.get_tracer_provider() is first
            assert _compat.reset_global_tracer_provider(), (
                f"opentelemetry-api {_version('opentelemetry-api')} no longer keeps "
                "trace._TRACER_PROVIDER and trace._TRACER_PROVIDER_SET_ONCE"
            )
            second = TracerProvider(shutdown_on_exit=False)
            trace.set_tracer_provider(second)
            assert trace.get_tracer_provider() is second, (
                f"opentelemetry-api {_version('opentelemetry-api')}: resetting the set-once "
                "guard no longer allows a new global provider"
            )
        finally:
            _compat.reset_global_tracer_provider()


class TestPrometheus:
    def test_a_registered_collector_is_found_by_name(self) -> None:
        """The registry's name-to-collector map answers for a registered counter."""
        from prometheus_client import CollectorRegistry, Counter

        registry = CollectorRegistry()
        counter = Counter("compat_canary", "Canary.", registry=registry)

        assert _compat.registered_collector(registry, "compat_canary") is counter, (
            f"prometheus-client {_version('prometheus-client')} no longer keeps "
            "CollectorRegistry._names_to_collectors"
        )
        assert _compat.registered_collector(object(), "compat_canary") is None

    def test_label_names_are_read_from_the_metric(self) -> None:
        """A labelled metric exposes the label names it was created with."""
        from prometheus_client import Histogram

        metric = Histogram("compat_canary_seconds", "Canary.", ["a", "b"], registry=None)

        assert _compat.metric_labelnames(metric) == ("a", "b"), (
            f"prometheus-client {_version('prometheus-client')} no longer keeps "
            "metric._labelnames; kaleem_telemetry passes labelnames= itself"
        )
        assert _compat.metric_labelnames(object()) is None

    def test_the_value_class_tells_the_mode_and_can_be_switched(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
    ) -> None:
        """values.ValueClass follows PROMETHEUS_MULTIPROC_DIR when re-derived."""
        from prometheus_client import values

        version = _version("prometheus-client")
        assert _compat._prometheus_values() is values, (
            f"prometheus-client {version} no longer has values.ValueClass, "
            "values.MutexValue and values.get_value_class()"
        )
        monkeypatch.setattr(values, "ValueClass", values.ValueClass)
        monkeypatch.delenv("prometheus_multiproc_dir", raising=False)
        monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
        _compat.prometheus_sync_value_class()
        assert not _compat.prometheus_is_multiprocess()

        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        assert _compat.prometheus_sync_value_class(), version
        assert _compat.prometheus_is_multiprocess(), (
            f"prometheus-client {version}: get_value_class() no longer reads the variable"
        )

    def test_without_the_value_class_the_environment_decides(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
    ) -> None:
        """The fallback reads the variable and switches nothing."""
        monkeypatch.setattr(_compat, "_VALUES", False)
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

        assert _compat.prometheus_is_multiprocess()
        assert not _compat.prometheus_sync_value_class()


class TestSentry:
    def test_the_transport_timeout_is_a_class_attribute_it_reads(self) -> None:
        """HttpTransport.TIMEOUT exists and the transport builds its pool timeouts from it."""
        pytest.importorskip("sentry_sdk")
        import inspect

        from sentry_sdk import transport

        version = _version("sentry-sdk")
        cls = _compat.sentry_transport_class(3)
        if cls is None and not _at_least("sentry-sdk", (2, 75)):
            pytest.skip(f"sentry-sdk {version} predates HttpTransport.TIMEOUT: its default is used")
        assert cls is not None, f"sentry-sdk {version} no longer has HttpTransport.TIMEOUT"
        assert issubclass(cls, transport.HttpTransport)
        assert cls.TIMEOUT == 3
        assert "self.TIMEOUT" in inspect.getsource(transport), (
            f"sentry-sdk {version}: the transport no longer reads self.TIMEOUT"
        )

    def test_default_options_are_there(self) -> None:
        """sentry_sdk.consts.DEFAULT_OPTIONS lists the client options."""
        pytest.importorskip("sentry_sdk")
        from sentry_sdk import consts

        version = _version("sentry-sdk")
        assert isinstance(getattr(consts, "DEFAULT_OPTIONS", None), dict), (
            f"sentry-sdk {version} no longer has consts.DEFAULT_OPTIONS"
        )
        assert "dsn" in consts.DEFAULT_OPTIONS, version
        assert _compat.sentry_has_data_collection() == ("data_collection" in consts.DEFAULT_OPTIONS)


class TestLogsAPI:
    def test_the_global_logger_provider_is_the_apis(self) -> None:
        """The private-named logs API module still hands out the global logger provider."""
        try:
            from opentelemetry import _logs
        except ImportError:  # pragma: no cover - the canary's failure
            pytest.fail(
                f"opentelemetry-api {_version('opentelemetry-api')} no longer has "
                "opentelemetry._logs: FastAPI's log records are dropped"
            )

        assert _compat.global_logger_provider() is _logs.get_logger_provider(), (
            f"opentelemetry-api {_version('opentelemetry-api')} changed "
            "opentelemetry._logs.get_logger_provider"
        )

    def test_without_the_logs_api_records_are_dropped(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The fallback provider accepts everything and emits nothing."""
        from opentelemetry import _logs

        monkeypatch.delattr(_logs, "get_logger_provider")
        provider = _compat.global_logger_provider()
        provider.add_log_record_processor(object())

        assert provider.get_logger("x").emit(body="y") is None
