"""The structlog processors behind the log contract (docs/reference.md, Logs).

Every processor here has the structlog signature ``(logger, method_name, event_dict)``
and returns the event dict; none does I/O. `logs.py` chains them for both structlog
events and stdlib `logging` records, so both come out in one shape.

The hot path of a log line is the `EventShaper`: it builds the final key order
(``timestamp``, ``level``, ``event``, ``logger``, ``service``, ``environment``,
``trace_id``, ``span_id``, ``request_id``, ``merchant_id``, ``user_id``, then the
event's own keys) in one pass instead of five processors re-inserting keys, because
every processor call costs a Python function call on every line.
"""

from __future__ import annotations

import itertools
import math
import re
import sys
import time
import traceback
from collections.abc import Mapping
from types import MappingProxyType, TracebackType
from typing import Any

import orjson
from opentelemetry import trace

from kaleem_telemetry.context import BoundValues, bound_values
from kaleem_telemetry.redaction import REDACTED, get_redactor, unique_key

__all__ = [
    "MAX_KEY_CHARS",
    "MAX_LINE_BYTES",
    "MAX_VALUE_CHARS",
    "RESERVED_PREFIX",
    "EventShaper",
    "format_timestamp",
    "normalise_level",
    "render_json",
    "structure_exception",
]

#: A string value longer than this is cut, and the cut is marked.
MAX_VALUE_CHARS = 16_384
#: A key longer than this is cut the same way (only a line that long can hold one).
MAX_KEY_CHARS = 1_024
#: A rendered line longer than this (UTF-8 bytes) has its largest own fields trimmed.
MAX_LINE_BYTES = 65_536
#: A caller's key that names a fixed one (``level``...) is written with this prefix.
RESERVED_PREFIX = "field_"

#: How far past the cut a long value is redacted, so a secret across the cut is seen whole.
_REDACT_MARGIN = 4_096
# A trailing run of non-space characters (reversed), dropped from the window.
_MAX_TRAILING_RUN = 1_024
_TRAILING_RUN = re.compile(rf"\S{{0,{_MAX_TRAILING_RUN}}}")
_MISSING = object()

_MAX_FRAMES = 40
_MAX_CAUSES = 4
_MAX_DEPTH = 12
_LEVEL_ALIASES = {"warn": "warning", "exception": "error", "fatal": "critical", "msg": "info"}
_CONTEXT_KEYS = ("request_id", "merchant_id", "user_id")
_CONTEXT_KEY_SET = frozenset(_CONTEXT_KEYS)
_CONTEXT_RANK = {key: rank for rank, key in enumerate(_CONTEXT_KEYS)}
#: In a cached redacted context (``BoundValues.shaped``): the mapping is its own head.
_ITSELF = object()
_NO_REST: Mapping[str, Any] = MappingProxyType({})
#: The keys only the pipeline writes (see `RESERVED_PREFIX`).
_RESERVED = frozenset(
    {"timestamp", "level", "event", "logger", "service", "environment", "trace_id", "span_id"}
)
_OWN_SKIP = frozenset({"event", "exc_info", "stack_info"})
#: The event keys the shaper does not copy as they are: skipped or renamed.
_SPECIAL_KEYS = _OWN_SKIP | _RESERVED
_NOTHING_TRUSTED: frozenset[str] = frozenset()
# No OPT_NON_STR_KEYS: orjson would write {1: .., "1": ..} as two "1" keys;
# the sanitiser turns keys into unique strings instead.
_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY

_ATOMIC_TYPES = frozenset({str, int, float, bool, type(None)})

_EVENT_CACHE: dict[str, str] = {}
_EVENT_CACHE_SIZE = 4096
_EVENT_CACHE_MAX_CHARS = 200
_event_cache_owner: object = None

