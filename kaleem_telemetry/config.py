"""The telemetry configuration: one frozen, typed object built from arguments and the environment.

`TelemetryConfig.from_env()` reads every setting once, in this order of precedence:

1. keyword arguments (``setup_telemetry(log_format="json")`` passes them through),
2. environment variables (standard ``OTEL_*``/``SENTRY_*`` names where they
   exist, ``KALEEM_TELEMETRY_*`` for the library's own),
3. the defaults documented on each field and in docs/configuration.md.

Every value is validated when the configuration is built, so a typo fails at
startup with a `TelemetryConfigError` that names the setting and the value
instead of silently turning telemetry off::

    TelemetryConfig.from_env({"KALEEM_TELEMETRY_LOG_FORMAT": "xml"})
    # TelemetryConfigError: KALEEM_TELEMETRY_LOG_FORMAT must be 'auto', 'json' or
    # 'console', got 'xml'.

An environment variable set to the empty string counts as unset, as the
OpenTelemetry specification asks. Secrets (the Sentry DSN key, OTLP header
values, the metrics token, credentials in OTLP endpoint URLs) are kept in the
object but masked in its ``repr``, its ``str``, `TelemetryConfig.masked()` and
every error message.

Each setting is declared once, on its `TelemetryConfig` field: default,
variable, check, meaning and masking. `from_env()`, `settings_table()` and the
tables of docs/configuration.md are read off those declarations.

Added in 0.1.0.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from kaleem_telemetry.exceptions import TelemetryConfigError

__all__ = ["TelemetryConfig"]

#: What a secret is replaced with in ``repr``, `TelemetryConfig.masked()` and messages.
MASK = "***"

_T = TypeVar("_T")

_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_LOG_FORMATS = ("auto", "json", "console")
_TRACES_EXPORTERS = ("otlp", "console", "none")
_OTLP_PROTOCOLS = ("grpc", "http/protobuf")
_TRACES_SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
#: RFC 9110 ``token``: what an HTTP header name may be made of.
_HTTP_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HOSTNAME = re.compile(
    r"(?=.{1,253}\.?\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
_INTEGER = re.compile(r"[+-]?[0-9]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Sentry refuses environments longer than this (and containing ``/``).
_MAX_ENVIRONMENT = 64
#: Sentry refuses releases longer than this.
_MAX_RELEASE = 200
_MAX_TEXT = 255


class Setting(NamedTuple):
    """One row of the configuration table: a variable, its field, its default and meaning.

    Attributes:
        env_var: The environment variable, e.g. ``KALEEM_TELEMETRY_LOG_FORMAT``.
        field: The `TelemetryConfig` field (and `setup_telemetry()` keyword) it
            sets, or ``None`` for a variable that the OpenTelemetry SDK reads itself.
        default: The default, as written in docs/configuration.md
            (``unset`` when there is none).
        description: One sentence saying what it does.
    """

    env_var: str
    field: str | None
    default: str
    description: str


class _FrozenMap(Mapping[str, str]):
    """A read-only, hashable, picklable ``str -> str`` mapping.

    `types.MappingProxyType` would do for immutability, but it can be neither
    hashed, pickled nor deep-copied, and a frozen config should be all three.
    """

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        self._data: dict[str, str] = dict(data)
        self._hash: int | None = None

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._data == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return f"frozenmap({self._data!r})"

    def __reduce__(self) -> tuple[type[_FrozenMap], tuple[dict[str, str]]]:
        return (_FrozenMap, (self._data,))


_EMPTY = _FrozenMap()


# -- value checks (TelemetryConfig's declarations call them, so they come first) --


def _one_of(options: Iterable[str]) -> str:
    quoted = [repr(o) for o in options]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def _type_error(label: str, expected: str, value: object) -> TelemetryConfigError:
    return TelemetryConfigError(f"{label} must be {expected}, got {value!r}.")


def _text(*, max_len: int = _MAX_TEXT, slash: bool = True) -> Callable[[object, str], str]:
    def coerce(value: object, label: str) -> str:
        if not isinstance(value, str):
            raise _type_error(label, "a string", value)
        if not value:
            msg = f"{label} must not be empty, got {value!r}."
            raise TelemetryConfigError(msg)
        if _CONTROL.search(value):
            msg = f"{label} must not contain control characters, got {value!r}."
            raise TelemetryConfigError(msg)
        if len(value) > max_len:
            msg = f"{label} must be at most {max_len} characters, got {value!r}."
            raise TelemetryConfigError(msg)
        if not slash and "/" in value:
            msg = f"{label} must not contain '/', got {value!r}."
            raise TelemetryConfigError(msg)
        return value

    return coerce


def _secret_text(value: object, label: str) -> str:
    if isinstance(value, str) and value and not _CONTROL.search(value):
        return value
    # Never echo it: the wrong value may still be the real secret.
    msg = (
        f"{label} must be a non-empty string without control characters "
        f"(got a {type(value).__name__}; the value is not shown)."
    )
    raise TelemetryConfigError(msg)


def _choice(
    options: tuple[str, ...], unsupported: Mapping[str, str] | None = None
) -> Callable[[object, str], str]:
    def coerce(value: object, label: str) -> str:
        if isinstance(value, str):
            lowered = value.lower()
            if lowered in options:
                return lowered
            if unsupported and lowered in unsupported:
                msg = f"{label} must be {_one_of(options)}, got {value!r}: {unsupported[lowered]}"
                raise TelemetryConfigError(msg)
        raise _type_error(label, _one_of(options), value)

    return coerce


def _boolean(value: object, label: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise _type_error(label, "true or false (or 1/0, yes/no, on/off)", value)


def _integer(low: int, high: int | None = None) -> Callable[[object, str], int]:
    expected = f"an integer from {low} to {high}" if high else f"an integer >= {low}"

    def coerce(value: object, label: str) -> int:
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and _INTEGER.fullmatch(value):
            number = int(value)
        if number is None or number < low or (high is not None and number > high):
            raise _type_error(label, expected, value)
        return number

    return coerce


def _number(
    *, low: float, high: float | None = None, low_inclusive: bool = True
) -> Callable[[object, str], float]:
    if high is not None:
        expected = f"a number from {low:g} to {high:g}"
    else:
        expected = f"a number {'>=' if low_inclusive else '>'} {low:g}"

    def coerce(value: object, label: str) -> float:
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
        if (
            number is None
            or not math.isfinite(number)
            or number < low
            or (number == low and not low_inclusive)
            or (high is not None and number > high)
        ):
            raise _type_error(label, expected, value)
        return number

    return coerce


def _otlp_url(value: object, label: str) -> str:
    if not isinstance(value, str):
        raise _type_error(label, "an http:// or https:// URL", value)
    shown = _mask_url(value)
    problem = _url_problem(value)
    if problem is None:
        parts = urlsplit(value)
        if parts.scheme.lower() not in ("http", "https"):
            problem = "an http:// or https:// URL"
        elif not parts.hostname:
            problem = "an http:// or https:// URL with a host"
    if problem is not None:
        hidden = " (credentials not shown)" if shown != value else ""
        msg = f"{label} must be {problem}, got {shown!r}{hidden}."
        raise TelemetryConfigError(msg)
    return value


def _url_problem(value: str) -> str | None:
    """Say what is wrong with *value* as a URL, or ``None`` when it parses."""
    if _CONTROL.search(value) or any(c.isspace() for c in value):
        return "a URL without spaces or control characters"
    try:
        _ = urlsplit(value).port  # reading .port validates it
    except ValueError:
        return "a URL with a port from 1 to 65535"
    return None


def _sentry_dsn(value: object, label: str) -> str:
    if not isinstance(value, str):
        # Not even a string: safe to show its type, never its content.
        msg = f"{label} must be a string, got {type(value).__name__}."
        raise TelemetryConfigError(msg)
    parts = urlsplit(value) if _url_problem(value) is None else None
    project = parts.path.rstrip("/").rpartition("/")[2] if parts else ""
    if (
        parts is None
        or parts.scheme.lower() not in ("http", "https")
        or not parts.username
        or not parts.hostname
        or not project.isdigit()
    ):
        msg = (
            f"{label} must look like 'https://PUBLIC_KEY@HOST/PROJECT_ID', "
            f"got {_mask_dsn(value)!r} (the key is not shown). Copy the DSN from the "
            f"Sentry project's Client Keys page."
        )
        raise TelemetryConfigError(msg)
    return value


def _http_token(value: object, label: str) -> str:
    if isinstance(value, str) and _HTTP_TOKEN.fullmatch(value):
        return value
    raise _type_error(label, "an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)", value)


def _address(value: object, label: str) -> str:
    if isinstance(value, str):
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if _HOSTNAME.fullmatch(value):
                return value
        else:
            return value
    raise _type_error(label, "an IP address or host name (without a port)", value)


def _path(value: object, label: str) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value or "\x00" in value:
        raise _type_error(label, "a directory path", value)
    return value


def _redact_keys(value: object, label: str) -> tuple[str, ...]:
    if isinstance(value, str):
        items: list[object] = list(value.split(","))
    elif isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)):
        items = list(value)
    else:
        raise _type_error(label, "a comma-separated string or a sequence of key names", value)
    keys: list[str] = []
    for item in items:
        if not isinstance(item, str):
            msg = f"{label} must contain only strings, got {item!r} in {value!r}."
            raise TelemetryConfigError(msg)
        key = item.strip()
        if not key:
            continue
        if not any(c.isalnum() for c in key) or _CONTROL.search(key):
            msg = (
                f"{label} must list key names with a letter or digit each, "
                f"got {value!r} ({key!r} has none)."
            )
            raise TelemetryConfigError(msg)
        keys.append(key)
    return tuple(keys)


_INTEGRATION_NAMES = (
    "aio_pika",
    "auto",
    "httpx",
    "pika",
    "pymongo",
    "redis",
    "requests",
    "sqlalchemy",
)
"""What ``integrations`` accepts (kaleem_telemetry.integrations' table, and ``auto``)."""


def _integrations(value: object, label: str) -> tuple[str, ...]:
    if isinstance(value, str):
        items: list[object] = list(value.split(","))
    elif isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)):
        items = list(value)
    else:
        raise _type_error(label, "`auto`, a comma-separated string or a sequence of names", value)
    names: list[str] = []
    for item in items:
        name = item.strip().lower().replace("-", "_") if isinstance(item, str) else item
        if name == "":
            continue
        if name not in _INTEGRATION_NAMES:
            msg = (
                f"{label} must be `auto` or integration names among "
                f"{', '.join(n for n in _INTEGRATION_NAMES if n != 'auto')}, got {value!r}."
            )
            raise TelemetryConfigError(msg)
        if name not in names:
            names.append(str(name))
    return tuple(names)


