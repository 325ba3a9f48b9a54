from __future__ import annotations

import logging
import random
import threading
import typing
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from kaleem_telemetry import metrics
from kaleem_telemetry._metric_specs import FAMILIES, HTTP_BUCKETS, SERIES_OVERFLOW
from kaleem_telemetry._metrics_server import configure_metrics
from kaleem_telemetry.config import TelemetryConfig
from kaleem_telemetry.exceptions import TelemetryConfigError
from kaleem_telemetry.metrics import (
    OTHER,
    CappedFamily,
    TelemetryMetrics,
    get_metrics,
)

CONTRACT = {
    "http_requests_total": ("counter", ("method", "route", "status_code")),
    "http_request_duration_seconds": ("histogram", ("method", "route", "status_code")),
    "http_errors_total": ("counter", ("method", "route", "status_code", "error_type")),
    "http_requests_in_progress": ("gauge", ("method",)),
    "http_client_request_duration_seconds": ("histogram", ("method", "host", "status_code")),
    "database_query_duration_seconds": (
        "histogram",
        ("db_system", "operation", "collection", "status"),
    ),
    "cache_hit_total": ("counter", ("cache_level", "cache_key_prefix")),
    "cache_miss_total": ("counter", ("cache_level", "cache_key_prefix")),
    "cache_operations_total": ("counter", ("operation", "result", "cache_level")),
    "cache_operation_duration_seconds": ("histogram", ("operation", "cache_level")),
    "job_runs_total": ("counter", ("queue", "job", "status")),
    "job_duration_seconds": ("histogram", ("queue", "job", "status")),
    "job_queue_lag_seconds": ("histogram", ("queue", "job")),
    "jobs_in_progress": ("gauge", ("queue", "job")),
    "websocket_connections_active": ("gauge", ("route",)),
    "websocket_messages_total": ("counter", ("route", "direction")),
    "function_calls_total": ("counter", ("function", "module", "result")),
    "function_duration_seconds": ("histogram", ("function", "module")),
    "business_events_total": ("counter", ("event",)),
    "health_check_status": ("gauge", ("check",)),
    "app_info": ("gauge", ("service", "version", "environment")),
    "series_overflow_total": ("counter", ("metric",)),
}


@pytest.fixture(name="tm")
def _tm(registry: CollectorRegistry) -> TelemetryMetrics:
    """The metric families on the fresh registry."""
    return TelemetryMetrics(registry)


def _db(values: tuple[str, ...]) -> dict[str, str]:
    return dict(zip(("db_system", "operation", "collection", "status"), values, strict=True))


def _exemplar(registry: CollectorRegistry, bound: str) -> str | None:
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.endswith("_bucket") and sample.labels["le"] == bound and sample.exemplar:
                return str(sample.exemplar.labels["trace_id"])
    return None


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


