import enum
import json
import logging
import math
import random
import re
import secrets
import string
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import INVALID_SPAN_CONTEXT, NonRecordingSpan, SpanContext, TraceFlags

from kaleem_telemetry import logs
from kaleem_telemetry._processors import (
    MAX_KEY_CHARS,
    MAX_LINE_BYTES,
    MAX_VALUE_CHARS,
    _redacted_context,
    format_timestamp,
)
from kaleem_telemetry.config import TelemetryConfig
from kaleem_telemetry.context import BoundValues, bind_context, get_context, telemetry_context
from kaleem_telemetry.redaction import Redactor, get_redactor, set_redactor

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
LEADING_KEYS = ["timestamp", "level", "event", "logger", "service", "environment"]


def _configure(**env: str) -> None:
    environ = {"OTEL_SERVICE_NAME": "svc", "KALEEM_TELEMETRY_ENVIRONMENT": "test"}
    environ.update({"KALEEM_TELEMETRY_LOG_FORMAT": "json", **env})
    logs.configure_logging(TelemetryConfig.from_env(environ=environ))


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    out = capsys.readouterr().out
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture(name="json_logs")
def _json_logs() -> None:
    _configure()


@pytest.mark.usefixtures("json_logs")
class TestShape:
    def test_one_line_with_the_contract_keys(self, capsys):
        """An event is one JSON line with the contract's keys first, in order."""
        logs.get_logger("orders").info("order_created", order_id=7)

        [line] = _lines(capsys)
        assert list(line)[:6] == LEADING_KEYS
        assert TIMESTAMP.match(line["timestamp"])
        assert line["level"] == "info"
        assert line["event"] == "order_created"
        assert line["logger"] == "orders"
        assert line["service"] == "svc"
        assert line["environment"] == "test"
        assert line["order_id"] == 7

    def test_bound_context_comes_before_the_events_own_keys(self, capsys):
        """request_id, merchant_id, user_id and free context keys appear on every line."""
        with telemetry_context(request_id="r-1", merchant_id="m-1", user_id="u-1", job="sync"):
            logs.get_logger().warning("slow", ms=12)

        [line] = _lines(capsys)
        assert list(line)[6:] == ["request_id", "merchant_id", "user_id", "job", "ms"]
        assert line["level"] == "warning"
        assert (line["request_id"], line["merchant_id"], line["user_id"]) == ("r-1", "m-1", "u-1")

    def test_trace_and_span_ids_of_the_current_span(self, capsys):
        """Inside a span, the line carries its trace_id (32 hex) and span_id (16 hex)."""
        tracer = TracerProvider().get_tracer("test")
        with tracer.start_as_current_span("op") as span:
            logs.get_logger().info("inside")
        logs.get_logger().info("outside")

        inside, outside = _lines(capsys)
        context = span.get_span_context()
        assert inside["trace_id"] == format(context.trace_id, "032x")
        assert inside["span_id"] == format(context.span_id, "016x")
        assert "trace_id" not in outside

    @pytest.mark.parametrize(
        ("method", "level"),
        [("info", "info"), ("warning", "warning"), ("error", "error"), ("critical", "critical")],
    )
    def test_levels_are_lower_case(self, capsys, method, level):
        """Each log method gives its lower-case level name."""
        getattr(logs.get_logger(), method)("e")

        assert _lines(capsys)[0]["level"] == level

    def test_debug_is_filtered_at_info(self, capsys):
        """Below the configured level nothing is printed."""
        logs.get_logger().debug("hidden")

        assert _lines(capsys) == []

    def test_positional_arguments_are_formatted(self, capsys):
        """Structlog's %-style positional arguments are applied to the event."""
        logs.get_logger().info("hello %s", "world")

        assert _lines(capsys)[0]["event"] == "hello world"

    def test_timestamp_formatting(self):
        """Timestamps are UTC with milliseconds and a Z."""
        assert format_timestamp(0.5) == "1970-01-01T00:00:00.500Z"
        assert format_timestamp(86_400.0421) == "1970-01-02T00:00:00.042Z"


@pytest.mark.usefixtures("json_logs")
class TestExceptions:
    def test_exception_is_structured_on_one_line(self, capsys):
        """logger.exception() gives an exception object with type, message and frames."""
        try:
            raise ValueError("bad value")
        except ValueError:
            logs.get_logger().exception("failed")

        out = capsys.readouterr().out
        assert out.count("\n") == 1
        line = json.loads(out)
        assert line["level"] == "error"
        assert line["exception"]["type"] == "ValueError"
        assert line["exception"]["message"] == "bad value"
        assert line["exception"]["frames"][-1]["function"] == (
            "test_exception_is_structured_on_one_line"
        )

    def test_frame_locals_are_never_printed(self, capsys):
        """A local variable of a failing frame does not appear in the log line."""
        marker = "local-" + "value-" + str(id(self))

        def fail(secret_local: str) -> None:
            raise RuntimeError("no details")

        try:
            fail(marker)
        except RuntimeError:
            logs.get_logger().exception("failed")

        assert marker not in capsys.readouterr().out

    def test_chained_causes_are_kept(self, capsys):
        """``raise ... from`` keeps the cause as a nested exception."""
        try:
            try:
                raise KeyError("k")
            except KeyError as exc:
                raise RuntimeError("wrapped") from exc
        except RuntimeError as exc:
            logs.get_logger().error("failed", exc_info=exc)

        [line] = _lines(capsys)
        assert line["exception"]["cause"]["type"] == "KeyError"

    def test_secret_in_exception_message_is_redacted(self, capsys):
        """An exception message carrying a credential URL is redacted."""
        user, password = "admin", "pw" + str(id(self))
        try:
            raise ConnectionError(f"cannot reach postgresql://{user}:{password}@db:5432/app")
        except ConnectionError:
            logs.get_logger().exception("db down")

        assert password not in capsys.readouterr().out


