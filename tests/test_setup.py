import json
import logging
import socket
import threading
import time

import pytest
from opentelemetry import trace

import kaleem_telemetry
from kaleem_telemetry import _setup
from kaleem_telemetry.exceptions import TelemetryConfigError

# Slack over a timeout for a busy machine: a call that ignored its timeout would
# take the hanging component's HANG seconds, or whole seconds of an exporter's own.
# The measured overshoot is reported by benchmarks/bench_faults.py.
HANG_SLACK = 5.0
HANG = 60.0


class _HangingComponent:
    """A component whose flush and shutdown hang (for HANG s), like a black-holed exporter."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def force_flush(self, timeout: float) -> bool:
        self.release.wait(HANG)
        return True

    def shutdown(self, timeout: float) -> None:
        self.release.wait(HANG)


class _QuickComponent:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def force_flush(self, timeout: float) -> bool:
        self.calls.append("flush")
        return True

    def shutdown(self, timeout: float) -> None:
        self.calls.append("shutdown")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(name="quiet_env")
def _quiet_env(monkeypatch):
    """An environment whose traces go nowhere and logs are JSON."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("KALEEM_TELEMETRY_LOG_FORMAT", "json")
    monkeypatch.delenv("SENTRY_DSN", raising=False)


@pytest.mark.usefixtures("quiet_env")
class TestSetupTelemetry:
    def test_returns_a_live_handle(self):
        """setup_telemetry() returns the live handle with the effective config."""
        telemetry = kaleem_telemetry.setup_telemetry("svc", environment="staging", version="1.2.3")

        assert _setup.current() is telemetry
        assert telemetry.config.service_name == "svc"
        assert telemetry.config.environment == "staging"
        assert telemetry.config.version == "1.2.3"

    def test_second_call_returns_the_same_handle(self):
        """Setup is idempotent per process."""
        first = kaleem_telemetry.setup_telemetry("svc")

        assert kaleem_telemetry.setup_telemetry("svc") is first

    def test_different_config_warns_and_keeps_the_live_one(self, capsys):
        """A second call with another config logs a warning and changes nothing."""
        first = kaleem_telemetry.setup_telemetry("svc")
        second = kaleem_telemetry.setup_telemetry("other")

        assert second is first
        assert second.config.service_name == "svc"
        warnings = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert any("force=True" in w["event"] for w in warnings)

    def test_force_reconfigures(self):
        """force=True shuts the old telemetry down and configures anew."""
        first = kaleem_telemetry.setup_telemetry("svc")
        second = kaleem_telemetry.setup_telemetry("other", force=True)

        assert second is not first
        assert second.config.service_name == "other"
        assert kaleem_telemetry.setup_telemetry() is second

    def test_arguments_beat_the_environment(self, monkeypatch):
        """An argument wins over its environment variable."""
        monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
        monkeypatch.setenv("KALEEM_TELEMETRY_LOG_LEVEL", "warning")

        telemetry = kaleem_telemetry.setup_telemetry("from-arg", log_level="debug")

        assert telemetry.config.service_name == "from-arg"
        assert telemetry.config.log_level == "debug"

    def test_environment_beats_defaults(self, monkeypatch):
        """An environment variable wins over the default."""
        monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")

        assert kaleem_telemetry.setup_telemetry().config.service_name == "from-env"

    @pytest.mark.parametrize(
        ("var", "value"),
        [
            ("KALEEM_TELEMETRY_LOG_FORMAT", "xml"),
            ("OTEL_TRACES_SAMPLER_ARG", "abc"),
            ("KALEEM_TELEMETRY_METRICS_PORT", "70000"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "smtp"),
        ],
    )
    def test_bad_environment_value_raises_naming_it(self, monkeypatch, var, value):
        """A bad environment value raises TelemetryConfigError naming the variable and value."""
        monkeypatch.setenv(var, value)

        with pytest.raises(TelemetryConfigError) as info:
            kaleem_telemetry.setup_telemetry("svc")

        assert var in str(info.value)
        assert repr(value) in str(info.value)
        assert _setup.current() is None

    def test_a_config_error_found_by_a_component_still_raises(self, monkeypatch, tmp_path):
        """A setting a component rejects (a missing multiprocess dir) raises, naming it."""
        missing = tmp_path / "does-not-exist"
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(missing))

        with pytest.raises(TelemetryConfigError, match="PROMETHEUS_MULTIPROC_DIR"):
            kaleem_telemetry.setup_telemetry("svc")

    def test_collector_down_does_not_raise(self, monkeypatch):
        """Setup with an OTLP endpoint nobody listens on succeeds and shuts down quickly."""
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")

        telemetry = kaleem_telemetry.setup_telemetry("svc")
        with trace.get_tracer("test").start_as_current_span("op"):
            pass
        started = time.monotonic()
        telemetry.shutdown(timeout=3.0)
        elapsed = time.monotonic() - started

        assert "tracing" in telemetry.components
        # The 3 s timeout plus generous slack: a hang would wait out the exporter's own.
        assert elapsed < 3.0 + HANG_SLACK

    def test_sdk_disabled_turns_tracing_off(self, monkeypatch):
        """OTEL_SDK_DISABLED=true configures no tracing but keeps logs and metrics."""
        monkeypatch.setenv("OTEL_SDK_DISABLED", "true")

        telemetry = kaleem_telemetry.setup_telemetry("svc")

        assert "tracing" not in telemetry.components
        assert "metrics" in telemetry.components

    def test_repr_names_service_and_state(self):
        """The handle's repr says which service and whether it is live."""
        telemetry = kaleem_telemetry.setup_telemetry("svc")

        assert "'svc'" in repr(telemetry)
        assert "live" in repr(telemetry)


