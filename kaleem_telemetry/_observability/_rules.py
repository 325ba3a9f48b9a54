"""Prometheus alerting and recording rules, generated from the metric contract.

`build_rules(options)` returns the rule files as plain data: ``kaleem-alerts.yml``
(the symptom alerts) and ``kaleem-slo.yml`` (Sloth-compatible SLO recording rules
and the multiwindow multi-burn-rate alerts). `prometheus_rule()` wraps them in a
Kubernetes ``PrometheusRule`` object of the Prometheus Operator.

Every alert carries ``severity`` and the ``summary``, ``description`` and
``runbook_url`` annotations; the runbook of alert ``X`` is ``docs/runbooks/X.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kaleem_telemetry._metric_specs import HTTP_BUCKETS, JOB_BUCKETS
from kaleem_telemetry._observability._promql import Metric
from kaleem_telemetry.exceptions import TelemetryConfigError

__all__ = ["ALERTS", "SLO_WINDOWS", "AlertOptions", "build_rules", "prometheus_rule"]

ALERTS: tuple[str, ...] = (
    "KaleemHighErrorRate",
    "KaleemHighLatency",
    "KaleemLowCacheHitRate",
    "KaleemJobFailureRate",
    "KaleemJobQueueLag",
    "KaleemTargetDown",
    "KaleemReadinessCheckFailing",
    "KaleemMetricsAbsent",
    "KaleemAvailabilityBudgetBurn",
    "KaleemLatencyBudgetBurn",
)
"""Every alert the rules define, each with its runbook in docs/runbooks/."""

SLO_WINDOWS: tuple[str, ...] = ("5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d")
"""The windows of the ``slo:sli_error:ratio_rate<window>`` recording rules."""

# (severity, long window, short window, burn-rate factor), as in the SRE workbook.
_BURN_ALERTS: tuple[tuple[str, str, str, float], ...] = (
    ("page", "1h", "5m", 14.4),
    ("page", "6h", "30m", 6.0),
    ("ticket", "1d", "2h", 3.0),
    ("ticket", "3d", "6h", 1.0),
)
_SEVERITY = {"page": "critical", "ticket": "warning"}
_5XX = '=~"5.."'
_ERROR = '="error"'

_REQUESTS = Metric("http_requests_total")
_DURATION = Metric("http_request_duration_seconds")
_HIT = Metric("cache_hit_total")
_MISS = Metric("cache_miss_total")
_RUNS = Metric("job_runs_total")
_LAG = Metric("job_queue_lag_seconds")
_HEALTH = Metric("health_check_status")
_INFO = Metric("app_info")


@dataclass(frozen=True)
class AlertOptions:
    """What the generated rules watch, and their thresholds.

    Attributes:
        job: The Prometheus ``job`` label to watch; empty watches every job
            (each alert is then per job).
        service: ``sloth_service`` of the SLO rules.
        availability_objective: Percentage of requests that must not answer 5xx.
        latency_objective: Percentage of requests that must be faster than
            ``latency_threshold``.
        latency_threshold: Seconds; a bucket bound of the HTTP histograms.
        error_ratio: 5xx ratio over 5 minutes above which ``KaleemHighErrorRate`` fires.
        cache_hit_ratio: Hit ratio below which ``KaleemLowCacheHitRate`` fires.
        job_failure_ratio: Failed-run ratio above which ``KaleemJobFailureRate`` fires.
        queue_lag_seconds: p95 queue lag above which ``KaleemJobQueueLag`` fires;
            a bucket bound of the job histograms.
        min_rps: Requests (or cache lookups) per second below which the ratio
            and SLO alerts stay quiet: a quiet service does not page.
        min_job_runs: Job runs in 10 minutes below which the failure-ratio alert stays quiet.
        critical_checks: Health checks whose failure alerts; empty means all.
        runbook_base_url: Where ``docs/runbooks/`` is served; ``<base>/<alert>.md``.
    """

    job: str = ""
    service: str = "kaleem"
    availability_objective: float = 99.9
    latency_objective: float = 99.0
    latency_threshold: float = 0.5
    error_ratio: float = 0.01
    cache_hit_ratio: float = 0.7
    job_failure_ratio: float = 0.05
    queue_lag_seconds: float = 60.0
    min_rps: float = 0.05
    min_job_runs: int = 5
    critical_checks: tuple[str, ...] = ()
    runbook_base_url: str = "docs/runbooks"

    def __post_init__(self) -> None:
        for name in ("availability_objective", "latency_objective"):
            value = getattr(self, name)
            if not 0 < value < 100:
                msg = f"{name} must be a percentage between 0 and 100, got {value!r}"
                raise TelemetryConfigError(msg)
        if self.latency_threshold not in HTTP_BUCKETS:
            msg = (
                f"latency_threshold must be a bucket bound of http_request_duration_seconds "
                f"({', '.join(f'{b:g}' for b in HTTP_BUCKETS)}), got {self.latency_threshold!r}"
            )
            raise TelemetryConfigError(msg)
        if self.queue_lag_seconds not in JOB_BUCKETS:
            msg = (
                f"queue_lag_seconds must be a bucket bound of job_queue_lag_seconds "
                f"({', '.join(f'{b:g}' for b in JOB_BUCKETS)}), got {self.queue_lag_seconds!r}"
            )
            raise TelemetryConfigError(msg)
        for name in ("error_ratio", "cache_hit_ratio", "job_failure_ratio"):
            value = getattr(self, name)
            if not 0 < value < 1:
                msg = f"{name} must be a ratio between 0 and 1, got {value!r}"
                raise TelemetryConfigError(msg)
        if self.min_rps < 0 or self.min_job_runs < 0:
            msg = "min_rps and min_job_runs must not be negative"
            raise TelemetryConfigError(msg)
        if '"' in self.job or "\\" in self.job or any('"' in c for c in self.critical_checks):
            msg = "job and critical_checks must not contain quotes or backslashes"
            raise TelemetryConfigError(msg)


def build_rules(options: AlertOptions | None = None) -> dict[str, dict[str, Any]]:
    """Return the rule files, by file name, as plain data."""
    opts = options or AlertOptions()
    return {
        "kaleem-alerts.yml": {"groups": [_alert_group(opts)]},
        "kaleem-slo.yml": {"groups": _slo_groups(opts)},
    }


def prometheus_rule(
    options: AlertOptions | None = None, *, name: str = "kaleem-telemetry", namespace: str = ""
) -> dict[str, Any]:
    """Return every rule group in one Kubernetes ``PrometheusRule`` object."""
    groups: list[Any] = []
    for file in build_rules(options).values():
        groups.extend(file["groups"])
    metadata: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/name": name}}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": metadata,
        "spec": {"groups": groups},
    }


def _job(opts: AlertOptions) -> str:
    return f'job="{opts.job}"' if opts.job else ""


def _num(value: float) -> str:
    return f"{value:g}"


def _alert(
    opts: AlertOptions,
    name: str,
    expr: str,
    duration: str,
    severity: str,
    summary: str,
    description: str,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if duration:
        rule["for"] = duration
    rule["labels"] = {"severity": severity, **(labels or {})}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "runbook_url": f"{opts.runbook_base_url.rstrip('/')}/{name}.md",
    }
    return rule


def _traffic(opts: AlertOptions, window: str) -> str:
    """The minimum-traffic guard: at least ``min_rps`` requests per second in ``window``."""
    rate = f"sum by (job) (rate({_REQUESTS.select(matchers=_job(opts))}[{window}]))"
    return f"{rate} >= {_num(opts.min_rps)}"


def _alert_group(opts: AlertOptions) -> dict[str, Any]:
    job = _job(opts)
    requests = f"sum by (job) (rate({_REQUESTS.select(matchers=job)}[5m]))"
    errors = f"sum by (job) (rate({_REQUESTS.select(matchers=job, status_code=_5XX)}[5m]))"
    error_rate = f"({errors} / {requests}) > {_num(opts.error_ratio)}"
    p95 = (
        f"histogram_quantile(0.95, sum by (job, le) (rate({_DURATION.select('_bucket', job)}[5m])))"
    )
    hits = f"sum {_HIT.by('job', 'cache_level')} (rate({_HIT.select(matchers=job)}[10m]))"
    misses = f"sum {_MISS.by('job', 'cache_level')} (rate({_MISS.select(matchers=job)}[10m]))"
    lookups = f"({hits} or 0 * {misses}) + ({misses} or 0 * {hits})"
    run_by = _RUNS.by("job", "queue", "exported_job")
    runs = f"sum {run_by} (increase({_RUNS.select(matchers=job)}[10m]))"
    failed = f"sum {run_by} (increase({_RUNS.select(matchers=job, status=_ERROR)}[10m]))"
    lag = (
        f"histogram_quantile(0.95, sum {_LAG.by('job', 'queue', 'exported_job', 'le')} "
        f"(rate({_LAG.select('_bucket', job)}[10m])))"
    )
    checks = '=~"' + "|".join(opts.critical_checks) + '"' if opts.critical_checks else ""
    health = _HEALTH.select(matchers=job, **({"check": checks} if checks else {}))
    up = f"up{{{job}}}" if job else "up"
    if opts.job:
        absent = f"absent({_INFO.select(matchers=job)})"
    else:
        absent = (
            f"group by (job) (max_over_time({_INFO.select()}[1h])) "
            f"unless on (job) group by (job) ({_INFO.select()})"
        )
    exported_job = _RUNS.label("exported_job")
    rules = [
        _alert(
            opts,
            "KaleemHighErrorRate",
            f"{error_rate} and on (job) {_traffic(opts, '5m')}",
            "5m",
            "critical",
            "{{ $labels.job }}: more than "
            f"{_num(opts.error_ratio * 100)} % of requests answer 5xx",
            "{{ $labels.job }} answered 5xx to more than "
            f"{_num(opts.error_ratio * 100)} % of its requests for 5 minutes.",
        ),
        _alert(
            opts,
            "KaleemHighLatency",
            f"{p95} > {_num(opts.latency_threshold)} and on (job) {_traffic(opts, '5m')}",
            "5m",
            "warning",
            f"{{{{ $labels.job }}}}: p95 latency above {_num(opts.latency_threshold * 1000)} ms",
            "The 95th percentile of http_request_duration_seconds of {{ $labels.job }} "
            f"has been above {_num(opts.latency_threshold)} s for 5 minutes.",
        ),
        _alert(
            opts,
            "KaleemLowCacheHitRate",
            f"(({hits} or 0 * {misses}) / ({lookups})) < {_num(opts.cache_hit_ratio)} "
            f"and ({lookups}) >= {_num(opts.min_rps)}",
            "10m",
            "warning",
            "{{ $labels.job }}: cache {{ $labels.cache_level }} hit rate below "
            f"{_num(opts.cache_hit_ratio * 100)} %",
            "Fewer than "
            f"{_num(opts.cache_hit_ratio * 100)} % of the {{{{ $labels.cache_level }}}} cache "
            "lookups of {{ $labels.job }} hit for 10 minutes.",
        ),
        _alert(
            opts,
            "KaleemJobFailureRate",
            f"(({failed}) / ({runs})) > {_num(opts.job_failure_ratio)} "
            f"and ({runs}) >= {opts.min_job_runs}",
            "10m",
            "warning",
            f"{{{{ $labels.job }}}}: job {{{{ $labels.{exported_job} }}}} fails",
            f"More than {_num(opts.job_failure_ratio * 100)} % of the runs of job "
            f"{{{{ $labels.{exported_job} }}}} on queue {{{{ $labels.queue }}}} failed "
            "over 10 minutes.",
        ),
        _alert(
            opts,
            "KaleemJobQueueLag",
            f"{lag} > {_num(opts.queue_lag_seconds)}",
            "10m",
            "warning",
            "{{ $labels.job }}: queue {{ $labels.queue }} lags",
            f"Job {{{{ $labels.{exported_job} }}}} waits more than "
            f"{_num(opts.queue_lag_seconds)} s (p95) on queue {{{{ $labels.queue }}}} "
            "before it starts.",
        ),
        _alert(
            opts,
            "KaleemTargetDown",
            f"{up} == 0",
            "2m",
            "critical",
            "{{ $labels.job }}: target {{ $labels.instance }} is down",
            "Prometheus has failed to scrape {{ $labels.instance }} of {{ $labels.job }} "
            "for 2 minutes.",
        ),
        _alert(
            opts,
            "KaleemReadinessCheckFailing",
            f"{health} == 0",
            "2m",
            "critical",
            "{{ $labels.job }}: readiness check {{ $labels.check }} fails",
            "The health check {{ $labels.check }} of {{ $labels.instance }} has failed "
            "for 2 minutes; /health/ready answers 503 if it is critical.",
        ),
        _alert(
            opts,
            "KaleemMetricsAbsent",
            absent,
            "10m",
            "critical",
            "{{ $labels.job }}: the service stopped reporting metrics",
            "app_info of {{ $labels.job }} has been missing for 10 minutes: the "
            "service is not running or not scraped.",
        ),
    ]
    return {"name": "kaleem-telemetry", "rules": rules}


def _slo_specs(opts: AlertOptions) -> list[tuple[str, float, str, str, str]]:
    """(slo name, objective, error rate, total rate, description), window as ``__W__``."""
    job = _job(opts)
    total = f"sum by (job) (rate({_REQUESTS.select(matchers=job)}[__W__]))"
    errors = f"sum by (job) (rate({_REQUESTS.select(matchers=job, status_code=_5XX)}[__W__]))"
    count = f"sum by (job) (rate({_DURATION.select('_count', job)}[__W__]))"
    bound = '="' + _num(opts.latency_threshold) + '"'
    fast = f"sum by (job) (rate({_DURATION.select('_bucket', job, le=bound)}[__W__]))"
    return [
        (
            "requests-availability",
            opts.availability_objective,
            f"({errors} or 0 * {total})",
            total,
            "requests that do not answer 5xx",
        ),
        (
            "requests-latency",
            opts.latency_objective,
            f"({count} - {fast})",
            count,
            f"requests faster than {_num(opts.latency_threshold * 1000)} ms",
        ),
    ]


def _slo_groups(opts: AlertOptions) -> list[dict[str, Any]]:
    groups = []
    for slo, objective, errors, total, meaning in _slo_specs(opts):
        sloth_id = f"{opts.service}-{slo}"
        ids = {"sloth_id": sloth_id, "sloth_service": opts.service, "sloth_slo": slo}
        budget = 1 - objective / 100
        sli = [
            {
                "record": f"slo:sli_error:ratio_rate{window}",
                "expr": f"{errors.replace('__W__', window)} / {total.replace('__W__', window)}",
                "labels": {**ids, "sloth_window": window},
            }
            for window in SLO_WINDOWS
        ]
        selector = f'{{sloth_id="{sloth_id}", sloth_service="{opts.service}", sloth_slo="{slo}"}}'
        meta = [
            {
                "record": "slo:objective:ratio",
                "expr": f"vector({objective / 100!r})",
                "labels": ids,
            },
            {"record": "slo:error_budget:ratio", "expr": f"vector({budget!r})", "labels": ids},
            {"record": "slo:time_period:days", "expr": "vector(30)", "labels": ids},
            {
                "record": "slo:current_burn_rate:ratio",
                "expr": f"slo:sli_error:ratio_rate5m{selector} / on (sloth_id, sloth_slo, "
                f"sloth_service) group_left slo:error_budget:ratio{selector}",
                "labels": ids,
            },
            {
                "record": "slo:period_burn_rate:ratio",
                "expr": f"slo:sli_error:ratio_rate30d{selector} / on (sloth_id, sloth_slo, "
                f"sloth_service) group_left slo:error_budget:ratio{selector}",
                "labels": ids,
            },
            {
                "record": "slo:period_error_budget_remaining:ratio",
                "expr": f"1 - slo:period_burn_rate:ratio{selector}",
                "labels": ids,
            },
            {
                "record": "sloth_slo_info",
                "expr": "vector(1)",
                "labels": {
                    **ids,
                    "sloth_mode": "cli-gen-prom",
                    "sloth_version": "kaleem-telemetry",
                    "sloth_objective": _num(objective),
                },
            },
        ]
        alert_name = (
            "KaleemAvailabilityBudgetBurn"
            if slo.endswith("availability")
            else "KaleemLatencyBudgetBurn"
        )
        alerts = []
        for severity in ("page", "ticket"):
            conditions = []
            for sev, long, short, factor in _BURN_ALERTS:
                if sev != severity:
                    continue
                threshold = _num(factor * budget)
                burn = [
                    f"(max without (sloth_window) (slo:sli_error:ratio_rate{w}{selector}) "
                    f"> {threshold})"
                    for w in (long, short)
                ]
                conditions.append(
                    f"({burn[0]} and {burn[1]} and on (job) ({_traffic(opts, long)}))"
                )
            windows = " or ".join(
                f"{factor:g}x on {long} and {short}"
                for sev, long, short, factor in _BURN_ALERTS
                if sev == severity
            )
            alerts.append(
                _alert(
                    opts,
                    alert_name,
                    " or ".join(conditions),
                    "",
                    _SEVERITY[severity],
                    f"{{{{ $labels.job }}}}: the {slo} SLO burns its error budget too fast",
                    f"The {_num(objective)} % objective ({meaning}) of {{{{ $labels.job }}}} "
                    f"burns its 30-day error budget at {windows} ({severity}).",
                    {"sloth_severity": severity, "sloth_id": sloth_id, "sloth_slo": slo},
                )
            )
        groups.append({"name": f"sloth-slo-sli-recordings-{sloth_id}", "rules": sli})
        groups.append({"name": f"sloth-slo-meta-recordings-{sloth_id}", "rules": meta})
        groups.append({"name": f"sloth-slo-alerts-{sloth_id}", "rules": alerts})
    return groups