class TestRedaction:
    @pytest.mark.usefixtures("json_logs")
    def test_secret_keys_and_values_are_redacted(self, capsys):
        """A password key and a bearer token inside a string never reach the output."""
        token = "tok" + "x" * 20 + str(id(self))
        logs.get_logger().info(
            "login", password="hunter2-" + token, note=f"Authorization: Bearer {token}"
        )

        out = capsys.readouterr().out
        assert token not in out
        assert "[REDACTED" in out

    def test_logger_obtained_before_setup_goes_through_the_pipeline(self, capsys):
        """A module-level logger created before setup is redacted and shaped after setup."""
        early = logs.get_logger("early")
        _configure(KALEEM_TELEMETRY_REDACT_KEYS="merchant_secret")
        set_redactor(Redactor(extra_keys=("merchant_secret",)))
        early.info("configured", merchant_secret="s3cr3t-value", api_key="k" * 24)

        [line] = _lines(capsys)
        assert line["service"] == "svc"
        assert line["merchant_secret"].startswith("[REDACTED")
        assert line["api_key"].startswith("[REDACTED")

    @pytest.mark.usefixtures("json_logs")
    def test_callers_objects_are_not_mutated(self, capsys):
        """Redaction works on copies: the dict the caller logged keeps its secret."""
        payload = {"password": "p4ss-word", "nested": {"token": "t0ken-value"}}
        logs.get_logger().info("payload", payload=payload)

        assert payload == {"password": "p4ss-word", "nested": {"token": "t0ken-value"}}
        assert "p4ss-word" not in capsys.readouterr().out


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def __str__(self) -> str:
        raise RuntimeError("no str")


@pytest.mark.usefixtures("json_logs")
class TestHostileValues:
    @pytest.mark.parametrize(
        "value",
        [
            pytest.param({1: "int key", (1, 2): "tuple key", None: "none"}, id="non-str-keys"),
            pytest.param(2**80, id="int-beyond-64-bits"),
            pytest.param(-(2**70), id="negative-int-beyond-64-bits"),
            pytest.param(math.nan, id="nan"),
            pytest.param(math.inf, id="inf"),
            pytest.param(_BadRepr(), id="repr-raises"),
            pytest.param("bad \udcff surrogate", id="surrogate"),
            pytest.param({"x": b"\xff\xfe bytes"}, id="bytes"),
            pytest.param(object(), id="plain-object"),
        ],
    )
    def test_one_valid_json_line(self, capsys, value):
        """Values orjson cannot take still give exactly one valid JSON line."""
        logs.get_logger().info("hostile", value=value)

        out = capsys.readouterr().out
        assert out.count("\n") == 1
        assert json.loads(out)["event"] == "hostile"

    def test_cycles(self, capsys):
        """A self-referencing structure gives one valid line with a cycle marker."""
        cyclic: dict[str, Any] = {"name": "loop"}
        cyclic["self"] = cyclic
        items: list[Any] = [1]
        items.append(items)
        logs.get_logger().info("cycle", cyclic=cyclic, items=items)

        out = capsys.readouterr().out
        assert out.count("\n") == 1
        assert json.loads(out)["event"] == "cycle"

    def test_huge_value_is_truncated(self, capsys):
        """A 10 MB value is cut, not printed whole."""
        logs.get_logger().info("huge", blob="x" * 10_000_000)

        out = capsys.readouterr().out
        assert len(out) < MAX_VALUE_CHARS * 2
        assert "truncated" in json.loads(out)["blob"]

    def test_huge_event_name_is_truncated(self, capsys):
        """A huge event string is cut too."""
        logs.get_logger().info("e" * 5_000_000)

        assert len(capsys.readouterr().out) < MAX_VALUE_CHARS * 2

    def test_huge_non_string_message_is_cut_like_a_string(self, capsys):
        """A list logged as the message is cut at MAX_VALUE_CHARS, not at the redactor's cap."""
        logs.get_logger().info(["x" * 2_000_000])

        out = capsys.readouterr().out
        assert len(out) < MAX_VALUE_CHARS * 2
        assert json.loads(out)["event"].endswith(
            f"...[truncated {2_000_004 - MAX_VALUE_CHARS} chars]"
        )

    def test_non_string_event(self, capsys):
        """A non-string event is rendered as its string form."""
        logs.get_logger().info(12345)

        assert _lines(capsys)[0]["event"] == "12345"


@pytest.mark.usefixtures("json_logs")
class TestStdlibBridge:
    def test_library_records_come_out_in_the_same_shape(self, capsys):
        """A stdlib record is one JSON line with level, logger and its extra keys."""
        logging.getLogger("somelib.client").warning("retrying %s", "GET", extra={"attempt": 2})

        [line] = _lines(capsys)
        assert list(line)[:6] == LEADING_KEYS
        assert line["event"] == "retrying GET"
        assert line["logger"] == "somelib.client"
        assert line["level"] == "warning"
        assert line["attempt"] == 2

    def test_stdlib_exception_is_structured(self, capsys):
        """logging.exception() gives the same structured exception."""
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            logging.getLogger("lib").exception("division")

        [line] = _lines(capsys)
        assert line["exception"]["type"] == "ZeroDivisionError"

    def test_no_duplicate_lines(self, capsys):
        """A record is printed once even after a second configuration."""
        _configure()
        logging.getLogger("lib").error("once")

        assert len(_lines(capsys)) == 1

    def test_server_loggers_propagate_and_access_loggers_are_silenced(self, capsys):
        """uvicorn.error reaches the pipeline; uvicorn and gunicorn access logs are silenced."""
        logging.getLogger("uvicorn.error").info("Started server process")
        logging.getLogger("uvicorn.access").info('127.0.0.1 - "GET /?token=abc HTTP/1.1" 200')
        logging.getLogger("gunicorn.access").info("GET /?token=abc")

        lines = _lines(capsys)
        assert [line["event"] for line in lines] == ["Started server process"]

    def test_stdlib_records_carry_the_bound_context(self, capsys):
        """Context bound for a request reaches library log records too."""
        bind_context(request_id="r-5")
        logging.getLogger("lib").info("query")

        assert _lines(capsys)[0]["request_id"] == "r-5"

    def test_bad_format_arguments_do_not_lose_the_record(self, capsys, monkeypatch):
        """A record whose %-arguments do not match is still printed."""
        # pytest's own capture handler re-raises formatting errors; ours must not.
        monkeypatch.setattr(logging, "raiseExceptions", False)
        logging.getLogger("lib").error("%d items", "not-a-number")

        assert "items" in _lines(capsys)[0]["event"]


