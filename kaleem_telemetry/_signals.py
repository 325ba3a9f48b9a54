"""Flush telemetry when SIGTERM arrives, keeping what the signal was going to do.

Kubernetes and ``docker stop`` send SIGTERM. Left alone, a process dies of it at
once and ``atexit`` never runs; uvicorn catches it, shuts down gracefully and
then raises it again against the handler that was there before it, so the
process dies of it all the same. Either way the spans still queued in the batch
processor and the Sentry events not yet sent would be lost.

`install()` puts one handler in front of whatever handled SIGTERM before:

* the previous handler was the default action (or unknown, set from C): export
  what is queued within the shutdown bound, restore the default action and
  raise the signal again, so the process still dies *of SIGTERM* (exit status
  -15 / 143), as its supervisor expects;
* the previous handler is a Python callable (a server's graceful shutdown,
  gunicorn's worker, the application's own): call it and do nothing else here.
  That server goes on to finish its requests; the flush then comes from the
  server's own shutdown hook (ASGI lifespan shutdown, gunicorn's exit path,
  ``atexit``), or from this handler again when the server re-raises the signal;
* the signal was ignored: it stays ignored.

A handler installed after ours replaces it; call
`kaleem_telemetry.shutdown_telemetry()` from it, or chain to the handler that
``signal.signal()`` returned (ours), to keep the flush.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["install", "installed"]

_LOGGER = logging.getLogger("kaleem_telemetry")
_LOCK = threading.Lock()
_STATE: dict[str, Any] = {"previous": signal.SIG_DFL, "flush": None}


def install(flush: Callable[[], None]) -> bool:
    """Install the SIGTERM handler in front of the current one, once per process.

    Args:
        flush: Called (bounded by the caller) when the signal would kill the process.

    Returns:
        ``True`` when the handler is in place; ``False`` off the main thread,
        where Python cannot install signal handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        _LOGGER.debug("setup_telemetry() ran off the main thread: no SIGTERM flush handler")
        return False
    with _LOCK:
        _STATE["flush"] = flush
        current = signal.getsignal(signal.SIGTERM)
        if current is _on_sigterm:
            return True
        _STATE["previous"] = current
        signal.signal(signal.SIGTERM, _on_sigterm)
    return True


def installed() -> bool:
    """Return whether our handler is the one SIGTERM runs now."""
    return signal.getsignal(signal.SIGTERM) is _on_sigterm


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    previous = _STATE["previous"]
    if previous is signal.SIG_IGN:
        return
    if callable(previous):
        previous(signum, frame)
        return
    flush = _STATE["flush"]
    if flush is not None:
        try:
            flush()
        except Exception:
            _LOGGER.warning("telemetry flush on SIGTERM failed", exc_info=True)
    # Die of the signal as the default action would have: the exit status tells
    # the supervisor (and the container runtime) that SIGTERM ended the process.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.raise_signal(signal.SIGTERM)
