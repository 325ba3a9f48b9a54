"""examples/observability-stack: its configs validate, and its generated files are current."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from kaleem_telemetry._observability import build_dashboards, build_rules, to_json, to_yaml
from tests._promtools import tool

STACK = Path(__file__).resolve().parents[1] / "examples" / "observability-stack"
PLACEHOLDERS = {
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/x",
    "SLACK_CHANNEL": "#alerts",
    "TELEGRAM_BOT_TOKEN": "123:abc",
    "TELEGRAM_CHAT_ID": "-1001",
    "SMTP_SMARTHOST": "smtp.example.com:587",
    "SMTP_FROM": "alerts@example.com",
    "SMTP_USERNAME": "alerts@example.com",
    "SMTP_PASSWORD": "secret",
    "ALERT_EMAIL_TO": "oncall@example.com",
}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def test_promtool_accepts_the_prometheus_config_and_its_rules() -> None:
    """`promtool check config` accepts prometheus.yml and the two rule files it loads."""
    result = _run(tool("promtool"), "check", "config", str(STACK / "prometheus" / "prometheus.yml"))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout


def test_amtool_accepts_the_alertmanager_config(tmp_path: Path) -> None:
    """With its placeholders filled as the container does, amtool accepts alertmanager.yml."""
    text = (STACK / "alertmanager.yml").read_text()
    placeholders = set(re.findall(r"\$\{([A-Z_]+)\}", text)) - {"NAME"}
    compose = (STACK / "docker-compose.yml").read_text()
    for name, value in PLACEHOLDERS.items():
        text = text.replace("${" + name + "}", value)
    config = tmp_path / "alertmanager.yml"
    config.write_text(text)

    result = _run(tool("amtool"), "check-config", str(config))

    assert placeholders == set(PLACEHOLDERS)
    assert all(f'"s|\\$${{{name}}}|$${name}|g"' in compose for name in placeholders)
    assert result.returncode == 0, result.stdout + result.stderr
    for receiver in ("slack", "page", "ticket"):
        assert f"- name: {receiver}" in text
    assert "telegram_configs" in text
    assert "email_configs" in text


def test_the_shipped_files_are_the_generated_ones() -> None:
    """The stack's dashboards and rules are what the generators write today (no drift)."""
    for name, dashboard in build_dashboards().items():
        path = STACK / "grafana" / "dashboards" / f"{name}.json"
        assert path.read_text() == to_json(dashboard), path.name
    for name, rules in build_rules().items():
        path = STACK / "prometheus" / "rules" / name
        assert path.read_text() == to_yaml(rules), path.name


def test_the_datasources_are_linked() -> None:
    """Prometheus exemplars and Loki's trace_id lead to Tempo; Tempo leads to Loki."""
    text = (STACK / "grafana" / "provisioning" / "datasources" / "datasources.yaml").read_text()

    assert "exemplarTraceIdDestinations" in text
    assert "derivedFields" in text
    assert "tracesToLogsV2" in text
