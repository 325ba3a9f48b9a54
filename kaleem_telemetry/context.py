"""The request/job context: one place to bind ``request_id``, ``merchant_id`` and friends.

Values are kept in a `contextvars.ContextVar`, so every asyncio task and every
thread sees its own copy, and a request that reuses a worker thread starts from
whatever the middleware bound for *it*, never from the previous request.

What is bound here reaches three sinks with one call:

* every log line (the log pipeline reads `get_context()`),
* the current span and every span started while it is bound (as ``merchant.id``,
  ``request.id``, ``enduser.id``, other keys under their own name),
* Sentry events (tags ``merchant_id``/``request_id``, ``user.id``).

Thread pools do not copy context variables (``loop.run_in_executor`` and
``ThreadPoolExecutor.submit`` run the function in the worker's own context), so
use `run_in_executor()` or wrap the callable with `with_current_context()`::

    await run_in_executor(None, blocking_io, arg)
    pool.submit(with_current_context(blocking_io), arg)
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from types import MappingProxyType
from typing import Any, ParamSpec, TypeVar

from opentelemetry import trace

from kaleem_telemetry._guard import report_internal_error

__all__ = [
    "bind_context",
    "clear_context",
    "get_context",
    "run_in_executor",
    "telemetry_context",
    "with_current_context",
]

P = ParamSpec("P")
R = TypeVar("R")

#: The context keys that have an OpenTelemetry semantic-convention name on spans.
SPAN_ATTRIBUTE_NAMES: Mapping[str, str] = MappingProxyType(
    {"merchant_id": "merchant.id", "request_id": "request.id", "user_id": "enduser.id"}
)


class BoundValues(dict[str, Any]):
    """The values bound in one context, made anew on every bind and never changed after.

    Only the package reads it (`bound_values`); users get a copy (`get_context`).
    ``shaped`` is where the log shaper keeps this mapping's redacted form, so the
    form is worked out once for every line logged under one binding and goes
    away with it.
    """

    # No ``__init__`` and no ``__slots__``: ``BoundValues(values)`` is then dict's
    # own constructor, run in C, once per request. ``shaped`` reads the class
    # default until the shaper sets it, which gives the instance its ``__dict__``.

    #: (the redactor, the context keys, the rest), redacted; set by the shaper.
    shaped: tuple[Any, ...] | None = None


_EMPTY = BoundValues()
_CONTEXT: contextvars.ContextVar[BoundValues] = contextvars.ContextVar(
    "kaleem_telemetry_context", default=_EMPTY
)

#: Read the bound values without a copy: the hot-path read of the log pipeline
#: and the span processor, which never change them. Users call `get_context()`.
bound_values: Callable[[], BoundValues] = _CONTEXT.get


# The request (or job) being served in this context: an object with a ``span``
# (its server span) and a ``route`` (its template once known), set by the web
# middleware. bind_context() sets values on that span as well as on the current
# one, which is a child span inside the handler (@instrument, a framework's own
# operation spans); Sentry reads the route from it before the request finishes.
_REQUEST: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "kaleem_telemetry_request", default=None
)


#: Make a request (with ``.span`` and ``.route``) current; return the token to undo it.
#: The context variable's own method: the middleware calls it once per request.
enter_request: Callable[[Any], contextvars.Token[Any]] = _REQUEST.set
#: Restore the request `enter_request()` replaced (given its token).
leave_request: Callable[[contextvars.Token[Any]], None] = _REQUEST.reset


def current_request() -> Any:
    """Return the request being served in this context (``None`` outside one)."""
    return _REQUEST.get()


def get_context() -> dict[str, Any]:
    """Return a copy of the values bound in the current context.

    Returns:
        A new dict; changing it does not change the bound context.
    """
    return dict(_CONTEXT.get())


def bind_context(**values: Any) -> None:
    """Bind values for the rest of the current context (request, job or task).

    A value of ``None`` unbinds that key. The values are also set on the current
    span, if one is recording, and on the request's server span when the
    current span is one of its children. Setting them on spans never raises: a
    value whose ``__str__`` raises is bound but left off the spans.

    Args:
        **values: Keys and values to bind, for example ``merchant_id="m-42"``.
    """
    _CONTEXT.set(_merged(_CONTEXT.get(), values))
    _set_on_current_span(values)


def clear_context() -> None:
    """Unbind every value in the current context."""
    _CONTEXT.set(_EMPTY)


def telemetry_context(**values: Any) -> _BoundValues:
    """Bind values inside a ``with`` block and restore the outer ones on exit.

    Nested blocks see the outer values plus their own; on exit the outer values
    are back exactly as they were, even if the block raised::

        with telemetry_context(merchant_id="m-42", job="sync") as bound:
            ...

    Args:
        **values: Keys and values to bind for the block.

    Returns:
        A context manager whose ``__enter__`` returns a copy of the context as
        bound inside the block.
    """
    return _BoundValues(values)


class _BoundValues:
    """The context manager behind `telemetry_context()`.

    A plain class rather than ``@contextmanager``: the web middleware enters one
    per request, and a generator-based manager costs several times more.
    """

    __slots__ = ("_token", "_values")

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = values
        self._token: contextvars.Token[BoundValues] | None = None

    def __enter__(self) -> dict[str, Any]:
        merged = _merged(_CONTEXT.get(), self._values)
        token = _CONTEXT.set(merged)
        try:
            _set_on_current_span(self._values)
            bound = dict(merged)
        except BaseException:
            # The ``with`` body never runs, so neither does __exit__: undo the
            # binding here or a later, unrelated job would log these values.
            _CONTEXT.reset(token)
            raise
        self._token = token
        return bound

    def __exit__(self, *_exc: object) -> None:
        if self._token is not None:
            _CONTEXT.reset(self._token)
            self._token = None


def push_context(values: Mapping[str, Any]) -> contextvars.Token[BoundValues]:
    """Bind ``values`` on top of the current context and return the token to undo it.

    The cheap form of `telemetry_context()` for the web middleware, which binds
    the request id once per request and sets it on its span itself.

    Args:
        values: The values to bind (``None`` values unbind their key).
    """
    current = _CONTEXT.get()
    if not current and None not in values.values():
        # The request's first binding, over an empty context: nothing to merge.
        return _CONTEXT.set(BoundValues(values))
    return _CONTEXT.set(_merged(current, values))


def pop_context(token: contextvars.Token[BoundValues]) -> None:
    """Restore the context `push_context()` replaced."""
    _CONTEXT.reset(token)


def span_attributes(values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return the span attributes for ``values`` (default: the bound context).

    Known keys get their semantic-convention names; other keys keep their own.
    Values that are not a str, bool, int or float are turned into strings; a
    value whose ``__str__`` raises is left out (and logged as an internal error).

    Args:
        values: The context values; the current context when ``None``.
    """
    source = _CONTEXT.get() if values is None else values
    out: dict[str, Any] = {}
    for key, value in source.items():
        if value is None:
            continue
        if not isinstance(value, str | bool | int | float):
            try:
                value = str(value)
            except Exception:  # noqa: BLE001 - the guard logs it; the caller must not see it.
                report_internal_error("context span attribute")
                continue
        out[SPAN_ATTRIBUTE_NAMES.get(key, key)] = value
    return out


