import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from kaleem_telemetry import context as context_module
from kaleem_telemetry import tracing
from kaleem_telemetry.context import (
    bind_context,
    clear_context,
    get_context,
    run_in_executor,
    span_attributes,
    telemetry_context,
    with_current_context,
)


class TestBindContext:
    def test_bound_values_are_visible(self):
        """Values bound with bind_context() come back from get_context()."""
        bind_context(merchant_id="m-1", request_id="r-1")

        assert get_context() == {"merchant_id": "m-1", "request_id": "r-1"}

    def test_none_unbinds_a_key(self):
        """Binding None removes that key and keeps the others."""
        bind_context(merchant_id="m-1", user_id="u-1")
        bind_context(user_id=None)

        assert get_context() == {"merchant_id": "m-1"}

    def test_get_context_returns_a_copy(self):
        """Changing the dict get_context() returned does not change the bound context."""
        bind_context(merchant_id="m-1")
        snapshot = get_context()
        snapshot["merchant_id"] = "changed"

        assert get_context() == {"merchant_id": "m-1"}

    def test_clear_context_unbinds_everything(self):
        """clear_context() leaves nothing bound."""
        bind_context(merchant_id="m-1", job="sync")
        clear_context()

        assert get_context() == {}


class TestTelemetryContext:
    def test_nested_blocks_restore_the_outer_values(self):
        """An inner block sees outer plus inner values and restores the outer ones on exit."""
        with telemetry_context(merchant_id="outer", request_id="r-1"):
            with telemetry_context(merchant_id="inner") as inner:
                seen_inner = dict(inner)
            after_inner = get_context()
        after_all = get_context()

        assert seen_inner == {"merchant_id": "inner", "request_id": "r-1"}
        assert after_inner == {"merchant_id": "outer", "request_id": "r-1"}
        assert after_all == {}

    def test_exception_still_restores(self):
        """A block that raises still restores the outer context."""
        bind_context(merchant_id="outer")
        with pytest.raises(RuntimeError), telemetry_context(merchant_id="inner"):
            raise RuntimeError("boom")

        assert get_context() == {"merchant_id": "outer"}


class TestAsyncio:
    async def test_tasks_do_not_see_each_others_values(self):
        """Concurrent tasks each bind their own merchant and never see another's."""
        seen: dict[str, str] = {}

        async def handle(merchant: str) -> None:
            bind_context(merchant_id=merchant)
            await asyncio.sleep(0)
            await asyncio.sleep(0.01)
            seen[merchant] = get_context()["merchant_id"]

        await asyncio.gather(*(handle(f"m-{i}") for i in range(20)))

        assert seen == {f"m-{i}": f"m-{i}" for i in range(20)}
        assert get_context() == {}

    async def test_run_in_executor_carries_the_context(self):
        """run_in_executor() runs the function with the caller's bound values."""
        bind_context(merchant_id="m-7")

        seen = await run_in_executor(None, lambda: get_context().get("merchant_id"))

        assert seen == "m-7"

    async def test_plain_run_in_executor_does_not(self):
        """The stdlib's run_in_executor does not copy context, which is why the helper exists."""
        bind_context(merchant_id="m-7")
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(max_workers=1) as pool:
            seen = await loop.run_in_executor(pool, lambda: get_context().get("merchant_id"))

        assert seen is None


class TestThreads:
    def test_with_current_context_carries_values_into_a_pool(self):
        """A callable wrapped with with_current_context() sees the caller's values in a thread."""
        bind_context(merchant_id="m-3", request_id="r-3")
        with ThreadPoolExecutor(max_workers=1) as pool:
            seen = pool.submit(with_current_context(get_context)).result()

        assert seen == {"merchant_id": "m-3", "request_id": "r-3"}

    def test_no_bleed_between_requests_on_a_reused_thread(self):
        """Two requests handled one after the other on the same thread never share values."""
        seen: list[dict[str, object]] = []

        def request(merchant: str | None) -> None:
            with telemetry_context(request_id=f"r-{merchant}"):
                if merchant is not None:
                    bind_context(merchant_id=merchant)
                seen.append(get_context())

        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(request, "m-1").result()
            pool.submit(request, None).result()
            after = pool.submit(get_context).result()

        assert seen == [{"request_id": "r-m-1", "merchant_id": "m-1"}, {"request_id": "r-None"}]
        assert after == {}

    def test_binding_inside_a_wrapped_call_does_not_leak_into_the_thread(self):
        """Values bound inside a with_current_context() call stay inside that call."""

        def bind_and_report() -> dict[str, object]:
            bind_context(user_id="u-1")
            return get_context()

        with ThreadPoolExecutor(max_workers=1) as pool:
            inside = pool.submit(with_current_context(bind_and_report)).result()
            after = pool.submit(get_context).result()

        assert inside == {"user_id": "u-1"}
        assert after == {}

    def test_threads_start_with_an_empty_context(self):
        """A new thread does not inherit the values bound in the thread that started it."""
        bind_context(merchant_id="m-1")
        seen: list[dict[str, object]] = []
        thread = threading.Thread(target=lambda: seen.append(get_context()))
        thread.start()
        thread.join()

        assert seen == [{}]
        assert contextvars.copy_context() is not None


