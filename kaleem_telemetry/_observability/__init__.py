"""Grafana dashboards and Prometheus rules generated from the metric contract.

Nothing here is kept by hand: every selector is built from the declarations of
`kaleem_telemetry._metric_specs`, so a renamed metric or label fails the
generation (and the test suite) instead of leaving an empty panel or a rule that
never fires. The output is plain data (dicts, lists, strings, numbers), written
as JSON (dashboards) or YAML (rules) with sorted keys, so the same options write
byte-identical files.
"""

from __future__ import annotations

from kaleem_telemetry._observability._dashboards import DashboardOptions, build_dashboards
from kaleem_telemetry._observability._output import (
    to_json,
    to_yaml,
    write_dashboards,
    write_rules,
)
from kaleem_telemetry._observability._promql import TARGET_LABELS, Metric, series_names
from kaleem_telemetry._observability._rules import (
    ALERTS,
    AlertOptions,
    build_rules,
    prometheus_rule,
)

__all__ = [
    "ALERTS",
    "TARGET_LABELS",
    "AlertOptions",
    "DashboardOptions",
    "Metric",
    "build_dashboards",
    "build_rules",
    "prometheus_rule",
    "series_names",
    "to_json",
    "to_yaml",
    "write_dashboards",
    "write_rules",
]
