"""`setup_telemetry()`, the `Telemetry` handle, and the bounded shutdown.

Setup order matters: the redactor first (every later sink uses it), then logs (so
the other steps can log), then tracing, metrics and Sentry. A step that fails
because of a bug or a backend is logged and skipped; only configuration mistakes
raise. Shutdown runs every component's shutdown in its own daemon thread under
one deadline, so a component that hangs (an exporter stuck on a black-holed
collector) costs at most the timeout, never a hung process.

A process that stops the usual way loses nothing it finished: `atexit` covers
a normal exit, `flush_before_stop()` the servers' own shutdown hooks (ASGI
lifespan shutdown, gunicorn's ``worker_exit``), and a SIGTERM handler
(`kaleem_telemetry._signals`) the processes that die of the signal. Those can
follow each other within milliseconds (uvicorn's lifespan shutdown, then the
signal it raises again); they share one shutdown bound, so a black-holed
collector costs the bound once, not once per hook.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from kaleem_telemetry._bounded import run_under_deadline
from kaleem_telemetry._guard import internal_errors
from kaleem_telemetry.config import TelemetryConfig
from kaleem_telemetry.exceptions import MissingDependencyError, TelemetryConfigError

__all__ = [
    "Component",
    "Telemetry",
    "current",
    "flush_before_stop",
    "reset_for_tests",
    "setup_telemetry",
    "shutdown_telemetry",
]

_LOGGER = logging.getLogger("kaleem_telemetry")
_LOCK = threading.RLock()
_CURRENT: Telemetry | None = None
_ATEXIT_REGISTERED = False
# (monotonic end of the last flush_before_stop() that did not finish, its deadline).
_STOP_WINDOW: tuple[float, float] | None = None
# A shutdown this soon after an unfinished stop flush belongs to the same stop.
_SAME_STOP_SECONDS = 2.0


class Component(Protocol):
    """A configured part of the telemetry (tracing, metrics, Sentry) that can be flushed."""

    def force_flush(self, timeout: float) -> bool:
        """Export what is buffered within ``timeout`` seconds; return whether it all went."""

    def shutdown(self, timeout: float) -> None:
        """Flush and release resources within ``timeout`` seconds."""


class Telemetry:
    """The live telemetry of this process, returned by `setup_telemetry()`.

    Attributes:
        config: The effective, frozen configuration (secrets masked in its ``repr``).
    """

    def __init__(self, config: TelemetryConfig, components: dict[str, Component]) -> None:
        self.config = config
        self._components = components
        self._shutdown_done = False
        # Re-entrant: the SIGTERM handler may run shutdown() on the main thread
        # while that thread is already inside it (atexit, a server's hook).
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        state = "shut down" if self._shutdown_done else "live"
        names = ", ".join(self._components) or "logs only"
        return f"<Telemetry {self.config.service_name!r} {state}: {names}>"

    @property
    def components(self) -> tuple[str, ...]:
        """The names of the configured components, for example ``("tracing", "metrics")``."""
        return tuple(self._components)

    def component(self, name: str) -> Component | None:
        """Return the component called ``name`` (``"tracing"``, ``"metrics"``, ``"sentry"``)."""
        return self._components.get(name)

    def force_flush(self, timeout: float = 5.0) -> bool:
        """Export buffered spans and events, waiting at most ``timeout`` seconds in all.

        Args:
            timeout: The deadline for all components together, in seconds.

        Returns:
            ``True`` when every component flushed within the deadline.
        """
        calls: list[tuple[str, Callable[[float], object]]] = [
            (name, c.force_flush) for name, c in self._components.items()
        ]
        return _run_under_deadline("force_flush", calls, timeout)

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Flush and stop every component, returning within ``timeout`` seconds.

        Idempotent: later calls return ``True`` at once. Also runs at interpreter
        exit (``atexit``) with the configured ``shutdown_timeout``.

        Args:
            timeout: The deadline for all components together, in seconds.

        Returns:
            ``True`` when every component shut down within the deadline.
        """
        global _CURRENT
        with self._lock:
            if self._shutdown_done:
                return True
            self._shutdown_done = True
        calls: list[tuple[str, Callable[[float], object]]] = [
            (name, c.shutdown) for name, c in self._components.items()
        ]
        done = _run_under_deadline("shutdown", calls, timeout)
        with _LOCK:
            if _CURRENT is self:
                _CURRENT = None
        return done


