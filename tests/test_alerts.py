"""The generated Prometheus rules: promtool accepts them, and each alert fires when it should.

Every alert has a ``promtool test rules`` unit test with series that must fire it
and series that must not, including a quiet service (too little traffic to page).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kaleem_telemetry._observability import (
    ALERTS,
    AlertOptions,
    build_rules,
    prometheus_rule,
    to_yaml,
    write_rules,
)
from kaleem_telemetry.exceptions import TelemetryConfigError
from tests._promtools import tool
from tests._selectors import problems

API = 'job="api", instance="api:8000"'
WORKER = 'job="worker", instance="worker:9101"'


def _requests(status: str, series: str) -> dict[str, str]:
    labels = f'{API}, method="GET", route="/items/{{item_id}}", status_code="{status}"'
    return {"series": f"http_requests_total{{{labels}}}", "values": series}


def _buckets(per_bound: dict[str, str]) -> list[dict[str, str]]:
    labels = f'{API}, method="GET", route="/items/{{item_id}}", status_code="200"'
    rows = [
        {"series": f'http_request_duration_seconds_bucket{{{labels}, le="{le}"}}', "values": v}
        for le, v in per_bound.items()
    ]
    rows.append(
        {"series": f"http_request_duration_seconds_count{{{labels}}}", "values": per_bound["+Inf"]}
    )
    return rows


def _cache(hits: str | None, misses: str) -> list[dict[str, str]]:
    labels = f'{API}, cache_level="l1", cache_key_prefix="product"'
    rows = [{"series": f"cache_miss_total{{{labels}}}", "values": misses}]
    if hits is not None:
        rows.append({"series": f"cache_hit_total{{{labels}}}", "values": hits})
    return rows


def _runs(ok: str, error: str) -> list[dict[str, str]]:
    labels = f'{WORKER}, queue="orders", exported_job="send_receipt"'
    return [
        {"series": f'job_runs_total{{{labels}, status="ok"}}', "values": ok},
        {"series": f'job_runs_total{{{labels}, status="error"}}', "values": error},
    ]


def _lag(fast: str, total: str) -> list[dict[str, str]]:
    labels = f'{WORKER}, queue="orders", exported_job="send_receipt"'
    return [
        {"series": f'job_queue_lag_seconds_bucket{{{labels}, le="{le}"}}', "values": v}
        for le, v in (("30", fast), ("60", fast), ("120", total), ("+Inf", total))
    ]


_SLO_LABELS = {"sloth_service": "kaleem"}

# alert -> (eval time, input series, expected alert labels) for each case.
CASES: dict[str, dict[str, tuple[str, list[dict[str, str]], list[dict[str, str]]]]] = {
    "KaleemHighErrorRate": {
        "fires": (
            "15m",
            [_requests("200", "0+60x20"), _requests("500", "0+6x20")],
            [{"severity": "critical", "job": "api"}],
        ),
        "below the threshold": (
            "15m",
            [_requests("200", "0+60x20"), _requests("500", "0+0.3x20")],
            [],
        ),
        "quiet service": (
            "15m",
            [_requests("200", "0+0.5x20"), _requests("500", "0+0.5x20")],
            [],
        ),
    },
    "KaleemHighLatency": {
        "fires": (
            "15m",
            [
                _requests("200", "0+60x20"),
                *_buckets({"0.5": "0x20", "1": "0+60x20", "+Inf": "0+60x20"}),
            ],
            [{"severity": "warning", "job": "api"}],
        ),
        "fast": (
            "15m",
            [
                _requests("200", "0+60x20"),
                *_buckets({"0.5": "0+60x20", "1": "0+60x20", "+Inf": "0+60x20"}),
            ],
            [],
        ),
        "quiet service": (
            "15m",
            [
                _requests("200", "0+0.5x20"),
                *_buckets({"0.5": "0x20", "1": "0+0.5x20", "+Inf": "0+0.5x20"}),
            ],
            [],
        ),
    },
    "KaleemLowCacheHitRate": {
        "fires": (
            "25m",
            _cache("0+30x30", "0+30x30"),
            [{"severity": "warning", "job": "api", "cache_level": "l1"}],
        ),
        "only misses": (
            "25m",
            _cache(None, "0+30x30"),
            [{"severity": "warning", "job": "api", "cache_level": "l1"}],
        ),
        "hits": ("25m", _cache("0+90x30", "0+10x30"), []),
        "quiet service": ("25m", _cache(None, "0+1x30"), []),
    },
    "KaleemJobFailureRate": {
        "fires": (
            "25m",
            _runs("0+10x30", "0+10x30"),
            [
                {
                    "severity": "warning",
                    "job": "worker",
                    "queue": "orders",
                    "exported_job": "send_receipt",
                }
            ],
        ),
        "succeeds": ("25m", _runs("0+10x30", "0x30"), []),
        "quiet service": ("25m", _runs("0x30", "0+0.2x30"), []),
    },
    "KaleemJobQueueLag": {
        "fires": (
            "25m",
            _lag("0x30", "0+10x30"),
            [
                {
                    "severity": "warning",
                    "job": "worker",
                    "queue": "orders",
                    "exported_job": "send_receipt",
                }
            ],
        ),
        "prompt": ("25m", _lag("0+10x30", "0+10x30"), []),
    },
    "KaleemTargetDown": {
        "fires": (
            "5m",
            [{"series": f"up{{{API}}}", "values": "0x10"}],
            [{"severity": "critical", "job": "api", "instance": "api:8000"}],
        ),
        "up": ("5m", [{"series": f"up{{{API}}}", "values": "1x10"}], []),
    },
    "KaleemReadinessCheckFailing": {
        "fires": (
            "5m",
            [{"series": f'health_check_status{{{API}, check="db"}}', "values": "0x10"}],
            [{"severity": "critical", "job": "api", "instance": "api:8000", "check": "db"}],
        ),
        "passes": (
            "5m",
            [{"series": f'health_check_status{{{API}, check="db"}}', "values": "1x10"}],
            [],
        ),
    },
    "KaleemMetricsAbsent": {
        "fires": (
            "50m",
            [
                {
                    "series": f'app_info{{{API}, service="api", version="1", environment="prod"}}',
                    "values": "1x30 _x30",
                }
            ],
            [{"severity": "critical", "job": "api"}],
        ),
        "reporting": (
            "50m",
            [
                {
                    "series": f'app_info{{{API}, service="api", version="1", environment="prod"}}',
                    "values": "1x60",
                }
            ],
            [],
        ),
    },
    "KaleemAvailabilityBudgetBurn": {
        "fires": (
            "90m",
            [_requests("200", "0+60x120"), _requests("500", "0+3x120")],
            [
                {
                    "severity": sev,
                    "job": "api",
                    "sloth_severity": kind,
                    "sloth_id": "kaleem-requests-availability",
                    "sloth_slo": "requests-availability",
                    **_SLO_LABELS,
                }
                for sev, kind in (("critical", "page"), ("warning", "ticket"))
            ],
        ),
        "within budget": ("90m", [_requests("200", "0+60x120"), _requests("500", "0x120")], []),
        "quiet service": ("90m", [_requests("200", "0x120"), _requests("500", "0+1x120")], []),
    },
    "KaleemLatencyBudgetBurn": {
        "fires": (
            "90m",
            [
                _requests("200", "0+60x120"),
                *_buckets({"0.5": "0+50x120", "1": "0+60x120", "+Inf": "0+60x120"}),
            ],
            [
                {
                    "severity": sev,
                    "job": "api",
                    "sloth_severity": kind,
                    "sloth_id": "kaleem-requests-latency",
                    "sloth_slo": "requests-latency",
                    **_SLO_LABELS,
                }
                for sev, kind in (("critical", "page"), ("warning", "ticket"))
            ],
        ),
        "fast": (
            "90m",
            [
                _requests("200", "0+60x120"),
                *_buckets({"0.5": "0+60x120", "1": "0+60x120", "+Inf": "0+60x120"}),
            ],
            [],
        ),
        "quiet service": (
            "90m",
            [
                _requests("200", "0+1x120"),
                *_buckets({"0.5": "0x120", "1": "0+1x120", "+Inf": "0+1x120"}),
            ],
            [],
        ),
    },
}


def _all_alerts() -> list[dict[str, Any]]:
    return [
        rule
        for file in build_rules().values()
        for group in file["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def _annotations(alert: str, labels: dict[str, str]) -> dict[str, str]:
    """The annotations promtool renders: the rule's templates with the alert's labels."""
    rule = next(
        r
        for r in _all_alerts()
        if r["alert"] == alert and r["labels"]["severity"] == labels["severity"]
    )
    return {
        key: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), text)
        for key, text in rule["annotations"].items()
    }


@pytest.fixture(name="rule_dir")
def _rule_dir(tmp_path: Path) -> Path:
    write_rules(build_rules(), tmp_path)
    return tmp_path


def test_promtool_accepts_the_rules(rule_dir: Path) -> None:
    """``promtool check rules`` accepts every generated file."""
    result = subprocess.run(
        [tool("promtool"), "check", "rules", *sorted(str(p) for p in rule_dir.glob("*.yml"))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_case_and_the_annotations() -> None:
    """Each generated alert is tested below and has severity, summary, description, runbook_url."""
    alerts = _all_alerts()

    assert {rule["alert"] for rule in alerts} == set(ALERTS) == set(CASES)
    for rule in alerts:
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}
        assert rule["annotations"]["runbook_url"].endswith(f"/{rule['alert']}.md")


def test_every_alert_has_a_runbook() -> None:
    """docs/runbooks/ holds one runbook per alert, naming it."""
    runbooks = Path(__file__).resolve().parents[1] / "docs" / "runbooks"
    for alert in ALERTS:
        text = (runbooks / f"{alert}.md").read_text()
        assert text.startswith(f"# {alert}\n"), alert


def test_the_runbook_queries_name_emitted_series() -> None:
    """The PromQL of every runbook queries series and labels the library (or Prometheus) has."""
    runbooks = Path(__file__).resolve().parents[1] / "docs" / "runbooks"
    queries = [
        (path.name, line.replace("$job", "api"))
        for path in sorted(runbooks.glob("*.md"))
        for block in re.findall(r"```promql\n(.*?)```", path.read_text(), re.S)
        for line in block.splitlines()
    ]

    assert len(queries) >= 2 * len(ALERTS)
    assert problems(queries, extra=("scrape_duration_seconds",)) == []


@pytest.mark.parametrize("alert", sorted(CASES))
def test_the_alert_fires_when_it_should(alert: str, rule_dir: Path) -> None:
    """The alert fires on the firing series, and not on the others."""
    tests = []
    for name, (eval_time, series, expected) in CASES[alert].items():
        tests.append(
            {
                "name": f"{alert}: {name}",
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": eval_time,
                        "alertname": alert,
                        "exp_alerts": [
                            {"exp_labels": labels, "exp_annotations": _annotations(alert, labels)}
                            for labels in expected
                        ],
                    }
                ],
            }
        )
    test_file = rule_dir / "tests.yaml"
    test_file.write_text(
        to_yaml(
            {
                "rule_files": sorted(p.name for p in rule_dir.glob("*.yml")),
                "evaluation_interval": "1m",
                "tests": tests,
            }
        )
    )
    result = subprocess.run(
        [tool("promtool"), "test", "rules", str(test_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=rule_dir,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_a_latency_threshold_off_the_buckets_is_refused() -> None:
    """p95 thresholds must be bucket bounds, or histogram_quantile interpolates a guess."""
    with pytest.raises(TelemetryConfigError, match="bucket bound"):
        AlertOptions(latency_threshold=0.3)
    with pytest.raises(TelemetryConfigError, match="percentage"):
        AlertOptions(availability_objective=100)


def test_options_reach_the_rules() -> None:
    """A job, objectives and checks change the expressions; the output is deterministic."""
    options = AlertOptions(job="shop", availability_objective=99.5, critical_checks=("db", "redis"))
    text = to_yaml(build_rules(options))

    assert text == to_yaml(build_rules(options))
    assert 'http_requests_total{job=\\"shop\\"' in text
    assert 'absent(app_info{job=\\"shop\\"})' in text
    assert 'check=~\\"db|redis\\"' in text
    assert "vector(0.995)" in text
    assert "> 0.072" in text  # the page threshold: 14.4 x the 0.5 % budget


def test_the_prometheus_rule_holds_every_group() -> None:
    """The Kubernetes object carries the same groups as the rule files."""
    rule = prometheus_rule(namespace="monitoring")
    groups = [g for f in build_rules().values() for g in f["groups"]]

    assert rule["kind"] == "PrometheusRule"
    assert rule["metadata"]["namespace"] == "monitoring"
    assert rule["spec"]["groups"] == groups


def test_the_docs_list_every_alert_and_its_expression() -> None:
    """docs/alerts.md has every alert with its expression as generated."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "alerts.md").read_text()
    for rule in _all_alerts():
        assert f"### {rule['alert']} ({rule['labels']['severity']})" in text
        assert rule["expr"] in text, rule["alert"]
