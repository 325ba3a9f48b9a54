"""No log call raises, and each one writes exactly one bounded JSON line with its fields.

A property test over hostile values and format strings, through the structlog
logger of `kaleem_telemetry.get_logger` and through stdlib `logging` under the
library's configuration: mismatched ``%``-arguments, objects whose ``__str__``,
``__repr__``, ``__format__`` or ``__int__`` raise or return no ``str``, recursive
containers, an int beyond ``str()``'s digit limit, MB-scale strings and keys,
bytes, NaN and infinities, non-str keys, the pipeline's reserved keys, lone
surrogates, U+2028, U+2029, U+0085 and NUL.

For every call: it returns, exactly one line is written, the line is valid JSON
no longer than the documented 64 KiB (docs/logging.md, "What never breaks a
request"), it has ``timestamp``, ``level``, ``event``, ``service`` and
``environment`` from the pipeline, and every field passed is there under its
rendered name (cut at 1 024 characters, reserved names as ``field_<name>``,
surrogates replaced).
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
from collections.abc import Callable
from contextlib import redirect_stdout
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaleem_telemetry import logs
from kaleem_telemetry.config import TelemetryConfig

SERVICE = "never-raises"
EXAMPLES = 150
# docs/logging.md: "a line longer than 64 KiB (UTF-8) has its largest own fields
# replaced ... until it fits"; "a key longer than 1 024 characters is cut".
LINE_BOUND = 64 * 1024
KEY_BOUND = 1024
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
#: The pipeline's own keys: a caller's value under one of them is kept as ``field_<name>``.
RESERVED = ("level", "timestamp", "logger", "service", "environment", "trace_id", "span_id")
#: Names stdlib `logging` itself refuses in ``extra`` (it raises before any handler runs).
_STDLIB_FORBIDDEN = frozenset(("message", "asctime"))
_MB = 1_000_000


# ---------------------------------------------------------------- hostile values


class _RaisingEverything:
    """Every conversion to text or number raises."""

    def __str__(self) -> str:
        raise RuntimeError("__str__")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__")

    def __format__(self, spec: str) -> str:
        raise RuntimeError("__format__")

    def __int__(self) -> int:
        raise RuntimeError("__int__")

    def __index__(self) -> int:
        raise RuntimeError("__index__")

    def __float__(self) -> float:
        raise RuntimeError("__float__")


class _NotText:
    """``__str__`` and ``__repr__`` return something that is no ``str``."""

    def __str__(self) -> str:
        return b"bytes from __str__"  # type: ignore[return-value]

    def __repr__(self) -> str:
        return 42  # type: ignore[return-value]

    def __format__(self, spec: str) -> str:
        return None  # type: ignore[return-value]


class _RaisingException(Exception):
    """An exception whose message cannot be read."""

    def __str__(self) -> str:
        raise RuntimeError("exception __str__")


def _recursive_list() -> list[Any]:
    items: list[Any] = [1]
    items.append(items)
    return items


def _recursive_dict() -> dict[str, Any]:
    mapping: dict[str, Any] = {"name": "loop"}
    mapping["self"] = mapping
    mapping["list"] = [mapping]
    return mapping


def _non_str_keys() -> dict[Any, Any]:
    return {
        1: "int",
        "1": "str like the int",
        (1, "two"): "tuple",
        None: "none",
        object(): "object",
        _RaisingEverything(): "a key whose str raises",
        1.5: "float",
        frozenset({3}): "frozenset",
        b"k": "bytes",
    }


_HUGE_INT = 2**20000
# A 3 MB key, drawn by this name (hypothesis shows what it draws) and built by `_realise`.
_HUGE_KEY_NAME = "<huge key>"
_HUGE_KEY = "h" * (3 * _MB)

#: Each entry builds one hostile value afresh (containers are mutable, some recursive).
HOSTILE: list[Callable[[], Any]] = [
    _RaisingEverything,
    _NotText,
    _recursive_list,
    _recursive_dict,
    _non_str_keys,
    lambda: _HUGE_INT,
    lambda: -_HUGE_INT,
    lambda: 2**64,
    lambda: "x" * (2 * _MB),
    lambda: "\u00e9\u4e2d" * _MB,
    lambda: b"\xff\xfe\x00 bytes " * 1000,
    lambda: bytearray(b"\x80abc"),
    lambda: math.nan,
    lambda: math.inf,
    lambda: -math.inf,
    lambda: "lone \ud800 surrogate \udfff",
    lambda: "line\u2028separator\u2029paragraph\x85next",
    lambda: "nul\x00byte",
    lambda: {"nested": [{"deeper": ("\ud800", math.nan, _HUGE_INT)}]},
    lambda: [[[[[[[[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]]]]]]],
    lambda: {"k" * _MB: "a huge nested key"},
]

FORMATS = [
    "%d items",
    "100% done for %s",
    "%s and %s",
    "%(name)s",
    "%",
    "%z %s",
    "%.2f%%",
    "%r",
    "{0} {1}",
    "plain message",
    "",
]


@dataclass(frozen=True)
class _Hostile:
    """A placeholder for ``HOSTILE[index]``, built only when the example runs.

    Hypothesis shows the examples it draws; a value whose ``repr()`` raises could
    not be shown, so the strategies draw these and `_realise` builds the values.
    """

    index: int


def _realise(template: Any) -> Any:
    """Build the hostile values a drawn template stands for."""
    if isinstance(template, _Hostile):
        return HOSTILE[template.index]()
    if isinstance(template, dict):
        return {_HUGE_KEY if k == _HUGE_KEY_NAME else k: _realise(v) for k, v in template.items()}
    if isinstance(template, list):
        return [_realise(v) for v in template]
    if isinstance(template, tuple):
        return tuple(_realise(v) for v in template)
    return template


_PLAIN = st.one_of(st.integers(-5, 5), st.text(max_size=5), st.none(), st.booleans())

# A value: hostile, plain, or containers of them.
_VALUE: st.SearchStrategy[Any] = st.deferred(
    lambda: st.one_of(
        st.builds(_Hostile, st.integers(0, len(HOSTILE) - 1)),
        _PLAIN,
        st.lists(_VALUE, max_size=3),
        st.lists(_VALUE, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=4), _VALUE, max_size=3),
    )
)

# Field names: ordinary, reserved, odd characters, huge.
_KEY = st.one_of(
    st.sampled_from(["order_id", "note", "blob", "value", "items", *RESERVED]),
    st.sampled_from(["\ud800key", "a\u2028b", "nul\x00key", "\u00e9t\u00e9", "", " "]),
    st.integers(KEY_BOUND - 2, KEY_BOUND + 2).map(lambda n: "k" * n),
    st.just(_HUGE_KEY_NAME),
)
_FIELDS = st.dictionaries(_KEY, _VALUE, max_size=4)
_MESSAGE = st.one_of(st.sampled_from(FORMATS), _VALUE)
_ARGS = st.lists(_VALUE, max_size=3)


def rendered_key(key: str) -> str:
    """The JSON key a field gets, by the rules of docs/logging.md."""
    if key in RESERVED:
        key = "field_" + key
    if len(key) > KEY_BOUND:
        key = f"{key[:KEY_BOUND]}...[truncated {len(key) - KEY_BOUND} chars]"
    return key.encode("utf-8", "replace").decode("utf-8")


def _distinct(fields: dict[str, Any]) -> dict[str, Any]:
    """Keep the fields whose rendered keys differ, so each can be looked for."""
    out: dict[str, Any] = {}
    seen: set[str] = set()
    for key, value in fields.items():
        name = rendered_key(key)
        if name not in seen:
            seen.add(name)
            out[key] = value
    return out


# ------------------------------------------------------------------------ checks


def _one_line(out: str, level: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Check what one call wrote; return the parsed line."""
    assert out.endswith("\n"), out[:200]
    assert out.count("\n") == 1, out[:2000]
    assert len(out.splitlines()) == 1
    assert len(out.encode("utf-8")) <= LINE_BOUND + 1
    line = json.loads(out)
    assert isinstance(line, dict)
    assert TIMESTAMP.match(line["timestamp"])
    assert line["level"] == level
    assert isinstance(line["event"], str)
    assert (line["service"], line["environment"]) == (SERVICE, "test")
    missing = [rendered_key(k)[:40] for k in fields if rendered_key(k) not in line]
    assert missing == []
    return line


