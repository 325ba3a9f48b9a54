"""Carry the trace and the request context across process boundaries.

An outgoing HTTP call or a message put on a queue carries, in its headers:

* ``traceparent`` / ``tracestate`` / ``baggage``: the W3C trace context, so the
  receiving side continues the same trace;
* ``x-request-id`` and ``x-merchant-id``: the bound request context, so its logs
  carry the same ids;
* ``x-enqueued-at``: the Unix time the message was enqueued, so the consumer can
  measure the queue lag (leave it out of HTTP calls with ``enqueued_at=False``).

The consumer also reads ``x-delay`` (milliseconds, the header of RabbitMQ's
delayed-message exchange): a delay the message declares is not queue lag.

`inject_context()` writes them; `extract_context()` reads them back on the other
side (header names in any case, values as ``str`` or ``bytes``)::

    headers = inject_context({})
    channel.basic_publish(..., properties=pika.BasicProperties(headers=headers))

    extracted = extract_context(message.headers)
    with tracer.start_as_current_span("handle", context=extracted.otel_context):
        ...

A service at the edge of the system should not let callers from outside choose
its trace ids: `extract_server_context()` applies the
``KALEEM_TELEMETRY_TRUST_TRACE_HEADERS`` policy, and with it off an incoming
``traceparent`` starts a new trace that links to the incoming one.

Added in 0.1.0.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from kaleem_telemetry.context import get_context

if TYPE_CHECKING:
    from kaleem_telemetry.config import TelemetryConfig

__all__ = ["extract_context", "inject_context"]

HeadersT = TypeVar("HeadersT", bound=MutableMapping[str, Any])

REQUEST_ID_HEADER = "x-request-id"
MERCHANT_ID_HEADER = "x-merchant-id"
ENQUEUED_AT_HEADER = "x-enqueued-at"
DELAY_HEADER = "x-delay"

#: What a request id or merchant id read from headers must look like (docs/reference.md, Logs).
#: Anything else is ignored, so a caller cannot inject log lines or huge values.
ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

#: The link attribute that says why a server span is not a child of the caller's.
LINK_REASON_ATTRIBUTE = "kaleem.link.reason"


@dataclass(frozen=True)
class ExtractedContext:
    """What `extract_context()` found in a set of headers.

    Attributes:
        otel_context: The OpenTelemetry context to start the receiving span in
            (carries the remote parent span and the baggage, if any).
        request_id: The ``x-request-id`` value, when present and well-formed.
        merchant_id: The ``x-merchant-id`` value, when present and well-formed.
        enqueued_at: The ``x-enqueued-at`` Unix time, when present and valid.
        delay: The delay the message declares in ``x-delay``, in seconds, when
            present and valid (RabbitMQ's delayed-message exchange gives the
            milliseconds, and may deliver them negated).
        links: Links for the receiving span (used by `extract_server_context()`
            when the incoming trace is not trusted).
    """

    otel_context: Context
    request_id: str | None = None
    merchant_id: str | None = None
    enqueued_at: float | None = None
    delay: float | None = None
    links: tuple[trace.Link, ...] = field(default=())


def install_propagators() -> None:
    """Set the global propagators to W3C tracecontext + baggage (docs/reference.md, Spans).

    An explicit ``OTEL_PROPAGATORS`` in the environment wins: OpenTelemetry
    already built its global propagator from it, and we leave that alone.
    """
    if os.environ.get("OTEL_PROPAGATORS"):
        return
    propagate.set_global_textmap(
        CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    )


def inject_context(headers: HeadersT, *, enqueued_at: bool = True) -> HeadersT:
    """Write the trace context and the bound request context into ``headers``.

    Args:
        headers: The outgoing headers; changed in place.
        enqueued_at: Write ``x-enqueued-at`` with the current Unix time, so the
            consumer measures the message's queue lag; pass ``False`` for the
            headers of an HTTP call.

    Returns:
        ``headers``, for chaining.
    """
    propagate.inject(headers)
    bound = get_context()
    request_id = bound.get("request_id")
    if request_id is not None:
        headers[REQUEST_ID_HEADER] = str(request_id)
    merchant_id = bound.get("merchant_id")
    if merchant_id is not None:
        headers[MERCHANT_ID_HEADER] = str(merchant_id)
    if enqueued_at:
        headers[ENQUEUED_AT_HEADER] = repr(time.time())
    return headers


def extract_context(
    headers: Mapping[Any, Any] | Iterable[tuple[Any, Any]] | None,
) -> ExtractedContext:
    """Read the trace context and the request context from incoming ``headers``.

    Header names match in any case; values may be ``str`` or ``bytes`` (as AMQP
    and ASGI deliver them). A malformed request id, merchant id, enqueue time or
    delay is ignored rather than trusted, and a header that cannot be read as
    text (a value whose ``str()`` raises, a pair that is not a pair) is skipped:
    headers from a queue are input from another process, and never make this
    raise.

    Args:
        headers: A mapping or an iterable of ``(name, value)`` pairs; ``None``
            is treated as no headers.

    Returns:
        The extracted context; its `otel_context` is an empty context when the
        headers carry no (valid) ``traceparent``.
    """
    carrier = _normalise(headers)
    return ExtractedContext(
        otel_context=propagate.extract(carrier, context=Context()),
        request_id=_valid_id(carrier.get(REQUEST_ID_HEADER)),
        merchant_id=_valid_id(carrier.get(MERCHANT_ID_HEADER)),
        enqueued_at=_valid_time(carrier.get(ENQUEUED_AT_HEADER)),
        delay=_valid_delay(carrier.get(DELAY_HEADER)),
    )


def extract_server_context(
    headers: Mapping[Any, Any] | Iterable[tuple[Any, Any]] | None,
    config: TelemetryConfig | None = None,
    *,
    trust: bool | None = None,
) -> tuple[Context, list[trace.Link]]:
    """Return the parent context and links for a server span, honouring the trust policy.

    When trace headers are trusted (the default), the server span continues the
    caller's trace. When they are not (``KALEEM_TELEMETRY_TRUST_TRACE_HEADERS=false``
    on an edge service), the span starts a new trace, the caller's baggage is
    dropped, and the caller's span is kept as a `Link` so the two traces can
    still be found from each other.

    Args:
        headers: The request headers.
        config: The configuration whose ``trust_trace_headers`` decides.
        trust: Overrides ``config``; when both are ``None``, headers are trusted.

    Returns:
        ``(context, links)`` to pass to ``tracer.start_span(context=..., links=...)``.
    """
    if trust is None:
        trust = True if config is None else config.trust_trace_headers
    incoming = propagate.extract(_normalise(headers), context=Context())
    if trust:
        return incoming, []
    span_context = trace.get_current_span(incoming).get_span_context()
    if not span_context.is_valid:
        return Context(), []
    link = trace.Link(span_context, {LINK_REASON_ATTRIBUTE: "untrusted_parent"})
    return Context(), [link]


#: Headers longer than this are skipped: no header we read is anywhere near it,
#: and a huge value must not cost the consumer a parse.
MAX_HEADER_LENGTH = 8192
#: At most this many headers are read from one message.
MAX_HEADERS = 256


def _normalise(headers: Mapping[Any, Any] | Iterable[tuple[Any, Any]] | None) -> dict[str, str]:
    if headers is None:
        return {}
    out: dict[str, str] = {}
    try:
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        for count, pair in enumerate(pairs):
            if count >= MAX_HEADERS:
                break
            try:
                name, value = pair
                if value is None:
                    continue
                # Text is what almost every header is: it skips the conversions.
                key = name.lower() if type(name) is str else _text(name).lower()
                if type(value) is str:
                    text = value
                elif isinstance(value, list | tuple):
                    text = ",".join(_text(v) for v in value)
                else:
                    text = _text(value)
            except Exception:  # noqa: BLE001 - a header we cannot read is no header of ours.
                continue
            if len(text) <= MAX_HEADER_LENGTH:
                out[key] = text
    except Exception:  # noqa: BLE001 - headers that cannot be iterated carry nothing usable.
        return out
    return out


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("latin-1")
    return str(value)


def _valid_id(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value if ID_PATTERN.match(value) else None


def _valid_time(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        # A malformed header from a producer must not break the consumer.
        return None
    if not math.isfinite(number) or number < 0:
        return None
    return number


def _valid_delay(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        millis = abs(float(value))
    except ValueError:
        # A malformed delay is no delay: the lag is then measured from the enqueue time.
        return None
    if not math.isfinite(millis):
        return None
    return millis / 1000
