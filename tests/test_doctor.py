from __future__ import annotations

import io

from kaleem_telemetry._doctor import parse_dsn, run_doctor
from kaleem_telemetry.config import TelemetryConfig
from tests.receivers import OTLPReceiver, SentryIngest


def _doctor(**env: str) -> tuple[int, str]:
    out = io.StringIO()
    code = run_doctor(TelemetryConfig.from_env(environ=env), out, timeout=1.0)
    return code, out.getvalue()


class TestDoctor:
    def test_reachable_backends_pass(self) -> None:
        """A listening collector and Sentry host give exit code 0 and no FAIL line."""
        with OTLPReceiver("grpc") as receiver, SentryIngest() as ingest:
            code, text = _doctor(**receiver.env(), SENTRY_DSN=ingest.dsn)

        assert code == 0
        assert "FAIL" not in text
        assert "accepts connections" in text

    def test_closed_ports_fail_with_one_line_each(self) -> None:
        """A closed collector port and a closed Sentry port give two FAIL lines and exit 1."""
        with OTLPReceiver("http", mode="closed") as receiver, SentryIngest("closed") as ingest:
            code, text = _doctor(**receiver.env(), SENTRY_DSN=ingest.dsn)
        fails = [line for line in text.splitlines() if line.startswith("FAIL:")]

        assert code == 1
        assert len(fails) == 2
        assert "OTLP endpoint" in fails[0]
        assert "Sentry host" in fails[1]

    def test_secrets_are_masked(self) -> None:
        """Neither the DSN key nor header values are printed."""
        with OTLPReceiver("grpc") as receiver, SentryIngest() as ingest:
            dsn = ingest.dsn.replace("publickey", "k" * 32)
            code, text = _doctor(
                **receiver.env(), SENTRY_DSN=dsn, OTEL_EXPORTER_OTLP_HEADERS="api-key=hv-123456"
            )

        assert code == 0
        assert "k" * 32 not in text
        assert "hv-123456" not in text

    def test_disabled_tracing_and_sentry_need_no_checks(self) -> None:
        """With tracing disabled and no DSN there is nothing to reach."""
        code, text = _doctor(OTEL_SDK_DISABLED="true")

        assert code == 0
        assert "Sentry is off" in text


class TestParseDsn:
    def test_valid_dsn_gives_host_and_port(self) -> None:
        """A valid DSN gives its host and port (default by scheme)."""
        assert parse_dsn("https://key@o1.ingest.example/42") == ("o1.ingest.example", 443)
        assert parse_dsn("http://key@127.0.0.1:9000/1") == ("127.0.0.1", 9000)

    def test_invalid_dsn_reasons_hide_the_key(self) -> None:
        """Invalid DSNs give a one-line reason that never contains the key."""
        for dsn in ("ftp://secretkey@host/1", "http://host/1", "http://secretkey@host/abc"):
            reason = parse_dsn(dsn)

            assert isinstance(reason, str)
            assert "secretkey" not in reason
