from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode
from prometheus_client import REGISTRY

from kaleem_telemetry import context, tracing
from kaleem_telemetry.decorators import instrument


def _calls(function: str, result: str) -> float:
    value = REGISTRY.get_sample_value(
        "function_calls_total", {"function": function, "module": __name__, "result": result}
    )
    return value or 0.0


def _durations(function: str) -> float:
    value = REGISTRY.get_sample_value(
        "function_duration_seconds_count", {"function": function, "module": __name__}
    )
    return value or 0.0


class Shop:
    """Methods of every kind, each instrumented."""

    rate = 2

    @instrument
    def method(self, x: int) -> int:
        """Serve as an instrumented example."""
        return x * self.rate

    @instrument(name="Shop.cm")
    @classmethod
    def cm(cls, x: int) -> int:
        """Serve as an instrumented example."""
        return x * cls.rate

    @classmethod
    @instrument
    def cm_inner(cls, x: int) -> int:
        """Serve as an instrumented example."""
        return x * cls.rate

    @instrument
    @staticmethod
    def sm(x: int) -> int:
        """Serve as an instrumented example."""
        return x * 2

    @instrument
    async def amethod(self, x: int) -> int:
        """Serve as an instrumented example."""
        await asyncio.sleep(0)
        return x * self.rate


@instrument
def bare(x: int, *, y: int = 1) -> int:
    """Add things."""
    return x + y


@instrument(name="called", attributes={"pricing.source": "erp", "api_key": "k-1"})
def called(x: int) -> int:
    """Serve as an instrumented example."""
    return x + 1


@instrument
async def coro(x: int) -> int:
    """Serve as an instrumented example."""
    await asyncio.sleep(0)
    return x + 1


@instrument
def gen(n: int) -> Iterator[int]:
    """Serve as an instrumented example."""
    yield from range(n)


@instrument
async def agen(n: int) -> AsyncIterator[int]:
    """Serve as an instrumented example."""
    for i in range(n):
        await asyncio.sleep(0)
        yield i


@instrument
def fails() -> None:
    """Serve as an instrumented example."""
    raise KeyError("missing")


@instrument
async def afails() -> None:
    """Serve as an instrumented example."""
    raise KeyError("missing")


@instrument
def gen_fails() -> Iterator[int]:
    """Serve as an instrumented example."""
    yield 1
    raise KeyError("missing")


class TestForms:
    @pytest.mark.parametrize(
        ("call", "expected", "span_name"),
        [
            (lambda: bare(1), 2, "bare"),
            (lambda: called(1), 2, "called"),
            (lambda: Shop().method(2), 4, "Shop.method"),
            (lambda: Shop.cm(2), 4, "Shop.cm"),
            (lambda: Shop.cm_inner(2), 4, "Shop.cm_inner"),
            (lambda: Shop.sm(2), 4, "Shop.sm"),
            (lambda: Shop().sm(2), 4, "Shop.sm"),
            (lambda: list(gen(3)), [0, 1, 2], "gen"),
        ],
        ids=[
            "bare",
            "called",
            "method",
            "classmethod",
            "classmethod-inner",
            "staticmethod",
            "staticmethod-instance",
            "generator",
        ],
    )
    def test_sync_forms_return_and_trace(
        self, span_exporter: Any, call: Callable[[], Any], expected: Any, span_name: str
    ) -> None:
        """Every sync form returns the same value and records one span."""
        result = call()

        assert result == expected
        assert [s.name for s in span_exporter.get_finished_spans()] == [span_name]

    @pytest.mark.parametrize(
        ("call", "expected", "span_name"),
        [
            (lambda: coro(1), 2, "coro"),
            (lambda: Shop().amethod(2), 4, "Shop.amethod"),
        ],
        ids=["coroutine", "async-method"],
    )
    async def test_async_forms_return_and_trace(
        self, span_exporter: Any, call: Callable[[], Any], expected: Any, span_name: str
    ) -> None:
        """Async functions and methods are awaited inside their span."""
        result = await call()

        assert result == expected
        assert [s.name for s in span_exporter.get_finished_spans()] == [span_name]

    async def test_async_generator(self, span_exporter: Any) -> None:
        """An async generator is traced over its whole iteration."""
        items = [i async for i in agen(3)]

        assert items == [0, 1, 2]
        assert [s.name for s in span_exporter.get_finished_spans()] == ["agen"]


class TestIntrospection:
    def test_metadata_and_signature_are_preserved(self) -> None:
        """Name, docstring, signature and __wrapped__ are those of the original."""
        assert bare.__name__ == "bare"
        assert bare.__doc__ == "Add things."
        assert str(inspect.signature(bare)) == "(x: 'int', *, y: 'int' = 1) -> 'int'"
        assert inspect.unwrap(bare).__name__ == "bare"
        assert hasattr(bare, "__wrapped__")

    @pytest.mark.parametrize(
        ("func", "predicate"),
        [
            (coro, inspect.iscoroutinefunction),
            (gen, inspect.isgeneratorfunction),
            (agen, inspect.isasyncgenfunction),
            (Shop.amethod, inspect.iscoroutinefunction),
            (bare, inspect.isfunction),
        ],
    )
    def test_inspect_answers_as_for_the_original(
        self, func: Any, predicate: Callable[[Any], bool]
    ) -> None:
        """Inspect predicates give the same answer for the wrapper."""
        assert predicate(func)

    def test_sync_function_is_not_a_coroutine_function(self) -> None:
        """A sync function stays a sync function."""
        assert not inspect.iscoroutinefunction(bare)