class TestFormats:
    def test_console_format(self, capsys):
        """The console format is human-readable, not JSON."""
        _configure(KALEEM_TELEMETRY_LOG_FORMAT="console")
        logs.get_logger().info("hello", answer=42)

        out = capsys.readouterr().out
        assert "hello" in out
        assert "answer" in out
        with pytest.raises(json.JSONDecodeError):
            json.loads(out)

    def test_auto_is_json_when_not_a_terminal(self, capsys):
        """With format auto and stdout not a terminal, lines are JSON."""
        _configure(KALEEM_TELEMETRY_LOG_FORMAT="auto")
        logs.get_logger().info("hello")

        assert _lines(capsys)[0]["event"] == "hello"

    def test_debug_level(self, capsys):
        """KALEEM_TELEMETRY_LOG_LEVEL=debug lets debug events through."""
        _configure(KALEEM_TELEMETRY_LOG_LEVEL="debug")
        logs.get_logger().debug("shown")

        assert _lines(capsys)[0]["level"] == "debug"

    def test_a_logger_already_used_follows_a_new_level(self, capsys):
        """A logger cached at one level filters at the level configured later, both ways."""
        _configure()
        log = logs.get_logger("early")
        log.debug("hidden")
        _configure(KALEEM_TELEMETRY_LOG_LEVEL="debug")
        log.debug("shown")
        _configure(KALEEM_TELEMETRY_LOG_LEVEL="error")
        log.warning("hidden too")
        log.error("shown too")

        assert [line["event"] for line in _lines(capsys)] == ["shown", "shown too"]

    def test_a_call_below_the_level_is_filtered_by_the_logger(self):
        """The logger itself filters (structlog's filtering bound logger), before any processor."""
        _configure(KALEEM_TELEMETRY_LOG_LEVEL="warning")
        log = logs.get_logger()

        # structlog's filtering loggers make a filtered level's method a no-op that
        # never reaches the processors: the shaper is not called at all.
        calls: list[object] = []
        shaper = logs._PIPELINE.shaper
        original = type(shaper).__call__
        try:
            type(shaper).__call__ = lambda *a: calls.append(a) or original(*a)  # type: ignore[method-assign]
            log.info("filtered")
            log.warning("kept")
        finally:
            type(shaper).__call__ = original  # type: ignore[method-assign]

        assert len(calls) == 1


class TestTaps:
    @pytest.mark.usefixtures("json_logs")
    def test_tap_sees_the_redacted_event_and_can_be_removed(self, capsys):
        """A tap receives each shaped event until it is removed."""
        seen: list[dict[str, Any]] = []
        remove = logs.add_tap(lambda event, _exc: seen.append(dict(event)))
        logs.get_logger().info("one", password="p4ssw0rd-x")
        remove()
        logs.get_logger().info("two")

        assert [e["event"] for e in seen] == ["one"]
        assert seen[0]["password"].startswith("[REDACTED")
        assert len(_lines(capsys)) == 2

    @pytest.mark.usefixtures("json_logs")
    def test_a_failing_tap_does_not_lose_the_line(self, capsys):
        """A tap that raises does not stop the line from being printed."""

        def broken(_event: Any, _exc: Any) -> None:
            raise RuntimeError("tap bug")

        remove = logs.add_tap(broken)
        try:
            logs.get_logger().info("still printed")
        finally:
            remove()

        events = [line["event"] for line in _lines(capsys)]
        assert "still printed" in events


def test_internal_entry_points_are_not_exported():
    """The access-event and Sentry-tap helpers stay importable but are not public names."""
    from kaleem_telemetry import sentry

    assert "emit_access" not in logs.__all__
    assert "record_log" not in sentry.__all__
    assert callable(logs.emit_access)
    assert callable(sentry.record_log)


def test_closed_stdout_does_not_raise(monkeypatch):
    """Writing to a closed stdout drops the line instead of raising into the caller."""
    _configure()

    class Closed:
        def write(self, _text: str) -> int:
            raise ValueError("I/O operation on closed file")

        def flush(self) -> None:
            raise ValueError("I/O operation on closed file")

    monkeypatch.setattr(sys, "stdout", Closed())
    logs.get_logger().info("dropped")


@pytest.mark.usefixtures("json_logs")
def test_repr_of_unknown_objects_is_redacted(capsys):
    """An object whose repr carries a credential URL is redacted when rendered."""
    password = "pw" + str(id(capsys))

    class Conn:
        def __repr__(self) -> str:
            return f"<Conn postgresql://app:{password}@db:5432/app>"

    logs.get_logger().info("connected", conn=Conn())

    assert password not in capsys.readouterr().out


SPAN = SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(1))
#: The ``trace_id`` and ``span_id`` of `SPAN`, as rendered.
SPAN_IDS = '"trace_id":"00000000000000000000000000000abc","span_id":"0000000000000def"'
#: The keys after the timestamp that every line of `_configure()` starts with.
HEAD = '"service":"svc","environment":"test"'


