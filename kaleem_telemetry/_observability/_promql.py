"""PromQL selectors built from the metric contract, checked as they are built.

`Metric("http_requests_total")` looks the family up in
`kaleem_telemetry._metric_specs.ALL_METRICS` and refuses a name the contract does
not declare, a suffix the family's type does not expose, and a label the family
does not carry: a rename in the contract breaks the generation at once.

A label of the contract that is also a target label Prometheus attaches (``job``
on the job metrics) is renamed by Prometheus to ``exported_job`` when it scrapes
with the default ``honor_labels: false``; the selectors ask for it by that name.
"""

from __future__ import annotations

from kaleem_telemetry._metric_specs import ALL_METRICS, MetricSpec

__all__ = ["TARGET_LABELS", "Metric", "series_names"]

TARGET_LABELS: tuple[str, ...] = ("job", "instance")
"""Labels Prometheus attaches to every scraped series."""

_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
}


def series_names(spec: MetricSpec) -> tuple[str, ...]:
    """Return the sample names the family exposes (a histogram's three)."""
    return tuple(spec.name + suffix for suffix in _SUFFIXES[spec.kind])


class Metric:
    """One family of the contract, for building selectors.

    Args:
        name: The family's exposed name (a counter's with ``_total``).

    Raises:
        KeyError: The contract declares no family of that name.
    """

    __slots__ = ("spec",)

    def __init__(self, name: str) -> None:
        for spec in ALL_METRICS:
            if spec.name == name:
                self.spec = spec
                return
        msg = f"the metric contract declares no family {name!r}"
        raise KeyError(msg)

    def label(self, name: str) -> str:
        """Return the label as Prometheus stores it, refusing one the family lacks.

        ``job`` and ``instance`` are the target's labels; the family's own label
        of that name is asked for as ``exported_job``.
        """
        if name in TARGET_LABELS or (name == "le" and self.spec.kind == "histogram"):
            return name
        base = name.removeprefix("exported_")
        if name != base and base in TARGET_LABELS and base in self.spec.labels:
            return name
        if name in self.spec.labels and name not in TARGET_LABELS:
            return name
        msg = f"{self.spec.name} has no label {name!r} (labels: {', '.join(self.spec.labels)})"
        raise KeyError(msg)

    def by(self, *labels: str) -> str:
        """Return ``by (a, b)`` for the labels, as stored."""
        return f"by ({', '.join(self.label(name) for name in labels)})"

    def select(self, suffix: str = "", matchers: str = "", **labels: str) -> str:
        """Return a selector of the family's series ``name + suffix``.

        Args:
            suffix: ``""`` for a counter or a gauge, ``"_bucket"``, ``"_sum"`` or
                ``"_count"`` for a histogram.
            matchers: Matchers appended as written (``job=~"$job"``), for
                target labels only.
            **labels: Label name to the operator and the quoted value
                (``status_code='=~"5.."'``).
        """
        if suffix not in _SUFFIXES[self.spec.kind]:
            msg = f"{self.spec.name} is a {self.spec.kind}: it has no {suffix!r} series"
            raise KeyError(msg)
        parts = [f"{self.label(name)}{value}" for name, value in labels.items()]
        if matchers:
            parts.insert(0, matchers)
        inner = ", ".join(parts)
        return f"{self.spec.name}{suffix}{{{inner}}}" if inner else f"{self.spec.name}{suffix}"