@pytest.fixture(name="configured")
def _configured(monkeypatch: pytest.MonkeyPatch) -> None:
    """The library's JSON logs, as `setup_telemetry()` configures them."""
    environ = {
        "OTEL_SERVICE_NAME": SERVICE,
        "KALEEM_TELEMETRY_ENVIRONMENT": "test",
        "KALEEM_TELEMETRY_LOG_FORMAT": "json",
        "KALEEM_TELEMETRY_LOG_LEVEL": "debug",
    }
    logs.configure_logging(TelemetryConfig.from_env(environ=environ))
    # pytest's own log-capture handler formats records too, and reports a bad
    # format by raising; the library's handler is the one under test.
    monkeypatch.setattr(logging, "raiseExceptions", False)


_LEVELS = ["debug", "info", "warning", "error", "critical"]


@pytest.mark.usefixtures("configured")
class TestNoLogCallRaises:
    def test_structlog_calls(self) -> None:
        """get_logger() calls with hostile events, arguments, fields and bound values."""
        counts = {"calls": 0, "bytes": 0}

        @settings(max_examples=EXAMPLES, deadline=None, database=None)
        @given(
            message=_MESSAGE,
            args=_ARGS,
            fields=_FIELDS,
            bound=st.dictionaries(st.sampled_from([*RESERVED, "event", "job"]), _VALUE, max_size=2),
            method=st.sampled_from([*_LEVELS, "exception"]),
        )
        def check(
            message: Any,
            args: list[Any],
            fields: dict[str, Any],
            bound: dict[str, Any],
            method: str,
        ) -> None:
            message, args = _realise(message), _realise(args)
            fields, bound = _distinct(_realise(fields)), _realise(bound)
            log = logs.get_logger("hostile").bind(**bound)
            out = io.StringIO()
            with redirect_stdout(out):
                if method == "exception":
                    try:
                        raise ValueError("inner") from _RaisingException()
                    except ValueError:
                        log.exception(message, *args, **fields)
                else:
                    getattr(log, method)(message, *args, **fields)

            level = "error" if method == "exception" else method
            line = _one_line(out.getvalue(), level, fields)
            assert line["logger"] == "hostile"
            if method == "exception":
                assert line["exception"]["type"] == "ValueError"
            counts["calls"] += 1
            counts["bytes"] = max(counts["bytes"], len(out.getvalue().encode()))

        check()
        print(
            f"\n[log never raises] structlog: {counts['calls']} calls, longest line "
            f"{counts['bytes']:,} bytes (bound {LINE_BOUND:,})"
        )

    def test_stdlib_calls(self) -> None:
        """Stdlib logging calls with hostile messages, arguments and extra keep the same bounds."""
        counts = {"calls": 0, "bytes": 0}
        extra_keys = _KEY.filter(lambda k: k not in _STDLIB_FORBIDDEN) | st.just("event")

        @settings(max_examples=EXAMPLES, deadline=None, database=None)
        @given(
            message=_MESSAGE,
            args=_ARGS,
            extra=st.dictionaries(extra_keys, _VALUE, max_size=4),
            method=st.sampled_from(_LEVELS),
        )
        def check(message: Any, args: list[Any], extra: dict[str, Any], method: str) -> None:
            message, args, extra = _realise(message), _realise(args), _distinct(_realise(extra))
            out = io.StringIO()
            with redirect_stdout(out):
                getattr(logging.getLogger("hostile.std"), method)(message, *args, extra=extra)

            wanted = {("field_event" if k == "event" else k): v for k, v in extra.items()}
            line = _one_line(out.getvalue(), method, wanted)
            assert line["logger"] == "hostile.std"
            counts["calls"] += 1
            counts["bytes"] = max(counts["bytes"], len(out.getvalue().encode()))

        check()
        print(
            f"\n[log never raises] stdlib: {counts['calls']} calls, longest line "
            f"{counts['bytes']:,} bytes (bound {LINE_BOUND:,})"
        )

    @pytest.mark.parametrize("index", range(len(HOSTILE)))
    @pytest.mark.parametrize(
        "place", ["field", "argument", "event", "bound", "stdlib message", "stdlib arg", "extra"]
    )
    def test_each_hostile_value_in_each_place(self, place: str, index: int) -> None:
        """Every hostile value, in every place a call takes one, gives one bounded line."""
        value = HOSTILE[index]()
        log = logs.get_logger("hostile")
        std = logging.getLogger("hostile.std")
        fields: dict[str, Any] = {}
        out = io.StringIO()
        with redirect_stdout(out):
            if place == "field":
                fields = {"value": value, "level": value}
                log.warning("x", **fields)
            elif place == "argument":
                log.warning("got %s and %d", value, value)
            elif place == "event":
                log.warning(value)
            elif place == "bound":
                fields = {"value": value, "service": value}
                log.bind(event=value, **fields).warning("x")
            elif place == "stdlib message":
                std.warning(value)
            elif place == "stdlib arg":
                std.warning("got %s and %d", value, value)
            else:
                fields = {"value": value, "field_event": value}
                std.warning("x", extra={"value": value, "event": value})

        line = _one_line(out.getvalue(), "warning", fields)
        assert line["logger"] == (
            "hostile.std" if place.startswith(("stdlib", "extra")) else "hostile"
        )

    @pytest.mark.parametrize("message", FORMATS)
    @pytest.mark.parametrize("args", [(), ("abc",), ("abc", 1, 2.5), ({"name": "n"},)])
    def test_each_format_with_mismatched_arguments(
        self, message: str, args: tuple[Any, ...]
    ) -> None:
        """A format and arguments that do not fit give one line through both loggers."""
        out = io.StringIO()
        with redirect_stdout(out):
            logs.get_logger("hostile").info(message, *args)
        _one_line(out.getvalue(), "info", {})
        out = io.StringIO()
        with redirect_stdout(out):
            logging.getLogger("hostile.std").info(message, *args)

        _one_line(out.getvalue(), "info", {})
