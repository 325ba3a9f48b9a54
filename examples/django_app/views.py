"""Views of the Django demo."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

from kaleem_telemetry import bind_context, get_logger

log = get_logger("demo")


def item(request: HttpRequest, item_id: int) -> JsonResponse:
    """Return one item."""
    return JsonResponse({"item_id": item_id})


def order(request: HttpRequest, merchant_id: str, order_id: int) -> JsonResponse:
    """Return one order of a merchant, binding the merchant for the request."""
    bind_context(merchant_id=merchant_id)
    log.info("order_viewed", order_id=order_id)
    return JsonResponse({"order_id": order_id})


def archive(request: HttpRequest, year: str) -> HttpResponse:
    """A regex route: its template keeps the pattern."""
    return HttpResponse(year)


def fail(request: HttpRequest) -> Any:
    """Fail on purpose: Django renders a 500 page, the telemetry records the error."""
    msg = "the demo fails on purpose"
    raise RuntimeError(msg)