def _key_values(*, secret: bool) -> Callable[[object, str], _FrozenMap]:
    """Parse ``k=v,k2=v2`` (OpenTelemetry's format) or check a mapping.

    With ``secret``, messages never show a value, and, as a name that fails to
    parse may be a pasted secret, show only the entry's position then.
    """
    noun = "header" if secret else "attribute"

    def coerce(value: object, label: str) -> _FrozenMap:
        if isinstance(value, Mapping):
            pairs = list(value.items())
            for key, item in pairs:
                if not isinstance(key, str) or not isinstance(item, str):
                    if secret:
                        shown = f"{key!r} with a {type(item).__name__} value (not shown)"
                    else:
                        shown = repr(value)
                    msg = f"{label} must map strings to strings, got {shown}."
                    raise TelemetryConfigError(msg)
            return _check_pairs(pairs, label, noun, secret=secret, original=value)
        if not isinstance(value, str):
            raise _type_error(label, "a mapping or a 'key=value,key2=value2' string", value)
        pairs = _parse_pairs(value, label, secret=secret)
        return _check_pairs(pairs, label, noun, secret=secret, original=value)

    return coerce


def _parse_pairs(text: str, label: str, *, secret: bool) -> list[tuple[str, str]]:
    # Secret values are never shown; other messages show the whole value.
    shown = "" if secret else f", got {text!r}"
    pairs = []
    for position, entry in enumerate(text.split(","), start=1):
        if not entry.strip():
            continue  # "a=1," and "a=1,,b=2" are common and harmless
        key, sep, raw = entry.partition("=")
        where = f"entry {position}" if secret else f"entry {position} ({entry.strip()!r})"
        if not sep:
            msg = (
                f"{label} must be a comma-separated list of key=value pairs{shown}: "
                f"{where} has no '='."
            )
            raise TelemetryConfigError(msg)
        try:
            name = unquote(key.strip(), errors="strict") if secret else key.strip()
            decoded = unquote(raw.strip(), errors="strict")
        except UnicodeDecodeError:
            msg = f"{label} must be percent-encoded UTF-8{shown}: {where} is not."
            raise TelemetryConfigError(msg) from None
        if not name:
            msg = (
                f"{label} must be a comma-separated list of key=value pairs{shown}: "
                f"{where} has an empty key."
            )
            raise TelemetryConfigError(msg)
        pairs.append((name, decoded))
    return pairs


