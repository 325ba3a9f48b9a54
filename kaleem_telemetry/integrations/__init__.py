"""Integrations with the libraries a service uses, one module per library.

Each module is named after the import name of the library it instruments and
exposes ``instrument()`` and ``uninstrument()``; importing this package imports
none of them, and none of the libraries. Shipped today:

* `kaleem_telemetry.integrations.pika` (the ``pika`` extra);
* `kaleem_telemetry.integrations.aio_pika` (the ``aio-pika`` extra);
* `kaleem_telemetry.integrations.celery` (the ``celery`` extra).

The others (redis, pymongo, sqlalchemy, httpx, requests) are planned.

Added in 0.1.0.
"""

from __future__ import annotations

__all__: list[str] = []
