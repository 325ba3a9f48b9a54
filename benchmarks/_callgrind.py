"""Shared by the benchmarks: CPU instructions per operation, counted under valgrind.

A benchmark script that takes ``--count VARIANT N`` (set up, warm up, then run the
variant N times and exit) gets its per-operation instruction count from
`per_operation`: two runs under callgrind, N1 and N2 operations, and the
difference divided by N2 - N1, so start-up and warm-up cancel out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

#: What to print when valgrind is not installed.
MISSING = "--instructions needs valgrind (Debian package 'valgrind')"


def available() -> bool:
    """Return whether valgrind is installed."""
    return shutil.which("valgrind") is not None


def per_operation(script: str, variant: str, low: int, high: int) -> float:
    """Return the instructions one operation of ``variant`` costs in ``script``.

    Args:
        script: The benchmark script's path; it must accept ``--count VARIANT N``.
        variant: The variant to run.
        low: Operations in the first run.
        high: Operations in the second run (more than ``low``).
    """
    return (_count(script, variant, high) - _count(script, variant, low)) / (high - low)


def report(script: str, variants: Sequence[str], low: int, high: int, title: str) -> int:
    """Print the instructions per operation of each variant; return the exit status.

    Args:
        script: The benchmark script's path (see `per_operation`).
        variants: The variants to count, in print order.
        low: Operations in the first run.
        high: Operations in the second run.
        title: What one operation is, for the heading ("event", "call").
    """
    if not available():
        print(MISSING, file=sys.stderr)
        return 1
    print(
        f"CPU instructions per {title} (callgrind: (count at {high:,} - at {low:,}) / "
        f"{high - low:,})"
    )
    for name in variants:
        print(f"  {name:<14} {per_operation(script, name, low, high):>12,.0f}")
    return 0


def _count(script: str, variant: str, operations: int) -> int:
    env = dict(os.environ, PYTHONHASHSEED="0")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    command += [sys.executable, script, "--count", variant, str(operations)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    for line in result.stderr.splitlines():
        if "Collected" in line:
            return int(line.split()[-1])
    msg = f"valgrind reported no instruction count for {variant}"
    raise RuntimeError(msg)
