"""Cost of one redaction call on the values the sinks hand to the redactor.

Four variants, each one call on the default `Redactor`:

* ``flat_clean``: a typical log event, a flat dict with nothing to hide (the
  common case, returned as the very same object);
* ``flat_secret``: a flat dict with a secret key and a bearer token in a string;
* ``nested``: a Sentry-like event with nested dicts and lists, one secret deep inside;
* ``query_string``: ``redact_query`` on a query string with one secret parameter.

The wall-clock mode prints the best of several rounds per call; on a shared
machine it wanders, ``--instructions`` does not.

    python benchmarks/bench_redaction.py [--calls 20000] [--rounds 7]
    python benchmarks/bench_redaction.py --instructions     # CPU instructions, via valgrind
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import _callgrind

from kaleem_telemetry.redaction import Redactor

__all__ = ["VARIANTS", "main"]

VARIANTS = ("flat_clean", "flat_secret", "nested", "query_string")

_FLAT_CLEAN = {"user": "u-1", "path": "/items/42", "n": 3, "ok": True, "ms": 12.5}
_FLAT_SECRET = {
    "user": "u-1",
    "path": "/items/42",
    "password": "hunter2",
    "note": "retried with Bearer abcdef0123456789",
    "ms": 12.5,
}
_NESTED = {
    "event_id": "0f4b5a2c7d9e4e1f8a3b6c5d4e3f2a1b",
    "level": "error",
    "request": {
        "method": "POST",
        "url": "/orders",
        "headers": {"host": "127.0.0.1:8000", "user-agent": "bench/1.0", "x-api-key": "k-1"},
        "data": {"sku": "A1", "qty": 2},
    },
    "tags": ["checkout", "v2"],
    "extra": {"attempt": 1, "elapsed_ms": 12.5},
}
_QUERY = "q=shoes&page=2&sort=price&access_token=abc123&lang=en"


def _operation(variant: str) -> Callable[[], Any]:
    """Return a no-argument callable that performs one call of ``variant``."""
    redactor = Redactor()
    if variant == "query_string":
        return lambda: redactor.redact_query(_QUERY)
    value = {"flat_clean": _FLAT_CLEAN, "flat_secret": _FLAT_SECRET, "nested": _NESTED}[variant]
    return lambda: redactor.redact(value)


def _run(operation: Callable[[], Any], calls: int) -> None:
    for _ in range(calls):
        operation()


def _count_run(variant: str, calls: int) -> None:
    """Build ``variant``, warm it up, make ``calls`` calls, exit (under valgrind)."""
    operation = _operation(variant)
    _run(operation, 500)
    _run(operation, calls)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; see the module docstring."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds (the best is kept)")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated among {VARIANTS}"
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count CPU instructions per call under valgrind (deterministic, slow)",
    )
    parser.add_argument("--count", nargs=2, metavar=("VARIANT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.count:
        _count_run(args.count[0], int(args.count[1]))
        return 0
    variants = tuple(v for v in args.variants.split(",") if v)
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    if args.instructions:
        return _callgrind.report(__file__, variants, 1000, 5000, "call")
    print(f"{args.calls} calls x {args.rounds} rounds, best round, per call")
    for name in variants:
        operation = _operation(name)
        _run(operation, 1000)
        best = float("inf")
        for _ in range(args.rounds):
            start = time.perf_counter_ns()
            _run(operation, args.calls)
            best = min(best, (time.perf_counter_ns() - start) / args.calls)
        print(f"{name:<14} {best:>8.0f} ns")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
