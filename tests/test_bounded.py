"""Blocking telemetry calls run against a deadline and never longer."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from kaleem_telemetry._bounded import run_bounded, run_under_deadline


class TestRunBounded:
    def test_returns_at_the_deadline(self) -> None:
        """run_bounded gives up on a call that hangs, within its timeout."""
        release = threading.Event()
        start = time.monotonic()
        result = run_bounded(lambda: release.wait(30), 0.2)
        elapsed = time.monotonic() - start
        release.set()

        assert result is None
        assert elapsed < 5

    def test_returns_the_result(self) -> None:
        """run_bounded returns what the call returned when it finishes in time."""
        assert run_bounded(lambda: 42, 5) == 42

    def test_a_call_that_raises_gives_none_and_is_logged(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The call's exception never reaches the caller; it is logged once."""

        def broken() -> None:
            raise RuntimeError("exporter bug")

        with caplog.at_level(logging.WARNING, logger="kaleem_telemetry"):
            assert run_bounded(broken, 5, "flush probe") is None

        assert any("flush probe" in r.getMessage() and r.exc_info for r in caplog.records)


class TestRunUnderDeadline:
    def test_one_deadline_for_all_calls(self, caplog: pytest.LogCaptureFixture) -> None:
        """Calls run side by side: two hanging calls cost one deadline, and both are named."""
        release = threading.Event()
        left: list[float] = []

        def quick(remaining: float) -> str:
            left.append(remaining)
            return "done"

        calls = [
            ("first", lambda _t: release.wait(30)),
            ("second", lambda _t: release.wait(30)),
            ("quick", quick),
        ]
        start = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="kaleem_telemetry"):
            results, late = run_under_deadline("shutdown", calls, 0.3)
        elapsed = time.monotonic() - start
        release.set()

        assert results == {"quick": "done"}
        assert late == ["first", "second"]
        assert 0 < left[0] <= 0.3
        assert elapsed < 5
        assert "first, second" in caplog.text
