"""After ``os.fork()`` (gunicorn ``--preload``) the child still exports spans and sends errors."""

from __future__ import annotations

import os
import sys

import pytest

from kaleem_telemetry import sentry, tracing
from kaleem_telemetry.config import TelemetryConfig
from tests.receivers import OTLPReceiver, SentryIngest

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() is POSIX only"),
    # Python 3.12+ warns that forking a multi-threaded process may deadlock; forking
    # a process with exporter threads is exactly what gunicorn --preload does.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]


def _child(tracing_component: tracing.TracingComponent, sentry_component: object) -> int:
    with tracing.get_tracer().start_as_current_span("child-span"):
        pass
    try:
        raise ValueError("from the child")
    except ValueError as exc:
        sentry.capture_exception(exc)
    flushed = tracing_component.force_flush(10)
    sentry_component.force_flush(10)  # type: ignore[attr-defined]
    return 0 if flushed else 3


class TestFork:
    @pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
    def test_child_spans_and_sentry_events_are_sent(self, protocol: str) -> None:
        """Spans and Sentry events from a forked child reach the receivers."""
        with OTLPReceiver(protocol) as receiver, SentryIngest() as ingest:
            cfg = TelemetryConfig.from_env(environ={**receiver.env(), "SENTRY_DSN": ingest.dsn})
            component = tracing.configure_tracing(cfg)
            sentry_component = sentry.configure_sentry(cfg)
            assert component is not None
            assert sentry_component is not None
            # Use both in the parent first, so the child inherits live connections.
            with tracing.get_tracer().start_as_current_span("parent-span"):
                pass
            component.force_flush(10)
            sentry.capture_exception(ValueError("from the parent"))
            sentry_component.force_flush(10)
            receiver.wait_for(1)
            ingest.wait_for_events(1)
            sys.stdout.flush()
            sys.stderr.flush()

            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child, which never returns.
                code = 1
                try:
                    code = _child(component, sentry_component)
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            spans = receiver.wait_for(2)
            events = ingest.wait_for_events(2)

        assert os.waitstatus_to_exitcode(status) == 0
        assert "child-span" in [s.name for s in spans]
        messages = [e["exception"]["values"][0]["value"] for e in events]
        assert "from the child" in messages


FORK_AFTER_SETUP = r"""
import os, sys, time

from kaleem_telemetry import setup_telemetry, tracing

setup_telemetry(service_name="forking")
sys.stdout.flush()
pid = os.fork()
if pid == 0:
    with tracing.get_tracer().start_as_current_span("in-child"):
        pass
    os._exit(0)
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print("child exit", os.waitstatus_to_exitcode(status))
        break
    time.sleep(0.05)
else:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    print("child hung")
"""


class TestForkAfterSetup:
    def test_child_of_a_process_with_a_grpc_exporter_does_not_hang(self) -> None:
        """A child forked after setup (a Celery prefork child) gets past the SDK's fork hook.

        The tracer provider's after-fork hook submits to a thread pool; with
        ``concurrent.futures.thread`` first imported after the provider (by the
        gRPC exporter), its global lock was still held in the child and every
        child hung there before running anything.
        """
        import subprocess

        from tests.reliability._support import clean_env

        with OTLPReceiver("grpc") as receiver:
            result = subprocess.run(
                [sys.executable, "-c", FORK_AFTER_SETUP],
                env=clean_env(**receiver.env()),
                capture_output=True,
                text=True,
                timeout=90,
            )

        assert "child exit 0" in result.stdout, result.stdout + result.stderr
