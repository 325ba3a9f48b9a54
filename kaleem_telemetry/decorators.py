"""The `instrument` decorator: a span and RED metrics for any function.

Put ``@instrument`` on a function you want to see in traces and dashboards::

    from kaleem_telemetry import instrument

    @instrument
    def price_cart(cart): ...

    @instrument(name="pricing.refresh", attributes={"pricing.source": "erp"})
    async def refresh_prices(): ...

Every call then:

* runs inside a span named after the function (or ``name=``), a child of the
  span that is current when the call starts, with the bound request context
  (``merchant.id``, ``request.id``, ``enduser.id``) and ``attributes=`` on it;
* counts ``function_calls_total{function, module, result}`` (``result`` is ``ok``
  or ``error``) and observes ``function_duration_seconds{function, module}``;
* when it raises, records the exception on the span, marks the span as an
  error, counts ``result="error"``, and re-raises the very same exception.

It works on plain, ``async``, generator and async-generator functions, on
methods, classmethods and staticmethods, bare (``@instrument``) and called
(``@instrument(...)``). For generators the span covers the whole iteration, and
the span is current only while the generator body runs, never in the consumer
between two items.

The decorated function keeps its name, docstring, signature and ``__wrapped__``,
and `inspect` answers the same (``iscoroutinefunction``, ``isgeneratorfunction``,
``signature``) as for the original, because the wrapper is a `wrapt` proxy.

Cost: the tracer and the metric children are looked up once per decorated
function and cached, so a call costs a span start/end and two metric updates;
``benchmarks/bench_instrument.py`` measures it next to a bare call and to
OpenTelemetry's own ``tracer.start_as_current_span`` decorator.

``attributes=`` pass through the redaction policy, so a secret put there by
mistake is never exported. The ``function`` label is the function's qualified
name (or ``name=``), which is bounded: never put a per-call value in ``name=``.

Added in 0.1.0.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast, overload

import wrapt
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from kaleem_telemetry import tracing
from kaleem_telemetry._guard import internal_errors
from kaleem_telemetry.redaction import redact_attributes

__all__ = ["instrument"]

F = TypeVar("F", bound=Callable[..., Any])


@overload
def instrument(func: F, /) -> F: ...


@overload
def instrument(
    *, name: str | None = None, attributes: Mapping[str, Any] | None = None
) -> Callable[[F], F]: ...


def instrument(
    func: F | None = None,
    /,
    *,
    name: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> F | Callable[[F], F]:
    """Trace and measure every call of the decorated function.

    Args:
        func: The function, when used bare (``@instrument``).
        name: The span name and ``function`` label; defaults to the function's
            ``__qualname__``.
        attributes: Static span attributes (redacted before export).

    Returns:
        The wrapped function, or a decorator when called with arguments.

    Added in 0.1.0.
    """
    if func is not None:
        return _decorate(func, name, attributes)

    def decorator(inner: F) -> F:
        return _decorate(inner, name, attributes)

    return decorator


class _Instrumented:
    """Per decorated function: names, attributes and the cached metric children."""

    __slots__ = (
        "attributes",
        "calls_error",
        "calls_ok",
        "duration",
        "function",
        "metrics",
        "module",
        "span_name",
    )

    def __init__(
        self, function: str, module: str, attributes: Mapping[str, Any] | None, span_name: str
    ) -> None:
        self.function = function
        self.module = module
        self.span_name = span_name
        base: dict[str, Any] = {"code.function.name": f"{module}.{function}"}
        if attributes:
            base.update(redact_attributes(attributes))
        self.attributes = base
        self.metrics: Any = None
        self.calls_ok: Any = None
        self.calls_error: Any = None
        self.duration: Any = None

    def record(self, ok: bool, elapsed: float) -> None:
        metrics = _get_metrics()
        if metrics is None:
            return
        if metrics is not self.metrics:
            # First call, or the process metrics were replaced (tests): build the
            # children once and keep them for every following call.
            with internal_errors("instrument metrics"):
                family = metrics.function_calls_total
                self.calls_ok = family.labels(self.function, self.module, "ok")
                self.calls_error = family.labels(self.function, self.module, "error")
                self.duration = metrics.function_duration_seconds.labels(self.function, self.module)
                self.metrics = metrics
            if metrics is not self.metrics:
                return
        (self.calls_ok if ok else self.calls_error).inc()
        self.duration.observe(elapsed)


def _get_metrics() -> Any:
    try:
        from kaleem_telemetry import metrics
    except ImportError:
        # A package without the metrics module (partial install) still traces.
        return None
    return metrics.get_metrics()


def _decorate(func: F, name: str | None, attributes: Mapping[str, Any] | None) -> F:
    target = inspect.unwrap(getattr(func, "__func__", func))
    qualname = str(getattr(target, "__qualname__", None) or getattr(target, "__name__", target))
    module = str(getattr(target, "__module__", None) or "unknown")
    state = _Instrumented(name or qualname, module, attributes, name or qualname)
    if inspect.isasyncgenfunction(target):
        wrapper = _async_gen_wrapper(state)
    elif inspect.iscoroutinefunction(target):
        wrapper = _async_wrapper(state)
    elif inspect.isgeneratorfunction(target):
        wrapper = _gen_wrapper(state)
    else:
        wrapper = _sync_wrapper(state)
    return cast("F", wrapt.decorator(wrapper)(func))


def _start(state: _Instrumented) -> tuple[trace.Span, object]:
    span = tracing.start_own_span(state.span_name, attributes=state.attributes)
    token = otel_context.attach(trace.set_span_in_context(span))
    return span, token


def _fail(span: trace.Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
    tracing.remember_span(exc, span)


def _sync_wrapper(state: _Instrumented) -> Callable[..., Any]:
    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        span, token = _start(state)
        start = time.perf_counter()
        ok = True
        try:
            return wrapped(*args, **kwargs)
        except Exception as exc:
            ok = False
            _fail(span, exc)
            raise
        finally:
            elapsed = time.perf_counter() - start
            otel_context.detach(token)  # type: ignore[arg-type]
            span.end()
            state.record(ok, elapsed)

    return wrapper


def _async_wrapper(state: _Instrumented) -> Callable[..., Any]:
    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        async def run() -> Any:
            span, token = _start(state)
            start = time.perf_counter()
            ok = True
            try:
                return await wrapped(*args, **kwargs)
            except Exception as exc:
                ok = False
                _fail(span, exc)
                raise
            finally:
                elapsed = time.perf_counter() - start
                otel_context.detach(token)  # type: ignore[arg-type]
                span.end()
                state.record(ok, elapsed)

        return run()

    return wrapper


def _gen_wrapper(state: _Instrumented) -> Callable[..., Any]:
    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        generator = wrapped(*args, **kwargs)

        def run() -> Any:
            span = tracing.start_own_span(state.span_name, attributes=state.attributes)
            in_span = trace.set_span_in_context(span)
            start = time.perf_counter()
            ok = True
            to_send: Any = None
            to_throw: BaseException | None = None
            try:
                while True:
                    # The span is current only while the generator body runs.
                    token = otel_context.attach(in_span)
                    try:
                        if to_throw is not None:
                            exc, to_throw = to_throw, None
                            item = generator.throw(exc)
                        else:
                            item = generator.send(to_send)
                    except StopIteration as stop:
                        return stop.value
                    finally:
                        otel_context.detach(token)
                    try:
                        to_send = yield item
                    except GeneratorExit:
                        generator.close()
                        raise
                    except BaseException as exc:  # noqa: BLE001 - forwarded into the generator.
                        to_throw = exc
            except Exception as exc:
                ok = False
                _fail(span, exc)
                raise
            finally:
                elapsed = time.perf_counter() - start
                span.end()
                state.record(ok, elapsed)

        return run()

    return wrapper


def _async_gen_wrapper(state: _Instrumented) -> Callable[..., Any]:
    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        agen = wrapped(*args, **kwargs)

        async def run() -> Any:
            span = tracing.start_own_span(state.span_name, attributes=state.attributes)
            in_span = trace.set_span_in_context(span)
            start = time.perf_counter()
            ok = True
            to_send: Any = None
            to_throw: BaseException | None = None
            try:
                while True:
                    token = otel_context.attach(in_span)
                    try:
                        if to_throw is not None:
                            exc, to_throw = to_throw, None
                            item = await agen.athrow(exc)
                        else:
                            item = await agen.asend(to_send)
                    except StopAsyncIteration:
                        return
                    finally:
                        otel_context.detach(token)
                    try:
                        to_send = yield item
                    except GeneratorExit:
                        await agen.aclose()
                        raise
                    except BaseException as exc:  # noqa: BLE001 - forwarded into the generator.
                        to_throw = exc
            except Exception as exc:
                ok = False
                _fail(span, exc)
                raise
            finally:
                elapsed = time.perf_counter() - start
                span.end()
                state.record(ok, elapsed)

        return run()

    return wrapper