# (second, its formatted prefix), replaced as one object: a thread that reads
# it always gets a prefix that belongs to the second beside it.
_last_stamp: tuple[int, str] = (-1, "")
# ".000Z" ... ".999Z": a table lookup instead of formatting the milliseconds
# with a format spec on every line, which costs several times more.
_MILLIS = tuple(f".{millis:03d}Z" for millis in range(1000))


def format_timestamp(now: float) -> str:
    """Return ``now`` (Unix seconds) as ISO 8601 UTC with milliseconds and ``Z``.

    The date-and-seconds prefix is cached per second, so most calls only format
    the milliseconds.

    Args:
        now: Seconds since the epoch, as from `time.time()`.
    """
    global _last_stamp
    second = int(now)
    stamp = _last_stamp
    if stamp[0] != second:
        stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        _last_stamp = stamp
    # 0 <= now - second < 1, so the index is 0..999.
    return stamp[1] + _MILLIS[int((now - second) * 1000)]


def normalise_level(method_name: str) -> str:
    """Return the lower-case level name for a structlog method or stdlib level name.

    Args:
        method_name: ``"info"``, ``"warn"``, ``"exception"``, ``"WARNING"``...
    """
    name = method_name.lower()
    return _LEVEL_ALIASES.get(name, name)


class EventShaper:
    """Build the final event dict in the contract's key order, redacted and bounded.

    It adds the timestamp, level, logger name, service and environment, the
    current span's ``trace_id``/``span_id``, the bound context, then the event's
    own keys after the redactor has seen them. A long string is redacted and
    then cut to `MAX_VALUE_CHARS`, so a secret across the cut is hidden whole;
    only a window a little past the cut is redacted, so one 10 MB value costs
    little.
    ``exc_info`` becomes a structured ``exception`` (see `structure_exception`).

    Every event takes the one path, `shape`: as a structlog processor (structlog
    calls and stdlib records) through ``__call__``, and directly for the events
    the library makes itself (`logs.emit_event`, the access event).

    Args:
        service: The ``service`` value on every line.
        environment: The ``environment`` value on every line.
        structure_exceptions: Turn ``exc_info`` into a structured ``exception``
            (JSON output) or leave it for a console renderer.
    """

    __slots__ = ("environment", "service", "structure_exceptions")

    def __init__(self, service: str, environment: str, *, structure_exceptions: bool = True):
        self.service = service
        self.environment = environment
        self.structure_exceptions = structure_exceptions

    def __call__(self, logger: Any, method_name: str, event_dict: Mapping[str, Any]) -> Any:
        """Return a new event dict in the contract's shape; the input is not changed."""
        # Positional: a call with keywords costs more, once per log line. The
        # logger name, level and timestamp come from structlog, never from the
        # event's keys: a caller's ``level=`` is a field like any other.
        return self.shape(
            getattr(logger, "name", None) or "root",
            normalise_level(method_name),
            event_dict.get("event"),
            event_dict,
        )

    def shape(
        self,
        logger_name: str,
        level: str,
        event: Any,
        fields: Mapping[str, Any],
        trusted: frozenset[str] = _NOTHING_TRUSTED,
        span_context: trace.SpanContext | None = None,
        timestamp: str | None = None,
    ) -> dict[str, Any]:
        """Return one event in the contract's shape; ``fields`` is not changed.

        Keys of ``fields`` (or bound keys) that name fixed ones (``timestamp``,
        ``level``, ``logger``...) are kept as ``field_<name>``, never replacing
        the pipeline's; ``event`` in ``fields`` is the message and is skipped.
        An event key replaces a bound key of the same name in its place, and its
        trust with it; bound context keys come in the contract's order. Every
        value not trusted, bound ones included, goes through the redactor.

        Args:
            logger_name: The ``logger`` key.
            level: The ``level`` key (``"info"``, ``"warning"``, ``"error"``...).
            event: The ``event`` key, redacted and cut unless ``"event"`` is trusted.
            fields: The event's own keys; ``exc_info`` and ``stack_info`` among
                them are structured, not copied.
            trusted: Keys whose values the library made itself (a status code, a
                route template): the redactor skips them and they are not cut.
            span_context: The span to correlate with; the current span when ``None``.
            timestamp: The ``timestamp`` key; now when ``None``.
        """
        out: dict[str, Any] = {
            "timestamp": timestamp or format_timestamp(time.time()),
            "level": level,
            "event": event if "event" in trusted else _bounded_event(event),
            "logger": logger_name,
            "service": self.service,
            "environment": self.environment,
        }
        if span_context is None:
            span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            # A valid context's ids fit 128 and 64 bits; bytes.hex() gives the same
            # zero-padded lower-case hex at a third of the cost of format(id, "032x").
            out["trace_id"] = span_context.trace_id.to_bytes(16, "big").hex()
            out["span_id"] = span_context.span_id.to_bytes(8, "big").hex()
        redactor = get_redactor()
        head: Mapping[str, Any] | None = None
        # The bound keys after the context ones, then the event's own, in order.
        own: dict[str, Any] = {}
        context = bound_values()
        if context:
            head, bound = _redacted_context(context, redactor)
            if bound:
                own.update(bound)
        # The event's values the redactor must see, redacted in one call.
        fresh: dict[str, Any] = {}
        # The keys of strings too long to print whole -> their length; see _window.
        long: dict[str, tuple[int, int]] | None = None
        head_hit = False
        special = _SPECIAL_KEYS
        limit = MAX_VALUE_CHARS
        for key, value in fields.items():
            if key in special:
                if key in _OWN_SKIP:
                    continue
                # Only the pipeline writes the fixed keys; the caller's value is
                # kept, redacted, under a name of its own.
                key = RESERVED_PREFIX + key
            elif key in trusted:
                own[key] = value
                continue
            in_head = head is not None and key in head
            if in_head:
                if value is context[key]:
                    # The bound value itself (the access event's request id):
                    # its redacted form is in place already.
                    continue
                head_hit = True
            if type(value) is str and len(value) > limit:
                # Redacted first and cut after (below), so a secret across the
                # cut is hidden whole; only a bounded window is redacted.
                if long is None:
                    long = {}
                window = _window(value)
                long[key] = (len(value), len(window))
                value = window
            fresh[key] = value
            if not in_head:
                # Holds the key's place; the redacted value replaces it below.
                own[key] = value
        if fresh:
            redacted = redactor.redact(fresh)
            # The head with the context keys passed on the call, when there are any.
            edited: dict[str, Any] | None = None
            if head_hit:
                # A context key passed on the call replaces the bound value; the
                # head may be the bound mapping itself, which is never changed.
                edited = dict(head)  # type: ignore[arg-type]
                for key in edited:
                    if key in fresh:
                        edited[key] = redacted.get(key, REDACTED)
                head = edited
            if redacted is not fresh:
                renamed: list[str] | None = None
                for key in fresh:
                    if key in own:
                        new = redacted.get(key, _MISSING)
                        if new is _MISSING:
                            # Dropped past max_items, or the key itself held a
                            # secret and the redactor wrote it under a new name.
                            if renamed is None:
                                renamed = []
                            renamed.append(key)
                            new = REDACTED
                        own[key] = new
                if renamed is not None:
                    own = _rename_own(own, renamed, fresh, redacted, redactor, out)
            if long is not None:
                for key, (length, seen) in long.items():
                    if key in own:
                        own[key] = _cut_redacted(own[key], length, seen)
                    elif edited is not None and key in edited:
                        # A long context key passed on the call: it made the copy.
                        edited[key] = _cut_redacted(edited[key], length, seen)
        if head:
            out.update(head)
        if own:
            out.update(own)
        exc_info = fields.get("exc_info")
        if exc_info:
            if self.structure_exceptions:
                structured = structure_exception(exc_info)
                if structured is not None:
                    out["exception"] = structured
            else:
                out["exc_info"] = exc_info
        if fields.get("stack_info"):
            out["stack"] = _structure_stack()
        return out


