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
from typing import Any, TypeVar, overload

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Status, StatusCode

from kaleem_telemetry import tracing
from kaleem_telemetry._guard import internal_errors
from kaleem_telemetry._wrapping import wrap
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
    """Per decorated function: names, attributes, the cached metric children; the probe.

    As the `ScopedProbe` of `wrap`, a call's state is its span and start time, and
    the span is current while the function body runs.
    """

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

    where = "instrument"

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

    def begin(self) -> tuple[trace.Span, float]:
        return (
            tracing.start_own_span(self.span_name, attributes=self.attributes),
            time.perf_counter(),
        )

    def context(self, state: tuple[trace.Span, float]) -> Context:
        return trace.set_span_in_context(state[0])

    def end(self, state: tuple[trace.Span, float], exc: BaseException | None) -> None:
        span, start = state
        elapsed = time.perf_counter() - start
        # Only an error of the function's own counts: a closed generator, a
        # cancelled task or Ctrl-C end the call as an ordinary one.
        if isinstance(exc, Exception):
            ok = False
            _fail(span, exc)
        else:
            ok = True
        span.end()
        self.record(ok, elapsed)

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
    return wrap(func, _Instrumented(name or qualname, module, attributes, name or qualname))


def _fail(span: trace.Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
    tracing.remember_span(exc, span)
