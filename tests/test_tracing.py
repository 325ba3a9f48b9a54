from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from prometheus_client import REGISTRY

from kaleem_telemetry import context, tracing
from kaleem_telemetry.config import TelemetryConfig
from tests.receivers import OTLPReceiver


def _config(**env: str) -> TelemetryConfig:
    return TelemetryConfig.from_env(environ=env)


@pytest.fixture(name="receiver", params=["grpc", "http/protobuf"])
def _receiver(request: pytest.FixtureRequest) -> Iterator[OTLPReceiver]:
    with OTLPReceiver(request.param) as receiver:
        yield receiver


class TestExport:
    def test_spans_reach_the_receiver_over_each_protocol(self, receiver: OTLPReceiver) -> None:
        """A span is exported over OTLP gRPC and OTLP HTTP/protobuf to a real receiver."""
        component = tracing.configure_tracing(_config(**receiver.env()))
        assert component is not None
        with tracing.get_tracer().start_as_current_span("checkout"):
            pass
        component.force_flush(10)
        spans = receiver.wait_for(1)

        assert [s.name for s in spans] == ["checkout"]
        assert spans[0].scope == tracing.TRACER_NAME

    def test_otlp_headers_are_sent(self, receiver: OTLPReceiver) -> None:
        """OTEL_EXPORTER_OTLP_HEADERS reach the collector as request headers or metadata."""
        env = receiver.env(OTEL_EXPORTER_OTLP_HEADERS="X-Api-Key=k-123,x-tenant=acme")
        component = tracing.configure_tracing(_config(**env))
        assert component is not None
        with tracing.get_tracer().start_as_current_span("op"):
            pass
        component.force_flush(10)
        receiver.wait_for(1)

        assert receiver.metadata[0]["x-api-key"] == "k-123"
        assert receiver.metadata[0]["x-tenant"] == "acme"

    def test_resource_follows_the_design(self, receiver: OTLPReceiver) -> None:
        """The resource carries service, version, environment, instance, host and extras."""
        env = receiver.env(
            OTEL_SERVICE_NAME="kaleem-api",
            KALEEM_TELEMETRY_VERSION="1.2.3",
            KALEEM_TELEMETRY_ENVIRONMENT="staging",
            OTEL_RESOURCE_ATTRIBUTES="team=payments,region=eu%2D1",
        )
        component = tracing.configure_tracing(_config(**env))
        assert component is not None
        with tracing.get_tracer().start_as_current_span("op"):
            pass
        component.force_flush(10)
        resource = receiver.wait_for(1)[0].resource

        assert resource["service.name"] == "kaleem-api"
        assert resource["service.version"] == "1.2.3"
        assert resource["deployment.environment.name"] == "staging"
        assert resource["team"] == "payments"
        assert resource["region"] == "eu-1"
        assert resource["service.instance.id"]
        assert resource["host.name"]

    def test_exported_attributes_are_redacted(self, receiver: OTLPReceiver) -> None:
        """Secret attributes and secrets in event attributes never leave the process."""
        component = tracing.configure_tracing(_config(**receiver.env()))
        assert component is not None
        secret = "Bearer " + "abc" * 5
        with tracing.get_tracer().start_as_current_span("op") as span:
            span.set_attribute("password", "hunter2")
            span.set_attribute("http.request.header.authorization", secret)
            span.add_event("retry", {"api_key": "k", "note": f"sent {secret}"})
        component.force_flush(10)
        exported = receiver.wait_for(1)[0]

        assert exported.attributes["password"] == "[REDACTED]"
        assert secret not in str(exported.attributes)
        assert exported.events[0][1]["api_key"] == "[REDACTED]"
        assert secret not in str(exported.events)

    def test_console_exporter_writes_one_line_per_span(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The console exporter prints each span as one JSON line on stderr."""
        component = tracing.configure_tracing(_config(OTEL_TRACES_EXPORTER="console"))
        assert component is not None
        for name in ("a", "b"):
            with tracing.get_tracer().start_as_current_span(name):
                pass
        component.force_flush(5)
        err = capsys.readouterr().err

        assert len(err.strip().splitlines()) == 2
        assert '"name": "a"' in err


class TestProvider:
    def test_global_provider_and_propagators_are_set(self) -> None:
        """Configuring sets our SDK provider globally and the W3C propagators."""
        component = tracing.configure_tracing(_config(OTEL_TRACES_EXPORTER="none"))

        assert component is not None
        assert trace.get_tracer_provider() is component.provider
        assert {"traceparent", "tracestate", "baggage"} <= set(
            propagate.get_global_textmap().fields
        )

    def test_reconfigure_keeps_the_provider_and_swaps_the_exporter(self) -> None:
        """A second configuration keeps the global provider and exports to the new endpoint."""
        with OTLPReceiver("http") as first, OTLPReceiver("http") as second:
            one = tracing.configure_tracing(_config(**first.env()))
            two = tracing.configure_tracing(_config(**second.env()))
            assert one is not None
            assert two is not None
            with tracing.get_tracer().start_as_current_span("after"):
                pass
            two.force_flush(10)
            spans = second.wait_for(1)

            assert one.provider is two.provider
            assert [s.name for s in spans] == ["after"]
            assert first.spans == []

    def test_reconfigure_with_a_new_service_name_warns(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Changing the resource after the provider exists logs that a restart is needed."""
        tracing.configure_tracing(_config(OTEL_TRACES_EXPORTER="none", OTEL_SERVICE_NAME="a"))
        with caplog.at_level(logging.WARNING, logger="kaleem_telemetry.tracing"):
            tracing.configure_tracing(_config(OTEL_TRACES_EXPORTER="none", OTEL_SERVICE_NAME="b"))

        assert "resource" in caplog.text

    def test_sdk_disabled_configures_nothing(self) -> None:
        """OTEL_SDK_DISABLED=true returns None and leaves the global provider alone."""
        component = tracing.configure_tracing(_config(OTEL_SDK_DISABLED="true"))

        assert component is None
        assert not isinstance(trace.get_tracer_provider(), tracing.TracerProvider)

    def test_exporter_none_still_records_spans(self, span_exporter: object) -> None:
        """With OTEL_TRACES_EXPORTER=none spans still exist (log correlation, tests)."""
        with tracing.get_tracer().start_as_current_span("op") as span:
            recording = span.is_recording()

        assert recording
        assert [s.name for s in span_exporter.get_finished_spans()] == ["op"]  # type: ignore[attr-defined]

    def test_reset_allows_a_fresh_provider(self) -> None:
        """reset_for_tests lets the next configuration install a new global provider."""
        one = tracing.configure_tracing(_config(OTEL_TRACES_EXPORTER="none"))
        tracing.reset_for_tests()
        two = tracing.configure_tracing(_config(OTEL_TRACES_EXPORTER="none"))

        assert one is not None
        assert two is not None
        assert one.provider is not two.provider
        assert trace.get_tracer_provider() is two.provider

    def test_import_does_not_load_exporters(self) -> None:
        """Importing our modules loads no OTLP exporter, grpc or sentry_sdk."""
        code = (
            "import sys, kaleem_telemetry.tracing, kaleem_telemetry.sentry, "
            "kaleem_telemetry.decorators, kaleem_telemetry.propagation\n"
            "bad = [m for m in sys.modules if m.startswith(('grpc', 'sentry_sdk', "
            "'opentelemetry.exporter'))]\n"
            "print(bad)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
        ).stdout

        assert out.strip() == "[]"


class TestSampler:
    @pytest.mark.parametrize(
        ("env", "expected"),
        [
            ({}, "ParentBased{root:TraceIdRatioBased{1.0}"),
            ({"KALEEM_TELEMETRY_ENVIRONMENT": "production"}, "TraceIdRatioBased{0.1}"),
            ({"OTEL_TRACES_SAMPLER_ARG": "0.25"}, "TraceIdRatioBased{0.25}"),
            ({"OTEL_TRACES_SAMPLER": "always_on"}, "AlwaysOnSampler"),
            ({"OTEL_TRACES_SAMPLER": "always_off"}, "AlwaysOffSampler"),
            (
                {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"},
                "TraceIdRatioBased{0.5}",
            ),
            ({"OTEL_TRACES_SAMPLER": "parentbased_always_on"}, "ParentBased{root:AlwaysOnSampler"),
            (
                {"OTEL_TRACES_SAMPLER": "parentbased_always_off"},
                "ParentBased{root:AlwaysOffSampler",
            ),
        ],
    )
    def test_sampler_follows_the_configuration(self, env: dict[str, str], expected: str) -> None:
        """The sampler is the one OTEL_TRACES_SAMPLER[_ARG] and the environment select."""
        description = tracing.build_sampler(_config(**env)).get_description()

        assert expected in description

    def test_swapped_sampler_applies_to_existing_tracers(self, span_exporter: object) -> None:
        """A reconfigured sampler applies to tracers obtained before the change."""
        tracer = tracing.get_tracer()
        tracing.configure_tracing(
            _config(OTEL_TRACES_EXPORTER="none", OTEL_TRACES_SAMPLER="always_off")
        )
        with tracer.start_as_current_span("dropped") as span:
            sampled = span.get_span_context().trace_flags.sampled

        assert not sampled
        assert span_exporter.get_finished_spans() == ()  # type: ignore[attr-defined]


@contextlib.contextmanager
def _spans_with(monkeypatch: pytest.MonkeyPatch, **env: str) -> Iterator[Any]:
    """Configure tracing under ``env`` (SDK span limits) and collect its finished spans."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    tracing.configure_tracing(_config(OTEL_TRACES_EXPORTER="none"))
    exporter, remove = tracing.capture_spans()
    try:
        yield exporter
    finally:
        remove()


class TestOwnAttributes:
    """The middleware's span attributes: stored directly, identical to the public path."""

    ATTRS: ClassVar[dict[str, Any]] = {
        "http.route": "/items/{item_id}",
        "http.response.status_code": 200,
        "ok": True,
    }

    def _span(self) -> Any:
        return tracing.start_own_span(
            "GET",
            context=Context(),
            kind=trace.SpanKind.SERVER,
            attributes={"http.request.method": "GET", "url.path": "/items/42"},
        )

    def test_own_span_carries_its_start_attributes(self, span_exporter: Any) -> None:
        """start_own_span gives the same exported span as start_span(attributes=...)."""
        self._span().end()
        tracing.get_tracer().start_span(
            "GET",
            context=Context(),
            kind=trace.SpanKind.SERVER,
            attributes={"http.request.method": "GET", "url.path": "/items/42"},
        ).end()

        own, public = span_exporter.get_finished_spans()
        assert dict(own.attributes) == dict(public.attributes)
        assert own.name == public.name == "GET"
        assert own.kind is public.kind is trace.SpanKind.SERVER

    def test_fast_path_is_taken_with_the_installed_sdk(
        self, span_exporter: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With this SDK the values go straight into the store (the public calls never run)."""
        span = self._span()

        def public(*_args: object) -> None:
            raise AssertionError("the public path ran")

        monkeypatch.setattr(span, "set_attributes", public)
        monkeypatch.setattr(span, "update_name", public)
        tracing.set_own_attributes(span, self.ATTRS, "GET /items/{item_id}")
        span.end()

        (finished,) = span_exporter.get_finished_spans()
        assert finished.name == "GET /items/{item_id}"
        assert dict(finished.attributes) == {
            "http.request.method": "GET",
            "url.path": "/items/42",
            **self.ATTRS,
        }

    def test_value_length_limit_takes_the_public_path(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT still truncates the middleware's values."""
        with _spans_with(monkeypatch, OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT="4") as exporter:
            span = self._span()
            tracing.set_own_attributes(span, {"url.query": "page=2&sort=name"}, "GET /x")
            span.end()

        (finished,) = exporter.get_finished_spans()
        assert finished.attributes["url.path"] == "/ite"
        assert finished.attributes["url.query"] == "page"
        assert finished.name == "GET /x"

    def test_attribute_count_limit_evicts_like_the_sdk(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT the SDK's own eviction applies."""
        with _spans_with(monkeypatch, OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT="3") as exporter:
            span = self._span()
            tracing.set_own_attributes(span, {"a": 1, "b": 2})
            span.end()

        (finished,) = exporter.get_finished_spans()
        assert len(finished.attributes) == 3
        assert finished.attributes["b"] == 2
        assert finished.dropped_attributes == 1

    def test_dropped_counts_survive_redaction(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The exported span still says how many events and links the limits dropped."""
        limits = {"OTEL_SPAN_EVENT_COUNT_LIMIT": "1", "OTEL_SPAN_LINK_COUNT_LIMIT": "1"}
        with _spans_with(monkeypatch, **limits) as exporter:
            other = tracing.get_tracer().start_span("other").get_span_context()
            span = tracing.get_tracer().start_span(
                "op", links=[trace.Link(other), trace.Link(other)]
            )
            span.add_event("one")
            span.add_event("two", {"token": "t"})
            span.end()

        (finished,) = exporter.get_finished_spans()
        assert [event.name for event in finished.events] == ["two"]
        assert finished.dropped_events == 1
        assert len(finished.links) == 1
        assert finished.dropped_links == 1

    def test_other_value_types_are_cleaned_by_the_sdk(self, span_exporter: Any) -> None:
        """A list goes through the SDK's validation, which stores it as a tuple."""
        span = self._span()
        tracing.set_own_attributes(span, {"tags": ["a", "b"]})
        span.end()

        (finished,) = span_exporter.get_finished_spans()
        assert finished.attributes["tags"] == ("a", "b")

    def test_ended_and_non_recording_spans_are_left_alone(
        self, span_exporter: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An ended span keeps its attributes (the SDK warns); a non-recording one ignores them."""
        span = self._span()
        span.end()
        tracing.set_own_attributes(span, {"late": "x"}, "renamed")
        tracing.set_own_attributes(trace.INVALID_SPAN, {"late": "x"}, "renamed")

        (finished,) = span_exporter.get_finished_spans()
        assert "late" not in finished.attributes
        assert finished.name == "GET"

    def test_a_foreign_provider_sampler_sees_the_start_attributes(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Under a provider installed by someone else, its sampler gets the attributes."""
        seen: list[dict[str, Any]] = []

        class Recording(Sampler):
            def should_sample(
                self,
                parent_context: Any,
                trace_id: int,
                name: str,
                kind: Any = None,
                attributes: Any = None,
                links: Any = None,
                trace_state: Any = None,
            ) -> SamplingResult:
                seen.append(dict(attributes or {}))
                return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

            def get_description(self) -> str:
                return "recording"

        trace.set_tracer_provider(TracerProvider(sampler=Recording()))
        with _spans_with(monkeypatch) as exporter:
            self._span().end()

        assert seen == [{"http.request.method": "GET", "url.path": "/items/42"}]
        assert dict(exporter.get_finished_spans()[0].attributes) == seen[0]


class TestContextAttributes:
    def test_bound_context_is_on_every_span_including_children(self, span_exporter: object) -> None:
        """merchant.id, request.id and enduser.id are on spans started while bound."""
        tracer = tracing.get_tracer()
        with (
            context.telemetry_context(merchant_id="m-7", request_id="r-1", user_id="u-3"),
            tracer.start_as_current_span("parent"),
            tracer.start_as_current_span("child"),
        ):
            pass
        with tracer.start_as_current_span("unbound"):
            pass
        spans = {s.name: s for s in span_exporter.get_finished_spans()}  # type: ignore[attr-defined]

        for name in ("parent", "child"):
            assert spans[name].attributes["merchant.id"] == "m-7"
            assert spans[name].attributes["request.id"] == "r-1"
            assert spans[name].attributes["enduser.id"] == "u-3"
        assert "merchant.id" not in spans["unbound"].attributes

    def test_context_is_visible_in_a_thread_via_with_current_context(
        self, span_exporter: object
    ) -> None:
        """Spans started in a thread through with_current_context carry the context."""
        tracer = tracing.get_tracer()

        def work() -> None:
            with tracer.start_as_current_span("in-thread"):
                pass

        with context.telemetry_context(merchant_id="m-9"):
            thread = threading.Thread(target=context.with_current_context(work))
            thread.start()
            thread.join()
        span = span_exporter.get_finished_spans()[0]  # type: ignore[attr-defined]

        assert span.attributes["merchant.id"] == "m-9"


class TestDroppedSpans:
    def test_full_queue_is_counted_and_warned_once(self, caplog: pytest.LogCaptureFixture) -> None:
        """Spans dropped on a full export queue are counted in a metric and logged once."""
        before = REGISTRY.get_sample_value("telemetry_spans_dropped_total") or 0.0
        with OTLPReceiver("grpc", mode="blackhole") as receiver:
            component = tracing.configure_tracing(_config(**receiver.env()))
            assert component is not None
            tracer = tracing.get_tracer()
            with caplog.at_level(logging.WARNING, logger="kaleem_telemetry.tracing"):
                for _ in range(3000):
                    tracer.start_span("s").end()
            dropped = component.dropped_spans
            component.shutdown(1.0)
        after = REGISTRY.get_sample_value("telemetry_spans_dropped_total") or 0.0

        assert dropped > 0
        assert after - before == dropped
        assert caplog.text.count("export queue is full") == 1


class TestExporterLogs:
    def test_exporter_errors_hide_credentials_and_header_values(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An exporter error log shows neither the endpoint's password nor header values."""
        password = "pw-" + "x" * 12
        header_value = "hv-" + "y" * 12
        with OTLPReceiver("http") as receiver:
            # A wrong path: the receiver answers 404, a non-retryable export error.
            url = f"http://user:{password}@127.0.0.1:{receiver.port}/wrong"
            env = {
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": url,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_HEADERS": f"x-api-key={header_value}",
            }
            component = tracing.configure_tracing(_config(**env))
            assert component is not None
            with caplog.at_level(logging.DEBUG, logger="opentelemetry"):
                with tracing.get_tracer().start_as_current_span("op"):
                    pass
                component.force_flush(10)

        assert caplog.records
        assert password not in caplog.text
        assert header_value not in caplog.text

    def test_filter_scrubs_secrets_in_messages_and_tracebacks(self) -> None:
        """The exporter log filter replaces secrets in the message and the traceback."""
        tracing.configure_tracing(
            _config(OTEL_TRACES_EXPORTER="none", OTEL_EXPORTER_OTLP_HEADERS="k=supersecret1")
        )
        logger = logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter")
        record = logger.makeRecord(
            logger.name,
            logging.ERROR,
            __file__,
            1,
            "to %s with %s",
            ("http://u:p4ss@host:4317", "supersecret1"),
            None,
        )
        try:
            raise RuntimeError("header supersecret1")
        except RuntimeError:
            record.exc_info = sys.exc_info()
        assert tracing._LOG_FILTER is not None
        tracing._LOG_FILTER.filter(record)

        assert "supersecret1" not in record.getMessage()
        assert "p4ss" not in record.getMessage()
        assert record.exc_info is None

    @pytest.mark.parametrize(
        "name",
        [
            "opentelemetry.sdk.some_renamed_internal",
            "opentelemetry.exporter.otlp.proto.grpc.renamed.deeper",
            "opentelemetry",
            "grpc._renamed_channel",
            "grpc",
        ],
    )
    def test_a_secret_from_any_child_logger_is_masked(
        self, name: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A record from a logger under opentelemetry or grpc, whatever its name, is scrubbed.

        A real record, logged through the child logger and propagated to the
        handlers above it: no filter on the logger itself is involved.
        """
        secret = "hv-" + "z" * 12
        tracing.configure_tracing(
            _config(OTEL_TRACES_EXPORTER="none", OTEL_EXPORTER_OTLP_HEADERS=f"k={secret}")
        )
        logger = logging.getLogger(name)
        assert not logger.filters
        with caplog.at_level(logging.DEBUG, logger=name):
            logger.error("export to http://u:pw-child-1@host:4317 failed: header %s", secret)
            try:
                raise RuntimeError(f"header {secret}")
            except RuntimeError:
                logger.exception("failed")

        assert len(caplog.records) == 2
        assert secret not in caplog.text
        assert "pw-child-1" not in caplog.text
        assert all(secret not in r.getMessage() for r in caplog.records)

    def test_other_loggers_are_left_alone(self, caplog: pytest.LogCaptureFixture) -> None:
        """Records of loggers outside opentelemetry and grpc are not rewritten."""
        tracing.configure_tracing(
            _config(OTEL_TRACES_EXPORTER="none", OTEL_EXPORTER_OTLP_HEADERS="k=unrelated-42")
        )
        with caplog.at_level(logging.INFO, logger="grpcio_lookalike"):
            logging.getLogger("grpcio_lookalike").info("value %s", "unrelated-42")

        assert caplog.records[0].args == ("unrelated-42",)