def _rename_own(
    own: dict[str, Any],
    renamed: list[str],
    fresh: dict[str, Any],
    redacted: Any,
    redactor: Any,
    taken: Mapping[str, Any],
) -> dict[str, Any]:
    """Rebuild ``own`` in order, with the keys the redactor renamed under their new names.

    The redactor keeps a dict's order and size (up to ``max_items``), so the
    n-th key of ``fresh`` is the n-th key of ``redacted``.
    """
    count = min(len(fresh), getattr(redactor, "max_items", len(fresh)))
    names = dict(
        zip(itertools.islice(fresh, count), itertools.islice(redacted, count), strict=False)
    )
    missing = frozenset(renamed)
    used: set[str] = set(taken)
    used.update(key for key in own if key not in missing)
    rebuilt: dict[str, Any] = {}
    for key, value in own.items():
        name = names.get(key) if key in missing else key
        if name is None:
            rebuilt[key] = value  # past max_items: the value is hidden already
        elif name is key:
            rebuilt[key] = value
        else:
            name = unique_key(name, key, used)
            used.add(name)
            rebuilt[name] = redacted.get(names[key], REDACTED)
    return rebuilt


def _redacted_context(
    context: BoundValues, redactor: Any
) -> tuple[Mapping[str, Any] | None, Mapping[str, Any]]:
    """Return the bound context as (context keys in the contract's order, the rest), redacted.

    The bound mapping is a new object on every bind, and the same one for every
    line logged under it, so its redacted form is kept on it (``shaped``) while
    the redactor is the same. A mapping holding a mutable value keeps nothing:
    the value could change after binding.
    """
    shaped = context.shaped
    if shaped is not None and shaped[0] is redactor:
        return context if shaped[1] is _ITSELF else shaped[1], shaped[2]
    # The common binding (a request's id, then its merchant and user) is only
    # context keys, in the contract's order, that the redactor would keep: the
    # mapping itself is then its own redacted head, and nothing is copied.
    keeps = redactor.keeps
    cacheable = True
    as_it_is = True
    rank = -1
    atomic = _ATOMIC_TYPES
    for key, value in context.items():
        if type(value) not in atomic:
            cacheable = False
        if as_it_is:
            place = _CONTEXT_RANK.get(key, -1)
            if place <= rank or not keeps(key, value):
                as_it_is = False
            rank = place
    if as_it_is:
        if cacheable:
            # Not the mapping itself: a tuple that held it would be a reference
            # cycle, left to the garbage collector on every request.
            context.shaped = (redactor, _ITSELF, _NO_REST)
        return context, _NO_REST
    result = _sorted_redacted(context, redactor)
    if cacheable:
        context.shaped = (redactor, *result)
    return result


