from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry

from kaleem_telemetry import _guard
from kaleem_telemetry._wrapping import wrap
from kaleem_telemetry.db import track_db

_KEY = "test_wrapping.probe"


class AppError(Exception):
    """The application's own exception."""


class RecordingProbe:
    """A scoped probe that records what the skeleton asks of it."""

    where = "recording probe"

    def __init__(self, *, fail_in: str = "") -> None:
        self.fail_in = fail_in
        self.calls: list[tuple[str, Any]] = []
        self.count = 0

    def begin(self) -> int:
        """Count the call; its state is its number."""
        self.count += 1
        self.calls.append(("begin", self.count))
        if self.fail_in == "begin":
            raise RuntimeError("probe begin broke")
        return self.count

    def context(self, state: int) -> otel_context.Context:
        """Return a context holding the call's number."""
        if self.fail_in == "context":
            raise RuntimeError("probe context broke")
        return otel_context.set_value(_KEY, state)

    def end(self, state: int, exc: BaseException | None) -> None:
        """Record the end and its exception."""
        self.calls.append(("end", (state, exc)))
        if self.fail_in == "end":
            raise RuntimeError("probe end broke")


def _current() -> Any:
    return otel_context.get_value(_KEY)


@pytest.fixture(name="probe")
def _probe() -> RecordingProbe:
    return RecordingProbe()


@pytest.fixture(name="fresh_guard")
def _fresh_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each test sees the guard's first (not rate-limited) warning.
    monkeypatch.setattr(_guard, "_LAST_LOGGED", {})


class TestShapes:
    def test_sync(self, probe: RecordingProbe) -> None:
        """A plain function returns its value inside the probe's context, begun and ended once."""

        def add(x: int, y: int = 1) -> tuple[int, Any]:
            return x + y, _current()

        wrapped = wrap(add, probe)

        assert wrapped(1, y=2) == (3, 1)
        assert _current() is None
        assert probe.calls == [("begin", 1), ("end", (1, None))]

    async def test_async(self, probe: RecordingProbe) -> None:
        """An async function begins when awaited, runs in the context and ends once."""

        async def add(x: int) -> tuple[int, Any]:
            await asyncio.sleep(0)
            return x + 1, _current()

        wrapped = wrap(add, probe)
        coroutine = wrapped(1)

        assert probe.calls == []
        assert await coroutine == (2, 1)
        assert _current() is None
        assert probe.calls == [("begin", 1), ("end", (1, None))]

    def test_generator(self, probe: RecordingProbe) -> None:
        """A generator begins when first iterated, ends when exhausted, keeps its return value."""

        def items(n: int) -> Any:
            for i in range(n):
                yield i, _current()
            return "done"

        wrapped = wrap(items, probe)
        iterator = wrapped(2)

        assert probe.calls == []
        seen = []
        while True:
            try:
                seen.append((next(iterator), _current()))
            except StopIteration as stop:
                result = stop.value
                break

        assert seen == [((0, 1), None), ((1, 1), None)]
        assert result == "done"
        assert probe.calls == [("begin", 1), ("end", (1, None))]

    async def test_async_generator(self, probe: RecordingProbe) -> None:
        """An async generator is observed over its whole iteration, in the context only inside."""

        async def items(n: int) -> AsyncIterator[tuple[int, Any]]:
            for i in range(n):
                await asyncio.sleep(0)
                yield i, _current()

        wrapped = wrap(items, probe)
        seen = [(item, _current()) async for item in wrapped(2)]

        assert seen == [((0, 1), None), ((1, 1), None)]
        assert probe.calls == [("begin", 1), ("end", (1, None))]

    @pytest.mark.parametrize(
        ("make", "predicate"),
        [
            (lambda: lambda: None, inspect.isfunction),
            (lambda: _coroutine_function(), inspect.iscoroutinefunction),
            (lambda: _generator_function(), inspect.isgeneratorfunction),
            (lambda: _async_generator_function(), inspect.isasyncgenfunction),
        ],
        ids=["function", "coroutine", "generator", "async-generator"],
    )
    def test_inspect_answers_as_for_the_original(
        self,
        probe: RecordingProbe,
        make: Callable[[], Callable[..., Any]],
        predicate: Callable[[Any], bool],
    ) -> None:
        """The wrapper keeps the original's kind, signature, name and __wrapped__."""
        original = make()
        wrapped = wrap(original, probe)

        assert predicate(wrapped)
        assert inspect.signature(wrapped) == inspect.signature(original)
        assert wrapped.__name__ == original.__name__
        assert wrapped.__wrapped__ is original  # type: ignore[attr-defined]


