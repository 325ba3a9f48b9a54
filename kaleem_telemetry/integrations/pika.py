"""Trace and measure pika publishers and consumers (the ``pika`` extra).

Call `instrument()` once, before the channels are used::

    from kaleem_telemetry.integrations import pika as pika_telemetry

    pika_telemetry.instrument()

Then, for every channel (blocking or asynchronous):

* ``basic_publish`` runs in a PRODUCER span named ``publish {exchange}`` (or the
  routing key, on the default exchange), and sends the message with the trace
  context, ``x-request-id``, ``x-merchant-id`` and ``x-enqueued-at`` added to
  its headers, on a copy of the properties given (the caller's are left as
  they were);
* ``basic_consume`` wraps the callback in ``instrument_job(queue=<queue>)``: each
  delivery runs in a CONSUMER span that continues the publisher's trace, with
  its context bound and the job metrics recorded. A callback already decorated
  with `kaleem_telemetry.instrument_job` is not wrapped twice.

`uninstrument()` puts pika's methods back exactly. The spans are our own rather
than those of ``opentelemetry-instrumentation-pika``: see docs/jobs.md.

Added in 0.1.0.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

from kaleem_telemetry._guard import report_internal_error
from kaleem_telemetry._optional import import_optional
from kaleem_telemetry.decorators import job_wrapper
from kaleem_telemetry.exceptions import MissingDependencyError
from kaleem_telemetry.integrations._health_checks import rabbitmq_check as health_check
from kaleem_telemetry.integrations._messaging import Publish
from kaleem_telemetry.integrations._patching import Patches

pika = import_optional("pika", module=__name__, package="pika", extra="pika")

__all__ = ["health_check", "instrument", "uninstrument"]

_MIN_VERSION = (1, 3)

_PATCHES = Patches("pika")


def _check_version() -> None:
    found = tuple(int(part) for part in pika.__version__.split(".")[:2] if part.isdigit())
    if found < _MIN_VERSION:
        msg = (
            f"kaleem_telemetry.integrations.pika needs pika>=1.3, found {pika.__version__!r}. "
            "Install it with: pip install 'kaleem-telemetry[pika]'"
        )
        raise MissingDependencyError(msg)


_check_version()


def instrument() -> None:
    """Patch pika's channels: publishing injects the headers, consuming wraps the callback.

    A repeated call logs a warning and does nothing.
    """
    from pika.adapters.blocking_connection import BlockingChannel
    from pika.channel import Channel

    _PATCHES.apply(
        lambda: [
            # Channel.basic_publish is what every adapter's publish ends in
            # (BlockingChannel.basic_publish calls it), so it is patched alone.
            (Channel, "basic_publish", _publish),
            # A blocking channel dispatches deliveries to the user's callback later
            # than the underlying channel receives them: its basic_consume is where the
            # user's callback is given, and the job must run when the callback does.
            (BlockingChannel, "basic_consume", _consume),
            (Channel, "basic_consume", _consume),
        ]
    )


def uninstrument() -> None:
    """Restore the methods `instrument()` patched; a no-op when not instrumented."""
    _PATCHES.restore()


def _publish_args(
    exchange: Any, routing_key: Any, body: Any, properties: Any = None, mandatory: bool = False
) -> tuple[Any, Any, Any, Any, bool]:
    return exchange, routing_key, body, properties, mandatory


def _publish(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        exchange, routing_key, body, properties, mandatory = _publish_args(*args, **kwargs)
    except TypeError:
        # Arguments pika itself will refuse: let it say so.
        return wrapped(*args, **kwargs)
    try:
        publish = Publish(str(exchange or ""), str(routing_key or ""), _headers_of(properties))
        try:
            sent = pika.BasicProperties() if properties is None else copy.copy(properties)
            sent.headers = publish.headers
        except BaseException:
            publish.close(None)
            raise
    except Exception:  # noqa: BLE001 - our failure: the message is published as given.
        report_internal_error("pika publish")
        return wrapped(*args, **kwargs)
    try:
        result = wrapped(
            exchange=exchange,
            routing_key=routing_key,
            body=body,
            properties=sent,
            mandatory=mandatory,
        )
    except BaseException as exc:
        publish.close(exc)
        raise
    publish.close(None)
    return result


def _headers_of(properties: Any) -> Any:
    return None if properties is None else getattr(properties, "headers", None)


def _consume_args(queue: Any, on_message_callback: Any, *rest: Any, **options: Any) -> Any:
    return queue, on_message_callback, rest, options


def _consume(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        queue, callback, rest, options = _consume_args(*args, **kwargs)
    except TypeError:
        return wrapped(*args, **kwargs)
    if callable(callback) and not _is_blocking_dispatch(callback):
        try:
            callback = job_wrapper(callback, queue=str(queue), system="rabbitmq")
        except Exception:  # noqa: BLE001 - our failure: the callback runs unobserved.
            report_internal_error("pika consume")
    return wrapped(queue, callback, *rest, **options)


def _is_blocking_dispatch(callback: Any) -> bool:
    """Whether ``callback`` is a blocking channel's own delivery hook (not the user's)."""
    from pika.adapters.blocking_connection import BlockingChannel

    owner = getattr(callback, "__self__", None)
    return inspect.ismethod(callback) and isinstance(owner, BlockingChannel)
