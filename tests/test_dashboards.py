"""The generated dashboards: the golden selector test, their shape, their determinism."""

from __future__ import annotations

import importlib
from dataclasses import replace
from pathlib import Path

import pytest

from kaleem_telemetry._metric_specs import FAMILIES
from kaleem_telemetry._observability import (
    DashboardOptions,
    Metric,
    build_dashboards,
    to_json,
    write_dashboards,
)
from tests._selectors import emitted_series, generated_expressions, parse, problems

DASHBOARDS = build_dashboards()


def test_every_selector_names_an_emitted_series() -> None:
    """Every panel, variable and rule queries series and labels the library exposes."""
    expressions = generated_expressions()

    assert len(expressions) > 60  # panels, variables, alerts and recording rules
    assert problems(expressions) == []


def test_the_golden_check_catches_a_rename() -> None:
    """A metric or label renamed under the generated queries is reported, not ignored."""
    renamed = [
        ("panel", "sum(rate(http_request_total[5m]))"),
        ("panel", 'sum(rate(http_requests_total{path="/"}[5m]))'),
        ("panel", "sum by (endpoint) (rate(http_requests_total[5m]))"),
        ("panel", 'sum(jobs_in_progress{job_name="x"})'),
        ("panel", "histogram_quantile(0.95, rate(http_request_duration_seconds[5m]))"),
    ]

    assert len(problems(renamed)) == len(renamed)


def test_the_contract_refuses_a_wrong_name_or_label() -> None:
    """The generators' selector builder refuses what the contract does not declare."""
    with pytest.raises(KeyError, match="declares no family"):
        Metric("http_request_total")
    with pytest.raises(KeyError, match="no label"):
        Metric("http_requests_total").select(path='="/"')
    with pytest.raises(KeyError, match="no '_bucket' series"):
        Metric("http_requests_total").select("_bucket")
    assert Metric("job_runs_total").label("exported_job") == "exported_job"
    with pytest.raises(KeyError, match="no label"):
        Metric("http_requests_total").label("exported_job")


def test_a_renamed_contract_label_breaks_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``route`` renamed to ``path`` in the contract, the dashboards do not build."""
    import kaleem_telemetry._observability._dashboards as dashboards
    import kaleem_telemetry._observability._promql as promql

    renamed = tuple(
        replace(spec, labels=tuple("path" if n == "route" else n for n in spec.labels))
        for spec in FAMILIES
    )
    monkeypatch.setattr(promql, "ALL_METRICS", renamed)
    try:
        importlib.reload(dashboards)
        with pytest.raises(KeyError, match="no label 'route'"):
            dashboards.build_dashboards()
    finally:
        monkeypatch.undo()
        importlib.reload(dashboards)
    assert dashboards.build_dashboards() == DASHBOARDS


def test_the_selector_parser_reads_promql() -> None:
    """The parser finds names, matchers and grouping labels, and skips functions and strings."""
    selectors, grouping = parse(
        'histogram_quantile(0.95, sum by (route, le) (rate(x_bucket{job=~"a{b}", route!="/"}'
        "[$__rate_interval]))) / on (job) group_left up"
    )

    assert selectors == [("x_bucket", {"job", "route"}), ("up", set())]
    assert grouping == {"route", "le", "job"}


def test_the_emitted_series_come_from_the_exposition() -> None:
    """The reference set is the real exposition: suffixes and renamed target labels."""
    series = emitted_series()

    assert "http_requests_total" in series
    assert {"http_request_duration_seconds_bucket", "http_request_duration_seconds_count"} <= set(
        series
    )
    assert "http_request_duration_seconds" not in series
    assert "exported_job" in series["job_runs_total"]


def test_the_dashboards_have_what_the_issue_asks() -> None:
    """Variables, $__rate_interval, units, exemplars on latency, Loki and Tempo links."""
    assert set(DASHBOARDS) == {
        "kaleem-api-health",
        "kaleem-workers",
        "kaleem-data-stores",
        "kaleem-business",
    }
    for name, dashboard in DASHBOARDS.items():
        variables = [v["name"] for v in dashboard["templating"]["list"]]
        assert variables[:3] == ["datasource", "environment", "job"], name
        for panel in dashboard["panels"]:
            assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
            assert any("loki" in link["url"] for link in panel["links"]), panel["title"]
            for target in panel["targets"]:
                if "rate(" in target["expr"]:
                    assert "$__rate_interval" in target["expr"], panel["title"]
                assert 'job=~"$job"' in target["expr"], panel["title"]
    api = DASHBOARDS["kaleem-api-health"]
    assert "route" in [v["name"] for v in api["templating"]["list"]]
    latency = next(p for p in api["panels"] if p["title"].startswith("Latency"))
    assert all(t["exemplar"] for t in latency["targets"])
    assert "tempo" in latency["fieldConfig"]["defaults"]["links"][0]["url"]
    assert "trace_id" in latency["fieldConfig"]["defaults"]["links"][1]["url"]


def test_the_output_is_byte_identical(tmp_path) -> None:
    """The same options write the same bytes; other datasource uids reach the links."""
    first = [p.read_bytes() for p in write_dashboards(build_dashboards(), tmp_path / "a")]
    second = [p.read_bytes() for p in write_dashboards(build_dashboards(), tmp_path / "b")]
    other = to_json(build_dashboards(DashboardOptions(loki_uid="my-loki"))["kaleem-workers"])

    assert first == second
    assert "my-loki" in other


def test_the_docs_list_every_panel_and_its_query() -> None:
    """docs/dashboards.md names every dashboard and panel, with its query as generated."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "dashboards.md").read_text()
    for name, dashboard in DASHBOARDS.items():
        assert f"`{name}.json`" in text
        for panel in dashboard["panels"]:
            assert f"### {panel['title']}\n" in text
            for target in panel["targets"]:
                assert target["expr"] in text, panel["title"]
