"""`business_event`: count a business KPI event in ``business_events_total``.

::

    business_event("merchant_created")
    business_event("order_paid", plan="pro")   # after declare_business_labels("plan")

Extra labels must be declared once, at startup, with `declare_business_labels`
(Prometheus allows one label set per metric name); a declared label that an
event does not pass is recorded as ``""``. Label values must be bounded (a plan,
a channel, a country), never an id. An undeclared label is dropped with a
warning, once: a KPI call never raises into the application.

Added in 0.1.0.
"""

from __future__ import annotations

import logging
import threading

from prometheus_client import CollectorRegistry

from kaleem_telemetry._guard import internal_errors
from kaleem_telemetry.metrics import get_metrics

__all__ = ["business_event", "declare_business_labels"]

_LOGGER = logging.getLogger(__name__)
_WARNED: set[frozenset[str]] = set()
_WARNED_LOCK = threading.Lock()


def declare_business_labels(*labelnames: str, registry: CollectorRegistry | None = None) -> None:
    """Declare the extra labels of ``business_events_total``, before the first event.

    Args:
        *labelnames: The label names, for example ``"plan", "channel"``.
        registry: The registry; the default is the process one.

    Raises:
        ValueError: Events were already counted with other labels, or a name is
            not a valid Prometheus label name.
    """
    get_metrics(registry).declare_business_labels(labelnames)


def business_event(
    name: str, *, registry: CollectorRegistry | None = None, **labels: object
) -> None:
    """Count one business event, for example ``"merchant_created"``.

    Args:
        name: The event name (a fixed, bounded name, not an id).
        registry: The registry; the default is the process one.
        **labels: Values of the declared extra labels.
    """
    with internal_errors("business_event"):
        family = get_metrics(registry).business_events_total
        if not labels and len(family.labelnames) == 1:
            family.labels(name).inc()
            return
        declared = family.labelnames[1:]
        unknown = frozenset(labels.keys() - set(declared))
        if unknown:
            with _WARNED_LOCK:
                first = unknown not in _WARNED
                _WARNED.add(unknown)
            if first:
                _LOGGER.warning(
                    "business_event got undeclared labels %s; they are dropped. "
                    "Declare them with declare_business_labels() at startup.",
                    sorted(unknown),
                )
        values = ("" if labels.get(k) is None else labels[k] for k in declared)
        family.labels(name, *values).inc()