def setup_telemetry(
    service_name: str | None = None,
    *,
    environment: str | None = None,
    version: str | None = None,
    force: bool = False,
    **overrides: Any,
) -> Telemetry:
    """Configure logs, traces, metrics and Sentry for this process, once.

    Arguments win over environment variables, which win over defaults (see
    docs/configuration.md). A second call returns the live handle; if it asks
    for a different configuration a warning is logged, and ``force=True``
    reconfigures instead. A backend that is down never makes this raise.

    Args:
        service_name: ``service.name`` of traces, ``service`` of logs and metrics.
        environment: ``development``, ``staging``, ``production``...
        version: The service version (``service.version``, Sentry release).
        force: Reconfigure even if telemetry is already set up.
        **overrides: Any other `TelemetryConfig` field, for example
            ``log_format="json"`` or ``traces_exporter="console"``.

    Returns:
        The live `Telemetry` handle.

    Raises:
        TelemetryConfigError: A setting has an invalid value; the message names
            the setting (argument or environment variable) and the value.
    """
    global _CURRENT
    for name, value in (
        ("service_name", service_name),
        ("environment", environment),
        ("version", version),
    ):
        if value is not None:
            overrides[name] = value
    config = TelemetryConfig.from_env(**overrides)
    with _LOCK:
        live = _CURRENT
        if live is not None and not force:
            if live.config != config:
                _LOGGER.warning(
                    "setup_telemetry() was called again with a different configuration; "
                    "keeping the live one (pass force=True to reconfigure)"
                )
            return live
        if live is not None:
            live.shutdown(live.config.shutdown_timeout)
        telemetry = Telemetry(config, _configure(config))
        _CURRENT = telemetry
        _register_atexit()
        return telemetry


def shutdown_telemetry(timeout: float = 5.0) -> bool:
    """Shut down the live telemetry, if any, within ``timeout`` seconds.

    Args:
        timeout: The deadline, in seconds.

    Returns:
        ``True`` when everything shut down in time (or nothing was set up).
    """
    live = current()
    return True if live is None else live.shutdown(timeout)


def flush_before_stop() -> bool:
    """Export what is buffered because the process is about to stop, within the bound.

    For a server's own shutdown hook: the ASGI middleware calls it at lifespan
    shutdown and `kaleem_telemetry.gunicorn.worker_exit` from gunicorn. It
    flushes instead of shutting down, so an application that runs its lifespan
    more than once (a test client per test) keeps its telemetry. When the flush
    does not finish (the collector is unreachable), a shutdown that follows at
    once gets only what is left of the same bound.

    Returns:
        ``True`` when everything was exported (or nothing is set up).
    """
    global _STOP_WINDOW
    live = current()
    if live is None:
        return True
    timeout = live.config.shutdown_timeout
    deadline = time.monotonic() + timeout
    done = live.force_flush(timeout)
    _STOP_WINDOW = None if done else (time.monotonic(), deadline)
    return done


def current() -> Telemetry | None:
    """Return the live `Telemetry` handle, or ``None`` before setup and after shutdown."""
    return _CURRENT


def reset_for_tests() -> None:
    """Forget the live handle without shutting anything down (tests reset globals)."""
    global _CURRENT, _STOP_WINDOW
    with _LOCK:
        _CURRENT = None
        _STOP_WINDOW = None


def _configure(config: TelemetryConfig) -> dict[str, Component]:
    from kaleem_telemetry import logs, redaction

    redaction.set_redactor(
        redaction.Redactor(extra_keys=config.redact_keys, mask_emails=config.redact_emails)
    )
    logs.configure_logging(config)
    components: dict[str, Component] = {}
    for name, configure in _component_steps():
        component = _run_step(name, configure, config)
        if component is not None:
            components[name] = component
    if config.integrations:
        from kaleem_telemetry.integrations import instrument_integrations

        # A named integration whose library is missing is the caller's to fix.
        with internal_errors("setup of integrations", reraise=(MissingDependencyError,)):
            instrument_integrations(config.integrations)
    return components


def _component_steps() -> list[tuple[str, Callable[[TelemetryConfig], Component | None]]]:
    # Imported here, not at module top: `import kaleem_telemetry` must stay cheap
    # and must not pull in the exporters or sentry_sdk.
    from kaleem_telemetry import _metrics_server, sentry, tracing

    return [
        ("tracing", tracing.configure_tracing),
        ("metrics", _metrics_server.configure_metrics),
        ("sentry", sentry.configure_sentry),
    ]


def _run_step(
    name: str, configure: Callable[[TelemetryConfig], Component | None], config: TelemetryConfig
) -> Component | None:
    component: Component | None = None
    with internal_errors(f"setup of {name}", reraise=(TelemetryConfigError,)):
        component = configure(config)
    return component


def _run_under_deadline(
    what: str, calls: list[tuple[str, Callable[[float], object]]], timeout: float
) -> bool:
    results, late = run_under_deadline(what, calls, timeout)
    return not late and all(name in results and results[name] is not False for name, _call in calls)


def _stop_budget(timeout: float) -> float:
    """Return the time a final shutdown may take: ``timeout``, less a failed stop flush's share."""
    window = _STOP_WINDOW
    if window is None:
        return timeout
    ended, deadline = window
    now = time.monotonic()
    if now - ended > _SAME_STOP_SECONDS:
        return timeout
    return min(timeout, max(deadline - now, 0.0))


def _final_shutdown() -> None:
    """Shut the live telemetry down at process exit (atexit) or on a fatal SIGTERM."""
    live = current()
    if live is not None:
        live.shutdown(_stop_budget(live.config.shutdown_timeout))


def _register_atexit() -> None:
    global _ATEXIT_REGISTERED
    if not _ATEXIT_REGISTERED:
        atexit.register(_final_shutdown)
        _ATEXIT_REGISTERED = True
    live = current()
    if live is not None and live.config.flush_on_sigterm:
        from kaleem_telemetry import _signals

        with internal_errors("SIGTERM handler installation"):
            _signals.install(_final_shutdown)
