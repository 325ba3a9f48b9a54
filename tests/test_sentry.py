from __future__ import annotations

import importlib.util
import json
import secrets
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import propagate

from kaleem_telemetry import context, sentry, tracing
from kaleem_telemetry.config import TelemetryConfig
from tests.receivers import SentryIngest


@pytest.fixture(name="ingest")
def _ingest() -> Iterator[SentryIngest]:
    with SentryIngest() as ingest:
        yield ingest


def _configure(ingest: SentryIngest, **env: str) -> sentry.SentryComponent:
    cfg = TelemetryConfig.from_env(
        environ={"SENTRY_DSN": ingest.dsn, "OTEL_TRACES_EXPORTER": "none", **env}
    )
    tracing.configure_tracing(cfg)
    component = sentry.configure_sentry(cfg)
    assert component is not None
    return component


def _raise(message: str = "boom") -> ValueError:
    try:
        raise ValueError(message)
    except ValueError as exc:
        return exc


class TestConfigure:
    def test_off_without_dsn(self) -> None:
        """Without SENTRY_DSN nothing is configured and capture_exception is a no-op."""
        component = sentry.configure_sentry(TelemetryConfig.from_env(environ={}))

        assert component is None
        assert sentry.capture_exception(_raise()) is None

    def test_sentry_tracing_stays_off_and_w3c_propagation_stays(self, ingest: SentryIngest) -> None:
        """Sentry gets no traces sample rate and the W3C propagator stays global."""
        import sentry_sdk

        _configure(ingest)

        assert sentry_sdk.get_client().options["traces_sample_rate"] is None
        assert sentry_sdk.get_client().should_send_default_pii() is False
        assert "traceparent" in propagate.get_global_textmap().fields
        assert "sentry-trace" not in propagate.get_global_textmap().fields


class TestEvents:
    def test_event_carries_context_trace_and_release(self, ingest: SentryIngest) -> None:
        """An event has the service/merchant/request/route/trace tags, user id, trace context."""
        component = _configure(
            ingest,
            OTEL_SERVICE_NAME="kaleem-api",
            KALEEM_TELEMETRY_ENVIRONMENT="staging",
            KALEEM_TELEMETRY_VERSION="2.0.0",
        )
        with (
            context.telemetry_context(
                merchant_id="m-1", request_id="r-1", user_id="u-1", route="/items/{id}"
            ),
            tracing.get_tracer().start_as_current_span("op") as span,
        ):
            event_id = sentry.capture_exception(_raise(), job="sync")
            trace_id = format(span.get_span_context().trace_id, "032x")
            span_id = format(span.get_span_context().span_id, "016x")
        component.force_flush(5)
        (event,) = ingest.wait_for_events(1)

        assert event["event_id"] == event_id
        assert event["environment"] == "staging"
        assert event["release"] == "2.0.0"
        assert event["tags"]["service"] == "kaleem-api"
        assert event["tags"]["merchant_id"] == "m-1"
        assert event["tags"]["request_id"] == "r-1"
        assert event["tags"]["route"] == "/items/{id}"
        assert event["tags"]["job"] == "sync"
        assert event["tags"]["trace_id"] == trace_id
        assert event["contexts"]["trace"]["trace_id"] == trace_id
        assert event["contexts"]["trace"]["span_id"] == span_id
        assert event["user"] == {"id": "u-1"}

    def test_no_transactions_are_sent(self, ingest: SentryIngest) -> None:
        """Spans never turn into Sentry transactions."""
        component = _configure(ingest)
        with tracing.get_tracer().start_as_current_span("op"):
            sentry.capture_exception(_raise())
        component.force_flush(5)
        ingest.wait_for_events(1)
        types = [h.get("type") for _e, items in ingest.envelopes for h, _p in items]

        assert "transaction" not in types

    def test_exception_caught_after_its_span_keeps_the_trace(self, ingest: SentryIngest) -> None:
        """An exception captured after its span ended still carries that span's trace."""
        from kaleem_telemetry.decorators import instrument

        @instrument
        def failing() -> None:
            raise KeyError("x")

        component = _configure(ingest)
        try:
            failing()
        except KeyError as exc:
            remembered = tracing.remembered_span_context(exc)
            sentry.capture_exception(exc)
        component.force_flush(5)
        (event,) = ingest.wait_for_events(1)

        assert remembered is not None
        assert event["contexts"]["trace"]["trace_id"] == format(remembered.trace_id, "032x")


