"""Gunicorn server hooks: flush telemetry when a worker exits, clean up multiprocess files.

Name them in the gunicorn configuration file (``gunicorn.conf.py``)::

    from kaleem_telemetry.gunicorn import child_exit, worker_exit  # noqa: F401

``worker_exit`` runs in the worker as it exits and exports what it still buffers
(spans, Sentry events) within the shutdown bound. ``child_exit`` runs in the
arbiter when a worker has gone and removes its live-gauge files from
``PROMETHEUS_MULTIPROC_DIR``. Without the hooks, a sync worker still flushes at
interpreter exit (``atexit``), and a uvicorn worker at lifespan shutdown; the
hook is the place gunicorn itself offers, and it also covers a worker that
leaves through ``os._exit`` after the hook.

Added in 0.1.0.
"""

from __future__ import annotations

from typing import Any

from kaleem_telemetry._guard import internal_errors
from kaleem_telemetry.exposition import child_exit

__all__ = ["child_exit", "worker_exit"]


def worker_exit(server: Any, worker: Any) -> None:
    """Export a gunicorn worker's buffered telemetry as it exits (gunicorn's hook).

    Args:
        server: The gunicorn arbiter (unused).
        worker: The worker that is exiting (unused).
    """
    with internal_errors("telemetry flush at gunicorn worker exit"):
        from kaleem_telemetry._setup import flush_before_stop

        flush_before_stop()
