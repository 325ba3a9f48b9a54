"""Realistic calls of the public API, checked by ``mypy --strict`` (never executed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

from kaleem_telemetry import (
    RetryJob,
    Telemetry,
    TelemetryConfig,
    bind_context,
    business_event,
    capture_exception,
    declare_business_labels,
    extract_context,
    get_context,
    get_logger,
    inject_context,
    instrument,
    instrument_job,
    record_cache,
    setup_telemetry,
    shutdown_telemetry,
    telemetry_context,
    track_cache,
    track_db,
)
from kaleem_telemetry.context import run_in_executor, with_current_context
from kaleem_telemetry.testing import capture_telemetry

telemetry: Telemetry = setup_telemetry("kaleem-api", environment="staging", version="1.0.0")
config: TelemetryConfig = telemetry.config
flushed: bool = telemetry.force_flush(timeout=2.0)
stopped: bool = shutdown_telemetry(timeout=5.0)

log = get_logger(__name__)
log.info("order_created", order_id=1)

bind_context(merchant_id="m-1", user_id="u-1")
with telemetry_context(request_id="r-1") as bound:
    merchant: object = bound.get("merchant_id")
context_now: dict[str, object] = get_context()


@instrument
def add(a: int, b: int) -> int:
    return a + b


@instrument(name="orders.load", attributes={"component": "orders"})
async def load(merchant_id: str) -> list[str]:
    return [merchant_id]


@instrument
def numbers(n: int) -> Iterator[int]:
    yield from range(n)


@instrument
async def stream(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


total: int = add(1, 2)
loaded: list[str] = asyncio.run(load("m-1"))

headers: dict[str, str] = inject_context({})
http_headers: dict[str, str] = inject_context({}, enqueued_at=False)
extracted = extract_context(headers)
lag_start: float | None = extracted.enqueued_at


@instrument_job(queue="webhooks", name="deliver")
def deliver(message: dict[str, object]) -> bool:
    if not message:
        raise RetryJob("empty")
    return True


@instrument_job(queue="ai-replies")
async def reply(body: bytes, *, headers: dict[str, str]) -> int:
    return len(body)


delivered: bool = deliver({"headers": headers})
replied: int = asyncio.run(reply(b"x", headers=headers))

with track_db("find", collection="orders", system="mongodb"):
    pass
record_cache(True, level="l1", key_prefix="product")
with track_cache("get", level="l2", key_prefix="product"):
    pass
declare_business_labels("plan")
business_event("merchant_created")
business_event("order_paid", plan="pro")
event_id: str | None = capture_exception(ValueError("x"), merchant_id="m-1")


async def offload() -> int:
    return await run_in_executor(None, add, 1, 2)


wrapped = with_current_context(add)
three: int = wrapped(1, 2)

with capture_telemetry() as captured:
    log.info("captured")
first_event: dict[str, object] = captured.logs[0]