def _raw_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The written lines, byte for byte, each timestamp checked and replaced by ``T``."""
    lines = capsys.readouterr().out.splitlines()
    for line in lines:
        assert TIMESTAMP.match(json.loads(line)["timestamp"])
    return [re.sub(r'^\{"timestamp":"[^"]*"', '{"timestamp":"T"', line) for line in lines]


@pytest.mark.usefixtures("json_logs")
class TestExactLines:
    """Each kind of event, checked against the exact line it must write."""

    def test_a_structlog_call(self, capsys):
        """Head, span, context keys, bound then own keys (redacted, cut) in that order."""
        with (
            trace.use_span(NonRecordingSpan(SPAN)),
            telemetry_context(request_id="r-1", tenant="t-9", note="bound"),
        ):
            logs.get_logger("orders").warning(
                "order_created",
                order_id=7,
                note="client said password=hunter2",
                merchant_id="m-2",
                blob="x" * (MAX_VALUE_CHARS + 2),
            )

        assert _raw_lines(capsys) == [
            '{"timestamp":"T","level":"warning","event":"order_created","logger":"orders",'
            f'{HEAD},{SPAN_IDS},"request_id":"r-1","tenant":"t-9",'
            '"note":"client said password=[REDACTED]","order_id":7,"merchant_id":"m-2",'
            f'"blob":"{"x" * MAX_VALUE_CHARS}...[truncated 2 chars]"}}'
        ]

    def test_a_stdlib_record(self, capsys):
        """A record's message, logger name, bound context and extra keys, redacted."""
        with telemetry_context(request_id="r-1"):
            logging.getLogger("payments").error(
                "charge %s failed", "c-1", extra={"card": "4111 1111 1111 1111", "attempt": 2}
            )

        assert _raw_lines(capsys) == [
            '{"timestamp":"T","level":"error","event":"charge c-1 failed","logger":"payments",'
            f'{HEAD},"request_id":"r-1","card":"[REDACTED:card]","attempt":2}}'
        ]

    def test_a_library_event(self, capsys):
        """An event key replaces a bound one in place; only untrusted keys are redacted."""
        with telemetry_context(merchant_id="m-1", route="bound-route", tenant="t-9"):
            logs.emit_event(
                "kaleem_telemetry.jobs",
                "warning",
                "job_failed",
                {
                    "route": "/jobs/{id}",
                    "path": "/jobs/1?token=" + "t" * 24,
                    "request_id": "rid-1",
                    "status_code": 500,
                },
                trusted=frozenset({"route", "status_code"}),
                span_context=SPAN,
            )

        assert _raw_lines(capsys) == [
            '{"timestamp":"T","level":"warning","event":"job_failed",'
            f'"logger":"kaleem_telemetry.jobs",{HEAD},{SPAN_IDS},"merchant_id":"m-1",'
            '"route":"/jobs/{id}","tenant":"t-9","path":"/jobs/1?token=[REDACTED]",'
            '"request_id":"rid-1","status_code":500}'
        ]

    def test_an_access_event(self, capsys):
        """The access event's seven keys in order; the path is redacted."""
        logs.emit_access(
            "info", "GET", "/items/{item_id}", "/items/42?password=hunter2", 200, 1.25,
            "10.0.0.1", "rid-1", SPAN,
        )  # fmt: skip

        assert _raw_lines(capsys) == [
            '{"timestamp":"T","level":"info","event":"http_request",'
            f'"logger":"kaleem_telemetry.access",{HEAD},{SPAN_IDS},"method":"GET",'
            '"route":"/items/{item_id}","path":"/items/42?password=[REDACTED]",'
            '"status_code":200,"duration_ms":1.25,"client_ip":"10.0.0.1","request_id":"rid-1"}'
        ]

    def test_an_access_event_under_bound_keys_of_its_names(self, capsys):
        """Bound keys keep their place and take the event's values; the bound id is replaced."""
        with telemetry_context(
            request_id="rid-0", tenant="t-9", method="m", path="bound", note="password=hunter2"
        ):
            logs.emit_access(
                "warning", "POST", "/items", "/x" * (MAX_VALUE_CHARS // 2 + 5), 404, 0.5,
                "password=hunter2", "rid-2", INVALID_SPAN_CONTEXT,
            )  # fmt: skip

        assert _raw_lines(capsys) == [
            '{"timestamp":"T","level":"warning","event":"http_request",'
            f'"logger":"kaleem_telemetry.access",{HEAD},"request_id":"rid-2","tenant":"t-9",'
            f'"method":"POST","path":"{"/x" * (MAX_VALUE_CHARS // 2)}...[truncated 10 chars]",'
            '"note":"password=[REDACTED]","route":"/items","status_code":404,"duration_ms":0.5,'
            '"client_ip":"password=[REDACTED]"}'
        ]

    @settings(max_examples=60, deadline=None)
    @given(
        bound=st.dictionaries(
            st.sampled_from(["request_id", "merchant_id", "path", "route", "x", "token"]),
            st.text(max_size=30),
            max_size=4,
        ),
        path=st.text(max_size=40),
        client_ip=st.none() | st.text(max_size=20),
        request_id=st.text(min_size=1, max_size=20),
    )
    def test_any_access_event_keeps_its_keys_order_and_trusted_values(
        self, bound, path, client_ip, request_id
    ):
        """Any bound context, path, address or id: the keys in contract order, ids as given."""
        seen: list[dict[str, Any]] = []
        remove = logs.add_tap(lambda event, _exc_info: seen.append(dict(event)))
        try:
            with telemetry_context(**bound):
                logs.emit_access(
                    "info", "GET", "/r/{id}", path, 200, 2.5, client_ip, request_id, SPAN
                )  # fmt: skip
        finally:
            remove()

        [line] = seen
        access = ["method", "route", "path", "status_code", "duration_ms", "client_ip"]
        context = [k for k in ("request_id", "merchant_id", "user_id") if k in bound]
        own = [k for k in bound if k not in context] + [k for k in access if k not in bound]
        if "request_id" not in bound:
            own.append("request_id")
        assert list(line) == [*LEADING_KEYS, "trace_id", "span_id", *context, *own]
        assert (line["method"], line["route"], line["status_code"]) == ("GET", "/r/{id}", 200)
        assert line["duration_ms"] == 2.5
        if "request_id" in bound:
            # The event's id replaces the bound one, and is redacted like it.
            assert line["request_id"] == get_redactor().redact_string(request_id)


@pytest.mark.usefixtures("json_logs")
class TestEmitEvent:
    def test_untrusted_fields_are_redacted_and_trusted_ones_kept(self, capsys):
        """emit_event() redacts every field except the trusted ones, in order."""
        token = "tok" + "y" * 20 + str(id(self))
        logs.emit_event(
            "kaleem_telemetry.access",
            "warning",
            "http_request",
            {"route": "/items/{item_id}", "path": f"/reset?token={token}", "status_code": 404},
            trusted=frozenset({"route", "status_code"}),
        )

        [line] = _lines(capsys)
        assert line["logger"] == "kaleem_telemetry.access"
        assert line["level"] == "warning"
        assert list(line)[6:] == ["route", "path", "status_code"]
        assert line["route"] == "/items/{item_id}"
        assert token not in line["path"]
        assert "_kaleem_trusted" not in line

    def test_below_the_level_nothing_is_emitted(self, capsys):
        """emit_event() honours the configured level."""
        logs.emit_event("x", "debug", "hidden", {})

        assert _lines(capsys) == []

    def test_emit_access_writes_one_access_line(self, capsys):
        """emit_access() writes the access event through the pipeline, redacted."""
        from opentelemetry.trace import INVALID_SPAN_CONTEXT

        logs.emit_access(
            "info",
            "GET",
            "/r",
            "/r?password=hunter2",
            200,
            0.5,
            "10.0.0.1",
            "rid",
            INVALID_SPAN_CONTEXT,
        )

        [line] = _lines(capsys)
        assert line["event"] == "http_request"
        assert line["logger"] == logs.ACCESS_LOGGER
        assert list(line)[6:] == [
            "method",
            "route",
            "path",
            "status_code",
            "duration_ms",
            "client_ip",
            "request_id",
        ]
        assert "hunter2" not in line["path"]
        assert "trace_id" not in line

    def test_a_structlog_event_cannot_declare_its_own_keys_trusted(self, capsys):
        """Only the library's emit_event() skips redaction for keys; a log call cannot."""
        secret = "hunter" + "2" * 6
        logs.get_logger("x").info(
            "e", _kaleem_trusted=frozenset({"note"}), note=f"password={secret}"
        )

        [line] = _lines(capsys)
        assert secret not in json.dumps(line)

    def test_the_span_context_passed_in_is_the_one_logged(self, capsys):
        """A caller holding the span passes its context; no lookup of the current span."""
        from opentelemetry.trace import SpanContext, TraceFlags

        context = SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(1))
        logs.emit_event("x", "info", "done", {"n": 1}, span_context=context)

        [line] = _lines(capsys)
        assert line["trace_id"] == f"{0xABC:032x}"
        assert line["span_id"] == f"{0xDEF:016x}"


