"""Reading the series selectors out of PromQL, and the series the library really emits.

The golden tests of the dashboards and rules use it: every selector must name a
series of the exposition (with its ``_total``, ``_bucket``, ``_count`` suffix)
and match or group by labels that series carries, as Prometheus stores them.
"""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, generate_latest

from kaleem_telemetry._metric_specs import FAMILIES
from kaleem_telemetry._observability import TARGET_LABELS, build_dashboards, build_rules
from kaleem_telemetry.metrics import TelemetryMetrics

__all__ = ["emitted_series", "generated_expressions", "parse", "problems"]

_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
             "group_right", "bool", "offset", "inf", "nan", "sum", "avg", "min", "max",
             "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile",
             "count_values"}  # fmt: skip
_TOKEN = re.compile(
    r'"(?:[^"\\]|\\.)*"'  # a string
    r"|\[[^\]]*\]"  # a range
    r"|(?P<group>\b(?:by|without|on|ignoring)\s*\((?P<labels>[^)]*)\))"
    r"|(?P<name>[A-Za-z_:][\w:]*)\s*(?P<matchers>\{(?:[^}\"]|\"(?:[^\"\\]|\\.)*\")*\})?(?P<call>\s*\()?"
    r"|(?P<bare>\{(?:[^}\"]|\"(?:[^\"\\]|\\.)*\")*\})"
)
_MATCHER = re.compile(r'([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"')
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.*),\s*(?P<label>\w+)\)$")


def parse(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """Return (selectors as (metric name, matcher labels), grouping labels) of ``expr``."""
    selectors: list[tuple[str, set[str]]] = []
    grouping: set[str] = set()
    for match in _TOKEN.finditer(expr):
        if match.group("group"):
            parts = match.group("labels").split(",")
            grouping.update(part.strip() for part in parts if part.strip())
        elif match.group("bare"):
            msg = f"a selector without a metric name in {expr!r}"
            raise AssertionError(msg)
        elif match.group("name"):
            name = match.group("name")
            if match.group("call") and not match.group("matchers"):
                continue  # a function
            if name.lower() in _KEYWORDS or name in {"group_left", "group_right"}:
                continue
            if re.fullmatch(r"\d+[smhdwy]?", name):
                continue
            labels = set(_MATCHER.findall(match.group("matchers") or ""))
            selectors.append((name, labels))
    return selectors, grouping


def emitted_series() -> dict[str, set[str]]:
    """Series name -> label names, from a real exposition of every family.

    A label the target also carries (``job``) is stored by Prometheus as
    ``exported_job``; the target labels are added.
    """
    registry = CollectorRegistry()
    metrics = TelemetryMetrics(registry=registry)
    families = {family.name: family for family in metrics.families}
    assert {spec.name for spec in FAMILIES} <= set(families), sorted(families)
    for spec in FAMILIES:
        family = families[spec.name]
        child = family.labels(*("x" for _ in spec.labels))
        if spec.kind == "counter":
            child.inc()
        elif spec.kind == "histogram":
            child.observe(0.1)
        else:
            child.set(1)
    text = generate_latest(registry).decode()
    series: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head = line.split(" ", 1)[0]
        name, _, rest = head.partition("{")
        labels = {item.split("=", 1)[0] for item in re.findall(r'(\w+="[^"]*")', rest)}
        stored = {f"exported_{name}" if name in TARGET_LABELS else name for name in labels}
        series.setdefault(name, set()).update(stored | set(TARGET_LABELS))
    series["up"] = set(TARGET_LABELS)
    return series


def recorded_series() -> dict[str, set[str]]:
    """Recording rule name -> the labels it carries (its own and those kept)."""
    found: dict[str, set[str]] = {}
    for file in build_rules().values():
        for group in file["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    found.setdefault(rule["record"], set()).update(rule.get("labels", {}), {"job"})
    return found


def generated_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every dashboard panel, variable and rule."""
    found = []
    for name, dashboard in build_dashboards().items():
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                found.append((f"{name}: {panel['title']}", target["expr"]))
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                query = variable["definition"]
                match = _LABEL_VALUES.match(query)
                assert match, query
                found.append(
                    (
                        f"{name}: ${variable['name']}",
                        f"group by ({match['label']}) ({match['selector']})",
                    )
                )
    for file_name, file in build_rules().items():
        for group in file["groups"]:
            for rule in group["rules"]:
                found.append((f"{file_name}: {rule.get('alert') or rule['record']}", rule["expr"]))
    return found


def problems(expressions: list[tuple[str, str]], *, extra: tuple[str, ...] = ()) -> list[str]:
    """What does not name an emitted series or label, one line each.

    ``extra`` names series Prometheus itself records (``scrape_duration_seconds``).
    """
    known = {**emitted_series(), **recorded_series()}
    known.update({name: {"job", "instance"} for name in extra})
    found = []
    for where, expr in expressions:
        selectors, grouping = parse(expr)
        if not selectors and "vector(" not in expr:
            found.append(f"{where}: no selector in {expr!r}")
        carried: set[str] = {"le"}
        for name, labels in selectors:
            if name not in known:
                found.append(f"{where}: {name} is not emitted")
                continue
            carried |= known[name]
            extra = labels - known[name] - ({"le"} if name.endswith("_bucket") else set())
            if extra:
                found.append(f"{where}: {name} has no label {sorted(extra)}")
        missing = grouping - carried
        if missing and selectors:
            found.append(f"{where}: groups by {sorted(missing)}, which no selector carries")
    return found
