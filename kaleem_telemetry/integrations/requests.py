"""Trace, measure and propagate requests calls (the ``requests`` extra).

Call `instrument()` once; every ``requests.Session`` (and the module-level
``requests.get()``, ``requests.post()``..., which make one), made before or
after the call, then sends each request in a CLIENT span named after the
method, with ``http.request.method``, ``url.full`` (through the redactor: no
credentials, no secret query values), ``server.address``, ``server.port`` and
``http.response.status_code``, and with ``traceparent`` and the bound request id
(under the configured header name) added to the prepared request's headers.

Each call observes ``http_client_request_duration_seconds{method, host,
status_code}`` with the span's duration, redirects followed included (each hop
carries the trace headers; the call is observed once); a call that got no
response (a timeout, a refused connection) has ``status_code="error"``. No
request or response header is recorded.

`uninstrument()` puts ``Session.send`` back exactly. The spans are our own
rather than those of ``opentelemetry-instrumentation-requests``: see
docs/integrations.md.

Added in 0.1.0.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

from kaleem_telemetry._guard import report_internal_error
from kaleem_telemetry._optional import import_optional
from kaleem_telemetry.integrations._http_client import Request, begin_request, end_request
from kaleem_telemetry.integrations._patching import Patches, Wrapper

requests = import_optional("requests", module=__name__, package="requests", extra="requests")

__all__ = ["instrument", "uninstrument"]

_PATCHES = Patches("requests")
_WHERE = "requests integration"

#: The headers of the call in flight: a redirect hop (``send()`` called again
#: from inside ``send()``) carries them and is not observed a second time.
_IN_FLIGHT: ContextVar[dict[str, str] | None] = ContextVar("kaleem_requests_call", default=None)


def instrument() -> None:
    """Observe every request of every requests session.

    A repeated call logs a warning and does nothing.
    """
    _PATCHES.apply(_targets)


def uninstrument() -> None:
    """Restore the method `instrument()` patched; a no-op when not instrumented."""
    _PATCHES.restore()


def _targets() -> Iterable[tuple[type, str, Wrapper]]:
    yield requests.Session, "send", _send


def _send(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    request = args[0] if args else kwargs.get("request")
    outer = _IN_FLIGHT.get()
    if outer is not None:
        _add_headers(request, outer)
        return wrapped(*args, **kwargs)
    begun = _begin(request)
    if begun is None:
        return wrapped(*args, **kwargs)
    call, headers = begun
    token = _IN_FLIGHT.set(headers)
    try:
        response = wrapped(*args, **kwargs)
    except BaseException as exc:
        _IN_FLIGHT.reset(token)
        end_request(call, None, exc, _WHERE)
        raise
    _IN_FLIGHT.reset(token)
    status = getattr(response, "status_code", None)
    end_request(call, status if isinstance(status, int) else None, None, _WHERE)
    return response


def _begin(request: Any) -> tuple[Request, dict[str, str]] | None:
    if not isinstance(request, requests.PreparedRequest) or not isinstance(request.url, str):
        return None
    try:
        parts = urlsplit(request.url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return None
    begun = begin_request(request.method or "GET", request.url, parts.scheme, host, port, _WHERE)
    if begun is not None:
        _add_headers(request, begun[1])
    return begun


def _add_headers(request: Any, headers: dict[str, str]) -> None:
    try:
        # The prepared request being sent: a header of the same name the
        # caller set is replaced by the one of this call's span.
        request.headers.update(headers)
    except Exception:  # noqa: BLE001 - our failure: the request goes without them.
        report_internal_error(_WHERE)
