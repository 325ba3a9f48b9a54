"""The exporter loggers write at most one warning or error per 30 s each."""

from __future__ import annotations

import logging
import uuid

import pytest

from kaleem_telemetry._exporter_logs import INTERVAL_SECONDS, ExporterLogLimit


def _record(
    name: str, level: int = logging.ERROR, msg: str = "Failed to export %s"
) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, ("traces",), None)


class TestExporterLogLimit:
    def test_one_record_per_logger_per_interval(self) -> None:
        """The first record passes, the next ones inside the interval are dropped."""
        now = [100.0]
        limit = ExporterLogLimit(clock=lambda: now[0])
        name = "opentelemetry.exporter.otlp.proto.grpc.exporter"

        passed = [limit.filter(_record(name)) for _ in range(5)]

        assert passed == [True, False, False, False, False]

    def test_the_next_record_says_how_many_were_dropped(self) -> None:
        """After the interval one passes again, naming the count dropped in between."""
        now = [100.0]
        limit = ExporterLogLimit(clock=lambda: now[0])
        name = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
        for _ in range(4):
            limit.filter(_record(name))
        now[0] += INTERVAL_SECONDS
        record = _record(name)

        assert limit.filter(record)
        assert record.getMessage() == (
            "Failed to export traces (3 similar record(s) of this logger dropped in the last 30 s)"
        )

    def test_each_logger_has_its_own_budget(self) -> None:
        """A gRPC warning is not hidden by an exporter error, nor the other way round."""
        limit = ExporterLogLimit(clock=lambda: 5.0)

        assert limit.filter(_record("opentelemetry.sdk.trace.export"))
        assert limit.filter(_record("grpc._cython.cygrpc", logging.WARNING))
        assert not limit.filter(_record("opentelemetry.sdk.trace.export"))

    @pytest.mark.parametrize(
        ("name", "level"),
        [
            ("kaleem_telemetry", logging.ERROR),
            ("app.orders", logging.ERROR),
            ("opentelemetryish", logging.ERROR),
            ("opentelemetry.exporter.otlp.proto.grpc.exporter", logging.INFO),
        ],
    )
    def test_other_records_always_pass(self, name: str, level: int) -> None:
        """Other loggers, and exporter records below WARNING, are never limited."""
        limit = ExporterLogLimit(clock=lambda: 5.0)

        assert all(limit.filter(_record(name, level)) for _ in range(3))

    def test_the_pipeline_limits_exporter_errors(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Through the configured pipeline, a burst of exporter errors prints one line."""
        from kaleem_telemetry import setup_telemetry

        setup_telemetry(service_name="limit-probe", traces_exporter="none")
        # A logger of its own under the exporter's: the limit is per logger and per
        # process, and an earlier test's exporter error must not have used it up.
        name = f"opentelemetry.exporter.otlp.proto.grpc.exporter.probe{uuid.uuid4().hex}"
        exporter_log = logging.getLogger(name)
        for _ in range(20):
            exporter_log.error("Failed to export traces to %s", "127.0.0.1:4317")
        logging.getLogger("app").error("an application error")

        lines = capsys.readouterr().out.splitlines()
        assert sum("Failed to export traces" in line for line in lines) == 1
        assert sum("an application error" in line for line in lines) == 1
