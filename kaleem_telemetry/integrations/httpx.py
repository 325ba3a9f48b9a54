"""Trace, measure and propagate httpx requests (the ``httpx`` extra).

Call `instrument()` once; every ``httpx.Client`` and ``httpx.AsyncClient``,
made before or after the call, then sends each request (``send()``, which
``get()``, ``post()``, ``request()`` and ``stream()`` end in) in a CLIENT span
named after the method, with ``http.request.method``, ``url.full`` (through the
redactor: no credentials, no secret query values), ``server.address``,
``server.port`` and ``http.response.status_code``, and with ``traceparent`` and
the bound request id (under the configured header name) added to the request's
headers.

Each request observes ``http_client_request_duration_seconds{method, host,
status_code}`` with the span's duration, redirects followed included; a
request that got no response (a timeout, a refused connection) has
``status_code="error"``. With ``stream=True`` the duration ends when the
response headers arrive. No request or response header is recorded.

`uninstrument()` puts httpx's methods back exactly. The spans are our own
rather than those of ``opentelemetry-instrumentation-httpx``: see
docs/integrations.md.

Added in 0.1.0.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kaleem_telemetry._guard import report_internal_error
from kaleem_telemetry._optional import import_optional
from kaleem_telemetry.integrations._http_client import Request, begin_request, end_request
from kaleem_telemetry.integrations._patching import Patches, Wrapper

httpx = import_optional("httpx", module=__name__, package="httpx", extra="httpx")

__all__ = ["instrument", "uninstrument"]

_PATCHES = Patches("httpx")
_WHERE = "httpx integration"


def instrument() -> None:
    """Observe every request of every httpx client, sync and async.

    A repeated call logs a warning and does nothing.
    """
    _PATCHES.apply(_targets)


def uninstrument() -> None:
    """Restore the methods `instrument()` patched; a no-op when not instrumented."""
    _PATCHES.restore()


def _targets() -> Iterable[tuple[type, str, Wrapper]]:
    yield httpx.Client, "send", _send
    yield httpx.AsyncClient, "send", _async_send


def _send(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    call = _begin(args, kwargs)
    if call is None:
        return wrapped(*args, **kwargs)
    try:
        response = wrapped(*args, **kwargs)
    except BaseException as exc:
        end_request(call, None, exc, _WHERE)
        raise
    end_request(call, _status(response), None, _WHERE)
    return response


async def _async_send(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    call = _begin(args, kwargs)
    if call is None:
        return await wrapped(*args, **kwargs)
    try:
        response = await wrapped(*args, **kwargs)
    except BaseException as exc:
        end_request(call, None, exc, _WHERE)
        raise
    end_request(call, _status(response), None, _WHERE)
    return response


def _begin(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Request | None:
    request = args[0] if args else kwargs.get("request")
    if not isinstance(request, httpx.Request):
        return None
    url = request.url
    begun = begin_request(request.method, str(url), url.scheme, url.host, url.port, _WHERE)
    if begun is None:
        return None
    call, headers = begun
    try:
        # Written into the request being sent: a header of the same name the
        # caller set is replaced by the one of this request's span.
        request.headers.update(headers)
    except Exception:  # noqa: BLE001 - our failure: the request goes without them.
        report_internal_error(_WHERE)
    return call


def _status(response: Any) -> int | None:
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None
