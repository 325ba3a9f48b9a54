"""What the RabbitMQ integrations share: the PRODUCER span and the injected headers."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from kaleem_telemetry import tracing
from kaleem_telemetry.propagation import inject_context

__all__ = ["Publish", "put_headers"]


class Publish:
    """One message being published: its PRODUCER span, and the headers to send with it."""

    __slots__ = ("headers", "span", "token")

    def __init__(self, exchange: str, routing_key: str, headers: Any) -> None:
        attributes: dict[str, Any] = {
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "send",
            "messaging.operation.name": "publish",
            "messaging.destination.name": exchange or "amq.default",
            "messaging.rabbitmq.destination.routing_key": routing_key,
        }
        self.span = tracing.start_own_span(
            f"publish {exchange or routing_key}",
            attributes=attributes,
            kind=trace.SpanKind.PRODUCER,
        )
        self.token: object | None = otel_context.attach(trace.set_span_in_context(self.span))
        try:
            # A copy: the caller's headers are not changed behind its back.
            sent = dict(headers) if isinstance(headers, Mapping) else {}
            self.headers = put_headers(sent, inject_context({}))
        except BaseException:
            self.close(None)
            raise

    def close(self, exc: BaseException | None) -> None:
        """End the span (an error when ``exc``) and restore the context."""
        token, self.token = self.token, None
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]
        if isinstance(exc, Exception):
            self.span.record_exception(exc)
            self.span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        self.span.end()


def put_headers(headers: MutableMapping[Any, Any], injected: Mapping[str, Any]) -> Any:
    """Write ``injected`` into ``headers`` in place, as the one spelling of each name.

    Any other spelling of a header we write (``Traceparent``, ``X-Request-ID``)
    is dropped first: the one canonical ``traceparent`` is ours, whatever the
    caller put there, in whatever case. Returns ``headers``.
    """
    for key in [k for k in headers if isinstance(k, str) and k.lower() in injected]:
        del headers[key]
    headers.update(injected)
    return headers
