"""What the outgoing-HTTP integrations (httpx, requests) share.

`begin_request` starts the CLIENT span of one outgoing request and returns the
headers to send with it: ``traceparent`` (and ``tracestate``/``baggage`` when
the current trace carries them), and the bound request id under the configured
header name. `end_request` ends the span and observes
``http_client_request_duration_seconds{method, host, status_code}`` with the
span's duration; a request that got no response (a timeout, a refused
connection) is recorded with ``status_code="error"``.

No request or response header is recorded; the URL is recorded only through
the redactor (no credentials, no secret query values).
"""

from __future__ import annotations

from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, Status, StatusCode

from kaleem_telemetry import _setup
from kaleem_telemetry._guard import report_internal_error
from kaleem_telemetry._http import normalise_method
from kaleem_telemetry.context import get_context
from kaleem_telemetry.integrations._clients import end_call, start_call
from kaleem_telemetry.metrics import get_metrics
from kaleem_telemetry.redaction import get_redactor

__all__ = ["NO_RESPONSE", "Request", "begin_request", "end_request"]

NO_RESPONSE = "error"
"""The ``status_code`` label of a request that got no response."""

_DEFAULT_REQUEST_ID_HEADER = "X-Request-ID"
_DEFAULT_PORTS = {"http": 80, "https": 443}

Request = tuple[Span, int, str, str]
"""One request in flight: its span, start (ns), method label and host label."""


def begin_request(
    method: str, url: str, scheme: str, host: str, port: int | None, where: str
) -> tuple[Request, dict[str, str]] | None:
    """Start the span of one request; return it and the headers to add, or None on our failure."""
    try:
        label = normalise_method(method.upper())
        attributes: dict[str, Any] = {
            "http.request.method": label,
            "url.full": get_redactor().redact_url(url),
            "server.address": host,
        }
        if port is None:
            port = _DEFAULT_PORTS.get(scheme)
        if port is not None:
            attributes["server.port"] = port
        span, started = start_call("HTTP" if label == "_OTHER" else label, attributes)
        headers: dict[str, str] = {}
        propagate.inject(headers, context=trace.set_span_in_context(span))
        request_id = get_context().get("request_id")
        if request_id is not None:
            headers[_request_id_header()] = str(request_id)
    except Exception:  # noqa: BLE001 - our failure: the request is sent unobserved.
        report_internal_error(where)
        return None
    return (span, started, label, host), headers


def end_request(
    request: Request, status: int | None, exc: BaseException | None, where: str
) -> None:
    """End the request's span; observe its duration (``status`` None: no response)."""
    span, started, method, host = request
    try:
        if status is not None:
            span.set_attribute("http.response.status_code", status)
            if status >= 400 and exc is None:
                span.set_attribute("error.type", str(status))
                span.set_status(Status(StatusCode.ERROR))
        elapsed = end_call(span, started, exc if status is None else None)
        code = NO_RESPONSE if status is None else str(status)
        get_metrics().http_client_request_duration_seconds.labels(method, host, code).observe(
            elapsed
        )
    except Exception:  # noqa: BLE001 - our failure must not reach the caller.
        report_internal_error(where)


def _request_id_header() -> str:
    live = _setup.current()
    return _DEFAULT_REQUEST_ID_HEADER if live is None else live.config.request_id_header
