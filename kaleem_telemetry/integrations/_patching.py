"""The bookkeeping every integration shares: patch once, put back exactly.

An integration lists the methods it replaces; `Patches.apply` wraps them (with
`wrapt`, so the wrappers keep the originals' names and signatures) unless the
library is already instrumented, in which case it logs a warning and changes
nothing; `Patches.restore` puts the very objects that were in each class's
``__dict__`` back. `Patches.listen` does the same for event listeners (SQLAlchemy's),
removed again by `Patches.restore`.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import wrapt

__all__ = ["Patches", "Wrapper", "already_instrumented"]

_LOGGER = logging.getLogger(__name__)

Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]
"""A `wrapt` function wrapper: ``(wrapped, instance, args, kwargs) -> result``."""


class Patches:
    """The methods one integration replaced, to put back exactly."""

    __slots__ = ("_library", "_lock", "_saved")

    def __init__(self, library: str) -> None:
        self._library = library
        self._lock = threading.Lock()
        self._saved: list[Callable[[], None]] = []

    @property
    def active(self) -> bool:
        """Whether the integration is instrumented."""
        return bool(self._saved)

    def apply(self, targets: Callable[[], Iterable[tuple[type, str, Wrapper]]]) -> bool:
        """Patch every ``(owner, name, wrapper)`` of ``targets()``; once.

        Args:
            targets: Returns the methods to patch; called only when not yet
                instrumented (so the library's submodules are imported then).

        Returns:
            True when it patched, False when already instrumented (a warning is logged).
        """
        with self._lock:
            if self._saved:
                already_instrumented(self._library)
                return False
            try:
                for owner, name, wrapper in targets():
                    original = owner.__dict__[name]
                    wrapt.wrap_function_wrapper(owner, name, wrapper)
                    self._saved.append(functools.partial(setattr, owner, name, original))
            except BaseException:
                self._restore()
                raise
            return True

    def listen(
        self,
        listeners: Callable[[], Iterable[tuple[Any, str, Callable[..., Any]]]],
        *,
        add: Callable[[Any, str, Callable[..., Any]], None],
        remove: Callable[[Any, str, Callable[..., Any]], None],
    ) -> bool:
        """Add every ``(target, event, function)`` of ``listeners()`` with ``add``; once.

        Args:
            listeners: Returns the listeners; called only when not yet instrumented.
            add: The library's ``listen(target, event, function)``.
            remove: The library's ``remove(target, event, function)``, run by `restore`.

        Returns:
            True when it added them, False when already instrumented (a warning is logged).
        """
        with self._lock:
            if self._saved:
                already_instrumented(self._library)
                return False
            try:
                for target, name, function in listeners():
                    add(target, name, function)
                    self._saved.append(functools.partial(remove, target, name, function))
            except BaseException:
                self._restore()
                raise
            return True

    def restore(self) -> None:
        """Put back what `apply` patched; a no-op when nothing is patched."""
        with self._lock:
            self._restore()

    def _restore(self) -> None:
        while self._saved:
            self._saved.pop()()


def already_instrumented(library: str) -> None:
    """Log that a repeated ``instrument()`` did nothing."""
    _LOGGER.warning(
        "kaleem_telemetry.integrations.%s is already instrumented; "
        "the repeated instrument() call does nothing.",
        library,
    )