def _coroutine_function() -> Callable[..., Any]:
    async def work(x: int) -> int:
        return x

    return work


def _generator_function() -> Callable[..., Any]:
    def work(x: int) -> Iterator[int]:
        yield x

    return work


def _async_generator_function() -> Callable[..., Any]:
    async def work(x: int) -> AsyncIterator[int]:
        yield x

    return work


class TestMethods:
    def test_method_classmethod_and_staticmethod(self) -> None:
        """Methods see their instance or class, and every call is observed."""
        probe = RecordingProbe()

        class Shop:
            rate = 3

            def method(self, x: int) -> int:
                return x * self.rate

            method = wrap(method, probe)

            @classmethod
            def outer(cls, x: int) -> int:
                return x * cls.rate

            outer = wrap(outer, probe)

            @staticmethod
            def static(x: int) -> int:
                return x * 2

            static = wrap(static, probe)

        assert Shop().method(2) == 6
        assert Shop.outer(2) == 6
        assert Shop().outer(2) == 6
        assert Shop.static(2) == 4
        assert Shop().static(2) == 4
        assert probe.count == 5
        assert [name for name, _ in probe.calls] == ["begin", "end"] * 5


class TestErrors:
    def test_exception_propagates_unchanged(self, probe: RecordingProbe) -> None:
        """The application's exception object reaches the caller and the probe's end."""
        boom = KeyError("missing")

        def fails() -> None:
            raise boom

        with pytest.raises(KeyError) as info:
            wrap(fails, probe)()

        assert info.value is boom
        assert info.value.__traceback__ is not None
        assert probe.calls == [("begin", 1), ("end", (1, boom))]
        assert _current() is None

    async def test_async_exception_propagates_unchanged(self, probe: RecordingProbe) -> None:
        """An async function's exception object reaches the caller and the probe's end."""
        boom = KeyError("missing")

        async def fails() -> None:
            raise boom

        with pytest.raises(KeyError) as info:
            await wrap(fails, probe)()

        assert info.value is boom
        assert probe.calls == [("begin", 1), ("end", (1, boom))]

    def test_generator_exception_propagates_unchanged(self, probe: RecordingProbe) -> None:
        """An exception raised mid-iteration reaches the consumer and the probe's end."""
        boom = KeyError("missing")

        def fails() -> Iterator[int]:
            yield 1
            raise boom

        with pytest.raises(KeyError) as info:
            list(wrap(fails, probe)())

        assert info.value is boom
        assert probe.calls == [("begin", 1), ("end", (1, boom))]

    @pytest.mark.parametrize("fail_in", ["begin", "context", "end"])
    def test_failing_probe_is_swallowed(
        self, fresh_guard: None, caplog: pytest.LogCaptureFixture, fail_in: str
    ) -> None:
        """A probe that raises is logged; the call still runs and returns its value."""
        probe = RecordingProbe(fail_in=fail_in)

        with caplog.at_level(logging.WARNING, logger="kaleem_telemetry"):
            result = wrap(lambda x: x + 1, probe)(1)

        assert result == 2
        assert "kaleem_telemetry internal error in recording probe" in caplog.text
        assert _current() is None

    @pytest.mark.parametrize("fail_in", ["begin", "context", "end"])
    def test_failing_probe_keeps_the_applications_exception(
        self, fresh_guard: None, fail_in: str
    ) -> None:
        """A probe that raises never replaces the exception the function raised."""
        boom = AppError("app")

        def fails() -> None:
            raise boom

        with pytest.raises(AppError) as info:
            wrap(fails, RecordingProbe(fail_in=fail_in))()

        assert info.value is boom

    @pytest.mark.parametrize("fail_in", ["begin", "context", "end"])
    async def test_failing_probe_on_async_and_generators(
        self, fresh_guard: None, fail_in: str
    ) -> None:
        """Async functions and both generator kinds still run when the probe raises."""
        probe = RecordingProbe(fail_in=fail_in)

        async def coro() -> int:
            return 1

        def gen() -> Iterator[int]:
            yield 1
            yield 2

        async def agen() -> AsyncIterator[int]:
            yield 1
            yield 2

        assert await wrap(coro, probe)() == 1
        assert list(wrap(gen, probe)()) == [1, 2]
        assert [i async for i in wrap(agen, probe)()] == [1, 2]


