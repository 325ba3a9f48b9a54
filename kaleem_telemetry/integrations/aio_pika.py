"""Trace and measure aio-pika publishers and consumers (the ``aio-pika`` extra).

Call `instrument()` once, before publishing or consuming::

    from kaleem_telemetry.integrations import aio_pika as aio_pika_telemetry

    aio_pika_telemetry.instrument()

Then:

* ``Exchange.publish(message, routing_key)`` runs in a PRODUCER span named
  ``publish {exchange}`` (or the routing key, on the default exchange) and sets
  ``message.headers`` to its headers plus the trace context, ``x-request-id``,
  ``x-merchant-id`` and ``x-enqueued-at``;
* ``Queue.consume(callback)`` wraps the callback in
  ``instrument_job(queue=<queue name>)``: each message runs in a CONSUMER span
  that continues the publisher's trace, with its context bound and the job
  metrics recorded. A callback already decorated with
  `kaleem_telemetry.instrument_job` is not wrapped twice. A consumer that reads
  ``queue.iterator()`` instead decorates its handler with
  `kaleem_telemetry.instrument_job` itself.

`uninstrument()` puts aio-pika's methods back exactly. The spans are our own
rather than those of ``opentelemetry-instrumentation-aio-pika``: see docs/jobs.md.

Added in 0.1.0.
"""

from __future__ import annotations

from typing import Any

from kaleem_telemetry._guard import report_internal_error
from kaleem_telemetry._optional import import_optional
from kaleem_telemetry.decorators import job_wrapper
from kaleem_telemetry.exceptions import MissingDependencyError
from kaleem_telemetry.integrations._health_checks import rabbitmq_check as health_check
from kaleem_telemetry.integrations._messaging import Publish
from kaleem_telemetry.integrations._patching import Patches

aio_pika = import_optional("aio_pika", module=__name__, package="aio-pika", extra="aio-pika")

__all__ = ["health_check", "instrument", "uninstrument"]

_MIN_VERSION = (9, 4)

_PATCHES = Patches("aio_pika")


def _check_version() -> None:
    version = str(getattr(aio_pika, "__version__", "0"))
    found = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if found < _MIN_VERSION:
        msg = (
            f"kaleem_telemetry.integrations.aio_pika needs aio-pika>=9.4, found {version!r}. "
            "Install it with: pip install 'kaleem-telemetry[aio-pika]'"
        )
        raise MissingDependencyError(msg)


_check_version()


def instrument() -> None:
    """Patch aio-pika: publishing injects the headers, consuming wraps the callback.

    A repeated call logs a warning and does nothing.
    """
    from aio_pika.exchange import Exchange
    from aio_pika.queue import Queue

    _PATCHES.apply(
        lambda: [
            # The robust classes call these through super(), so patching the base
            # classes covers them too, and a restored robust consumer is wrapped again.
            (Exchange, "publish", _publish),
            (Queue, "consume", _consume),
        ]
    )


def uninstrument() -> None:
    """Restore the methods `instrument()` patched; a no-op when not instrumented."""
    _PATCHES.restore()


def _publish_args(message: Any, routing_key: Any, **options: Any) -> tuple[Any, Any]:
    return message, routing_key


def _publish(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return _published(wrapped, instance, args, kwargs)


async def _published(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    try:
        message, routing_key = _publish_args(*args, **kwargs)
    except TypeError:
        return await wrapped(*args, **kwargs)
    try:
        publish = Publish(
            str(getattr(instance, "name", "") or ""),
            str(routing_key or ""),
            getattr(message, "headers", None),
        )
        try:
            message.headers = publish.headers
        except BaseException:
            publish.close(None)
            raise
    except Exception:  # noqa: BLE001 - our failure: the message is published as given.
        report_internal_error("aio_pika publish")
        return await wrapped(*args, **kwargs)
    try:
        result = await wrapped(*args, **kwargs)
    except BaseException as exc:
        publish.close(exc)
        raise
    publish.close(None)
    return result


def _consume_args(callback: Any, *rest: Any, **options: Any) -> Any:
    return callback, rest, options


def _consume(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        callback, rest, options = _consume_args(*args, **kwargs)
    except TypeError:
        return wrapped(*args, **kwargs)
    if callable(callback):
        try:
            queue = str(getattr(instance, "name", "") or "unnamed")
            callback = job_wrapper(callback, queue=queue, system="rabbitmq")
        except Exception:  # noqa: BLE001 - our failure: the callback runs unobserved.
            report_internal_error("aio_pika consume")
    return wrapped(callback, *rest, **options)