@pytest.mark.usefixtures("json_logs")
class TestBoundContextIsRedacted:
    def test_bound_ids_are_redacted_like_span_attributes(self, capsys):
        """An e-mail, a Stripe key and a token-shaped request id bound are not printed raw."""
        set_redactor(Redactor(mask_emails=True))
        with telemetry_context(
            user_id="alice@example.com",
            merchant_id="sk_live_" + "a" * 24,
            request_id="ghp_" + "b" * 36,
        ):
            logs.get_logger().info("login")

        [line] = _lines(capsys)
        assert line["user_id"] == "[REDACTED:email]"
        assert line["merchant_id"] == "[REDACTED:stripe_key]"
        assert line["request_id"] == "[REDACTED:github_token]"

    def test_an_event_key_replacing_a_bound_one_is_redacted(self, capsys):
        """A context key passed on the call replaces the bound value, and is redacted too."""
        set_redactor(Redactor(mask_emails=True))
        with telemetry_context(user_id="u-1"):
            logs.get_logger().info("login", user_id="bob@example.com")

        [line] = _lines(capsys)
        assert list(line)[6:] == ["user_id"]
        assert line["user_id"] == "[REDACTED:email]"

    def test_a_bound_key_holding_a_secret_is_renamed(self, capsys):
        """A token bound as a key name is written under its redacted name, never raw."""
        token = "ghp_" + "".join(random.choices(string.ascii_letters + string.digits, k=36))
        with telemetry_context(**{token: "x", "plan": "pro"}):
            logs.get_logger().info("login")

        raw = capsys.readouterr().out
        assert token not in raw
        [line] = [json.loads(text) for text in raw.splitlines()]
        assert line["plan"] == "pro"

    def test_a_mutable_bound_value_is_redacted_as_it_is_at_each_line(self, capsys):
        """A bound dict changed after binding is read, and redacted, on every line."""
        cart = {"note": "ok"}
        with telemetry_context(cart=cart):
            logs.get_logger().info("a")
            cart["password"] = "hunter2"
            logs.get_logger().info("b")

        first, second = _lines(capsys)
        assert first["cart"] == {"note": "ok"}
        assert second["cart"] == {"note": "ok", "password": "[REDACTED]"}

    def test_a_new_redactor_applies_to_a_context_already_bound(self, capsys):
        """Set after binding, the redactor's policy still applies to the bound values."""
        with telemetry_context(user_id="alice@example.com"):
            logs.get_logger().info("a")
            set_redactor(Redactor(mask_emails=True))
            logs.get_logger().info("b")

        first, second = _lines(capsys)
        assert first["user_id"] == "alice@example.com"
        assert second["user_id"] == "[REDACTED:email]"

    def test_a_clean_binding_in_order_is_logged_as_bound_and_never_changed(self, capsys):
        """Request, merchant and user ids bound in order print as bound, line after line.

        A line that passes one of them, long enough to be cut, changes that
        line only: the next line prints the bound values again.
        """
        long_user = "u" * (MAX_VALUE_CHARS + 100)
        with telemetry_context(request_id="r-1", merchant_id="m-1", user_id="u-1"):
            bound = dict(get_context())
            logs.get_logger().info("a")
            logs.get_logger().info("b", user_id=long_user)
            logs.get_logger().info("c")
            after = dict(get_context())

        first, second, third = _lines(capsys)
        assert after == bound
        for line in (first, third):
            assert {k: line[k] for k in list(line)[6:]} == bound
        assert list(second)[6:] == ["request_id", "merchant_id", "user_id"]
        assert second["user_id"].startswith("u" * 100)
        assert len(second["user_id"]) < len(long_user)

    @settings(max_examples=200, deadline=None)
    @given(
        st.dictionaries(
            st.sampled_from(["request_id", "merchant_id", "user_id", "job", "level", "token"]),
            st.one_of(
                st.sampled_from(
                    ["r-1", "alice@example.com", "sk_live_" + "a" * 24, "4111111111111111", ""]
                ),
                st.text(max_size=40),
                st.integers(),
                st.none(),
            ),
            max_size=5,
        )
    )
    def test_a_bound_context_prints_what_the_redactor_makes_of_it(self, values):
        """Whatever is bound, in any order: the redactor's verdict, in the contract's order."""
        redactor = Redactor(mask_emails=True)
        context = BoundValues(values)
        head, rest = _redacted_context(context, redactor)
        again = _redacted_context(context, redactor)  # from the cache when one was kept

        names = {k: ("field_" + k if k == "level" else k) for k in values}
        expected = redactor.redact({names[k]: v for k, v in values.items()})
        order = [k for k in ("request_id", "merchant_id", "user_id") if k in values]
        order += [names[k] for k in values if k not in order]
        assert {**(head or {}), **rest} == expected
        assert list({**(head or {}), **rest}) == order
        assert again == (head, rest)
        assert dict(context) == values