class TestGenerators:
    def test_context_is_current_only_inside_the_body(self, probe: RecordingProbe) -> None:
        """The consumer never sees the probe's context, the generator body always does."""
        inside = []

        def items() -> Iterator[int]:
            for i in range(3):
                inside.append(_current())
                yield i
            inside.append(_current())

        outside = [_current() for _ in wrap(items, probe)()]

        assert inside == [1, 1, 1, 1]
        assert outside == [None, None, None]

    def test_closed_early_ends_without_error(self, probe: RecordingProbe) -> None:
        """Closing a generator early closes the wrapped one and ends the call as ordinary."""
        closed = []

        def items() -> Iterator[int]:
            try:
                yield from range(10)
            finally:
                closed.append(True)

        iterator = wrap(items, probe)()
        next(iterator)
        iterator.close()

        assert closed == [True]
        assert probe.calls == [("begin", 1), ("end", (1, None))]

    def test_send_and_throw_are_forwarded(self, probe: RecordingProbe) -> None:
        """send() and throw() reach the wrapped generator, inside the context."""

        def echo() -> Any:
            received = []
            try:
                while True:
                    received.append(((yield len(received)), _current()))
            except ValueError:
                yield received

        iterator = wrap(echo, probe)()
        next(iterator)
        iterator.send("a")
        result = iterator.throw(ValueError("stop"))

        assert result == [("a", 1)]

    async def test_async_send_throw_and_close_are_forwarded(self, probe: RecordingProbe) -> None:
        """asend(), athrow() and aclose() reach the wrapped async generator."""
        closed = []

        async def echo() -> Any:
            received = []
            try:
                while True:
                    try:
                        received.append((yield len(received)))
                    except ValueError:
                        yield received
            finally:
                closed.append(True)

        iterator = wrap(echo, probe)()
        await iterator.__anext__()
        await iterator.asend("a")
        result = await iterator.athrow(ValueError("stop"))
        await iterator.aclose()

        assert result == ["a"]
        assert closed == [True]
        assert probe.calls == [("begin", 1), ("end", (1, None))]


def _db_count(registry: CollectorRegistry, status: str) -> float:
    labels = {"db_system": "postgresql", "operation": "scan", "collection": "orders"}
    value = registry.get_sample_value(
        "database_query_duration_seconds_count", {**labels, "status": status}
    )
    return 0.0 if value is None else value