def with_current_context(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap ``fn`` so it runs in a copy of the caller's context, wherever it is called.

    Use it to hand a callable to a thread pool: the bound values, the current
    span and the log correlation all follow it into the worker thread.

    Args:
        fn: The callable to wrap.

    Returns:
        A callable with the same signature.
    """
    ctx = contextvars.copy_context()

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return ctx.copy().run(fn, *args, **kwargs)

    return run


async def run_in_executor(executor: Executor | None, fn: Callable[..., R], *args: Any) -> R:
    """Run ``fn(*args)`` in ``executor`` with the caller's context, and await it.

    The same as ``loop.run_in_executor`` except that the bound values and the
    current span are visible inside ``fn``.

    Args:
        executor: The executor, or ``None`` for the loop's default one.
        fn: The blocking callable.
        *args: Its positional arguments.

    Returns:
        What ``fn`` returns.
    """
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    return await loop.run_in_executor(executor, functools.partial(ctx.run, fn, *args))


def _merged(current: Mapping[str, Any], values: Mapping[str, Any]) -> BoundValues:
    merged = BoundValues(current)
    for key, value in values.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _set_on_current_span(values: Mapping[str, Any]) -> None:
    # Called after the values are bound: raising here would leave them bound while
    # the caller is told the call failed, so a failure costs the spans, never the call.
    try:
        span = trace.get_current_span()
        request = _REQUEST.get()
        server = getattr(request, "span", None) if request is not None else None
        candidates = (span,) if server is None or server is span else (span, server)
        targets = [s for s in candidates if s.is_recording()]
        if not targets:
            return
        attributes = span_attributes({k: v for k, v in values.items() if v is not None})
        if attributes:
            from kaleem_telemetry.redaction import redact_attributes

            redacted = redact_attributes(attributes)
            for target in targets:
                target.set_attributes(redacted)
    except Exception:  # noqa: BLE001 - the guard logs it; the caller must not see it.
        report_internal_error("context span attributes")
