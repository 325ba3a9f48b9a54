"""At most one line per 30 s from each exporter logger, so a dead collector cannot flood the logs.

OpenTelemetry's exporters and batch processor, and gRPC under them, log a
warning or an error on every failed export: about one a second, per exporter,
while a collector is down. This filter sits on the log pipeline's stdlib handler
and lets the first such record of each logger through, drops the next ones for
`INTERVAL_SECONDS`, and says on the next record it lets through how many it
dropped. Records below WARNING, and every record of other loggers, pass as
they are.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = [
    "EXPORTER_LOGGER_PREFIXES",
    "EXPORTER_LOGGER_ROOTS",
    "INTERVAL_SECONDS",
    "ExporterLogLimit",
    "is_exporter_logger",
]

INTERVAL_SECONDS = 30.0
"""Seconds between two lines of one exporter logger."""

#: The public logger roots of the exporters, the batch processor and gRPC.
EXPORTER_LOGGER_ROOTS = ("opentelemetry", "grpc")
EXPORTER_LOGGER_PREFIXES = tuple(f"{root}." for root in EXPORTER_LOGGER_ROOTS)


def is_exporter_logger(name: str) -> bool:
    """Return whether ``name`` is one of `EXPORTER_LOGGER_ROOTS` or a logger under one."""
    return name in EXPORTER_LOGGER_ROOTS or name.startswith(EXPORTER_LOGGER_PREFIXES)


class ExporterLogLimit(logging.Filter):
    """A `logging.Filter` that rate-limits the exporter loggers' warnings and errors.

    Args:
        interval: Seconds between two records of one logger.
        clock: A monotonic clock (tests pass their own).
    """

    def __init__(
        self, interval: float = INTERVAL_SECONDS, clock: Callable[[], float] | None = None
    ) -> None:
        super().__init__()
        self.interval = interval
        self._clock = time.monotonic if clock is None else clock
        self._lock = threading.Lock()
        # Logger name -> (when its last record passed, records dropped since).
        self._state: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Return whether ``record`` is written; rewrite its message to count the dropped ones."""
        if record.levelno < logging.WARNING:
            return True
        name = record.name
        if not is_exporter_logger(name):
            return True
        now = self._clock()
        with self._lock:
            state = self._state.get(name)
            if state is not None and now - state[0] < self.interval:
                self._state[name] = (state[0], state[1] + 1)
                return False
            self._state[name] = (now, 0)
        dropped = 0 if state is None else state[1]
        if dropped:
            record.msg = (
                f"{record.getMessage()} ({dropped} similar record(s) of this logger "
                f"dropped in the last {self.interval:.0f} s)"
            )
            record.args = None
        return True