class TestTrackDbShapes:
    def test_generator(self, registry: CollectorRegistry, span_exporter: Any) -> None:
        """A decorated generator is one operation over its iteration, its span current inside."""
        inside = []

        @track_db("scan", collection="orders", system="postgresql", registry=registry)
        def rows() -> Iterator[int]:
            for i in range(3):
                inside.append(trace.get_current_span().get_span_context().span_id)
                yield i

        outside = []
        for _ in rows():
            outside.append(trace.get_current_span().get_span_context().is_valid)
            assert span_exporter.get_finished_spans() == ()
        (span,) = span_exporter.get_finished_spans()

        assert inside == [span.context.span_id] * 3
        assert outside == [False, False, False]
        assert span.name == "scan orders"
        assert _db_count(registry, "ok") == 1

    async def test_async_generator(self, registry: CollectorRegistry, span_exporter: Any) -> None:
        """A decorated async generator is one operation over its whole iteration."""
        inside = []

        @track_db("scan", collection="orders", system="postgresql", registry=registry)
        async def rows() -> AsyncIterator[int]:
            for i in range(3):
                await asyncio.sleep(0)
                inside.append(trace.get_current_span().get_span_context().span_id)
                yield i

        outside = []
        async for _ in rows():
            outside.append(trace.get_current_span().get_span_context().is_valid)
        (span,) = span_exporter.get_finished_spans()

        assert inside == [span.context.span_id] * 3
        assert outside == [False, False, False]
        assert _db_count(registry, "ok") == 1

    def test_generator_error(self, registry: CollectorRegistry, span_exporter: Any) -> None:
        """A decorated generator that raises is counted as error, its span marked."""
        boom = RuntimeError("lost connection")

        @track_db("scan", collection="orders", system="postgresql", registry=registry)
        def rows() -> Iterator[int]:
            yield 1
            raise boom

        with pytest.raises(RuntimeError) as info:
            list(rows())
        (span,) = span_exporter.get_finished_spans()

        assert info.value is boom
        assert span.status.status_code is StatusCode.ERROR
        assert _db_count(registry, "error") == 1
        assert _db_count(registry, "ok") == 0

    def test_each_call_is_its_own_operation(
        self, registry: CollectorRegistry, span_exporter: Any
    ) -> None:
        """Two interleaved iterations of one decorated generator are two operations."""

        @track_db("scan", collection="orders", system="postgresql", registry=registry)
        def rows() -> Iterator[int]:
            yield 1

        first, second = rows(), rows()
        next(first)
        next(second)
        first.close()
        second.close()

        assert len({s.context.span_id for s in span_exporter.get_finished_spans()}) == 2
        assert _db_count(registry, "ok") == 2


class _ArgsProbe:
    """A CallProbe that records the instance and arguments each call began with."""

    where = "args probe"

    def __init__(self) -> None:
        self.calls: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = []

    def begin(self) -> None:
        raise AssertionError("a CallProbe begins with begin_call")

    def begin_call(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.calls.append((instance, args, kwargs))

    def end(self, state: None, exc: BaseException | None) -> None:
        pass


class TestCallProbe:
    def test_every_shape_begins_with_the_call_arguments(self) -> None:
        """Plain, async, generator and async-generator calls hand their arguments to begin_call."""
        probe = _ArgsProbe()

        def plain(a: int, *, b: int) -> int:
            return a + b

        async def coro(a: int, *, b: int) -> int:
            return a + b

        def gen(a: int, *, b: int) -> Iterator[int]:
            yield a + b

        async def agen(a: int, *, b: int) -> AsyncIterator[int]:
            yield a + b

        async def drain() -> list[int]:
            return [item async for item in wrap(agen, probe)(5, b=6)]

        results = [
            wrap(plain, probe)(1, b=2),
            asyncio.run(wrap(coro, probe)(2, b=3)),
            list(wrap(gen, probe)(3, b=4)),
            asyncio.run(drain()),
        ]

        assert results == [3, 5, [7], [11]]
        assert probe.calls == [
            (None, (1,), {"b": 2}),
            (None, (2,), {"b": 3}),
            (None, (3,), {"b": 4}),
            (None, (5,), {"b": 6}),
        ]

    def test_a_method_gets_its_instance_apart(self) -> None:
        """On a method, begin_call gets the instance, and args without self."""
        probe = _ArgsProbe()

        class Consumer:
            def on_message(self, body: bytes) -> bytes:
                return body

        Consumer.on_message = wrap(Consumer.on_message, probe)  # type: ignore[method-assign]
        consumer = Consumer()

        assert consumer.on_message(b"x") == b"x"
        assert probe.calls == [(consumer, (b"x",), {})]
