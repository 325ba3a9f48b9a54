"""One wrapper skeleton for every decorator that observes a call, and `OperationTracker`.

A decorator that times, traces or counts calls is a *probe* plus this skeleton.
The probe says what one call costs to observe (`Probe`): ``begin()`` returns a
per-call state, ``end(state, exc)`` closes it with the exception that left the
body (or ``None``), and, optionally, ``context(state)`` names an OpenTelemetry
context to make current while the wrapped body runs. A probe that must see the
call's arguments (`instrument_job` reads the message headers from them) is a
`CallProbe`: its ``begin_call(instance, args, kwargs)`` replaces ``begin()``.
`wrap` does the rest, once for every decorator:

* it wraps with `wrapt`, so the result keeps the function's name, docstring,
  signature and ``__wrapped__``, `inspect` answers as for the original
  (``iscoroutinefunction``, ``isgeneratorfunction``, ``signature``), and methods,
  classmethods and staticmethods work;
* it picks the shape once, when the function is decorated: plain, ``async``,
  generator or async generator, each a closure of its own, so a call pays no
  dispatch;
* an ``async`` function's call begins when the coroutine is awaited, a
  generator's when it is first iterated, and a generator's call ends when it is
  exhausted, raises or is closed (closing early is not an error); the context is
  current only while the generator body runs, never in the consumer between two
  items, and ``send()``, ``throw()`` and ``close()`` reach the generator;
* the application's exceptions are re-raised unchanged (the same object and
  traceback); the probe's own failures are logged by `_guard` and swallowed, and
  when ``begin()`` fails the function simply runs unobserved.

`OperationTracker` is the base of `track_db` and `track_cache`: a context manager
(``with`` and ``async with``) and, through the skeleton, a decorator of every
shape.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, Protocol, TypeVar, cast

import wrapt
from opentelemetry import context as otel_context
from opentelemetry.context import Context

from kaleem_telemetry._guard import report_internal_error

__all__ = ["CallProbe", "OperationTracker", "Probe", "ScopedProbe", "wrap"]

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")
T = TypeVar("T", bound="OperationTracker")

_Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]

#: The state of a generator call whose ``begin()`` failed: it runs unobserved.
_UNOBSERVED: Any = object()


class Probe(Protocol[S]):
    """What a decorator observes around one call; `wrap` calls it."""

    #: Where the probe's own failures are reported (the `_guard` rate-limit key).
    where: str

    def begin(self) -> S:
        """Begin one call and return its state."""
        ...

    def end(self, state: S, exc: BaseException | None) -> None:
        """End the call of ``state``; ``exc`` is the exception leaving the body, if any.

        Any `BaseException` counts (a cancelled task, Ctrl-C), except the
        ``GeneratorExit`` of a generator its consumer closed early.
        """
        ...


class ScopedProbe(Probe[S], Protocol[S]):
    """A `Probe` with a context to make current while the wrapped body runs."""

    def context(self, state: S) -> Context | None:
        """Return the context for the call of ``state``, or None for no change."""
        ...


class CallProbe(Probe[S], Protocol[S]):
    """A `Probe` whose call begins with the call's arguments."""

    def begin_call(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> S:
        """Begin one call of ``instance``'s method (or a function: ``None``) with its arguments."""
        ...


_Begin = Callable[[Any, tuple[Any, ...], dict[str, Any]], Any]


def _call_begin(probe: Probe[Any]) -> _Begin | None:
    """Return a `CallProbe`'s ``begin_call``, or None: looked up once per decorated function.

    The wrappers test it for None on each call rather than calling an adapter
    around ``begin()``: a plain probe (``@instrument``) pays no extra call.
    """
    begin_call: _Begin | None = getattr(probe, "begin_call", None)
    return begin_call


def wrap(func: F, probe: Probe[Any]) -> F:
    """Return ``func`` wrapped so that ``probe`` observes every call.

    Args:
        func: A plain, ``async``, generator or async-generator function, a
            method, a classmethod or a staticmethod.
        probe: The probe; it may also be a `ScopedProbe` and a `CallProbe`.

    Returns:
        A `wrapt` proxy of ``func`` that `inspect` takes for the original.
    """
    target = inspect.unwrap(getattr(func, "__func__", func))
    context: Callable[[Any], Context | None] | None = getattr(probe, "context", None)
    if inspect.isasyncgenfunction(target):
        wrapper = _async_gen_wrapper(probe, context)
    elif inspect.iscoroutinefunction(target):
        wrapper = _async_wrapper(probe, context)
    elif inspect.isgeneratorfunction(target):
        wrapper = _gen_wrapper(probe, context)
    else:
        wrapper = _sync_wrapper(probe, context)
    return cast("F", wrapt.decorator(wrapper)(func))


def _sync_wrapper(probe: Probe[Any], context: Callable[[Any], Context | None] | None) -> _Wrapper:
    begin, begin_call, end, where = probe.begin, _call_begin(probe), probe.end, probe.where
    attach, detach = otel_context.attach, otel_context.detach

    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        try:
            state = begin() if begin_call is None else begin_call(instance, args, kwargs)
        except Exception:  # noqa: BLE001 - our failure: the call runs unobserved.
            report_internal_error(where)
            return wrapped(*args, **kwargs)
        token = None
        if context is not None:
            try:
                ctx = context(state)
                if ctx is not None:
                    token = attach(ctx)
            except Exception:  # noqa: BLE001 - our failure: the call runs out of scope.
                report_internal_error(where)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            if token is not None:
                detach(token)
            try:
                end(state, exc)
            except Exception:  # noqa: BLE001 - our failure must not replace the application's.
                report_internal_error(where)
            raise
        if token is not None:
            detach(token)
        try:
            end(state, None)
        except Exception:  # noqa: BLE001 - our failure must not lose the result.
            report_internal_error(where)
        return result

    return wrapper


def _async_wrapper(probe: Probe[Any], context: Callable[[Any], Context | None] | None) -> _Wrapper:
    begin, begin_call, end, where = probe.begin, _call_begin(probe), probe.end, probe.where
    attach, detach = otel_context.attach, otel_context.detach

    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        async def run() -> Any:
            try:
                state = begin() if begin_call is None else begin_call(instance, args, kwargs)
            except Exception:  # noqa: BLE001 - our failure: the call runs unobserved.
                report_internal_error(where)
                return await wrapped(*args, **kwargs)
            token = None
            if context is not None:
                try:
                    ctx = context(state)
                    if ctx is not None:
                        token = attach(ctx)
                except Exception:  # noqa: BLE001 - our failure: the call runs out of scope.
                    report_internal_error(where)
            try:
                result = await wrapped(*args, **kwargs)
            except BaseException as exc:
                if token is not None:
                    detach(token)
                try:
                    end(state, exc)
                except Exception:  # noqa: BLE001 - our failure must not replace the application's.
                    report_internal_error(where)
                raise
            if token is not None:
                detach(token)
            try:
                end(state, None)
            except Exception:  # noqa: BLE001 - our failure must not lose the result.
                report_internal_error(where)
            return result

        return run()

    return wrapper


def _opener(
    probe: Probe[Any], context: Callable[[Any], Context | None] | None
) -> tuple[
    Callable[[Any, tuple[Any, ...], dict[str, Any]], tuple[Any, Context | None]],
    Callable[[Any, BaseException | None], None],
]:
    """Return the guarded begin and end of a generator call (once per decorated function)."""
    begin, begin_call, end, where = probe.begin, _call_begin(probe), probe.end, probe.where

    def open_call(
        instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, Context | None]:
        try:
            state = begin() if begin_call is None else begin_call(instance, args, kwargs)
        except Exception:  # noqa: BLE001 - our failure: the generator runs unobserved.
            report_internal_error(where)
            return _UNOBSERVED, None
        if context is None:
            return state, None
        try:
            return state, context(state)
        except Exception:  # noqa: BLE001 - our failure: the generator runs out of scope.
            report_internal_error(where)
            return state, None

    def close_call(state: Any, exc: BaseException | None) -> None:
        if state is _UNOBSERVED:
            return
        try:
            end(state, exc)
        except Exception:  # noqa: BLE001 - our failure must not replace the generator's outcome.
            report_internal_error(where)

    return open_call, close_call


def _gen_wrapper(probe: Probe[Any], context: Callable[[Any], Context | None] | None) -> _Wrapper:
    open_call, close_call = _opener(probe, context)
    attach, detach = otel_context.attach, otel_context.detach

    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        generator = wrapped(*args, **kwargs)

        def run() -> Any:
            state, ctx = open_call(instance, args, kwargs)
            to_send: Any = None
            to_throw: BaseException | None = None
            try:
                while True:
                    # The context is current only while the generator body runs.
                    token = None if ctx is None else attach(ctx)
                    try:
                        if to_throw is not None:
                            exc, to_throw = to_throw, None
                            item = generator.throw(exc)
                        else:
                            item = generator.send(to_send)
                    except StopIteration as stop:
                        result = stop.value
                        break
                    finally:
                        if token is not None:
                            detach(token)
                    try:
                        to_send = yield item
                    except GeneratorExit:
                        generator.close()
                        raise
                    except BaseException as exc:  # noqa: BLE001 - forwarded into the generator.
                        to_throw = exc
            except GeneratorExit:
                # Closed early by its consumer: a normal end, not a failure.
                close_call(state, None)
                raise
            except BaseException as exc:
                close_call(state, exc)
                raise
            close_call(state, None)
            return result

        return run()

    return wrapper


def _async_gen_wrapper(
    probe: Probe[Any], context: Callable[[Any], Context | None] | None
) -> _Wrapper:
    open_call, close_call = _opener(probe, context)
    attach, detach = otel_context.attach, otel_context.detach

    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        agen = wrapped(*args, **kwargs)

        async def run() -> Any:
            state, ctx = open_call(instance, args, kwargs)
            to_send: Any = None
            to_throw: BaseException | None = None
            try:
                while True:
                    token = None if ctx is None else attach(ctx)
                    try:
                        if to_throw is not None:
                            exc, to_throw = to_throw, None
                            item = await agen.athrow(exc)
                        else:
                            item = await agen.asend(to_send)
                    except StopAsyncIteration:
                        break
                    finally:
                        if token is not None:
                            detach(token)
                    try:
                        to_send = yield item
                    except GeneratorExit:
                        await agen.aclose()
                        raise
                    except BaseException as exc:  # noqa: BLE001 - forwarded into the generator.
                        to_throw = exc
            except GeneratorExit:
                close_call(state, None)
                raise
            except BaseException as exc:
                close_call(state, exc)
                raise
            close_call(state, None)

        return run()

    return wrapper


class OperationTracker:
    """Base of `track_db` and `track_cache`: a context manager and a decorator.

    As a context manager (``with``/``async with``) it times one block; as a
    decorator it times every call of a plain, ``async``, generator or
    async-generator function (or method), with a fresh copy per call. Subclasses
    implement ``_start()``, ``_finish()`` and ``_copy()``, and may return from
    ``_context()`` a context to make current while the block or the function body
    runs. The application's exceptions propagate unchanged.
    """

    #: Where a decorated call reports the tracker's own failures.
    _where = "operation tracker"
    _token: object | None = None

    def _start(self) -> None:
        raise NotImplementedError

    def _finish(self, exc: BaseException | None) -> None:
        raise NotImplementedError

    def _copy(self: T) -> T:
        raise NotImplementedError

    def _context(self) -> Context | None:
        return None

    def __enter__(self: T) -> T:
        self._start()
        ctx = self._context()
        if ctx is not None:
            self._token = otel_context.attach(ctx)
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        token = self._token
        if token is not None:
            self._token = None
            otel_context.detach(token)  # type: ignore[arg-type]
        self._finish(exc)

    async def __aenter__(self: T) -> T:
        return self.__enter__()

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        """Time every call of ``func`` (any shape) with a fresh copy of this tracker.

        Args:
            func: The function to wrap.
        """
        return wrap(func, _TrackerProbe(self))


class _TrackerProbe:
    """The probe of a decorating `OperationTracker`: one started copy per call."""

    __slots__ = ("template", "where")

    def __init__(self, template: OperationTracker) -> None:
        self.template = template
        self.where = template._where

    def begin(self) -> OperationTracker:
        tracker = self.template._copy()
        tracker._start()
        return tracker

    def context(self, tracker: OperationTracker) -> Context | None:
        return tracker._context()

    def end(self, tracker: OperationTracker, exc: BaseException | None) -> None:
        tracker._finish(exc)
