import pytest

from kaleem_telemetry import bind_context, capture_exception, get_logger, instrument
from kaleem_telemetry.metrics import get_metrics
from kaleem_telemetry.testing import capture_telemetry


@instrument
def checkout(merchant_id: str) -> str:
    """Check out one basket: the instrumented function under test."""
    bind_context(merchant_id=merchant_id)
    get_logger("shop").info("checked_out", password="hunter2-secret")
    return "ok"


class TestCaptureTelemetry:
    def test_logs_are_captured_shaped_and_redacted(self):
        """Captured log events have the contract shape and are already redacted."""
        with capture_telemetry() as captured:
            checkout("m-1")

        [event] = captured.events("checked_out")
        assert event["merchant_id"] == "m-1"
        assert event["logger"] == "shop"
        assert event["password"].startswith("[REDACTED")

    def test_spans_are_captured_without_setup(self):
        """Spans are recorded even if setup_telemetry() was never called."""
        with capture_telemetry() as captured:
            checkout("m-2")

        [span] = captured.spans
        assert span.name.endswith("checkout")
        assert span.attributes is not None
        assert span.attributes["merchant.id"] == "m-2"

    def test_metric_value_counts_only_what_happened_inside(self):
        """metric_value() reports the growth during the capture, not earlier calls."""
        get_metrics()
        checkout("m-0")
        with capture_telemetry() as captured:
            checkout("m-3")
            checkout("m-3")

        assert captured.metric_value("function_calls_total", function="checkout") == 2
        assert captured.metrics("function_calls")

    def test_sentry_events_are_captured_without_a_dsn(self):
        """capture_exception() with no Sentry DSN still shows the event to the capture."""
        with capture_telemetry() as captured:
            bind_context(merchant_id="m-4")
            capture_exception(ValueError("bad input"), order="o-1")

        [event] = captured.sentry_events
        assert event["tags"]["merchant_id"] == "m-4"
        assert event["tags"]["order"] == "o-1"

    def test_clear_forgets_everything(self):
        """clear() empties logs, spans and Sentry events and resets the metric baseline."""
        with capture_telemetry() as captured:
            checkout("m-5")
            captured.clear()
            checkout("m-5")

        assert len(captured.events("checked_out")) == 1
        assert len(captured.spans) == 1
        assert captured.metric_value("function_calls_total", function="checkout") == 1

    def test_nothing_is_captured_after_the_block(self):
        """Events after the block are not added to the capture."""
        with capture_telemetry() as captured:
            pass
        get_logger().info("later")

        assert captured.logs == []


class TestFixture:
    def test_fixture_captures(self, telemetry_capture):
        """The telemetry_capture fixture captures like the context manager."""
        checkout("m-6")

        assert telemetry_capture.events("checked_out")[0]["merchant_id"] == "m-6"

    @pytest.mark.parametrize("n", [1, 2])
    def test_fixture_is_fresh_per_test(self, telemetry_capture, n):
        """Each test gets its own capture."""
        get_logger().info("count", n=n)

        assert [e["n"] for e in telemetry_capture.events("count")] == [n]
