"""The ``kaleem-telemetry`` command: ``doctor``, ``demo``, ``dashboards`` and ``alerts``.

Exit codes: 0 for success, 1 for a failure (a one-line message on stderr, no
traceback), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from kaleem_telemetry._optional import missing_extra_message
from kaleem_telemetry.exceptions import TelemetryError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code.

    Args:
        argv: The arguments after the program name; ``sys.argv[1:]`` when ``None``.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.command is None:
        parser.print_usage(sys.stderr)
        return 2
    try:
        return int(args.run(args))
    except TelemetryError as exc:
        print(f"kaleem-telemetry {args.command}: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kaleem-telemetry",
        description="Check and demonstrate kaleem-telemetry's configuration.",
    )
    commands = parser.add_subparsers(dest="command")

    doctor = commands.add_parser(
        "doctor",
        help="print the effective configuration (secrets masked) and check the backends",
    )
    doctor.add_argument(
        "--timeout", type=float, default=2.0, help="seconds to wait for each backend (default 2)"
    )
    doctor.set_defaults(run=_doctor)

    demo = commands.add_parser(
        "demo", help="run an instrumented demo service that serves traffic to itself"
    )
    demo.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="seconds to keep serving after the traffic (0 = until interrupted; default 10)",
    )
    demo.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    demo.set_defaults(run=_demo)

    dashboards = commands.add_parser(
        "dashboards", help="write the Grafana dashboards (JSON) generated from the metric contract"
    )
    dashboards.add_argument("--out", type=Path, required=True, help="directory to write into")
    dashboards.add_argument(
        "--prometheus-uid", default="prometheus", help="default Prometheus datasource uid"
    )
    dashboards.add_argument(
        "--loki-uid", default="loki", help="Loki datasource uid of the log links"
    )
    dashboards.add_argument(
        "--tempo-uid", default="tempo", help="Tempo datasource uid of the trace links"
    )
    dashboards.set_defaults(run=_dashboards)

    alerts = commands.add_parser(
        "alerts", help="write the Prometheus alert and SLO rules generated from the metric contract"
    )
    alerts.add_argument("--out", type=Path, required=True, help="directory to write into")
    alerts.add_argument(
        "--job", default="", help="the Prometheus job label to watch (default: all)"
    )
    alerts.add_argument("--service", default="kaleem", help="sloth_service of the SLO rules")
    alerts.add_argument(
        "--availability-objective",
        type=float,
        default=99.9,
        help="percent of requests that must not answer 5xx (default 99.9)",
    )
    alerts.add_argument(
        "--latency-objective",
        type=float,
        default=99.0,
        help="percent of requests faster than --latency-threshold (default 99)",
    )
    alerts.add_argument(
        "--latency-threshold",
        type=float,
        default=0.5,
        help="seconds, a bucket bound of http_request_duration_seconds (default 0.5)",
    )
    alerts.add_argument(
        "--min-rps",
        type=float,
        default=0.05,
        help="requests per second below which ratio and SLO alerts stay quiet (default 0.05)",
    )
    alerts.add_argument(
        "--critical-check",
        action="append",
        default=[],
        metavar="NAME",
        help="a health check whose failure alerts (repeatable; default: every check)",
    )
    alerts.add_argument(
        "--runbook-base-url",
        default="docs/runbooks",
        help="where docs/runbooks/ is served; runbook_url is <base>/<alert>.md",
    )
    alerts.add_argument(
        "--kubernetes",
        action="store_true",
        help="also write kaleem-prometheusrule.yaml, a Prometheus Operator PrometheusRule",
    )
    alerts.add_argument("--namespace", default="", help="namespace of the PrometheusRule")
    alerts.set_defaults(run=_alerts)
    return parser


def _doctor(args: argparse.Namespace) -> int:
    from kaleem_telemetry._doctor import run_doctor
    from kaleem_telemetry.config import TelemetryConfig

    config = TelemetryConfig.from_env()
    return run_doctor(config, sys.stdout, timeout=args.timeout)


def _demo(args: argparse.Namespace) -> int:
    try:
        from kaleem_telemetry._demo import run_demo
    except ImportError as exc:
        msg = missing_extra_message("kaleem-telemetry demo", exc.name or "fastapi", "demo")
        print(msg, file=sys.stderr)
        return 1
    return run_demo(duration=args.duration, port=args.port)


def _dashboards(args: argparse.Namespace) -> int:
    from kaleem_telemetry._observability import DashboardOptions, build_dashboards
    from kaleem_telemetry._observability import write_dashboards as write

    options = DashboardOptions(
        prometheus_uid=args.prometheus_uid, loki_uid=args.loki_uid, tempo_uid=args.tempo_uid
    )
    try:
        return _report(write(build_dashboards(options), args.out))
    except OSError as exc:
        msg = f"cannot write {args.out}: {exc.strerror or exc}"
        raise TelemetryError(msg) from exc


def _alerts(args: argparse.Namespace) -> int:
    from kaleem_telemetry._observability import (
        AlertOptions,
        build_rules,
        prometheus_rule,
        write_rules,
    )

    options = AlertOptions(
        job=args.job,
        service=args.service,
        availability_objective=args.availability_objective,
        latency_objective=args.latency_objective,
        latency_threshold=args.latency_threshold,
        min_rps=args.min_rps,
        critical_checks=tuple(args.critical_check),
        runbook_base_url=args.runbook_base_url,
    )
    files: dict[str, object] = dict(build_rules(options))
    if args.kubernetes:
        files["kaleem-prometheusrule.yaml"] = prometheus_rule(options, namespace=args.namespace)
    try:
        return _report(write_rules(files, args.out))
    except OSError as exc:
        msg = f"cannot write {args.out}: {exc.strerror or exc}"
        raise TelemetryError(msg) from exc


def _report(paths: list[Path]) -> int:
    for path in paths:
        print(path)
    return 0