@pytest.mark.usefixtures("json_logs")
class TestFormattingNeverRaises:
    @pytest.mark.parametrize(
        ("message", "args"),
        [("100% done for %s", ("m-1",)), ("%d items", ("abc",)), ("%s and %s", ("one",))],
    )
    def test_a_bad_format_keeps_the_message_and_the_arguments(self, capsys, message, args):
        """The call returns; the line has the unformatted message and the arguments."""
        logs.get_logger().info(message, *args)

        [line] = _lines(capsys)
        assert line["event"] == message
        assert line["positional_args"] == list(args)

    def test_the_arguments_kept_are_redacted(self, capsys):
        """A secret among the arguments of a failed format is not printed."""
        logs.get_logger().warning("%d tries", "password=hunter2")

        [line] = _lines(capsys)
        assert line["positional_args"] == ["password=[REDACTED]"]

    def test_exception_with_a_bad_format_keeps_the_exception(self, capsys):
        """log.exception() with a bad format still structures the exception."""
        try:
            raise ValueError("boom")
        except ValueError:
            logs.get_logger().exception("failed %d", "x")

        [line] = _lines(capsys)
        assert (line["level"], line["event"]) == ("error", "failed %d")
        assert line["positional_args"] == ["x"]
        assert line["exception"]["type"] == "ValueError"

    def test_a_good_format_is_unchanged(self, capsys):
        """Formatting that works gives the formatted message and no extra key."""
        logs.get_logger().info("%d items", 3)
        logs.get_logger().info("%(n)d items", {"n": 4})

        assert [line["event"] for line in _lines(capsys)] == ["3 items", "4 items"]


@pytest.mark.usefixtures("json_logs")
class TestFormattedArgumentsAreRedacted:
    @pytest.fixture(name="config")
    def _config(self) -> tuple[dict[str, Any], list[str]]:
        """A structure whose secrets sit under secret keys as a list and a dict."""
        first, second = secrets.token_hex(12), secrets.token_hex(12)
        return {"user": "bob", "password": [first], "credentials": {"id": second}}, [first, second]

    def test_a_structlog_argument_is_redacted_before_it_becomes_text(self, capsys, config):
        """%s of a dict with a list under a secret key hides the list, not just 'key': 'value'."""
        value, hidden = config
        logs.get_logger().info("config %s", value)
        logs.get_logger().info("user %(user)s with %(password)s", value)

        out = capsys.readouterr().out
        assert not [secret for secret in hidden if secret in out]
        first, second = (json.loads(line)["event"] for line in out.splitlines())
        assert "'password': '[REDACTED]'" in first
        assert "'user': 'bob'" in first
        assert second == "user bob with [REDACTED]"

    def test_a_stdlib_argument_is_redacted_before_it_becomes_text(self, capsys, config):
        """A stdlib record's %-arguments are redacted before the message is formatted."""
        value, hidden = config
        logging.getLogger("lib").warning("config %s", value)
        logging.getLogger("lib").warning("user %(user)s with %(credentials)s", value)

        out = capsys.readouterr().out
        assert not [secret for secret in hidden if secret in out]
        first, second = (json.loads(line)["event"] for line in out.splitlines())
        assert "'credentials': '[REDACTED]'" in first
        assert second == "user bob with [REDACTED]"

    def test_arguments_with_nothing_secret_format_as_before(self, capsys):
        """Redaction before formatting changes nothing when nothing is secret."""
        logs.get_logger().info("%s and %r", {"n": [1, 2]}, ("a", 3))
        logging.getLogger("lib").warning("%s/%d", "x", 5)

        events = [line["event"] for line in _lines(capsys)]
        assert events == ["{'n': [1, 2]} and ('a', 3)", "x/5"]


