"""Log and swallow the library's own failures so the host application never sees them."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["internal_errors"]

_LOGGER = logging.getLogger("kaleem_telemetry")
_MIN_INTERVAL_SECONDS = 60.0
_LAST_LOGGED: dict[str, float] = {}
_LOCK = threading.Lock()


@contextmanager
def internal_errors(where: str, *, reraise: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Run a hook body; log an exception it raises (rate-limited) and swallow it.

    This is the one place where a blind ``except Exception`` is allowed: a bug in
    telemetry must cost the application a log line, never a request.

    Args:
        where: A short name of the hook, used in the log message and as the
            rate-limit key (one warning per ``where`` per minute).
        reraise: Exception types that are the caller's to handle (a configuration
            error must reach the user), re-raised instead of swallowed.
    """
    try:
        yield
    except reraise:
        raise
    except Exception:  # our own failure: the application must not see it.
        now = time.monotonic()
        with _LOCK:
            last = _LAST_LOGGED.get(where)
            if last is not None and now - last < _MIN_INTERVAL_SECONDS:
                return
            _LAST_LOGGED[where] = now
        # A broken logging setup must not turn our own bug into a crash either.
        with contextlib.suppress(Exception):
            _LOGGER.warning("kaleem_telemetry internal error in %s", where, exc_info=True)