@pytest.mark.usefixtures("quiet_env")
class TestShutdown:
    def test_shutdown_is_idempotent(self):
        """A second shutdown returns True at once and forgets the handle."""
        telemetry = kaleem_telemetry.setup_telemetry("svc")

        assert telemetry.shutdown(2.0) is True
        assert telemetry.shutdown(2.0) is True
        assert _setup.current() is None
        assert kaleem_telemetry.shutdown_telemetry() is True

    def test_shutdown_is_bounded_when_a_component_hangs(self):
        """A component whose shutdown never returns costs at most the timeout."""
        hanging, quick = _HangingComponent(), _QuickComponent()
        telemetry = _setup.Telemetry(
            kaleem_telemetry.setup_telemetry("svc").config, {"hang": hanging, "quick": quick}
        )
        started = time.monotonic()
        done = telemetry.shutdown(timeout=0.5)
        elapsed = time.monotonic() - started
        hanging.release.set()

        assert done is False
        assert quick.calls == ["shutdown"]
        assert elapsed < 0.5 + HANG_SLACK

    def test_force_flush_is_bounded_when_a_component_hangs(self):
        """force_flush() returns False within its timeout when a component hangs."""
        hanging = _HangingComponent()
        telemetry = _setup.Telemetry(kaleem_telemetry.setup_telemetry("svc").config, {"h": hanging})
        started = time.monotonic()
        done = telemetry.force_flush(timeout=0.3)
        elapsed = time.monotonic() - started
        hanging.release.set()

        assert done is False
        assert elapsed < 0.3 + HANG_SLACK

    def test_a_failing_component_does_not_stop_the_others(self, caplog):
        """A component whose shutdown raises is logged; the others still shut down."""

        class Broken(_QuickComponent):
            def shutdown(self, timeout: float) -> None:
                raise RuntimeError("bug")

        quick = _QuickComponent()
        telemetry = _setup.Telemetry(
            kaleem_telemetry.setup_telemetry("svc").config, {"broken": Broken(), "quick": quick}
        )

        assert telemetry.shutdown(1.0) is False
        assert quick.calls == ["shutdown"]

    def test_shutdown_is_registered_atexit(self):
        """Setup registers the bounded shutdown to run at interpreter exit."""
        kaleem_telemetry.setup_telemetry("svc")

        assert _setup._ATEXIT_REGISTERED is True


def test_setup_logs_through_the_pipeline(monkeypatch, capsys):
    """After setup, stdlib logging of the library itself comes out as JSON."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("KALEEM_TELEMETRY_LOG_FORMAT", "json")
    kaleem_telemetry.setup_telemetry("svc")
    logging.getLogger("kaleem_telemetry").warning("hello from the library")

    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[-1]["event"] == "hello from the library"
    assert lines[-1]["service"] == "svc"
