from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry

from kaleem_telemetry.business import business_event, declare_business_labels
from kaleem_telemetry.metrics import get_metrics


class TestBusinessEvent:
    def test_counts_events(self, registry: CollectorRegistry) -> None:
        """Each call increments business_events_total{event}."""
        business_event("merchant_created", registry=registry)
        business_event("merchant_created", registry=registry)
        business_event("product_updated", registry=registry)

        assert (
            registry.get_sample_value("business_events_total", {"event": "merchant_created"}) == 2
        )
        assert registry.get_sample_value("business_events_total", {"event": "product_updated"}) == 1

    def test_declared_labels(self, registry: CollectorRegistry) -> None:
        """Declared labels are recorded; one not passed is recorded empty."""
        declare_business_labels("plan", "channel", registry=registry)
        business_event("order_paid", plan="pro", channel="web", registry=registry)
        business_event("order_paid", plan="free", registry=registry)

        assert (
            registry.get_sample_value(
                "business_events_total", {"event": "order_paid", "plan": "pro", "channel": "web"}
            )
            == 1
        )
        assert (
            registry.get_sample_value(
                "business_events_total", {"event": "order_paid", "plan": "free", "channel": ""}
            )
            == 1
        )

    def test_undeclared_label_dropped_with_one_warning(
        self, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An undeclared label is dropped and warned about once; the event still counts."""
        with caplog.at_level(logging.WARNING, logger="kaleem_telemetry.business"):
            business_event("signup", source_xyz="ads", registry=registry)
            business_event("signup", source_xyz="ads", registry=registry)

        warnings = [r for r in caplog.records if "undeclared labels" in r.getMessage()]
        assert len(warnings) == 1
        assert registry.get_sample_value("business_events_total", {"event": "signup"}) == 2

    def test_process_registry_by_default(self) -> None:
        """Without a registry the process metrics are used."""
        business_event("default_registry_probe")

        assert (
            get_metrics().business_events_total.labels("default_registry_probe")._value.get() == 1
        )

    def test_late_declaration_raises(self, registry: CollectorRegistry) -> None:
        """Declaring labels after events were counted raises ValueError."""
        business_event("x", registry=registry)

        with pytest.raises(ValueError, match="before the first event"):
            declare_business_labels("plan", registry=registry)