class TestRedaction:
    def test_request_extra_breadcrumbs_and_locals_are_redacted(self, ingest: SentryIngest) -> None:
        """Secrets in request data, headers, cookies, query, extra, breadcrumbs, locals vanish."""
        import sentry_sdk

        component = _configure(ingest)
        token = "tok" + "e" * 20
        password = "p-" + "s" * 12
        sentry_sdk.add_breadcrumb(message=f"auth Bearer {token}", data={"password": password})

        def handler() -> None:
            api_key = token  # noqa: F841 - a frame local the event must not carry.
            raise RuntimeError("failed")

        try:
            handler()
        except RuntimeError as exc:
            with sentry_sdk.new_scope() as scope:
                scope.set_extra("session_id", token)
                scope.add_event_processor(_with_request(token))
                sentry_sdk.capture_exception(exc)
        component.force_flush(5)
        (event,) = ingest.wait_for_events(1)
        text = json.dumps(event)

        assert token not in text
        assert password not in text
        assert event["request"]["data"]["username"] == "alice"

    def test_hook_sees_the_redacted_event(self, ingest: SentryIngest) -> None:
        """Event hooks receive the final event, after redaction."""
        seen: list[dict[str, Any]] = []
        remove = sentry.add_event_hook(seen.append)
        component = _configure(ingest)
        sentry.capture_exception(_raise("Bearer " + "z" * 30))
        component.force_flush(5)
        remove()

        assert len(seen) == 1
        assert "z" * 30 not in json.dumps(seen[0])

    def test_source_context_and_argv_are_redacted_on_the_wire(
        self, ingest: SentryIngest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Source lines around a frame and secret argv flags never reach Sentry's envelope."""
        secret = "hx" + secrets.token_hex(12)
        module = _module_with_secret_in_source(tmp_path, secret)
        argv_token = "tv" + secrets.token_hex(12)
        argv_password = "pw" + secrets.token_hex(12)
        monkeypatch.setattr(
            sys,
            "argv",
            ["worker.py", "--db-password", argv_password, f"--token={argv_token}", "-p", "8080"],
        )
        component = _configure(ingest)
        try:
            module.connect()
        except RuntimeError as exc:
            sentry.capture_exception(exc)
        component.force_flush(5)
        (event,) = ingest.wait_for_events(1)
        payloads = b"".join(payload for _h, items in ingest.envelopes for _ih, payload in items)

        assert secret.encode() not in payloads
        assert argv_token.encode() not in payloads
        assert argv_password.encode() not in payloads
        frame = event["exception"]["values"][0]["stacktrace"]["frames"][-1]
        assert frame["function"] == "connect"
        assert (
            frame["context_line"].strip()
            == 'raise RuntimeError("no database")  # password=[REDACTED]'
        )
        assert 'api_key = "[REDACTED]"' in [line.strip() for line in frame["pre_context"]]
        assert 'token = "[REDACTED]"' in [line.strip() for line in frame["post_context"]]
        assert event["extra"]["sys.argv"] == [
            "worker.py",
            "--db-password",
            "[REDACTED]",
            "--token=[REDACTED]",
            "-p",
            "8080",
        ]


def _module_with_secret_in_source(directory: Path, secret: str) -> Any:
    """Write and import a module whose source lines (not only its locals) hold ``secret``."""
    path = directory / "secret_source_module.py"
    path.write_text(
        "def connect():\n"
        f'    api_key = "{secret}"\n'
        f'    url = "postgres://app:{secret}@db/app"\n'
        f'    raise RuntimeError("no database")  # password={secret}\n'
        f'    token = "{secret}"\n'
        "    return api_key, url, token\n"
    )
    spec = importlib.util.spec_from_file_location("secret_source_module", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _with_request(token: str) -> Any:
    def processor(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
        event["request"] = {
            "url": f"https://user:{token}@api.example/pay",
            "query_string": f"access_token={token}&page=2",
            "headers": {"Authorization": f"Bearer {token}", "Accept": "json"},
            "cookies": {"sessionid": token},
            "data": {"username": "alice", "password": token},
        }
        return event

    return processor


class TestDeduplication:
    def test_one_exception_seen_by_many_reporters_is_one_event(self, ingest: SentryIngest) -> None:
        """Our capture, the log hook and sentry_sdk itself report one exception once."""
        import sentry_sdk

        component = _configure(ingest)
        exc = _raise()
        sentry.capture_exception(exc)
        sentry.record_log({"event": "failed", "level": "error", "logger": "app"}, exc)
        sentry_sdk.capture_exception(exc)
        thread = threading.Thread(target=sentry.capture_exception, args=(exc,))
        thread.start()
        thread.join()
        component.force_flush(5)
        ingest.wait_for_events(2, timeout=1)

        assert len(ingest.events) == 1

    @pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
    def test_unhandled_exception_in_a_thread_is_one_event(self, ingest: SentryIngest) -> None:
        """An exception captured by our code and then unhandled in its thread is one event."""
        component = _configure(ingest)

        def work() -> None:
            try:
                raise LookupError("unhandled")
            except LookupError as exc:
                sentry.capture_exception(exc)
                raise

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        component.force_flush(5)
        ingest.wait_for_events(2, timeout=1)

        assert len(ingest.events) == 1


class TestLogs:
    def test_error_log_with_exception_becomes_an_event(self, ingest: SentryIngest) -> None:
        """An error log that carries exc_info is sent as an event with the log message."""
        component = _configure(ingest)
        sentry.record_log(
            {"event": "charge failed", "level": "error", "logger": "pay", "order": 7}, _raise()
        )
        component.force_flush(5)
        (event,) = ingest.wait_for_events(1)

        assert event["logentry"]["message"] == "charge failed"
        assert event["logger"] == "pay"
        assert event["extra"]["order"] == 7

    def test_error_logs_become_breadcrumbs_of_the_next_event(self, ingest: SentryIngest) -> None:
        """Error logs without an exception are breadcrumbs on the next event."""
        component = _configure(ingest)
        sentry.record_log({"event": "retrying", "level": "error", "logger": "pay"}, None)
        sentry.capture_exception(_raise())
        component.force_flush(5)
        (event,) = ingest.wait_for_events(1)
        messages = [c.get("message") for c in event["breadcrumbs"]["values"]]

        assert "retrying" in messages

    def test_log_events_can_be_turned_off(self, ingest: SentryIngest) -> None:
        """KALEEM_TELEMETRY_SENTRY_LOG_EVENTS=false keeps error logs as breadcrumbs only."""
        component = _configure(ingest, KALEEM_TELEMETRY_SENTRY_LOG_EVENTS="false")
        sentry.record_log({"event": "x", "level": "error", "logger": "pay"}, _raise())
        component.force_flush(5)

        assert ingest.wait_for_events(1, timeout=0.5) == []

    def test_log_pipeline_feeds_sentry(self, ingest: SentryIngest) -> None:
        """A structlog error with an exception reaches Sentry through the log tap."""
        from kaleem_telemetry import logs

        component = _configure(ingest)
        try:
            raise ValueError("from the log")
        except ValueError:
            logs.get_logger("pay").exception("payment failed")
        component.force_flush(5)
        (event,) = ingest.wait_for_events(1)

        assert event["logentry"]["message"] == "payment failed"


class TestHooks:
    def test_hooks_work_without_a_dsn(self) -> None:
        """With no DSN a hook still gets the event that would have been sent."""
        seen: list[dict[str, Any]] = []
        remove = sentry.add_event_hook(seen.append)
        with context.telemetry_context(merchant_id="m-5"):
            event_id = sentry.capture_exception(_raise())
        remove()

        assert event_id is not None
        assert seen[0]["tags"]["merchant_id"] == "m-5"
        assert sentry.capture_exception(_raise()) is None

    def test_shutdown_is_idempotent(self, ingest: SentryIngest) -> None:
        """A second shutdown does nothing."""
        component = _configure(ingest)
        component.shutdown(1)
        component.shutdown(1)

        assert not sentry.is_enabled()


class TestLink:
    def test_one_failure_links_span_log_and_sentry_event(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """One failure gives a span T, a JSON error log with T and one Sentry event with T."""
        import logging

        from kaleem_telemetry._setup import setup_telemetry
        from kaleem_telemetry.decorators import instrument
        from tests.receivers import OTLPReceiver

        @instrument
        def charge() -> None:
            raise RuntimeError("card declined")

        with OTLPReceiver("grpc") as receiver, SentryIngest() as ingest:
            telemetry = setup_telemetry(
                "kaleem-api",
                otlp_traces_endpoint=receiver.endpoint,
                otlp_protocol="grpc",
                sentry_dsn=ingest.dsn,
                log_format="json",
            )
            with (
                context.telemetry_context(merchant_id="m-42"),
                tracing.get_tracer().start_as_current_span("POST /charge"),
            ):
                try:
                    charge()
                except RuntimeError:
                    logging.getLogger("app.payments").error("charge failed", exc_info=True)
                    sentry.capture_exception()
            telemetry.force_flush(10)
            spans = receiver.wait_for(2)
            events = ingest.wait_for_events(2, timeout=1)
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
        (log,) = [line for line in lines if line.get("event") == "charge failed"]
        failed = next(s for s in spans if s.name.endswith("charge"))

        assert len(events) == 1
        assert log["trace_id"] == failed.trace_id
        assert log["merchant_id"] == "m-42"
        assert events[0]["contexts"]["trace"]["trace_id"] == failed.trace_id
        assert events[0]["tags"]["merchant_id"] == "m-42"
        assert failed.status_code == 2


class TestRequestScope:
    def test_off_costs_nothing(self) -> None:
        """With Sentry off there is no scope to enter and nothing to restore."""
        assert sentry.enter_request_scope() is None
        sentry.leave_request_scope(None)
        assert sentry.request_scope() is None

    def test_tags_set_inside_stay_inside(self, ingest: SentryIngest) -> None:
        """A request's tags reach its own events only; start-up tags reach both."""
        import sentry_sdk

        component = _configure(ingest)
        sentry_sdk.set_tag("deploy", "blue")
        outer = sentry.enter_request_scope()
        try:
            sentry_sdk.set_tag("order", "o-1")
            sentry.capture_exception(_raise("inside"))
        finally:
            sentry.leave_request_scope(outer)
        sentry.capture_exception(_raise("outside"))
        component.force_flush(5)
        events = {e["exception"]["values"][0]["value"]: e for e in ingest.wait_for_events(2)}

        assert events["inside"]["tags"]["order"] == "o-1"
        assert events["inside"]["tags"]["deploy"] == "blue"
        assert "order" not in events["outside"]["tags"]
        assert events["outside"]["tags"]["deploy"] == "blue"

    def test_with_form_restores_the_outer_scope(self, ingest: SentryIngest) -> None:
        """request_scope() as a with block hands back the outer isolation scope on exit."""
        import sentry_sdk

        _configure(ingest)
        before = sentry_sdk.get_isolation_scope()
        manager = sentry.request_scope()
        assert manager is not None
        with manager as scope:
            assert scope is sentry_sdk.get_isolation_scope()
            assert scope is not before
        assert sentry_sdk.get_isolation_scope() is before
