"""One observed client call (a command, a query, an HTTP request): its CLIENT span.

`start_call` starts the span and returns it with its start time; `end_call` ends
it at a time read once, records the exception's type (never its message), and
returns the duration in seconds, which is what the integration observes in its
histogram: the metric's duration is the span's, to the nanosecond.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from kaleem_telemetry import tracing

__all__ = ["end_call", "start_call"]

_CLIENT = trace.SpanKind.CLIENT
_time_ns = time.time_ns


def start_call(name: str, attributes: dict[str, Any]) -> tuple[Span, int]:
    """Start a CLIENT span (a child of the current one); return it and its start in ns."""
    before = _time_ns()
    span = tracing.start_own_span(name, attributes=attributes, kind=_CLIENT)
    started: int | None = getattr(span, "start_time", None)
    return span, before if started is None else started


def end_call(span: Span, started: int, exc: BaseException | None) -> float:
    """End ``span`` (an error when ``exc``); return its duration in seconds."""
    ended = _time_ns()
    if exc is not None:
        # The type only: a driver's message can quote the statement, the
        # command's arguments or the URL, which are never recorded.
        error_type = type(exc).__qualname__
        span.add_event("exception", {"exception.type": error_type}, timestamp=ended)
        span.set_status(Status(StatusCode.ERROR, error_type))
        span.set_attribute("error.type", error_type)
    span.end(end_time=ended)
    return max(ended - started, 0) / 1e9