@pytest.mark.usefixtures("json_logs")
class TestReservedKeys:
    def test_a_callers_fixed_keys_do_not_replace_the_pipelines(self, capsys):
        """level, timestamp, logger... passed on a call are fields, prefixed and redacted."""
        logs.get_logger("orders").info(
            "x",
            level="password=hunter2",
            timestamp="1999-01-01T00:00:00.000Z",
            service="evil",
            environment="prod",
            trace_id="f" * 32,
            span_id="e" * 16,
        )

        [line] = _lines(capsys)
        assert list(line)[:6] == LEADING_KEYS
        assert (line["level"], line["logger"], line["service"]) == ("info", "orders", "svc")
        assert line["environment"] == "test"
        assert TIMESTAMP.match(line["timestamp"])
        assert not line["timestamp"].startswith("1999")
        assert "trace_id" not in line
        assert "span_id" not in line
        assert line["field_level"] == "password=[REDACTED]"
        assert line["field_timestamp"] == "1999-01-01T00:00:00.000Z"
        assert (line["field_service"], line["field_environment"]) == ("evil", "prod")
        assert (line["field_trace_id"], line["field_span_id"]) == ("f" * 32, "e" * 16)

    def test_a_non_string_level_is_a_field(self, capsys):
        """level=7 does not give "level": 7."""
        logs.get_logger().warning("x", level=7)

        [line] = _lines(capsys)
        assert (line["level"], line["field_level"]) == ("warning", 7)

    def test_bound_fixed_names_and_stdlib_extras_are_fields(self, capsys):
        """A bound ``level`` and a record's ``extra={"logger": ..}`` are prefixed too."""
        with telemetry_context(level="bound"):
            logging.getLogger("lib").warning("w", extra={"logger": "fake", "event": "e2"})

        [line] = _lines(capsys)
        assert (line["level"], line["logger"], line["event"]) == ("warning", "lib", "w")
        assert line["field_level"] == "bound"
        assert (line["field_logger"], line["field_event"]) == ("fake", "e2")


@pytest.mark.usefixtures("json_logs")
class TestOneBadValue:
    def test_an_unrenderable_int_keeps_the_rest_of_the_line(self, capsys):
        """An int with too many digits for str() is marked; every other key is kept."""
        logs.get_logger("orders").info("x", checksum=2**20000, order_id=7)

        [line] = _lines(capsys)
        assert list(line)[:6] == LEADING_KEYS
        assert (line["service"], line["environment"], line["order_id"]) == ("svc", "test", 7)
        assert line["checksum"] == "[unrenderable int]"
        assert "render_error" not in line

    def test_a_stdlib_message_whose_str_raises_gives_one_line(self, capsys, monkeypatch):
        """A record whose message cannot be turned into text is still written."""
        # pytest's own capture handler re-raises formatting errors; ours must not.
        monkeypatch.setattr(logging, "raiseExceptions", False)

        class Hostile:
            def __str__(self) -> str:
                raise RuntimeError("no")

        logging.getLogger("lib").warning(Hostile(), extra={"attempt": 2})

        [line] = _lines(capsys)
        assert line["event"] == "<unrepresentable Hostile> (bad log message)"
        assert (line["logger"], line["attempt"]) == ("lib", 2)

    def test_a_huge_key_is_cut(self, capsys):
        """A 5 MB key is cut like a value, so the line stays small."""
        logs.get_logger().info("x", **{"k" * 5_000_000: 1})

        # Only this call's line: an exporter a previous test left retrying may log too.
        [text] = [t for t in capsys.readouterr().out.splitlines() if '"event":"x"' in t]
        assert len(text) < MAX_LINE_BYTES
        line = json.loads(text)
        [key] = list(line)[6:]
        assert key == "k" * MAX_KEY_CHARS + f"...[truncated {5_000_000 - MAX_KEY_CHARS} chars]"

    @pytest.mark.parametrize(
        "value", [1, {1: "a non-str key"}, 2**80], ids=["plain", "sanitised", "big-int"]
    )
    def test_a_long_key_is_cut_once_whatever_its_value(self, capsys, value):
        """A key one character too long gets the same cut name when its value needs sanitising."""
        logs.get_logger().info("x", **{"k" * (MAX_KEY_CHARS + 1): value})

        [line] = _lines(capsys)
        [key] = list(line)[6:]
        assert key == "k" * MAX_KEY_CHARS + "...[truncated 1 chars]"

    def test_a_line_is_bounded_and_the_largest_fields_trimmed(self, capsys):
        """Past MAX_LINE_BYTES the largest own fields are replaced by a marker first."""
        big = {f"f{i}": "v" * (MAX_VALUE_CHARS - 10 * i) for i in range(6)}
        logs.get_logger("orders").info("x", small=1, **big)

        out = capsys.readouterr().out
        assert len(out.encode()) <= MAX_LINE_BYTES + 1
        [line] = [json.loads(text) for text in out.splitlines()]
        assert list(line)[:6] == LEADING_KEYS
        assert line["small"] == 1
        assert line["f0"] == f"[truncated {MAX_VALUE_CHARS + 2} bytes]"
        assert line["f1"] == f"[truncated {MAX_VALUE_CHARS - 8} bytes]"
        assert line["f5"] == big["f5"]


@pytest.mark.usefixtures("json_logs")
class TestKeysAndLineBreaks:
    def test_bound_context_keys_come_in_the_contract_order(self, capsys):
        """Bound in any order, request_id, merchant_id, user_id come in that order."""
        with telemetry_context(user_id="u-1", job="sync", merchant_id="m-1", request_id="r-1"):
            logs.get_logger().info("x")

        [line] = _lines(capsys)
        assert list(line)[6:] == ["request_id", "merchant_id", "user_id", "job"]

    def test_keys_that_render_alike_are_deduplicated(self, capsys):
        """{1: .., "1": ..} gives two distinct keys, the same ones each time."""
        logs.get_logger().info("x", counts={1: "int", "1": "str"})
        logs.get_logger().info("x", counts={"1": "str", 1: "int"})

        first, second = capsys.readouterr().out.splitlines()
        assert '"counts":{"1":"int","1<str>":"str"}' in first
        assert '"counts":{"1":"str","1<int>":"int"}' in second

    @pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85"])
    def test_unicode_line_breaks_are_escaped(self, capsys, char):
        """str.splitlines() sees one line; the value reads back unchanged."""
        logs.get_logger().info(f"a{char}b", note=f"c{char}d")

        out = capsys.readouterr().out
        assert char not in out
        [text] = out.splitlines()
        line = json.loads(text)
        assert (line["event"], line["note"]) == (f"a{char}b", f"c{char}d")


