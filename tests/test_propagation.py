from __future__ import annotations

import time

import pytest
from opentelemetry import baggage, trace

from kaleem_telemetry import context, tracing
from kaleem_telemetry.config import TelemetryConfig
from kaleem_telemetry.propagation import (
    extract_context,
    extract_server_context,
    inject_context,
)

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class TestInject:
    def test_round_trip_carries_trace_and_context(self, span_exporter: object) -> None:
        """Injected headers give back the same trace, request id, merchant id and enqueue time."""
        with (
            context.telemetry_context(request_id="r-1", merchant_id="m-1"),
            tracing.get_tracer().start_as_current_span("producer") as span,
        ):
            headers = inject_context({})
            sent = span.get_span_context()
        extracted = extract_context(headers)
        parent = trace.get_current_span(extracted.otel_context).get_span_context()

        assert parent.trace_id == sent.trace_id
        assert parent.span_id == sent.span_id
        assert extracted.request_id == "r-1"
        assert extracted.merchant_id == "m-1"
        assert extracted.enqueued_at is not None
        assert abs(extracted.enqueued_at - time.time()) < 60

    def test_inject_without_enqueued_at_leaves_it_out(self, span_exporter: object) -> None:
        """x-enqueued-at is left out with enqueued_at=False (the headers of an HTTP call)."""
        headers = inject_context({}, enqueued_at=False)

        assert "x-enqueued-at" not in headers
        assert "x-request-id" not in headers


class TestExtract:
    @pytest.mark.parametrize(
        "headers",
        [
            {"TraceParent": TRACEPARENT, "X-Request-ID": "r-2"},
            {b"traceparent": TRACEPARENT.encode(), b"x-request-id": b"r-2"},
            [(b"traceparent", TRACEPARENT.encode()), (b"x-request-id", b"r-2")],
        ],
    )
    def test_any_case_and_bytes(self, headers: object) -> None:
        """Header names match in any case, values may be bytes, pairs work like mappings."""
        extracted = extract_context(headers)  # type: ignore[arg-type]
        parent = trace.get_current_span(extracted.otel_context).get_span_context()

        assert format(parent.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
        assert extracted.request_id == "r-2"

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("x-request-id", "has space"),
            ("x-request-id", "x" * 129),
            ("x-request-id", "line\nbreak"),
            ("x-merchant-id", "<script>"),
            ("x-enqueued-at", "yesterday"),
            ("x-enqueued-at", "nan"),
            ("x-enqueued-at", "-5"),
            ("x-delay", "forever"),
            ("x-delay", "inf"),
        ],
    )
    def test_malformed_values_are_ignored(self, name: str, value: str) -> None:
        """A malformed request id, merchant id or enqueue time is dropped, not trusted."""
        extracted = extract_context({name: value})

        assert extracted.request_id is None
        assert extracted.merchant_id is None
        assert extracted.enqueued_at is None
        assert extracted.delay is None

    @pytest.mark.parametrize(("value", "seconds"), [("5000", 5.0), ("-5000", 5.0), (b"250", 0.25)])
    def test_x_delay_is_read_in_milliseconds(self, value: object, seconds: float) -> None:
        """x-delay (the delayed-message exchange's milliseconds, maybe negated) becomes seconds."""
        assert extract_context({"x-delay": value}).delay == seconds

    def test_unreadable_headers_are_skipped(self) -> None:
        """A value whose str() raises and a non-pair item are skipped; the rest is read."""

        class Unprintable:
            def __str__(self) -> str:
                raise RuntimeError("no text")

        extracted = extract_context(
            [("x-merchant-id", Unprintable()), ("bad",), ("x-request-id", "r-3")]  # type: ignore[list-item]
        )

        assert extracted.request_id == "r-3"
        assert extracted.merchant_id is None

    def test_no_headers_give_an_empty_context(self) -> None:
        """None or empty headers give an invalid parent and no ids."""
        extracted = extract_context(None)

        assert not trace.get_current_span(extracted.otel_context).get_span_context().is_valid
        assert extracted.request_id is None


class TestServerContext:
    def test_trusted_headers_continue_the_trace(self, span_exporter: object) -> None:
        """With trust on, the server span is a child of the incoming traceparent."""
        ctx, links = extract_server_context({"traceparent": TRACEPARENT}, trust=True)
        with tracing.get_tracer().start_as_current_span("server", context=ctx, links=links):
            pass
        span = span_exporter.get_finished_spans()[0]  # type: ignore[attr-defined]

        assert format(span.context.trace_id, "032x") == TRACEPARENT.split("-")[1]
        assert span.parent is not None
        assert links == []

    def test_untrusted_headers_start_a_new_trace_with_a_link(self, span_exporter: object) -> None:
        """With trust off, the server span starts a new trace that links to the incoming one."""
        cfg = TelemetryConfig.from_env(environ={"KALEEM_TELEMETRY_TRUST_TRACE_HEADERS": "false"})
        headers = {"traceparent": TRACEPARENT, "baggage": "tenant=evil"}
        ctx, links = extract_server_context(headers, cfg)
        with tracing.get_tracer().start_as_current_span("server", context=ctx, links=links):
            pass
        span = span_exporter.get_finished_spans()[0]  # type: ignore[attr-defined]

        assert format(span.context.trace_id, "032x") != TRACEPARENT.split("-")[1]
        assert span.parent is None
        assert format(span.links[0].context.trace_id, "032x") == TRACEPARENT.split("-")[1]
        assert baggage.get_all(ctx) == {}

    def test_untrusted_without_traceparent_has_no_link(self) -> None:
        """With trust off and no incoming trace there is nothing to link."""
        _ctx, links = extract_server_context({}, trust=False)

        assert links == []