class TestSpans:
    def test_span_is_a_child_of_the_current_one(self, span_exporter: Any) -> None:
        """The function span's parent is the span current at call time."""
        with tracing.get_tracer().start_as_current_span("request") as parent:
            bare(1)
        spans = {s.name: s for s in span_exporter.get_finished_spans()}

        assert spans["bare"].parent.span_id == parent.get_span_context().span_id

    def test_attributes_are_redacted_and_context_bound(self, span_exporter: Any) -> None:
        """attributes= are set (secrets redacted) and the bound context is on the span."""
        with context.telemetry_context(merchant_id="m-1"):
            called(1)
        span = span_exporter.get_finished_spans()[0]

        assert span.attributes["pricing.source"] == "erp"
        assert span.attributes["api_key"] == "[REDACTED]"
        assert span.attributes["merchant.id"] == "m-1"
        assert span.attributes["code.function.name"] == f"{__name__}.called"

    def test_a_static_attribute_wins_over_the_bound_value(self, span_exporter: Any) -> None:
        """attributes= name the function's own values: a bound key of the same name yields."""

        @instrument(attributes={"merchant.id": "static", "retries": [1, 2]})
        def fixed() -> None:
            return None

        with context.telemetry_context(merchant_id="m-1", request_id="r-1"):
            fixed()
        span = span_exporter.get_finished_spans()[0]

        assert span.attributes["merchant.id"] == "static"
        assert span.attributes["request.id"] == "r-1"
        assert span.attributes["retries"] == (1, 2)

    def test_generator_span_is_not_current_between_items(self, span_exporter: Any) -> None:
        """Between two items the consumer does not see the generator's span as current."""
        seen = []
        for _ in gen(2):
            seen.append(trace.get_current_span().get_span_context().is_valid)

        assert seen == [False, False]

    def test_generator_closed_early_ends_its_span(self, span_exporter: Any) -> None:
        """Breaking out of a generator ends its span without an error."""
        iterator = gen(10)
        next(iterator)
        iterator.close()  # type: ignore[attr-defined]
        span = span_exporter.get_finished_spans()[0]

        assert span.status.status_code is not StatusCode.ERROR

    def test_generator_send_and_throw_are_forwarded(self, span_exporter: Any) -> None:
        """send() and throw() reach the wrapped generator."""

        @instrument
        def echo() -> Any:
            """Serve as an instrumented example."""
            received = []
            try:
                while True:
                    received.append((yield len(received)))
            except ValueError:
                yield received

        iterator = echo()
        next(iterator)
        iterator.send("a")
        result = iterator.throw(ValueError("stop"))

        assert result == ["a"]


class TestErrors:
    def test_exception_is_reraised_unchanged_and_recorded(self, span_exporter: Any) -> None:
        """The same exception object propagates and the span is marked as an error."""
        before = _calls("fails", "error")
        with pytest.raises(KeyError) as info:
            fails()
        span = span_exporter.get_finished_spans()[0]

        assert info.value.args == ("missing",)
        assert info.value.__traceback__ is not None
        assert span.status.status_code is StatusCode.ERROR
        assert span.events[0].name == "exception"
        assert _calls("fails", "error") == before + 1
        assert tracing.remembered_span_context(info.value) == span.context

    async def test_async_exception_is_reraised(self, span_exporter: Any) -> None:
        """An async function's exception propagates and marks its span."""
        with pytest.raises(KeyError):
            await afails()

        assert span_exporter.get_finished_spans()[0].status.status_code is StatusCode.ERROR

    @pytest.mark.parametrize(
        "call",
        [lambda: bare(1), lambda: list(gen(2)), lambda: asyncio.run(coro(1))],
        ids=["function", "generator", "coroutine"],
    )
    def test_a_failing_span_start_never_fails_the_call(
        self, monkeypatch: pytest.MonkeyPatch, call: Callable[[], Any]
    ) -> None:
        """When the span cannot be started the function still runs and returns its value."""

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("tracer broke")

        monkeypatch.setattr(tracing, "start_own_span", broken)

        assert call() in (2, [0, 1])

    def test_generator_exception_is_reraised(self, span_exporter: Any) -> None:
        """An exception raised mid-iteration propagates and marks the span."""
        with pytest.raises(KeyError):
            list(gen_fails())

        assert span_exporter.get_finished_spans()[0].status.status_code is StatusCode.ERROR


class TestMetrics:
    def test_calls_and_duration_are_recorded(self, span_exporter: Any) -> None:
        """function_calls_total{result=ok} and function_duration_seconds grow per call."""
        ok_before, count_before = _calls("bare", "ok"), _durations("bare")
        bare(1)
        bare(2)

        assert _calls("bare", "ok") == ok_before + 2
        assert _durations("bare") == count_before + 2

    def test_metrics_without_tracing_configured(self) -> None:
        """Metrics are recorded even when tracing was never configured."""
        before = _calls("bare", "ok")
        bare(1)

        assert _calls("bare", "ok") == before + 1
