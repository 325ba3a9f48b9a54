"""The ``kaleem-telemetry`` command: ``doctor`` and ``demo``.

Exit codes: 0 for success, 1 for a failure (a one-line message on stderr, no
traceback), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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