def _jwt_like(seed: str) -> str:
    """A JWT-shaped string built at run time (header, payload, signature)."""
    return "ey" + "J" + seed * 20 + "." + "ey" + "J" + seed * 30 + "." + seed * 40


class _RecordingRedactor(Redactor):
    """The default policy, remembering the longest string it was handed."""

    def __init__(self) -> None:
        super().__init__()
        self.longest = 0

    def _note(self, value: Any) -> None:
        values = value.values() if isinstance(value, dict) else [value]
        for item in values:
            if isinstance(item, str):
                self.longest = max(self.longest, len(item))

    def redact(self, value: Any) -> Any:
        self._note(value)
        return super().redact(value)

    def redact_string(self, s: str) -> str:
        self._note(s)
        return super().redact_string(s)


@pytest.mark.usefixtures("json_logs")
class TestRedactThenCut:
    @pytest.mark.parametrize("before_cut", [12, 60, 120])
    def test_a_secret_across_the_cut_is_hidden_whole(self, capsys, before_cut):
        """A token straddling MAX_VALUE_CHARS is redacted before the cut: no half of it shows."""
        for secret in (_jwt_like("Qx7"), "gh" + "p_" + "Zq9" * 12):
            value = "w" * (MAX_VALUE_CHARS - before_cut - 1) + " " + secret + " tail"
            logs.get_logger().info("long", blob=value)

            [line] = _lines(capsys)
            assert secret[:10] not in line["blob"]
            assert "[REDACTED:" in line["blob"]
            # Cut only if the redacted text is still too long; marked when it is.
            marker = f"...[truncated {len(value) - MAX_VALUE_CHARS} chars]"
            assert line["blob"].endswith((marker, " tail"))
            assert len(line["blob"]) <= MAX_VALUE_CHARS + len(marker)

    def test_the_event_and_an_exception_message_too(self, capsys):
        """The event text and an exception message are redacted before they are cut."""
        secret = _jwt_like("Kp3")
        text = "w" * (MAX_VALUE_CHARS - 30) + " " + secret
        try:
            raise ValueError(text)
        except ValueError:
            logs.get_logger().exception(text)

        [line] = _lines(capsys)
        for shown in (line["event"], line["exception"]["message"]):
            assert secret[:10] not in shown
            assert "[REDACTED:jwt]" in shown

    def test_a_long_value_that_redaction_shortens_is_shown_whole(self, capsys):
        """Cut after redaction: a value just past the limit that shrinks below it is not cut."""
        value = _jwt_like("Hh8") + " " + "w" * (MAX_VALUE_CHARS - 100)
        logs.get_logger().info("long", note=value)

        [line] = _lines(capsys)
        assert line["note"] == "[REDACTED:jwt] " + "w" * (MAX_VALUE_CHARS - 100)

    def test_a_long_value_under_a_secret_key_is_hidden_whole(self, capsys):
        """A long password is "[REDACTED]", with no cut marker telling its length."""
        logs.get_logger().info("long", password="p" * (MAX_VALUE_CHARS * 3))

        [line] = _lines(capsys)
        assert line["password"] == "[REDACTED]"

    def test_redaction_of_a_huge_value_is_bounded(self, capsys):
        """Only a window a little past the cut is redacted, whatever the value's size."""
        recorder = _RecordingRedactor()
        set_redactor(recorder)
        huge = ("word " * 2_000_000) + _jwt_like("Zz1")
        try:
            raise RuntimeError(huge)
        except RuntimeError:
            logs.get_logger().exception(huge, blob=huge)

        [line] = _lines(capsys)
        assert recorder.longest <= MAX_VALUE_CHARS + 8_192
        assert line["blob"].endswith(f"...[truncated {len(huge) - MAX_VALUE_CHARS} chars]")
        assert len(line["event"]) < MAX_VALUE_CHARS + 100


class _Step(enum.Enum):
    LOGIN = "Bearer " + "Yk4" * 8
    DONE = "done"


class _KeyWithSecretText:
    def __str__(self) -> str:
        return "Bearer " + "Wm5" * 8


@pytest.mark.usefixtures("json_logs")
class TestNativeValuesInLines:
    def test_enum_members_memoryview_and_bytes(self, capsys):
        """Enum members, memoryview, bytes and bytearray are redacted before orjson writes them."""
        secret = "Ab" + "1" * 18
        logs.get_logger().info(
            "native",
            step=_Step.LOGIN,
            done=_Step.DONE,
            view=memoryview(f"Authorization: Bearer {secret}".encode()),
            raw=f"password={secret}".encode(),
            buf=bytearray(f"token={secret}".encode()),
        )

        out = capsys.readouterr().out
        assert secret not in out
        assert "Yk4Yk4" not in out
        line = json.loads(out)
        assert line["step"] == "Bearer [REDACTED:bearer]"
        assert line["done"] == "done"
        assert line["view"] == "Authorization: [REDACTED]"
        assert (line["raw"], line["buf"]) == ("password=[REDACTED]", "token=[REDACTED]")

    def test_secrets_used_as_keys(self, capsys):
        """A token as an event key, as a nested key, in a tuple key or an object's str()."""
        token = "gh" + "p_" + "Rt6" * 12
        logs.get_logger().info(
            "keys",
            **{token: "own"},
            nested={token: 1, "plain": 2},
            pairs={("user", "Bearer " + token): 3, 7: "int key"},
            objects={_KeyWithSecretText(): 4},
            after="kept",
        )

        out = capsys.readouterr().out
        assert token[4:14] not in out
        assert "Wm5Wm5" not in out
        line = json.loads(out)
        assert list(line)[6:] == ["[REDACTED:github_token]", "nested", "pairs", "objects", "after"]
        assert line["[REDACTED:github_token]"] == "own"
        assert line["nested"] == {"[REDACTED:github_token]": 1, "plain": 2}
        assert line["pairs"] == {"('user', 'Bearer [REDACTED:bearer]')": 3, "7": "int key"}
        assert line["objects"] == {"Bearer [REDACTED:bearer]": 4}
