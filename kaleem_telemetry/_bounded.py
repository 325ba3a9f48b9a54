"""Run blocking telemetry calls against a deadline, never longer.

The SDK's ``force_flush``/``shutdown`` and sentry-sdk's ``flush`` can block far
beyond their own timeouts on a collector that never answers. Each call runs in a
daemon thread that is abandoned at the deadline: being a daemon, it cannot hold
up the interpreter's exit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from kaleem_telemetry._guard import internal_errors

__all__ = ["run_bounded", "run_under_deadline"]

_LOGGER = logging.getLogger("kaleem_telemetry")


def run_under_deadline(
    what: str, calls: Sequence[tuple[str, Callable[[float], object]]], timeout: float
) -> tuple[dict[str, object], list[str]]:
    """Run every call at once, each in its own thread, all against one deadline.

    Each call is given the seconds left until the deadline. A call that raises
    is logged (rate-limited) and counts as not finished; a call still running at
    the deadline is abandoned and named in one warning.

    Args:
        what: What the calls do, for thread names and log lines (``"shutdown"``).
        calls: ``(name, call)`` pairs.
        timeout: Seconds from now to the deadline.

    Returns:
        The results of the calls that returned in time, by name, and the names
        of the calls that were still running at the deadline.
    """
    deadline = time.monotonic() + max(timeout, 0.0)
    results: dict[str, object] = {}
    threads: list[tuple[str, threading.Thread]] = []
    for name, call in calls:

        def run(name: str = name, call: Callable[[float], object] = call) -> None:
            with internal_errors(f"{what} of {name}"):
                results[name] = call(max(deadline - time.monotonic(), 0.0))

        thread = threading.Thread(target=run, name=f"kaleem-telemetry-{what}-{name}", daemon=True)
        thread.start()
        threads.append((name, thread))
    late = []
    for name, thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.0))
        if thread.is_alive():
            late.append(name)
    if late:
        _LOGGER.warning(
            "telemetry %s did not finish within %.1f s: %s", what, timeout, ", ".join(late)
        )
    return results, late


def run_bounded(fn: Callable[[], Any], timeout: float, what: str = "bounded call") -> Any:
    """Run ``fn`` in a daemon thread and wait at most ``timeout`` seconds for it.

    Args:
        fn: The blocking call.
        timeout: Seconds to wait.
        what: What it does, for the thread name and the log lines.

    Returns:
        What ``fn`` returned, or ``None`` if it raised or did not finish in time.
    """
    results, _late = run_under_deadline(what, [("telemetry", lambda _left: fn())], timeout)
    return results.get("telemetry")
