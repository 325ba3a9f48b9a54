"""Integrations with the libraries a service uses, one module per library.

Each module is named after the import name of the library it instruments and
exposes ``instrument()`` and ``uninstrument()``; importing this package imports
none of them, and none of the libraries. Shipped:

* `kaleem_telemetry.integrations.redis` (the ``redis`` extra);
* `kaleem_telemetry.integrations.sqlalchemy` (the ``sqlalchemy`` extra);
* `kaleem_telemetry.integrations.pymongo` (the ``pymongo`` extra);
* `kaleem_telemetry.integrations.httpx` (the ``httpx`` extra);
* `kaleem_telemetry.integrations.requests` (the ``requests`` extra);
* `kaleem_telemetry.integrations.pika` (the ``pika`` extra);
* `kaleem_telemetry.integrations.aio_pika` (the ``aio-pika`` extra);
* `kaleem_telemetry.integrations.celery` (the ``celery`` extra).

``setup_telemetry(integrations="auto")`` (or ``KALEEM_TELEMETRY_INTEGRATIONS``)
instruments every one whose library is installed; a list of names instruments
those, and a named one whose library is missing raises
`MissingDependencyError` naming the extra to install.

Added in 0.1.0.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Iterable

__all__: list[str] = []

_LOGGER = logging.getLogger(__name__)

#: Integration name -> (the library's import name, the extra that installs it).
INTEGRATIONS: dict[str, tuple[str, str]] = {
    "aio_pika": ("aio_pika", "aio-pika"),
    "celery": ("celery", "celery"),
    "httpx": ("httpx", "httpx"),
    "pika": ("pika", "pika"),
    "pymongo": ("pymongo", "pymongo"),
    "redis": ("redis", "redis"),
    "requests": ("requests", "requests"),
    "sqlalchemy": ("sqlalchemy", "sqlalchemy"),
}
AUTO = "auto"


def instrument_integrations(names: Iterable[str]) -> list[str]:
    """Instrument the integrations ``names`` (``"auto"``: every installed one).

    Returns:
        The names instrumented, in order.

    Raises:
        MissingDependencyError: A named integration's library is not installed.
    """
    wanted = list(names)
    if AUTO in wanted:
        wanted = [name for name, (library, _extra) in INTEGRATIONS.items() if _installed(library)]
    done = []
    for name in wanted:
        # Importing the integration imports its library, or raises naming the extra.
        module = importlib.import_module(f"{__name__}.{name}")
        module.instrument()
        done.append(name)
    if done:
        _LOGGER.debug("instrumented integrations: %s", ", ".join(done))
    return done


def _installed(library: str) -> bool:
    try:
        return importlib.util.find_spec(library) is not None
    except (ImportError, ValueError):
        return False
