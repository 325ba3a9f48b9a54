"""Log and swallow the library's own failures so the host application never sees them.

Two spellings of one guard:

- ``with internal_errors("where"):`` around a hook body that is not on a hot path;
- ``except Exception: report_internal_error("where")`` in a hot path, where a
  ``try`` costs nothing until it raises and a generator context manager would
  cost a frame on every call.

Both log the exception once per ``where`` per minute and never raise.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["internal_errors", "report_internal_error"]

_LOGGER = logging.getLogger("kaleem_telemetry")
_MIN_INTERVAL_SECONDS = 60.0
_LAST_LOGGED: dict[str, float] = {}
_LOCK = threading.Lock()


def report_internal_error(where: str) -> None:
    """Log the exception being handled (rate-limited) and return; call it from an ``except``.

    This and `internal_errors` are the one place where a blind ``except Exception``
    is allowed: a bug in telemetry must cost the application a log line, never a
    request. The caller swallows the exception by not re-raising it.

    Args:
        where: A short name of the hook, used in the log message and as the
            rate-limit key (one warning per ``where`` per minute).
    """
    # A broken clock, lock or logging setup must not turn our own bug into a crash.
    with contextlib.suppress(Exception):
        now = time.monotonic()
        with _LOCK:
            last = _LAST_LOGGED.get(where)
            if last is not None and now - last < _MIN_INTERVAL_SECONDS:
                return
            _LAST_LOGGED[where] = now
        _LOGGER.warning("kaleem_telemetry internal error in %s", where, exc_info=sys.exc_info())


@contextmanager
def internal_errors(where: str, *, reraise: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Run a hook body; log an exception it raises (rate-limited) and swallow it.

    Args:
        where: A short name of the hook (see `report_internal_error`).
        reraise: Exception types that are the caller's to handle (a configuration
            error must reach the user), re-raised instead of swallowed.
    """
    try:
        yield
    except reraise:
        raise
    except Exception:  # noqa: BLE001 - the guard logs it; the caller must not see it.
        report_internal_error(where)
