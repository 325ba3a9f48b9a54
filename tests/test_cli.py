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
