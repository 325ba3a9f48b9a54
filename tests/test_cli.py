import socket
import sys

import pytest

from kaleem_telemetry.cli import main


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(name="clean_env")
def _clean_env(monkeypatch):
    for var in ("SENTRY_DSN", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(var, raising=False)


class TestUsage:
    def test_no_command_is_a_usage_error(self, capsys):
        """Running without a subcommand prints the usage and exits 2."""
        assert main([]) == 2
        assert "usage" in capsys.readouterr().err

    def test_unknown_command_is_a_usage_error(self, capsys):
        """An unknown subcommand exits 2."""
        assert main(["fly"]) == 2

    def test_help_exits_zero(self, capsys):
        """--help prints the subcommands and exits 0."""
        assert main(["--help"]) == 0
        out = capsys.readouterr().out
        assert "doctor" in out
        assert "demo" in out


@pytest.mark.usefixtures("clean_env")
class TestDoctor:
    def test_healthy_configuration_exits_zero(self, monkeypatch, capsys):
        """With no exporter to reach and no Sentry, doctor passes and prints the config."""
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")

        assert main(["doctor"]) == 0
        assert "service_name" in capsys.readouterr().out

    def test_closed_collector_fails_with_one_line(self, monkeypatch, capsys):
        """An OTLP endpoint that refuses connections exits 1 with a FAIL line."""
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")

        assert main(["doctor", "--timeout", "1"]) == 1
        out = capsys.readouterr().out
        assert "FAIL" in out

    def test_secrets_are_masked(self, monkeypatch, capsys):
        """The DSN key and the metrics token never appear in the report."""
        key = "k" + str(id(self))
        token = "t" + str(id(capsys))
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
        monkeypatch.setenv("SENTRY_DSN", f"http://{key}@127.0.0.1:{_closed_port()}/1")
        monkeypatch.setenv("KALEEM_TELEMETRY_METRICS_TOKEN", token)

        main(["doctor", "--timeout", "1"])

        out = capsys.readouterr().out
        assert key not in out
        assert token not in out

    def test_bad_configuration_is_one_line_on_stderr(self, monkeypatch, capsys):
        """A bad environment value exits 1 with the message and no traceback."""
        monkeypatch.setenv("KALEEM_TELEMETRY_LOG_FORMAT", "xml")

        assert main(["doctor"]) == 1
        err = capsys.readouterr().err
        assert "KALEEM_TELEMETRY_LOG_FORMAT" in err
        assert "Traceback" not in err
        assert err.count("\n") == 1


class TestDemo:
    def test_missing_fastapi_names_the_extra(self, monkeypatch, capsys):
        """Without FastAPI, demo exits 1 and says which extra to install."""
        monkeypatch.setitem(sys.modules, "fastapi", None)
        monkeypatch.delitem(sys.modules, "kaleem_telemetry._demo", raising=False)

        assert main(["demo", "--duration", "0.1"]) == 1
        err = capsys.readouterr().err
        assert "pip install 'kaleem-telemetry[demo]'" in err
        assert "Traceback" not in err


class TestGenerators:
    def test_dashboards_writes_the_json(self, tmp_path, capsys):
        """`dashboards --out DIR` writes the four dashboards, byte-identical on a second run."""
        assert main(["dashboards", "--out", str(tmp_path / "a"), "--loki-uid", "logs"]) == 0
        assert main(["dashboards", "--out", str(tmp_path / "b"), "--loki-uid", "logs"]) == 0
        first = sorted(p.name for p in (tmp_path / "a").iterdir())

        assert first == [
            "kaleem-api-health.json",
            "kaleem-business.json",
            "kaleem-data-stores.json",
            "kaleem-workers.json",
        ]
        for name in first:
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert "logs" in (tmp_path / "a" / "kaleem-workers.json").read_text()
        assert "kaleem-api-health.json" in capsys.readouterr().out

    def test_alerts_writes_the_rules_and_the_prometheus_rule(self, tmp_path):
        """`alerts` takes the job, the objectives and checks, and writes a PrometheusRule."""
        args = ["alerts", "--out", str(tmp_path), "--job", "shop", "--kubernetes"]
        args += ["--availability-objective", "99.5", "--critical-check", "db"]

        assert main(args) == 0
        names = sorted(p.name for p in tmp_path.iterdir())
        alerts = (tmp_path / "kaleem-alerts.yml").read_text()
        slo = (tmp_path / "kaleem-slo.yml").read_text()
        operator = (tmp_path / "kaleem-prometheusrule.yaml").read_text()

        assert names == ["kaleem-alerts.yml", "kaleem-prometheusrule.yaml", "kaleem-slo.yml"]
        assert 'job=\\"shop\\"' in alerts
        assert 'check=~\\"db\\"' in alerts
        assert "vector(0.995)" in slo
        assert 'kind: "PrometheusRule"' in operator

    def test_a_bad_objective_is_one_line_and_exit_1(self, tmp_path, capsys):
        """A latency threshold off the buckets exits 1 with the reason, no traceback."""
        assert main(["alerts", "--out", str(tmp_path), "--latency-threshold", "0.3"]) == 1
        err = capsys.readouterr().err

        assert err.startswith("kaleem-telemetry alerts: latency_threshold must be a bucket bound")
        assert "Traceback" not in err

    def test_an_unwritable_out_is_exit_1(self, tmp_path, capsys):
        """--out naming a file exits 1 with a one-line message."""
        target = tmp_path / "file"
        target.write_text("")

        assert main(["dashboards", "--out", str(target)]) == 1
        assert "cannot write" in capsys.readouterr().err

    def test_out_is_required(self, capsys):
        """Without --out the command is a usage error."""
        assert main(["alerts"]) == 2