def _sorted_redacted(
    context: Mapping[str, Any], redactor: Any
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """`_redacted_context` for any binding: sort the keys, redact them in one call."""
    head: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for key, value in context.items():
        if key in _CONTEXT_KEY_SET:
            head[key] = value
        elif key in _RESERVED:
            rest[RESERVED_PREFIX + key] = value
        else:
            rest[key] = value
    if len(head) > 1:
        head = {key: head[key] for key in _CONTEXT_KEYS if key in head}
    combined = {**head, **rest} if rest else head
    redacted = redactor.redact(combined)
    if redacted is not combined:
        head = {key: redacted.get(key, REDACTED) for key in head}
        # A key that itself held a secret comes back under a new name.
        rest = {key: value for key, value in redacted.items() if key not in head}
    return head or None, rest


def structure_exception(exc_info: Any) -> dict[str, Any] | None:
    """Return ``exc_info`` as ``{"type", "message", "frames", "cause"?}``.

    Frames carry file, line and function only: frame locals are never printed.
    The message goes through the redactor. Chained causes are followed a few
    levels deep. Never raises.

    Args:
        exc_info: ``True`` (the exception being handled), an exception, or a
            ``(type, value, traceback)`` tuple.
    """
    try:
        exc = _exception_from(exc_info)
        if exc is None:
            return None
        return _structure(exc, _MAX_CAUSES)
    except Exception:  # noqa: BLE001 - a broken exception must not break the log line.
        return {"type": "unknown", "message": "[unrepresentable exception]", "frames": []}


def render_json(event_dict: Mapping[str, Any]) -> str:
    """Render one event as one JSON line (no newline), never raising.

    The fast path is one ``orjson.dumps``. Values orjson refuses (ints beyond 64
    bits, cycles, surrogates, keys that are not strings, objects whose ``repr``
    raises) send the event through a sanitiser first; a value that cannot be
    rendered at all becomes ``"[unrenderable TypeName]"`` and the rest of the
    line is kept. A key longer than `MAX_KEY_CHARS` is cut, and a line longer
    than `MAX_LINE_BYTES` has its largest own fields replaced by
    ``"[truncated N bytes]"`` (the fixed keys are never touched). U+2028, U+2029
    and U+0085 are escaped, so ``str.splitlines()`` sees one line.

    Args:
        event_dict: The shaped event.
    """
    keys_cut = False
    try:
        raw = orjson.dumps(event_dict, default=_json_default, option=_ORJSON_OPTIONS)
    except Exception:  # noqa: BLE001 - fall through to the sanitiser: the line must be written.
        raw = _render_sanitised(event_dict)
        keys_cut = True
    # No key can be longer than MAX_KEY_CHARS in a line shorter than that, so
    # nearly every line skips the bounding walk with one comparison.
    if len(raw) > MAX_KEY_CHARS:
        raw = _bound_line(event_dict, raw, keys_cut=keys_cut)
    line = raw.decode()
    if not line.isascii() and ("\u2028" in line or "\u2029" in line or "\x85" in line):
        # Valid JSON as they are, but str.splitlines() (and some shippers) break
        # lines at them; inside JSON strings they may be written as escapes.
        line = line.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
        line = line.replace("\x85", "\\u0085")
    return line


def _render_sanitised(event_dict: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(_sanitise(event_dict, 0, set()), option=_ORJSON_OPTIONS)
    except Exception:  # noqa: BLE001 - go field by field: one bad value must not lose the rest.
        pass
    clean: dict[str, Any] = {}
    for key, value in list(event_dict.items()):
        name = _unique_key(key, clean)
        try:
            item = _sanitise(value, 1, set())
            orjson.dumps(item, option=_ORJSON_OPTIONS)
        except Exception:  # noqa: BLE001 - this value only is replaced.
            item = _unrenderable(value)
        clean[name] = item
    try:
        return orjson.dumps(clean, option=_ORJSON_OPTIONS)
    except Exception:  # noqa: BLE001 - last resort: the caller gets a line, not an exception.
        fallback = {
            "timestamp": format_timestamp(time.time()),
            "level": "error",
            "event": _sanitise_key(event_dict.get("event", "")),
            "logger": "kaleem_telemetry",
            "render_error": "the event could not be rendered",
        }
        return orjson.dumps(fallback)


def _bound_line(event_dict: Mapping[str, Any], raw: bytes, *, keys_cut: bool = False) -> bytes:
    """Return ``raw`` with over-long keys cut and, past `MAX_LINE_BYTES`, own fields trimmed.

    ``keys_cut`` says the sanitiser rendered ``raw`` and has cut its keys already:
    a cut key is longer than `MAX_KEY_CHARS` with its marker, and cutting it again
    would give the same field another name (and a marker with the wrong count).
    """
    long_keys = not keys_cut and any(
        not isinstance(key, str) or len(key) > MAX_KEY_CHARS for key in event_dict
    )
    if not long_keys and len(raw) <= MAX_LINE_BYTES:
        return raw
    try:
        clean = orjson.loads(raw)
    except Exception:  # noqa: BLE001 - rendered by orjson, so this does not happen; stay safe.
        return raw
    bounded: dict[str, Any] = {}
    if keys_cut:
        bounded = clean
    else:
        for key, value in clean.items():
            bounded[_unique_key(key, bounded)] = value
    line = orjson.dumps(bounded)
    excess = len(line) - MAX_LINE_BYTES
    if excess <= 0:
        return line
    sizes = sorted(
        (
            (len(orjson.dumps(value)), key)
            for key, value in bounded.items()
            if key not in _RESERVED and key not in _CONTEXT_KEY_SET
        ),
        reverse=True,
    )
    for size, key in sizes:
        marker = f"[truncated {size} bytes]"
        bounded[key] = marker
        excess -= size - len(marker) - 2
        if excess <= 0:
            break
    return orjson.dumps(bounded)


def _bounded_event(event: Any) -> Any:
    global _event_cache_owner
    if event is None:
        return ""
    redactor = get_redactor()
    if type(event) is not str:
        # A list or an object logged as the message: its text, bounded like any.
        text = _safe_str(event)
        if len(text) > MAX_VALUE_CHARS:
            return _redact_then_cut(text, redactor.redact_string)
        return redactor.redact_string(text)
    # Event names are mostly literals ("order_created"), so the redacted form of
    # short ones is remembered, per redactor, in a bounded dict.
    if redactor is not _event_cache_owner:
        _EVENT_CACHE.clear()
        _event_cache_owner = redactor
    cached = _EVENT_CACHE.get(event)
    if cached is not None:
        return cached
    if len(event) > MAX_VALUE_CHARS:
        return _redact_then_cut(event, redactor.redact_string)
    redacted = redactor.redact_string(event)
    if len(event) <= _EVENT_CACHE_MAX_CHARS and len(_EVENT_CACHE) < _EVENT_CACHE_SIZE:
        _EVENT_CACHE[event] = redacted
    return redacted


def _cut(value: str) -> str:
    return f"{value[:MAX_VALUE_CHARS]}...[truncated {len(value) - MAX_VALUE_CHARS} chars]"


def _window(value: str) -> str:
    """Return the part of a long ``value`` that is redacted before it is cut.

    It reaches `_REDACT_MARGIN` characters past the cut, so a secret that
    straddles the cut is seen whole, and it ends before any run of non-space
    characters the window would split (that run could only show if redaction
    shrank the text by more than the margin, and then not as half a secret).
    """
    limit = MAX_VALUE_CHARS + _REDACT_MARGIN
    if len(value) <= limit:
        return value
    head = value[:limit]
    tail = _TRAILING_RUN.match(head[-_MAX_TRAILING_RUN:][::-1])
    return head[: limit - tail.end()] if tail is not None else head


def _cut_redacted(value: Any, length: int, seen: int) -> Any:
    """Cut ``value``, the redacted form of the first ``seen`` of ``length`` characters."""
    if type(value) is not str or value == REDACTED:
        return value  # a value hidden whole says nothing of its length either
    if len(value) > MAX_VALUE_CHARS:
        return f"{value[:MAX_VALUE_CHARS]}...[truncated {length - MAX_VALUE_CHARS} chars]"
    if seen < length:
        # Redaction shrank the window below the cut; the rest was never shown.
        return f"{value}...[truncated {length - seen} chars]"
    return value


def _redact_then_cut(text: str, redact: Any) -> Any:
    """Redact ``text`` (its window, when long) with ``redact``, then cut it."""
    if len(text) <= MAX_VALUE_CHARS:
        return redact(text)
    window = _window(text)
    return _cut_redacted(redact(window), len(text), len(window))


def _exception_from(exc_info: Any) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        value = exc_info[1]
        return value if isinstance(value, BaseException) else None
    if exc_info is True:
        return sys.exc_info()[1]
    return None


def _structure(exc: BaseException, causes_left: int) -> dict[str, Any]:
    frames = [
        {"file": frame.filename, "line": frame.lineno, "function": frame.name}
        for frame in traceback.extract_tb(exc.__traceback__, limit=-_MAX_FRAMES)
    ]
    kind = type(exc)
    module = kind.__module__
    qualname = kind.__qualname__
    name = qualname if module in {"builtins", "__main__"} else f"{module}.{qualname}"
    out: dict[str, Any] = {
        "type": name,
        "message": _redact_then_cut(_safe_str(exc), get_redactor().redact_string),
        "frames": frames,
    }
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if cause is not None and causes_left > 0:
        out["cause"] = _structure(cause, causes_left - 1)
    return out


def _structure_stack() -> list[dict[str, Any]]:
    stack = traceback.extract_stack(limit=_MAX_FRAMES)
    return [{"file": f.filename, "line": f.lineno, "function": f.name} for f in stack]


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - hostile __str__: name the type instead.
        return f"<unrepresentable {type(value).__name__}>"


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - hostile __repr__: name the type instead.
        return f"<unrepresentable {type(value).__name__}>"


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseException):
        return get_redactor().redact_string(_safe_str(value))
    if isinstance(value, set | frozenset):
        return list(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value[:MAX_VALUE_CHARS]).decode("utf-8", "replace")
    if isinstance(value, TracebackType):
        return "<traceback>"
    # The redactor leaves unknown objects alone (it never calls repr on them),
    # so the text this fallback produces is redacted here.
    return _redact_then_cut(_safe_repr(value), get_redactor().redact_string)


def _unrenderable(value: Any) -> str:
    return f"[unrenderable {type(value).__name__}]"


def _sanitise(value: Any, depth: int, seen: set[int]) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if -(2**63) <= value < 2**64:
            return value
        try:
            return str(value)
        except ValueError:
            # More digits than int-to-str allows (sys.set_int_max_str_digits).
            return _unrenderable(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        text = value if len(value) <= MAX_VALUE_CHARS else _cut(value)
        return text.encode("utf-8", "replace").decode("utf-8")
    if depth >= _MAX_DEPTH:
        return "[TRUNCATED:depth]"
    marker = id(value)
    if marker in seen:
        return "[CYCLE]"
    if isinstance(value, Mapping):
        seen.add(marker)
        try:
            clean: dict[str, Any] = {}
            for k, v in list(value.items()):
                clean[_unique_key(k, clean)] = _sanitise(v, depth + 1, seen)
            return clean
        finally:
            seen.discard(marker)
    if isinstance(value, list | tuple | set | frozenset):
        seen.add(marker)
        try:
            return [_sanitise(v, depth + 1, seen) for v in list(value)]
        finally:
            seen.discard(marker)
    return _sanitise(_json_default(value), depth + 1, seen)


def _sanitise_key(key: Any) -> str:
    if isinstance(key, str):
        text = key
    else:
        # A key that is not text is written as its str(), which the redactor
        # never calls: what it shows is redacted here.
        text = _redact_then_cut(_safe_str(key), get_redactor().redact_string)
    if len(text) > MAX_KEY_CHARS:
        text = f"{text[:MAX_KEY_CHARS]}...[truncated {len(text) - MAX_KEY_CHARS} chars]"
    return text.encode("utf-8", "replace").decode("utf-8")


def _unique_key(key: Any, taken: Mapping[str, Any]) -> str:
    """Return ``key`` as a JSON key not in ``taken``: ``{1: .., "1": ..}`` keeps both."""
    # A later key that renders like an earlier one gets its type name appended
    # (``"1<str>"``) until unique: the same input always gives the same keys.
    return unique_key(_sanitise_key(key), key, taken)