class TestSpanAttributes:
    def test_known_keys_get_semantic_names(self):
        """merchant_id, request_id and user_id map to merchant.id, request.id and enduser.id."""
        attributes = span_attributes(
            {"merchant_id": "m", "request_id": "r", "user_id": "u", "job": "sync", "n": 3}
        )

        assert attributes == {
            "merchant.id": "m",
            "request.id": "r",
            "enduser.id": "u",
            "job": "sync",
            "n": 3,
        }

    def test_non_primitive_values_become_strings(self):
        """Values OpenTelemetry cannot hold are turned into strings."""
        assert span_attributes({"ids": {"a": 1}}) == {"ids": "{'a': 1}"}

    def test_bind_context_sets_attributes_on_the_current_span(self):
        """bind_context() inside a recording span puts the values on that span."""
        provider = TracerProvider()
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span("op") as span:
            bind_context(merchant_id="m-9", user_id="u-9")

        assert span.attributes is not None
        assert span.attributes["merchant.id"] == "m-9"
        assert span.attributes["enduser.id"] == "u-9"


class _RaisingStr:
    def __str__(self) -> str:
        raise RuntimeError("no str")


class _RaisingRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class _RaisingEverything:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no eq")

    def __hash__(self) -> int:
        raise RuntimeError("no hash")


class _RaisingHashStr(str):
    __slots__ = ()

    def __hash__(self) -> int:
        raise RuntimeError("no hash")


_HOSTILE = [_RaisingStr, _RaisingRepr, _RaisingEverything]


class TestHostileValues:
    @pytest.mark.parametrize("hostile", _HOSTILE)
    def test_telemetry_context_binds_and_unbinds_inside_a_recording_span(
        self, span_exporter: Any, hostile: type
    ) -> None:
        """A value whose __str__/__repr__/__hash__ raises: the block runs and restores."""
        value = hostile()
        with tracing.get_tracer().start_as_current_span("job"):
            with telemetry_context(merchant_id="m-bad", blob=value) as bound:
                inside = get_context()
                with tracing.get_tracer().start_as_current_span("child"):
                    pass
            after_block = get_context()
        later = get_context()

        assert bound["merchant_id"] == "m-bad"
        assert bound["blob"] is value
        assert inside["merchant_id"] == "m-bad"
        assert inside["blob"] is value
        assert after_block == {}
        assert later == {}
        spans = {s.name: s for s in span_exporter.get_finished_spans()}
        assert sorted(spans) == ["child", "job"]
        # The readable value still reaches both spans; the unreadable one is left off.
        for name in ("job", "child"):
            assert spans[name].attributes["merchant.id"] == "m-bad"
            assert "blob" not in spans[name].attributes

    @pytest.mark.parametrize("hostile", _HOSTILE)
    def test_bind_context_returns_inside_a_recording_span(
        self, span_exporter: Any, hostile: type
    ) -> None:
        """bind_context() with an unreadable value binds it and does not raise."""
        value = hostile()
        with telemetry_context(request_id="r-1"), tracing.get_tracer().start_as_current_span("op"):
            bind_context(merchant_id="m-2", blob=value)
            inside = get_context()
        later = get_context()

        assert inside == {"request_id": "r-1", "merchant_id": "m-2", "blob": value}
        assert later == {}
        (span,) = span_exporter.get_finished_spans()
        assert span.name == "op"
        assert span.attributes["merchant.id"] == "m-2"
        assert "blob" not in span.attributes

    def test_str_subclass_with_a_raising_hash(self, span_exporter: Any) -> None:
        """A str value whose __hash__ raises is bound, set on the span and unbound."""
        value = _RaisingHashStr("m-3")
        with tracing.get_tracer().start_as_current_span("op"), telemetry_context(merchant_id=value):
            inside = get_context()
        later = get_context()

        assert inside["merchant_id"] is value
        assert later == {}
        (span,) = span_exporter.get_finished_spans()
        assert span.name == "op"

    def test_a_later_job_does_not_see_the_values(self, span_exporter: Any) -> None:
        """After a block with an unreadable value, the next job on the thread starts clean."""

        def job(merchant: str, extra: object) -> dict[str, object]:
            with (
                tracing.get_tracer().start_as_current_span("job"),
                telemetry_context(merchant_id=merchant, extra=extra),
            ):
                pass
            return get_context()

        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(job, "m-first", _RaisingEverything()).result()
            later = pool.submit(get_context).result()

        assert later == {}

    def test_enter_restores_the_context_if_it_fails(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """If entering fails (even with a BaseException), nothing stays bound."""

        def interrupted(_values: object) -> None:
            raise KeyboardInterrupt

        bind_context(merchant_id="outer")
        monkeypatch.setattr(context_module, "_set_on_current_span", interrupted)
        with pytest.raises(KeyboardInterrupt), telemetry_context(merchant_id="inner"):
            pass

        assert get_context() == {"merchant_id": "outer"}

    def test_span_attributes_leaves_out_an_unreadable_value(self) -> None:
        """span_attributes() skips a value whose __str__ raises and keeps the others."""
        assert span_attributes({"merchant_id": "m", "blob": _RaisingStr()}) == {"merchant.id": "m"}
