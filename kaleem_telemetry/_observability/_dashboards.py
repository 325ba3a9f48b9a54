"""Grafana dashboards, generated from the metric contract as plain JSON data.

`build_dashboards(options)` returns four dashboards by file name: API Health,
Workers & Jobs, Data stores and Business KPIs. Every query is built with
`kaleem_telemetry._observability._promql.Metric`, so it names a series the
library emits. Each has the ``datasource``, ``environment`` and ``job`` template
variables (API Health also ``route``), uses ``$__rate_interval``, sets units, and
links to Loki (the job's JSON logs, and the logs of an exemplar's trace) and to
Tempo; the latency panels show exemplars, which the Prometheus datasource links
to Tempo by ``trace_id``.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from kaleem_telemetry._observability._promql import Metric

__all__ = ["DashboardOptions", "build_dashboards"]

_REQUESTS = Metric("http_requests_total")
_DURATION = Metric("http_request_duration_seconds")
_ERRORS = Metric("http_errors_total")
_IN_PROGRESS = Metric("http_requests_in_progress")
_CLIENT = Metric("http_client_request_duration_seconds")
_DB = Metric("database_query_duration_seconds")
_HIT = Metric("cache_hit_total")
_MISS = Metric("cache_miss_total")
_CACHE_OPS = Metric("cache_operations_total")
_CACHE_TIME = Metric("cache_operation_duration_seconds")
_RUNS = Metric("job_runs_total")
_JOB_TIME = Metric("job_duration_seconds")
_LAG = Metric("job_queue_lag_seconds")
_JOBS_RUNNING = Metric("jobs_in_progress")
_WS = Metric("websocket_connections_active")
_WS_MESSAGES = Metric("websocket_messages_total")
_BUSINESS = Metric("business_events_total")
_INFO = Metric("app_info")

_JOB = 'job=~"$job"'
_RATE = "[$__rate_interval]"
_ENVIRONMENT = '=~"$environment"'


@dataclass(frozen=True)
class DashboardOptions:
    """Where the dashboards' queries and links go.

    Attributes:
        prometheus_uid: Default of the ``datasource`` variable (a Prometheus uid).
        loki_uid: The Loki datasource the log links open.
        tempo_uid: The Tempo datasource the trace links open.
        refresh: The dashboards' refresh interval.
    """

    prometheus_uid: str = "prometheus"
    loki_uid: str = "loki"
    tempo_uid: str = "tempo"
    refresh: str = "30s"


def build_dashboards(options: DashboardOptions | None = None) -> dict[str, dict[str, Any]]:
    """Return the dashboards by file stem (``kaleem-api-health`` ...), as plain data."""
    opts = options or DashboardOptions()
    return {
        "kaleem-api-health": _dashboard(
            opts, "kaleem-api-health", "Kaleem / API Health", _api_panels(), route=True
        ),
        "kaleem-workers": _dashboard(
            opts, "kaleem-workers", "Kaleem / Workers & Jobs", _job_panels()
        ),
        "kaleem-data-stores": _dashboard(
            opts, "kaleem-data-stores", "Kaleem / Data stores", _store_panels()
        ),
        "kaleem-business": _dashboard(
            opts, "kaleem-business", "Kaleem / Business KPIs", _business_panels()
        ),
    }


# (title, description, unit, [(expr, legend)], exemplars)
_Panel = tuple[str, str, str, list[tuple[str, str]], bool]


def _quantile(metric: Metric, q: float, by: tuple[str, ...], selector: str) -> str:
    return f"histogram_quantile({q}, sum {metric.by(*by, 'le')} (rate({selector}{_RATE})))"


def _ratio(part: str, whole: str) -> str:
    return f"({part}) / ({whole})"


def _api_panels() -> list[_Panel]:
    route = '=~"$route"'
    requests = _REQUESTS.select(matchers=_JOB, route=route)
    five = _REQUESTS.select(matchers=_JOB, route=route, status_code='=~"5.."')
    buckets = _DURATION.select("_bucket", _JOB, route=route)
    hits = f"sum {_HIT.by('cache_level')} (rate({_HIT.select(matchers=_JOB)}{_RATE}))"
    misses = f"sum {_MISS.by('cache_level')} (rate({_MISS.select(matchers=_JOB)}{_RATE}))"
    return [
        (
            "Requests per second by route and method",
            "Request rate of each route template and method.",
            "reqps",
            [
                (
                    f"sum {_REQUESTS.by('route', 'method')} (rate({requests}{_RATE}))",
                    "{{method}} {{route}}",
                )
            ],
            False,
        ),
        (
            "5xx ratio",
            "Share of requests answered with a 5xx status.",
            "percentunit",
            [(_ratio(f"sum(rate({five}{_RATE}))", f"sum(rate({requests}{_RATE}))"), "5xx")],
            False,
        ),
        (
            "Latency p50 / p95 / p99 by route",
            "Quantiles of http_request_duration_seconds; the dots are exemplars, linked to Tempo.",
            "s",
            [
                (_quantile(_DURATION, q, ("route",), buckets), f"p{int(q * 100)} {{{{route}}}}")
                for q in (0.5, 0.95, 0.99)
            ],
            True,
        ),
        (
            "Errors by route and type",
            "5xx answers and unhandled exceptions by error type.",
            "reqps",
            [
                (
                    f"sum {_ERRORS.by('route', 'error_type')} "
                    f"(rate({_ERRORS.select(matchers=_JOB, route=route)}{_RATE}))",
                    "{{route}} {{error_type}}",
                )
            ],
            False,
        ),
        (
            "Requests in flight",
            "Requests being served, by method.",
            "short",
            [
                (
                    f"sum {_IN_PROGRESS.by('method')} ({_IN_PROGRESS.select(matchers=_JOB)})",
                    "{{method}}",
                )
            ],
            False,
        ),
        (
            "Database p95 by operation",
            "95th percentile of database_query_duration_seconds; exemplars link to Tempo.",
            "s",
            [
                (
                    _quantile(_DB, 0.95, ("db_system", "operation"), _DB.select("_bucket", _JOB)),
                    "{{db_system}} {{operation}}",
                )
            ],
            True,
        ),
        (
            "Cache hit rate by level",
            "Hits over hits and misses, per cache level.",
            "percentunit",
            [(f"{hits} / ({hits} + {misses})", "{{cache_level}}")],
            False,
        ),
        (
            "WebSocket connections",
            "Open WebSocket connections by route, and messages per second.",
            "short",
            [
                (f"sum {_WS.by('route')} ({_WS.select(matchers=_JOB)})", "open {{route}}"),
                (
                    f"sum {_WS_MESSAGES.by('route', 'direction')} "
                    f"(rate({_WS_MESSAGES.select(matchers=_JOB)}{_RATE}))",
                    "messages {{direction}} {{route}}",
                ),
            ],
            False,
        ),
    ]


def _job_panels() -> list[_Panel]:
    runs = _RUNS.select(matchers=_JOB)
    errors = _RUNS.select(matchers=_JOB, status='="error"')
    by = ("queue", "exported_job")
    return [
        (
            "Job throughput",
            "Job runs per second by queue, job and status (ok, error, retry).",
            "ops",
            [
                (
                    f"sum {_RUNS.by(*by, 'status')} (rate({runs}{_RATE}))",
                    "{{queue}} {{exported_job}} {{status}}",
                )
            ],
            False,
        ),
        (
            "Job failure rate",
            "Share of runs that raised.",
            "percentunit",
            [
                (
                    _ratio(
                        f"sum {_RUNS.by(*by)} (rate({errors}{_RATE}))",
                        f"sum {_RUNS.by(*by)} (rate({runs}{_RATE}))",
                    ),
                    "{{queue}} {{exported_job}}",
                )
            ],
            False,
        ),
        (
            "Job duration p95",
            "95th percentile of job_duration_seconds.",
            "s",
            [
                (
                    _quantile(_JOB_TIME, 0.95, by, _JOB_TIME.select("_bucket", _JOB)),
                    "{{queue}} {{exported_job}}",
                )
            ],
            False,
        ),
        (
            "Queue lag p95",
            "95th percentile of the time from enqueueing to the start (job_queue_lag_seconds).",
            "s",
            [
                (
                    _quantile(_LAG, 0.95, by, _LAG.select("_bucket", _JOB)),
                    "{{queue}} {{exported_job}}",
                )
            ],
            False,
        ),
        (
            "Jobs in progress",
            "Jobs running now, by queue and job.",
            "short",
            [
                (
                    f"sum {_JOBS_RUNNING.by(*by)} ({_JOBS_RUNNING.select(matchers=_JOB)})",
                    "{{queue}} {{exported_job}}",
                )
            ],
            False,
        ),
    ]


def _store_panels() -> list[_Panel]:
    db_by = ("db_system", "operation", "collection")
    db_count = _DB.select("_count", _JOB)
    db_errors = _DB.select("_count", _JOB, status='="error"')
    cache_by = ("operation", "cache_level")
    client_count = _CLIENT.select("_count", _JOB)
    client_errors = _CLIENT.select("_count", _JOB, status_code='=~"5.."')
    level = ("cache_level", "cache_key_prefix")
    hits = f"sum {_HIT.by(*level)} (rate({_HIT.select(matchers=_JOB)}{_RATE}))"
    misses = f"sum {_MISS.by(*level)} (rate({_MISS.select(matchers=_JOB)}{_RATE}))"
    return [
        (
            "Database operations per second",
            "Rate by system, operation and collection.",
            "ops",
            [
                (
                    f"sum {_DB.by(*db_by)} (rate({db_count}{_RATE}))",
                    "{{db_system}} {{operation}} {{collection}}",
                )
            ],
            False,
        ),
        (
            "Database error ratio",
            "Share of database operations with status error.",
            "percentunit",
            [
                (
                    _ratio(
                        f"sum {_DB.by(*db_by)} (rate({db_errors}{_RATE}))",
                        f"sum {_DB.by(*db_by)} (rate({db_count}{_RATE}))",
                    ),
                    "{{db_system}} {{operation}} {{collection}}",
                )
            ],
            False,
        ),
        (
            "Database p95",
            "95th percentile by system, operation and collection; exemplars link to Tempo.",
            "s",
            [
                (
                    _quantile(_DB, 0.95, db_by, _DB.select("_bucket", _JOB)),
                    "{{db_system}} {{operation}} {{collection}}",
                )
            ],
            True,
        ),
        (
            "Cache operations per second",
            "Rate by operation, result and level.",
            "ops",
            [
                (
                    f"sum {_CACHE_OPS.by('operation', 'result', 'cache_level')} "
                    f"(rate({_CACHE_OPS.select(matchers=_JOB)}{_RATE}))",
                    "{{cache_level}} {{operation}} {{result}}",
                )
            ],
            False,
        ),
        (
            "Cache p95",
            "95th percentile of cache_operation_duration_seconds.",
            "s",
            [
                (
                    _quantile(_CACHE_TIME, 0.95, cache_by, _CACHE_TIME.select("_bucket", _JOB)),
                    "{{cache_level}} {{operation}}",
                )
            ],
            False,
        ),
        (
            "Cache hit rate by key prefix",
            "Hits over hits and misses, per level and key prefix.",
            "percentunit",
            [(f"{hits} / ({hits} + {misses})", "{{cache_level}} {{cache_key_prefix}}")],
            False,
        ),
        (
            "Outgoing HTTP requests per second by host",
            "Rate of outgoing requests by host and method.",
            "reqps",
            [
                (
                    f"sum {_CLIENT.by('host', 'method')} (rate({client_count}{_RATE}))",
                    "{{method}} {{host}}",
                )
            ],
            False,
        ),
        (
            "Outgoing HTTP 5xx ratio by host",
            "Share of outgoing requests answered 5xx.",
            "percentunit",
            [
                (
                    _ratio(
                        f"sum {_CLIENT.by('host')} (rate({client_errors}{_RATE}))",
                        f"sum {_CLIENT.by('host')} (rate({client_count}{_RATE}))",
                    ),
                    "{{host}}",
                )
            ],
            False,
        ),
        (
            "Outgoing HTTP p95 by host",
            "95th percentile of http_client_request_duration_seconds.",
            "s",
            [(_quantile(_CLIENT, 0.95, ("host",), _CLIENT.select("_bucket", _JOB)), "{{host}}")],
            False,
        ),
    ]


def _business_panels() -> list[_Panel]:
    events = _BUSINESS.select(matchers=_JOB)
    return [
        (
            "Business events per second",
            "Rate of business_events_total by event.",
            "ops",
            [(f"sum {_BUSINESS.by('event')} (rate({events}{_RATE}))", "{{event}}")],
            False,
        ),
        (
            "Business events per hour",
            "Events counted in each hour, by event.",
            "short",
            [(f"sum {_BUSINESS.by('event')} (increase({events}[1h]))", "{{event}}")],
            False,
        ),
        (
            "Business events in the time range",
            "Events counted over the dashboard's time range, by event.",
            "short",
            [(f"sum {_BUSINESS.by('event')} (increase({events}[$__range]))", "{{event}}")],
            False,
        ),
    ]


def _explore(uid: str, query: dict[str, Any]) -> str:
    state = {"datasource": uid, "queries": [{"refId": "A", "datasource": {"uid": uid}, **query}]}
    return "/explore?left=" + urllib.parse.quote(json.dumps(state, sort_keys=True), safe="")


def _loki_job(opts: DashboardOptions) -> str:
    return _explore(opts.loki_uid, {"expr": '{job=~"$job"} | json'})


def _loki_trace(opts: DashboardOptions) -> str:
    expr = '{job=~"$job"} | json | trace_id="${__data.fields.trace_id}"'
    return _explore(opts.loki_uid, {"expr": expr})


def _tempo_trace(opts: DashboardOptions) -> str:
    return _explore(opts.tempo_uid, {"queryType": "traceql", "query": "${__data.fields.trace_id}"})


def _panel(opts: DashboardOptions, index: int, panel: _Panel) -> dict[str, Any]:
    title, description, unit, targets, exemplars = panel
    links = [{"title": "Logs of $job in Loki", "url": _loki_job(opts)}]
    defaults: dict[str, Any] = {"unit": unit, "custom": {"drawStyle": "line", "fillOpacity": 10}}
    if unit == "percentunit":
        defaults["min"] = 0
    if exemplars:
        defaults["links"] = [
            {"title": "Trace in Tempo", "url": _tempo_trace(opts)},
            {"title": "Logs of the trace in Loki", "url": _loki_trace(opts)},
        ]
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": (index % 2) * 12, "y": (index // 2) * 8},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "multi"},
        },
        "links": links,
        "targets": [
            {
                "refId": chr(ord("A") + n),
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "expr": expr,
                "legendFormat": legend,
                "exemplar": exemplars,
                "range": True,
            }
            for n, (expr, legend) in enumerate(targets)
        ],
    }


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def _dashboard(
    opts: DashboardOptions, uid: str, title: str, panels: list[_Panel], *, route: bool = False
) -> dict[str, Any]:
    variables: list[dict[str, Any]] = [
        {
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {
                "selected": True,
                "text": opts.prometheus_uid,
                "value": opts.prometheus_uid,
            },
        },
        _variable(
            "environment",
            "Environment",
            f"label_values({_INFO.select()}, {_INFO.label('environment')})",
        ),
        _variable("job", "Job", f"label_values({_INFO.select(environment=_ENVIRONMENT)}, job)"),
    ]
    if route:
        variables.append(
            _variable(
                "route",
                "Route",
                f"label_values({_REQUESTS.select(matchers=_JOB)}, {_REQUESTS.label('route')})",
            )
        )
    return {
        "uid": uid,
        "title": title,
        "tags": ["kaleem-telemetry"],
        "editable": True,
        "schemaVersion": 39,
        "timezone": "browser",
        "time": {"from": "now-1h", "to": "now"},
        "refresh": opts.refresh,
        "graphTooltip": 1,
        "templating": {"list": variables},
        "links": [
            {"title": "Logs in Loki", "type": "link", "url": _loki_job(opts), "icon": "doc"},
            {
                "title": "Traces in Tempo",
                "type": "link",
                "url": _explore(opts.tempo_uid, {"queryType": "traceql", "query": "{}"}),
                "icon": "dashboard",
            },
            {
                "title": "Kaleem dashboards",
                "type": "dashboards",
                "tags": ["kaleem-telemetry"],
                "asDropdown": True,
            },
        ],
        "panels": [_panel(opts, n, panel) for n, panel in enumerate(panels)],
    }