def _check_pairs(
    pairs: list[tuple[str, str]], label: str, noun: str, *, secret: bool, original: object
) -> _FrozenMap:
    checked: dict[str, str] = {}
    for position, (key, item) in enumerate(pairs, start=1):
        if secret:
            if not _HTTP_TOKEN.fullmatch(key):
                # Not shown: a malformed name is often a pasted "Authorization: <token>".
                msg = (
                    f"{label} must use valid HTTP header names, but {noun} {position} does not "
                    f"(not shown: it may contain a secret)."
                )
                raise TelemetryConfigError(msg)
            key = key.lower()
            if _CONTROL.search(item):
                msg = (
                    f"{label} must not contain control characters, but the value of {noun} "
                    f"{key!r} does (the value is not shown)."
                )
                raise TelemetryConfigError(msg)
        else:
            key = key.strip()
            if not key or _CONTROL.search(key) or _CONTROL.search(item):
                msg = (
                    f"{label} must have non-empty keys and no control characters, "
                    f"got {original!r} ({noun} {position} is {key!r}={item!r})."
                )
                raise TelemetryConfigError(msg)
        checked[key] = item
    return _FrozenMap(checked)


# -- masking ----------------------------------------------------------------------


def _mask_url(url: str, *, strict: bool = False) -> str:
    """Return *url* with its userinfo (``user:password@``, a DSN key) and query masked.

    Args:
        url: Any string.
        strict: Mask a value that does not parse as ``scheme://host...``
            entirely: a bare secret pasted into the wrong variable would
            otherwise be shown.

    Returns:
        ``scheme://***@host:port/path?***``, *url* unchanged when it has neither
        userinfo nor query, or `MASK`.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or not parts.scheme or not parts.netloc:
        if strict:
            return MASK
        # "user:secret@host:4317" without a scheme still hides its credentials.
        return f"{MASK}@{url.rpartition('@')[2]}" if "@" in url else url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = MASK if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _mask_dsn(dsn: str) -> str:
    return _mask_url(dsn, strict=True)


def _mask_values(mapping: Mapping[str, str]) -> dict[str, str]:
    return dict.fromkeys(mapping, MASK)


def _mask_all(_value: object) -> str:
    return MASK


# -- declaring a setting ---------------------------------------------------------

#: The key of a `TelemetryConfig` field's metadata that holds its `_Spec`.
_SPEC_KEY = "kaleem_telemetry.setting"


class _Spec(NamedTuple):
    """A setting as `_setting()` declares it, completed from its dataclass field by `_specs()`."""

    env_var: str
    description: str
    coerce: Callable[[object, str], Any]
    mask: Callable[[Any], Any] | None
    field: str = ""
    #: The default as docs/configuration.md shows it (``unset``, ``empty``, ``true``...).
    default: str = ""
    optional: bool = False


def _setting(
    default: _T,
    *,
    env: str,
    coerce: Callable[[object, str], Any],
    doc: str,
    mask: Callable[[Any], Any] | None = None,
) -> _T:
    """Declare one `TelemetryConfig` field: its default, variable, check, meaning and mask.

    Args:
        default: The field's default; ``None`` makes the setting optional.
        env: The environment variable that sets it.
        coerce: ``coerce(value, label)`` returns the value checked and
            normalised, or raises `TelemetryConfigError` with a message that
            starts with ``label`` (the variable or the argument).
        doc: What the setting does, in one Markdown sentence.
        mask: For a secret: turns a set value into what ``repr()`` and
            `TelemetryConfig.masked()` show.

    Returns:
        A `dataclasses.field` holding the declaration in its metadata; typed as
        the default, so type checkers see a plain field with a default.
    """
    spec = _Spec(env, doc, coerce, mask)
    return dataclasses.field(default=default, metadata={_SPEC_KEY: spec})


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class TelemetryConfig:
    """The effective telemetry configuration of the process; immutable.

    Build it with `TelemetryConfig.from_env()` (which `setup_telemetry()` calls);
    the fields are also keyword arguments of `setup_telemetry()`. Constructing it
    directly validates and normalises every field the same way, and so does
    `dataclasses.replace()`.

    Each field below is declared once, and everything else is read off that
    declaration: its default, the environment variable that sets it (``env``),
    the check that validates and normalises a value (``coerce``), one sentence
    on what it does (``doc``, shown by `settings_table()` and in
    docs/configuration.md), and for a secret how it is shown (``mask``). A
    setting whose default is ``None`` is optional: an empty override clears it.

    ``repr()`` and ``str()`` mask the secrets; `masked()` returns the same view
    as a dictionary.

    Added in 0.1.0.
    """

    service_name: str = _setting(
        "unknown_service",
        env="OTEL_SERVICE_NAME",
        coerce=_text(),
        doc="The service name on traces, logs and metrics "
        "(else `service.name` from `OTEL_RESOURCE_ATTRIBUTES`).",
    )
    environment: str = _setting(
        "development",
        env="KALEEM_TELEMETRY_ENVIRONMENT",
        # Sentry's rules: it refuses longer environments and ones with a '/'.
        coerce=_text(max_len=_MAX_ENVIRONMENT, slash=False),
        doc="The deployment environment; `production` lowers the default sampling ratio to 0.1.",
    )
    version: str = _setting(
        "0.0.0",
        env="KALEEM_TELEMETRY_VERSION",
        coerce=_text(max_len=_MAX_RELEASE),
        doc="The service version (`service.version`, and the Sentry release by default).",
    )
    resource_attributes: Mapping[str, str] = _setting(
        _EMPTY,
        env="OTEL_RESOURCE_ATTRIBUTES",
        coerce=_key_values(secret=False),
        doc="Extra resource attributes as `key=value,key2=value2`, values percent-encoded.",
    )
    sdk_disabled: bool = _setting(
        False,
        env="OTEL_SDK_DISABLED",
        coerce=_boolean,
        doc="`true` turns tracing off entirely; logs, metrics and Sentry stay on.",
    )
    traces_exporter: str = _setting(
        "otlp",
        env="OTEL_TRACES_EXPORTER",
        coerce=_choice(_TRACES_EXPORTERS),
        doc="Where spans go: `otlp`, `console` (JSON lines on stderr) or `none`.",
    )
    otlp_endpoint: str | None = _setting(
        None,
        env="OTEL_EXPORTER_OTLP_ENDPOINT",
        coerce=_otlp_url,
        doc="The OTLP base URL; `/v1/traces` is appended for `http/protobuf` "
        "(unset: `http://localhost:4317`, or `http://localhost:4318` for HTTP).",
        # user:password@ in the URL is sent as Basic auth: a secret.
        mask=_mask_url,
    )
    otlp_traces_endpoint: str | None = _setting(
        None,
        env="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        coerce=_otlp_url,
        doc="The full OTLP traces URL, used as is; wins over `OTEL_EXPORTER_OTLP_ENDPOINT`.",
        mask=_mask_url,
    )
    otlp_protocol: str = _setting(
        "grpc",
        env="OTEL_EXPORTER_OTLP_PROTOCOL",
        coerce=_choice(
            _OTLP_PROTOCOLS,
            {
                "http/json": "OTLP over HTTP with JSON encoding is not supported; "
                "use 'http/protobuf'.",
            },
        ),
        doc="The OTLP transport: `grpc` or `http/protobuf` (`http/json` is not supported).",
    )
    otlp_headers: Mapping[str, str] = _setting(
        _EMPTY,
        env="OTEL_EXPORTER_OTLP_HEADERS",
        coerce=_key_values(secret=True),
        doc="Headers sent with every OTLP export as `key=value,key2=value2`, percent-encoded; "
        "values are secrets and always masked.",
        mask=_mask_values,
    )
    traces_sampler: str = _setting(
        "parentbased_traceidratio",
        env="OTEL_TRACES_SAMPLER",
        coerce=_choice(_TRACES_SAMPLERS),
        doc="The sampler: `always_on`, `always_off`, `traceidratio`, `parentbased_always_on`, "
        "`parentbased_always_off` or `parentbased_traceidratio`.",
    )
    traces_sampler_arg: float | None = _setting(
        None,
        env="OTEL_TRACES_SAMPLER_ARG",
        coerce=_number(low=0.0, high=1.0),
        doc="The sampling ratio from 0 to 1 (unset: 0.1 in production, 1.0 elsewhere).",
    )
    sentry_dsn: str | None = _setting(
        None,
        env="SENTRY_DSN",
        coerce=_sentry_dsn,
        doc="The Sentry DSN, `https://PUBLIC_KEY@HOST/PROJECT_ID`; Sentry is off when unset.",
        mask=_mask_dsn,
    )
    sentry_environment: str | None = _setting(
        None,
        env="SENTRY_ENVIRONMENT",
        coerce=_text(max_len=_MAX_ENVIRONMENT, slash=False),
        doc="The Sentry environment (unset: `KALEEM_TELEMETRY_ENVIRONMENT`).",
    )
    sentry_release: str | None = _setting(
        None,
        env="SENTRY_RELEASE",
        coerce=_text(max_len=_MAX_RELEASE),
        doc="The Sentry release (unset: `KALEEM_TELEMETRY_VERSION`).",
    )
    sentry_log_events: bool = _setting(
        True,
        env="KALEEM_TELEMETRY_SENTRY_LOG_EVENTS",
        coerce=_boolean,
        doc="Error logs that carry an exception become Sentry events.",
    )
    prometheus_multiproc_dir: str | None = _setting(
        None,
        env="PROMETHEUS_MULTIPROC_DIR",
        # Only the form is checked here: metrics setup checks that the directory
        # exists and is writable, when it is about to be used.
        coerce=_path,
        doc="The prometheus_client multiprocess directory for pre-fork servers such as gunicorn.",
    )
    log_level: str = _setting(
        "info",
        env="KALEEM_TELEMETRY_LOG_LEVEL",
        coerce=_choice(_LOG_LEVELS),
        doc="The lowest level logged: `debug`, `info`, `warning`, `error` or `critical`, any case.",
    )
    log_format: str = _setting(
        "auto",
        env="KALEEM_TELEMETRY_LOG_FORMAT",
        coerce=_choice(_LOG_FORMATS),
        doc="`json`, `console`, or `auto` (console on a terminal, JSON otherwise).",
    )
    redact_keys: tuple[str, ...] = _setting(
        (),
        env="KALEEM_TELEMETRY_REDACT_KEYS",
        coerce=_redact_keys,
        doc="Extra secret key names, comma-separated; "
        "`*` at either end matches a prefix or suffix.",
    )
    redact_emails: bool = _setting(
        False,
        env="KALEEM_TELEMETRY_REDACT_EMAILS",
        coerce=_boolean,
        doc="`true` also masks e-mail addresses in logs, spans and Sentry events.",
    )
    request_id_header: str = _setting(
        "X-Request-ID",
        env="KALEEM_TELEMETRY_REQUEST_ID_HEADER",
        coerce=_http_token,
        doc="The header that carries the request id in and out; must be an HTTP token.",
    )
    metrics_port: int | None = _setting(
        None,
        env="KALEEM_TELEMETRY_METRICS_PORT",
        coerce=_integer(1, 65535),
        doc="When set (1 to 65535), setup starts a `/metrics` server on this port.",
    )
    metrics_addr: str = _setting(
        # All interfaces by default: the Prometheus scraper runs on another host.
        "0.0.0.0",
        env="KALEEM_TELEMETRY_METRICS_ADDR",
        coerce=_address,
        doc="The IP address or host name the metrics server binds.",
    )
    metrics_token: str | None = _setting(
        None,
        env="KALEEM_TELEMETRY_METRICS_TOKEN",
        coerce=_secret_text,
        doc="A bearer token that `/metrics` then requires; masked everywhere.",
        mask=_mask_all,
    )
    metrics_series_limit: int = _setting(
        2000,
        env="KALEEM_TELEMETRY_METRICS_SERIES_LIMIT",
        coerce=_integer(1),
        doc="The most label sets per metric (at least 1); "
        "new ones past it are folded into `other`.",
    )
    trust_trace_headers: bool = _setting(
        True,
        env="KALEEM_TELEMETRY_TRUST_TRACE_HEADERS",
        coerce=_boolean,
        doc="Continue incoming traces; edge services set `false` to link them instead.",
    )
    integrations: tuple[str, ...] = _setting(
        (),
        env="KALEEM_TELEMETRY_INTEGRATIONS",
        coerce=_integrations,
        doc="Integrations setup instruments: `auto` (every installed one) "
        "or names, comma-separated.",
    )
    shutdown_timeout: float = _setting(
        5.0,
        env="KALEEM_TELEMETRY_SHUTDOWN_TIMEOUT",
        coerce=_number(low=0.0, low_inclusive=False),
        doc="The most seconds shutdown (and the atexit hook) may take; more than 0.",
    )
    flush_on_sigterm: bool = _setting(
        True,
        env="KALEEM_TELEMETRY_FLUSH_ON_SIGTERM",
        # Only the main thread can install signal handlers, so setup from another
        # thread skips it; docs/shutdown.md says how it chains to the previous one.
        coerce=_boolean,
        doc="Export queued spans and Sentry events when SIGTERM arrives, "
        "keeping the signal's effect.",
    )

    def __post_init__(self) -> None:
        # Direct construction and dataclasses.replace() get the same validation
        # and normalisation as from_env(); values from from_env() pass unchanged.
        for spec in _SPECS:
            value = getattr(self, spec.field)
            if value is None and spec.optional:
                continue
            label = f"TelemetryConfig({spec.field}=...)"
            object.__setattr__(self, spec.field, _coerce(spec, value, label))

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> TelemetryConfig:
        """Build the configuration from keyword overrides, the environment and the defaults.

        An override wins over its environment variable, which wins over the
        default. Overrides take the field's type (``metrics_port=9101``,
        ``redact_keys=("pin",)``, ``otlp_headers={"api-key": "..."}``) or the
        environment string form (``"9101"``, ``"pin,otp"``, ``"api-key=..."``),
        and are validated alike. An override of ``None`` is ignored; an empty
        string clears an optional setting (``sentry_dsn=""`` turns Sentry off
        even when ``SENTRY_DSN`` is set). An environment variable set to the
        empty string counts as unset.

        Args:
            environ: The environment to read; ``None`` means `os.environ`.
            **overrides: `TelemetryConfig` fields by name.

        Returns:
            The validated, frozen configuration.

        Raises:
            TelemetryConfigError: An override name is unknown, or a value is
                invalid. The message names the argument (``setup_telemetry(x=...)``)
                or the environment variable, and the value, unless it is a secret.
        """
        env: Mapping[str, str] = os.environ if environ is None else environ
        unknown = sorted(name for name in overrides if name not in _SPECS_BY_FIELD)
        if unknown:
            raise TelemetryConfigError(_unknown_message(unknown))
        values: dict[str, Any] = {}
        for spec in _SPECS:
            override = overrides.get(spec.field)
            if override is not None:
                label = f"setup_telemetry({spec.field}=...)"
                if spec.optional and isinstance(override, str) and not override.strip():
                    values[spec.field] = None
                else:
                    values[spec.field] = _coerce(spec, override, label)
                continue
            raw = env.get(spec.env_var)
            if raw is not None and raw.strip():
                values[spec.field] = _coerce(spec, raw, spec.env_var)
        if "service_name" not in values:
            derived = values.get("resource_attributes", _EMPTY).get("service.name")
            if derived is not None and derived.strip():
                source = (
                    "setup_telemetry(resource_attributes=...)"
                    if overrides.get("resource_attributes") is not None
                    else "OTEL_RESOURCE_ATTRIBUTES"
                )
                label = f"service.name in {source}"
                values["service_name"] = _coerce(_SPECS_BY_FIELD["service_name"], derived, label)
        return cls(**values)

    @property
    def sampler_ratio(self) -> float:
        """The ratio the ``*traceidratio`` samplers use.

        `traces_sampler_arg` when set; else 0.1 when `environment` is
        ``production`` (any case) and 1.0 otherwise.
        """
        if self.traces_sampler_arg is not None:
            return self.traces_sampler_arg
        return 0.1 if self.environment.lower() == "production" else 1.0

    @property
    def effective_sentry_environment(self) -> str:
        """The Sentry environment: `sentry_environment`, else `environment`."""
        return self.sentry_environment or self.environment

    @property
    def effective_sentry_release(self) -> str:
        """The Sentry release: `sentry_release`, else `version`."""
        return self.sentry_release or self.version

    @property
    def otlp_traces_url(self) -> str:
        """The URL the OTLP trace exporter sends to, resolved as the OpenTelemetry spec says.

        `otlp_traces_endpoint` as is; else `otlp_endpoint`, with ``/v1/traces``
        appended for ``http/protobuf``; else ``http://localhost:4317`` (gRPC) or
        ``http://localhost:4318/v1/traces`` (HTTP). It may contain credentials:
        mask it before printing.
        """
        if self.otlp_traces_endpoint is not None:
            return self.otlp_traces_endpoint
        http = self.otlp_protocol == "http/protobuf"
        if self.otlp_endpoint is not None:
            if not http:
                return self.otlp_endpoint
            parts = urlsplit(self.otlp_endpoint)
            path = parts.path.rstrip("/") + "/v1/traces"
            return urlunsplit(parts._replace(path=path))
        return "http://localhost:4318/v1/traces" if http else "http://localhost:4317"

    def masked(self) -> dict[str, Any]:
        """Return every field by name with its secrets masked, in field order.

        Mappings become plain dicts and tuples lists, so the result can be
        printed or dumped as JSON (``kaleem-telemetry doctor`` prints it).

        Returns:
            ``{field: value}`` with `MASK` in place of the Sentry DSN key, OTLP
            header values, the metrics token and URL credentials.
        """
        result: dict[str, Any] = {}
        for name, value in self._masked_items():
            if isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            result[name] = value
        return result

    def _masked_items(self) -> Iterator[tuple[str, Any]]:
        for spec in _SPECS:
            value = getattr(self, spec.field)
            if spec.mask is not None and value is not None:
                value = spec.mask(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            yield spec.field, value

    def __repr__(self) -> str:
        parts = ", ".join(f"{name}={value!r}" for name, value in self._masked_items())
        return f"TelemetryConfig({parts})"

    __str__ = __repr__


def settings_table() -> list[Setting]:
    """Return one row per environment variable that `TelemetryConfig` reads, in field order.

    The rows are read off the field declarations; docs/configuration.md shows
    them (and `sdk_settings()`) in tables generated from this.

    Returns:
        The rows, one per field.
    """
    return [Setting(s.env_var, s.field, s.default, s.description) for s in _SPECS]


def sdk_settings() -> list[Setting]:
    """Return the standard variables that the OpenTelemetry SDK itself reads and we leave alone.

    kaleem_telemetry does not parse these; the SDK's span processor, exporters
    and tracer provider read them when tracing is set up. Their ``field`` is
    ``None`` and their default is the SDK's.

    Returns:
        The rows, in the order docs/configuration.md lists them.
    """
    return list(_SDK_SETTINGS)


# -- reading the declarations ---------------------------------------------------


def _specs() -> tuple[_Spec, ...]:
    specs = []
    for field in dataclasses.fields(TelemetryConfig):
        spec: _Spec | None = field.metadata.get(_SPEC_KEY)
        if spec is None:
            msg = f"TelemetryConfig.{field.name} must be declared with the _setting helper."
            raise TypeError(msg)
        default = _default_text(field.default)
        specs.append(
            spec._replace(field=field.name, default=default, optional=field.default is None)
        )
    return tuple(specs)


def _default_text(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, Mapping)) and not value:
        return "empty"
    return str(value)


_SPECS: tuple[_Spec, ...] = _specs()
_SPECS_BY_FIELD: dict[str, _Spec] = {spec.field: spec for spec in _SPECS}


def _coerce(spec: _Spec, value: object, label: str) -> Any:
    if isinstance(value, str):
        value = value.strip()
    return spec.coerce(value, label)


def _unknown_message(unknown: list[str]) -> str:
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, list(_SPECS_BY_FIELD), n=1)
        hints.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    return (
        f"setup_telemetry() got unknown setting(s): {', '.join(hints)}. "
        f"Valid names are the TelemetryConfig fields: {', '.join(_SPECS_BY_FIELD)}."
    )


_SDK_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "OTEL_PROPAGATORS",
        None,
        "tracecontext,baggage",
        "The propagators; when set, kaleem_telemetry keeps the SDK's choice instead of "
        "installing W3C tracecontext and baggage.",
    ),
    Setting(
        "OTEL_BSP_SCHEDULE_DELAY",
        None,
        "5000",
        "Milliseconds between two span exports.",
    ),
    Setting(
        "OTEL_BSP_EXPORT_TIMEOUT",
        None,
        "30000",
        "Milliseconds one span export may take.",
    ),
    Setting(
        "OTEL_BSP_MAX_QUEUE_SIZE",
        None,
        "2048",
        "The most spans waiting for export; more are dropped and counted.",
    ),
    Setting(
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
        None,
        "512",
        "The most spans in one export request.",
    ),
    Setting(
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        None,
        "10",
        "Seconds one OTLP request may take (the Python SDK reads seconds, not milliseconds).",
    ),
    Setting(
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        None,
        "none",
        "OTLP request compression: `none`, `gzip` or `deflate`.",
    ),
    Setting(
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
        None,
        "unset",
        "A CA bundle file to verify an `https://` collector with.",
    ),
    Setting(
        "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        None,
        "unset",
        "The client private key file for mutual TLS.",
    ),
    Setting(
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        None,
        "unset",
        "The client certificate file for mutual TLS.",
    ),
    Setting(
        "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
        None,
        "unset",
        "The longest span attribute value; longer ones are truncated.",
    ),
    Setting(
        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
        None,
        "128",
        "The most attributes on one span.",
    ),
    Setting(
        "OTEL_SPAN_EVENT_COUNT_LIMIT",
        None,
        "128",
        "The most events on one span.",
    ),
    Setting(
        "OTEL_SPAN_LINK_COUNT_LIMIT",
        None,
        "128",
        "The most links on one span.",
    ),
)


# -- docs/configuration.md --------------------------------------------------------


def _settings_markdown(page: str) -> str:
    """Return *page* (docs/configuration.md's text) with its generated tables rebuilt.

    Each table follows a ``<!-- generated: settings_table() -->`` or
    ``<!-- generated: sdk_settings() -->`` line and runs to the first line
    that is not a table row. tests/test_config.py fails while the page differs
    from what this returns, and the page says how to rewrite it.

    Raises:
        ValueError: A marker line is missing or repeated.
    """
    tables = {
        "settings_table()": [
            "| Variable | Argument | Default | Meaning |",
            "| --- | --- | --- | --- |",
            *(
                f"| `{row.env_var}` | `{row.field}` | {_default_cell(row.default)} "
                f"| {row.description} |"
                for row in settings_table()
            ),
        ],
        "sdk_settings()": [
            "| Variable | Default | Meaning |",
            "| --- | --- | --- |",
            *(
                f"| `{row.env_var}` | {_default_cell(row.default)} | {row.description} |"
                for row in sdk_settings()
            ),
        ],
    }
    lines = page.split("\n")
    for name, table in tables.items():
        marker = f"<!-- generated: {name} -->"
        if lines.count(marker) != 1:
            msg = f"The page must have one {marker!r} line, right before the table."
            raise ValueError(msg)
        start = lines.index(marker) + 1
        end = start
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
        lines[start:end] = table
    return "\n".join(lines)


def _default_cell(default: str) -> str:
    return default if default in ("unset", "empty") else f"`{default}`"