class TestContract:
    @pytest.mark.parametrize(("attribute", "expected"), sorted(CONTRACT.items()))
    def test_family_type_and_labels(
        self, tm: TelemetryMetrics, attribute: str, expected: tuple[str, tuple[str, ...]]
    ) -> None:
        """Every family of docs/reference.md exists under its contract name, type and labels."""
        family = getattr(tm, attribute)
        kind, labelnames = expected

        assert isinstance(family, CappedFamily)
        assert family.metric._type == kind
        assert family.labelnames == labelnames

    def test_exposed_names(self, tm: TelemetryMetrics, registry: CollectorRegistry) -> None:
        """The registry exposes the exact contract names, overflow counter included."""
        names = {family.name for family in registry.collect()}

        for attribute, (kind, _) in CONTRACT.items():
            name = (
                "telemetry_series_overflow" if attribute == "series_overflow_total" else attribute
            )
            if kind == "counter":
                name = name.removesuffix("_total")
            assert name in names

    def test_http_duration_buckets(self, tm: TelemetryMetrics, registry: CollectorRegistry) -> None:
        """The HTTP duration histogram has exactly the contract buckets (plus +Inf)."""
        tm.http_request_duration_seconds.labels("GET", "/", "200").observe(0.2)
        bounds = [
            s.labels["le"]
            for family in registry.collect()
            for s in family.samples
            if s.name == "http_request_duration_seconds_bucket"
        ]

        assert HTTP_BUCKETS == (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
        assert bounds == [*(str(float(b)) for b in HTTP_BUCKETS), "+Inf"]

    def test_the_declarations_are_the_contract(self) -> None:
        """The declarations name the families above, with the same types and labels."""
        declared = {spec.name: (spec.kind, spec.labels) for spec in FAMILIES}
        declared["series_overflow_total"] = (SERIES_OVERFLOW.kind, SERIES_OVERFLOW.labels)

        assert declared == CONTRACT

    def test_every_declaration_is_typed_on_the_class(self) -> None:
        """Each declared family has its annotation on TelemetryMetrics, of its kind."""
        hints = typing.get_type_hints(TelemetryMetrics)
        kinds = {Counter: "counter", Histogram: "histogram", Gauge: "gauge"}
        annotated = {
            name: kinds[typing.get_args(hint)[0]]
            for name, hint in hints.items()
            if typing.get_origin(hint) is CappedFamily
        }

        assert annotated == {spec.name: spec.kind for spec in FAMILIES}

    def test_exposition_follows_the_declarations(
        self, tm: TelemetryMetrics, registry: CollectorRegistry
    ) -> None:
        """Help text, type and buckets on the wire are the declared ones."""
        for family in tm.families:
            child = family.labels(*["x"] * len(family.labelnames))
            if hasattr(child, "observe"):
                child.observe(0)
        collected = {family.name: family for family in registry.collect()}

        for spec in (*FAMILIES, SERIES_OVERFLOW):
            family = collected[spec.base_name]
            bounds = [
                float(sample.labels["le"])
                for sample in family.samples
                if sample.name.endswith("_bucket") and sample.labels["le"] != "+Inf"
            ]
            assert (family.type, family.documentation) == (spec.kind, spec.help)
            assert bounds == list(spec.buckets or ())

    def test_an_exemplar_family_keeps_one_fresh_exemplar_per_bucket(
        self, tm: TelemetryMetrics, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """observe_sampled refreshes a bucket's exemplar only once it is old."""
        clock = [100.0]
        monkeypatch.setattr(metrics, "monotonic", lambda: clock[0])
        family = tm.database_query_duration_seconds
        values = ("postgresql", "select", "orders", "ok")
        family.observe_sampled(values, 0.004, "a" * 32)
        family.observe_sampled(values, 0.004, "b" * 32)
        first = _exemplar(registry, "0.005")
        clock[0] += metrics.EXEMPLAR_REFRESH_SECONDS
        family.observe_sampled(values, 0.004, "c" * 32)

        assert (first, _exemplar(registry, "0.005")) == ("a" * 32, "c" * 32)
        assert _value(registry, "database_query_duration_seconds_count", **_db(values)) == 3

    def test_a_family_without_exemplars_ignores_the_trace_id(
        self, tm: TelemetryMetrics, registry: CollectorRegistry
    ) -> None:
        """A family not declared with exemplars observes plainly."""
        tm.function_duration_seconds.observe_sampled(("f", "m"), 0.004, "a" * 32)

        assert not [s for f in registry.collect() for s in f.samples if s.exemplar]
        assert _value(registry, "function_duration_seconds_count", function="f", module="m") == 1

    def test_namespace_prefixes_names(self, registry: CollectorRegistry) -> None:
        """An explicit namespace prefixes every name."""
        tm = TelemetryMetrics(registry, namespace="kaleem")
        tm.http_requests_total.labels("GET", "/", "200").inc()

        assert (
            _value(
                registry, "kaleem_http_requests_total", method="GET", route="/", status_code="200"
            )
            == 1
        )

    def test_same_registry_twice_is_refused(self, registry: CollectorRegistry) -> None:
        """A second set of families on one registry is a duplicate, refused by prometheus_client."""
        TelemetryMetrics(registry)

        with pytest.raises(ValueError, match="Duplicated timeseries"):
            TelemetryMetrics(registry)

    def test_series_limit_must_be_positive(self, registry: CollectorRegistry) -> None:
        """A series limit below 1 is rejected."""
        with pytest.raises(ValueError, match="series_limit"):
            TelemetryMetrics(registry, series_limit=0)


class TestLabels:
    def test_child_is_cached(self, tm: TelemetryMetrics) -> None:
        """The same values return the very same prometheus_client child."""
        first = tm.http_requests_total.labels("GET", "/a", "200")

        assert tm.http_requests_total.labels("GET", "/a", "200") is first
        assert isinstance(first, Counter)

    def test_int_and_str_values_share_a_series(
        self, tm: TelemetryMetrics, registry: CollectorRegistry
    ) -> None:
        """An int status code and its string form land in one series."""
        tm.http_requests_total.labels("GET", "/a", 200).inc()
        tm.http_requests_total.labels("GET", "/a", "200").inc()

        assert (
            _value(registry, "http_requests_total", method="GET", route="/a", status_code="200")
            == 2
        )
        assert tm.http_requests_total.series_count == 1

    def test_wrong_label_count_raises(self, tm: TelemetryMetrics) -> None:
        """A wrong number of values raises ValueError naming the family."""
        with pytest.raises(ValueError, match="http_requests_total takes 3"):
            tm.http_requests_total.labels("GET")

    def test_unhashable_values_work(
        self, tm: TelemetryMetrics, registry: CollectorRegistry
    ) -> None:
        """An unhashable value is converted with str() instead of failing the lookup."""
        tm.business_events_total.labels(["x"]).inc()

        assert _value(registry, "business_events_total", event="['x']") == 1

    def test_exemplar_passthrough(self, tm: TelemetryMetrics) -> None:
        """observe(value, exemplar) keeps the trace_id exemplar on the bucket."""
        trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
        child = tm.http_request_duration_seconds.labels("GET", "/a", "200")
        child.observe(0.003, {"trace_id": trace_id})

        exemplars = [
            s.exemplar
            for s in tm.http_request_duration_seconds.metric.collect()[0].samples
            if s.exemplar
        ]

        assert tm.exemplars_enabled
        assert isinstance(child, Histogram)
        assert [e.labels for e in exemplars] == [{"trace_id": trace_id}]

    def test_gauges_inc_dec_set(self, tm: TelemetryMetrics, registry: CollectorRegistry) -> None:
        """Gauge children keep the inc/dec/set API."""
        tm.http_requests_in_progress.labels("GET").inc()
        tm.http_requests_in_progress.labels("GET").inc()
        tm.http_requests_in_progress.labels("GET").dec()
        tm.health_check_status.labels("db").set(1)

        assert _value(registry, "http_requests_in_progress", method="GET") == 1
        assert _value(registry, "health_check_status", check="db") == 1

    def test_concurrent_first_use(self, tm: TelemetryMetrics, registry: CollectorRegistry) -> None:
        """Threads racing on new label sets lose no increment."""

        def work() -> None:
            for i in range(200):
                tm.http_requests_total.labels("GET", f"/r{i % 20}", "200").inc()

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        total = sum(
            _value(registry, "http_requests_total", method="GET", route=f"/r{i}", status_code="200")
            for i in range(20)
        )
        assert total == 8 * 200
        assert tm.http_requests_total.series_count == 20


class TestSeriesCap:
    def test_ten_thousand_raw_values_stay_bounded(
        self, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
    ) -> None:
        """10,000 distinct raw paths and random methods keep the family at cap + the 'other' set."""
        tm = TelemetryMetrics(registry, series_limit=100)
        rng = random.Random(7)
        methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "BREW", "PROPFIND"]
        with caplog.at_level(logging.WARNING, logger="kaleem_telemetry.metrics"):
            for i in range(10_000):
                tm.http_requests_total.labels(rng.choice(methods), f"/items/{i}", "200").inc()

        series = {
            tuple(sorted(s.labels.items()))
            for family in registry.collect()
            if family.name == "http_requests"
            for s in family.samples
            if s.name == "http_requests_total"
        }
        other = _value(
            registry, "http_requests_total", method=OTHER, route=OTHER, status_code=OTHER
        )
        overflow = _value(registry, "telemetry_series_overflow_total", metric="http_requests_total")
        warnings = [r for r in caplog.records if "reached its limit" in r.getMessage()]

        assert len(series) == 101
        assert other == 10_000 - 100
        assert overflow == 10_000 - 100
        assert len(warnings) == 1
        assert "http_requests_total" in warnings[0].getMessage()

    def test_known_sets_still_count_past_the_cap(self, registry: CollectorRegistry) -> None:
        """A label set admitted before the cap keeps its own series afterwards."""
        tm = TelemetryMetrics(registry, series_limit=2)
        family = tm.http_requests_total
        family.labels("GET", "/a", "200").inc()
        family.labels("GET", "/b", "200").inc()
        family.labels("GET", "/c", "200").inc()
        family.labels("GET", "/a", "200").inc()

        assert (
            _value(registry, "http_requests_total", method="GET", route="/a", status_code="200")
            == 2
        )
        assert (
            _value(registry, "http_requests_total", method=OTHER, route=OTHER, status_code=OTHER)
            == 1
        )

    def test_other_families_are_unaffected(self, registry: CollectorRegistry) -> None:
        """The cap is per family: one overflowing family does not fold another."""
        tm = TelemetryMetrics(registry, series_limit=1)
        tm.http_requests_total.labels("GET", "/a", "200").inc()
        tm.http_requests_total.labels("GET", "/b", "200").inc()
        tm.cache_hit_total.labels("l1", "product").inc()

        assert (
            _value(registry, "cache_hit_total", cache_level="l1", cache_key_prefix="product") == 1
        )
        assert _value(registry, "telemetry_series_overflow_total", metric="cache_hit_total") == 0

    def test_raising_the_limit_admits_new_sets(self, registry: CollectorRegistry) -> None:
        """Setting series_limit later applies to every family."""
        tm = TelemetryMetrics(registry, series_limit=1)
        tm.http_requests_total.labels("GET", "/a", "200").inc()
        tm.series_limit = 5
        tm.http_requests_total.labels("GET", "/b", "200").inc()

        assert (
            _value(registry, "http_requests_total", method="GET", route="/b", status_code="200")
            == 1
        )
        assert tm.http_requests_total.series_limit == 5

    def test_clear_resets_the_family(
        self, tm: TelemetryMetrics, registry: CollectorRegistry
    ) -> None:
        """clear() drops children, series count and cache."""
        tm.app_info.labels("svc", "1", "dev").set(1)
        tm.app_info.clear()

        assert tm.app_info.series_count == 0
        assert (
            registry.get_sample_value(
                "app_info", {"service": "svc", "version": "1", "environment": "dev"}
            )
            is None
        )


class TestBusinessLabels:
    def test_declare_extends_the_family(
        self, tm: TelemetryMetrics, registry: CollectorRegistry
    ) -> None:
        """Declared labels follow 'event' on business_events_total."""
        tm.declare_business_labels(["plan"])
        tm.business_events_total.labels("order_paid", "pro").inc()

        assert tm.business_labels == ("plan",)
        assert _value(registry, "business_events_total", event="order_paid", plan="pro") == 1

    def test_declare_after_events_raises(self, tm: TelemetryMetrics) -> None:
        """Changing the labels after the first event is refused."""
        tm.business_events_total.labels("x").inc()

        with pytest.raises(ValueError, match="before the first event"):
            tm.declare_business_labels(["plan"])


class TestGetMetrics:
    def test_process_metrics_created_once(self) -> None:
        """get_metrics() returns one instance on the default REGISTRY, even under a thread race."""
        seen: list[TelemetryMetrics] = []
        barrier = threading.Barrier(8)

        def grab() -> None:
            barrier.wait()
            seen.append(get_metrics())

        threads = [threading.Thread(target=grab) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert len({id(m) for m in seen}) == 1
        assert seen[0].registry is REGISTRY
        assert get_metrics(REGISTRY) is seen[0]

    def test_per_registry_instance(self, registry: CollectorRegistry) -> None:
        """A given registry gets its own instance, created once."""
        assert get_metrics(registry) is get_metrics(registry)
        assert get_metrics(registry) is not get_metrics()

    def test_reset_unregisters(self) -> None:
        """reset_for_tests() removes the process families so they can be created again."""
        first = get_metrics()
        metrics.reset_for_tests()
        second = get_metrics()

        assert first is not second

    def test_reset_without_configuration(self) -> None:
        """reset_for_tests() is safe when nothing was configured: metrics work again after it."""
        own = Counter("reset_probe_own", "An application collector.", registry=REGISTRY)
        try:
            get_metrics()  # created on first use; configure_metrics() never ran
            metrics.reset_for_tests()
            metrics.reset_for_tests()
            get_metrics().business_events_total.labels("reset_probe").inc()
            own.inc()
            counted = REGISTRY.get_sample_value("business_events_total", {"event": "reset_probe"})
            kept = REGISTRY.get_sample_value("reset_probe_own_total")
        finally:
            REGISTRY.unregister(own)

        assert counted == 1
        assert kept == 1


class TestConfigureMetrics:
    def test_app_info_and_series_limit(self) -> None:
        """configure_metrics sets app_info=1 and the configured series limit."""
        cfg = TelemetryConfig.from_env(
            {}, service_name="kaleem-api", version="1.2.3", environment="staging",
            metrics_series_limit=50,
        )  # fmt: skip
        component = configure_metrics(cfg)

        labels = {"service": "kaleem-api", "version": "1.2.3", "environment": "staging"}
        assert REGISTRY.get_sample_value("app_info", labels) == 1
        assert get_metrics().series_limit == 50
        assert component.server is None
        assert component.force_flush(1.0)
        component.shutdown(1.0)

    def test_reconfigure_replaces_app_info(self) -> None:
        """A second configuration leaves exactly one app_info series."""
        configure_metrics(TelemetryConfig.from_env({}, service_name="a"))
        configure_metrics(TelemetryConfig.from_env({}, service_name="b"))

        assert get_metrics().app_info.series_count == 1

    def test_metrics_server_started_and_stopped(self) -> None:
        """metrics_port starts a server on metrics_addr; shutdown stops it."""
        cfg = TelemetryConfig.from_env({}, metrics_port=_free_port(), metrics_addr="127.0.0.1")
        component = configure_metrics(cfg)

        assert component.server is not None
        assert component.server.addr == "127.0.0.1"
        assert component.server.port == cfg.metrics_port
        component.shutdown(2.0)

    def test_port_in_use_is_logged_not_raised(self, caplog: pytest.LogCaptureFixture) -> None:
        """A metrics port already bound logs a warning and setup goes on."""
        from kaleem_telemetry._metrics_server import start_metrics_server

        with start_metrics_server(0, "127.0.0.1") as busy:
            cfg = TelemetryConfig.from_env({}, metrics_port=busy.port, metrics_addr="127.0.0.1")
            component = configure_metrics(cfg)

        assert component.server is None
        assert "Could not start the metrics server" in caplog.text

    @pytest.mark.parametrize("problem", ["missing", "file"])
    def test_bad_multiproc_dir(self, tmp_path: Path, problem: str) -> None:
        """A multiprocess dir that is missing or a file raises naming the variable and the path."""
        path = tmp_path / "mp"
        if problem == "file":
            path.write_text("")
        cfg = TelemetryConfig.from_env({}, prometheus_multiproc_dir=str(path))

        with pytest.raises(TelemetryConfigError, match="PROMETHEUS_MULTIPROC_DIR") as info:
            configure_metrics(cfg)

        assert repr(str(path)) in str(info.value)

    def test_unwritable_multiproc_dir(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A directory this process cannot write to raises naming the problem."""
        monkeypatch.setattr(metrics.os, "access", lambda *_args: False)
        cfg = TelemetryConfig.from_env({}, prometheus_multiproc_dir=str(tmp_path))

        with pytest.raises(TelemetryConfigError, match="not writable"):
            configure_metrics(cfg)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
