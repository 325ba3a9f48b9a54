"""Tests for kaleem_telemetry.redaction: one policy for logs, Sentry and spans.

No secret-looking literal appears in this file: every JWT, card number and API
key is built at run time (by the helpers below or by hypothesis strategies), so
secret scanners have nothing to flag and the tests do not depend on one sample.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import enum
import json
import random
import re
import string
from collections import OrderedDict, namedtuple
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, unquote

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kaleem_telemetry import redaction
from kaleem_telemetry.exceptions import TelemetryConfigError
from kaleem_telemetry.redaction import (
    REDACTED,
    Redactor,
    get_redactor,
    redact,
    redact_attributes,
    set_redactor,
)

_RNG = random.Random(20240509)
_ALNUM = string.ascii_letters + string.digits
_B64URL = _ALNUM + "-_"
_HEX = "0123456789abcdef"


def _rand(alphabet: str, size: int) -> str:
    """Return a seeded random string (reproducible across runs)."""
    return "".join(_RNG.choice(alphabet) for _ in range(size))


def _luhn_check_digit(body: str) -> str:
    """Return the digit that makes ``body + digit`` pass the Luhn check."""
    total = 0
    for index, char in enumerate(reversed(body)):
        digit = int(char)
        if index % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


def _card(length: int = 16, first: str = "4") -> str:
    """Return a Luhn-valid card number of *length* digits."""
    body = first + _rand(string.digits, length - 2)
    return body + _luhn_check_digit(body)


def _not_card(length: int = 16) -> str:
    """Return a number of *length* digits that fails the Luhn check."""
    valid = _card(length)
    return valid[:-1] + str((int(valid[-1]) + 1) % 10)


def _group_that_breaks_luhn(number: str, *, after: bool) -> str:
    """Return two digits that, glued to *number*, make a run that fails Luhn."""
    for group in ("12", "13", "14"):
        joined = number + group if after else group + number
        if _luhn_check_digit(joined[:-1]) != joined[-1]:
            return group
    raise AssertionError  # pragma: no cover - two consecutive groups cannot both pass.


def _grouped(number: str, sep: str = " ") -> str:
    """Group digits by four, like a card printed on a receipt."""
    return sep.join(number[i : i + 4] for i in range(0, len(number), 4))


def _jwt() -> str:
    """Return a JWT-shaped string: base64url JSON header, payload, signature."""
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256"}).encode()).decode()
    payload = base64.urlsafe_b64encode(json.dumps({"sub": _rand(_ALNUM, 12)}).encode()).decode()
    return f"{header.rstrip('=')}.{payload.rstrip('=')}.{_rand(_B64URL, 43)}"


def _basic() -> str:
    """Return a ``Basic`` credential (base64 of user:password)."""
    raw = f"{_rand(string.ascii_lowercase, 6)}:{_rand(_ALNUM, 12)}"
    return base64.b64encode(raw.encode()).decode()


def _pem() -> str:
    """Return a PEM private key block with a random body."""
    kind = "RSA " + "PRIVATE KEY"
    body = "\n".join(_rand(_ALNUM + "+/", 64) for _ in range(3))
    return f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----"


# (kind, factory): each factory builds a fresh secret of that format at run time.
_API_KEYS: list[tuple[str, Callable[[], str]]] = [
    ("aws_access_key", lambda: "AK" + "IA" + _rand(string.ascii_uppercase + string.digits, 16)),
    ("aws_access_key", lambda: "AS" + "IA" + _rand(string.ascii_uppercase + string.digits, 16)),
    ("stripe_key", lambda: "sk" + "_live_" + _rand(_ALNUM, 24)),
    ("stripe_key", lambda: "sk" + "_test_" + _rand(_ALNUM, 24)),
    ("stripe_key", lambda: "rk" + "_live_" + _rand(_ALNUM, 24)),
    ("stripe_key", lambda: "pk" + "_live_" + _rand(_ALNUM, 24)),
    ("github_token", lambda: "gh" + "p_" + _rand(_ALNUM, 36)),
    ("github_token", lambda: "gh" + "o_" + _rand(_ALNUM, 36)),
    ("github_token", lambda: "gh" + "u_" + _rand(_ALNUM, 36)),
    ("github_token", lambda: "gh" + "s_" + _rand(_ALNUM, 36)),
    ("github_token", lambda: "gh" + "r_" + _rand(_ALNUM, 36)),
    ("github_token", lambda: "github" + "_pat_" + _rand(_ALNUM + "_", 60)),
    ("gitlab_token", lambda: "gl" + "pat-" + _rand(_ALNUM, 20)),
    ("slack_token", lambda: "xo" + "xb-" + _rand(string.digits, 12) + "-" + _rand(_ALNUM, 24)),
    ("slack_token", lambda: "xo" + "xp-" + _rand(string.digits, 12) + "-" + _rand(_ALNUM, 24)),
    ("google_api_key", lambda: "AI" + "za" + _rand(_B64URL, 35)),
    ("openai_key", lambda: "sk" + "-" + _rand(_ALNUM, 48)),
    ("openai_key", lambda: "sk" + "-proj-" + _rand(_B64URL, 64)),
    ("sendgrid_key", lambda: "SG" + "." + _rand(_B64URL, 22) + "." + _rand(_B64URL, 43)),
    ("twilio_key", lambda: "S" + "K" + _rand(_HEX, 32)),
    ("npm_token", lambda: "np" + "m_" + _rand(_ALNUM, 36)),
]

_SECRET_KEY_SPELLINGS = [
    "password",
    "Password",
    "PASSWORD",
    "user-password",
    "db_password",
    "passwd",
    "pwd",
    "pass",
    "secret",
    "client_secret",
    "clientSecret",
    "token",
    "access_token",
    "accessToken",
    "access.token",
    "refresh-token",
    "id_token",
    "api_token",
    "auth_token",
    "X-Auth-Token",
    "bearer_token",
    "session_token",
    "api_key",
    "API_KEY",
    "apikey",
    "x-api-key",
    "X-Api-Key",
    "HTTP_X_API_KEY",
    "authorization",
    "Authorization",
    "Proxy-Authorization",
    "HTTP_AUTHORIZATION",
    "cookie",
    "Cookie",
    "Set-Cookie",
    "session",
    "sessionid",
    "JSESSIONID",
    "csrf",
    "csrftoken",
    "X-CSRFToken",
    "xsrf-token",
    "private_key",
    "privateKey",
    "card_number",
    "cardNumber",
    "credit-card-number",
    "cc",
    "CVV",
    "cvc",
    "pan",
    "iban",
    "IBAN",
    "ssn",
    "otp",
    "sms_otp",
    "credentials",
    "aws_secret_access_key",
]

_BENIGN_KEY_SPELLINGS = [
    "token_count",
    "tokens_used",
    "max_tokens",
    "input_tokens",
    "author",
    "authority",
    "passenger",
    "compass",
    "company",
    "japan",
    "sessions",
    "session_count",
    "access_key_id",
    "keyboard",
    "user",
    "event",
    "route",
    "passport_country",
]


@pytest.fixture(name="redactor")
def _redactor() -> Redactor:
    return Redactor()


@pytest.fixture(name="restore_redactor")
def _restore_redactor() -> Iterator[None]:
    previous = get_redactor()
    yield
    set_redactor(previous)


class TestRedactorKeys:
    @pytest.mark.parametrize("key", _SECRET_KEY_SPELLINGS)
    def test_secret_key_spellings(self, redactor: Redactor, key: str) -> None:
        """Every common spelling of a secret key is recognised."""
        assert redactor.is_secret_key(key)

    @pytest.mark.parametrize("key", _BENIGN_KEY_SPELLINGS)
    def test_benign_keys(self, redactor: Redactor, key: str) -> None:
        """Look-alike keys such as token_count and author are not secrets."""
        assert not redactor.is_secret_key(key)

    @pytest.mark.parametrize("key", _SECRET_KEY_SPELLINGS)
    def test_value_under_secret_key_is_hidden(self, redactor: Redactor, key: str) -> None:
        """A value under a secret key is replaced at any depth."""
        value = _rand(_ALNUM, 20)

        out = redactor.redact({"outer": [{"inner": {key: value}}]})

        assert out == {"outer": [{"inner": {key: REDACTED}}]}

    @pytest.mark.parametrize("key", _BENIGN_KEY_SPELLINGS)
    def test_value_under_benign_key_survives(self, redactor: Redactor, key: str) -> None:
        """A value under a look-alike key is kept, as the very same object."""
        event = {key: 1234, "nested": {key: "plain words"}}

        assert redactor.redact(event) is event

    @pytest.mark.parametrize("key", [b"Authorization", bytearray(b"x-api-key")])
    def test_bytes_keys(self, redactor: Redactor, key: bytes) -> None:
        """Bytes keys are read as Latin-1."""
        assert redactor.is_secret_key(key)

    @pytest.mark.parametrize("key", [None, 42, 3.5, ("password",), object()])
    def test_non_string_keys_are_never_secret(self, redactor: Redactor, key: object) -> None:
        """A key that is not text is never a secret key, and nothing raises."""
        assert not redactor.is_secret_key(key)

    @pytest.mark.parametrize("value", [None, True, False, ""])
    def test_empty_values_under_secret_keys_are_kept(self, redactor: Redactor, value: Any) -> None:
        """None, booleans and empty strings hide nothing and are kept."""
        assert redactor.redact({"password": value}) == {"password": value}

    @pytest.mark.parametrize("value", [123456, 1.5, ["a", "b"], {"user": "bob"}, b"raw"])
    def test_any_other_value_under_secret_key_is_replaced(
        self, redactor: Redactor, value: Any
    ) -> None:
        """Numbers, containers and bytes under a secret key are replaced whole."""
        assert redactor.redact({"otp": value}) == {"otp": REDACTED}

    @pytest.mark.parametrize(
        ("extra", "hidden", "kept"),
        [
            (["merchant_pin"], "Merchant-PIN", "pin"),
            (["*pin"], "card_pin", "pinned"),
            (["merchant_secret*"], "merchant_secret_v2", "merchant_name"),
            (["*ledger*"], "my-ledger-blob", "ledge"),
            ("merchant_pin, *ledger*", "merchant_pin", "merchant"),
        ],
    )
    def test_extra_keys(self, extra: Any, hidden: str, kept: str) -> None:
        """Extra keys are exact, or suffix/prefix/infix rules with a '*'."""
        redactor = Redactor(extra_keys=extra)

        assert redactor.is_secret_key(hidden)
        assert not redactor.is_secret_key(kept)

    def test_extra_keys_are_reported(self) -> None:
        """The extra keys are kept as given and shown in the repr."""
        redactor = Redactor(extra_keys=["merchant_pin"])

        assert redactor.extra_keys == ("merchant_pin",)
        assert "merchant_pin" in repr(redactor)

    def test_key_cache_is_bounded(self, redactor: Redactor) -> None:
        """Many distinct keys never grow the normalisation cache without bound."""
        for index in range(10_000):
            redactor.is_secret_key(f"field_{index}")

        assert len(redactor._key_cache) <= redaction._KEY_CACHE_SIZE


class TestRedactorPatterns:
    @pytest.mark.parametrize(("kind", "factory"), _API_KEYS)
    def test_api_key_formats(
        self, redactor: Redactor, kind: str, factory: Callable[[], str]
    ) -> None:
        """Well-known API key formats are hidden in free text, with their kind."""
        secret = factory()

        out = redactor.redact_string(f"calling upstream with {secret} now")

        assert out == f"calling upstream with [REDACTED:{kind}] now"

    def test_jwt(self, redactor: Redactor) -> None:
        """A JWT is hidden wherever it appears."""
        token = _jwt()

        out = redactor.redact_string(f"session={token}; next {token}")

        assert token not in out
        assert "[REDACTED:jwt]" in out

    @pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
    def test_bearer(self, redactor: Redactor, scheme: str) -> None:
        """A Bearer credential is hidden and the scheme word kept."""
        token = _rand(_ALNUM, 32)

        assert (
            redactor.redact_string(f"sent {scheme} {token}") == f"sent {scheme} [REDACTED:bearer]"
        )

    def test_basic(self, redactor: Redactor) -> None:
        """A Basic credential is hidden and the scheme word kept."""
        assert redactor.redact_string(f"Basic {_basic()}") == "Basic [REDACTED:basic]"

    @pytest.mark.parametrize("text", ["basic information here", "the bearer of bad news"])
    def test_auth_words_in_prose(self, redactor: Redactor, text: str) -> None:
        """Prose that happens to use the scheme words is kept."""
        assert redactor.redact_string(text) is text

    @pytest.mark.parametrize("length", [13, 15, 16, 19])
    @pytest.mark.parametrize("sep", ["", " ", "-"])
    def test_card_numbers(self, redactor: Redactor, length: int, sep: str) -> None:
        """Luhn-valid numbers of 13 to 19 digits are hidden, grouped or not."""
        number = _card(length)
        text = f"paid with {_grouped(number, sep)} today"

        assert redactor.redact_string(text) == "paid with [REDACTED:card] today"

    @pytest.mark.parametrize("sep", ["", " ", "-"])
    def test_luhn_failing_number_survives(self, redactor: Redactor, sep: str) -> None:
        """A 16-digit number that fails the Luhn check is kept."""
        text = f"order {_grouped(_not_card(), sep)} shipped"

        assert redactor.redact_string(text) is text

    def test_card_with_trailing_group(self, redactor: Redactor) -> None:
        """A card followed by another digit group is found and the group kept."""
        number = _card()
        tail = _group_that_breaks_luhn(number, after=True)

        out = redactor.redact_string(f"{_grouped(number)} {tail}")

        assert out == f"[REDACTED:card] {tail}"

    def test_card_with_leading_group(self, redactor: Redactor) -> None:
        """A card preceded by another digit group is found and the group kept."""
        number = _card()
        head = _group_that_breaks_luhn(number, after=False)

        out = redactor.redact_string(f"{head} {_grouped(number)}")

        assert out == f"{head} [REDACTED:card]"

    def test_digits_inside_an_id_are_no_card(self, redactor: Redactor) -> None:
        """A Luhn-valid digit run inside a hex id (a request id, a hash) is kept."""
        number = _card(14)
        ident = f"d0e5d133440b{number}cfa0e4"

        assert redactor.redact_string(ident) is ident
        assert redactor.redact_string(f"card:{number}.") == "card:[REDACTED:card]."

    @pytest.mark.parametrize(
        "text",
        [
            "order 10023 4111 1111 1111 1111",
            "order 10023 4111-1111-1111-1111",
            "ticket 123456 4242-4242-4242-4242",
            "ticket 123456 4242 4242 4242 4242",
        ],
    )
    def test_card_after_a_long_leading_number(self, redactor: Redactor, text: str) -> None:
        """A card after another number, which together pass 19 digits, is still hidden."""
        head = text.split()[1]

        out = redactor.redact_string(text)

        assert out == f"{text.split()[0]} {head} [REDACTED:card]"

    def test_url_userinfo(self, redactor: Redactor) -> None:
        """The password in scheme://user:pass@ is hidden, scheme and user kept."""
        password = _rand(_ALNUM, 16)

        out = redactor.redact_string(f"connect to redis://app:{password}@cache:6379/0")

        assert out == f"connect to redis://app:{REDACTED}@cache:6379/0"

    def test_pem_private_key(self, redactor: Redactor) -> None:
        """A PEM private key block is hidden whole."""
        assert redactor.redact_string(f"key:\n{_pem()}\nend") == "key:\n[REDACTED:private_key]\nend"

    def test_truncated_pem_private_key(self, redactor: Redactor) -> None:
        """A PEM block cut before its END line is hidden to the end."""
        body = _rand(_ALNUM, 64)
        pem = _pem().split("\n")[0]

        assert body not in redactor.redact_string(f"{pem}\n{body}")

    @pytest.mark.parametrize(
        ("template", "expected"),
        [
            ("retry with password={v} later", "retry with password=[REDACTED] later"),
            ("password = {v}", "password = [REDACTED]"),
            ('{{"api_key": "{v}", "n": 1}} tail', '{{"api_key": "[REDACTED]", "n": 1}} tail'),
            ("{{'token': '{v}'}} tail", "{{'token': '[REDACTED]'}} tail"),
            ('log {{\\"secret\\": \\"{v}\\"}}', 'log {{\\"secret\\": \\"[REDACTED]\\"}}'),
            ("GET /cb?code=1&access_token={v}&x=2", "GET /cb?code=1&access_token=[REDACTED]&x=2"),
            ("Authorization: Bearer {v}\nnext", "Authorization: [REDACTED]\nnext"),
            ("Cookie: sid={v}; theme=dark\nnext", "Cookie: [REDACTED]\nnext"),
        ],
    )
    def test_secret_key_value_pairs_in_text(
        self, redactor: Redactor, template: str, expected: str
    ) -> None:
        """key=value, "key": "value" and header lines with a secret key are hidden."""
        value = _rand(_ALNUM, 18)

        out = redactor.redact_string(template.format(v=value))

        assert out == expected.format()
        assert value not in out

    @pytest.mark.parametrize(
        "text",
        [
            "token_count=5 max_tokens=10 author=me",
            "2024-05-09T10:00:00.123Z",
            "risk-assessment-report-2024-final-draft",
            "host:8080 path=/items/42",
            "see https://example.com/path?page=2",
            "GET /items/{item_id} 200",
        ],
    )
    def test_benign_text_is_kept(self, redactor: Redactor, text: str) -> None:
        """Ordinary text comes back as the very same object."""
        assert redactor.redact_string(text) is text

    def test_email_masking_is_opt_in(self) -> None:
        """E-mail addresses are kept by default and masked when asked."""
        text = "mail bob.smith+tag@mail.example.com now"

        assert Redactor().redact_string(text) is text
        assert Redactor(mask_emails=True).redact_string(text) == "mail [REDACTED:email] now"

    def test_marker_never_echoes_the_secret(self, redactor: Redactor) -> None:
        """No marker contains any part of what it replaced."""
        secrets = [factory() for _, factory in _API_KEYS] + [_jwt(), _card(), _pem()]

        out = redactor.redact_string(" ".join(secrets))

        for secret in secrets:
            for start in range(0, len(secret) - 8, 4):
                assert secret[start : start + 8] not in out


class TestRedactorStructures:
    def test_nothing_to_hide_returns_same_object(self, redactor: Redactor) -> None:
        """A value with nothing to hide is returned as is, not copied."""
        event = {"event": "http_request", "route": "/items/{item_id}", "status_code": 200}

        assert redactor.redact(event) is event

    def test_input_is_never_mutated(self, redactor: Redactor) -> None:
        """Redaction copies on write and leaves the caller's objects untouched."""
        event = {
            "password": "x1",
            "items": [{"token": "y2"}, ("Bearer " + _rand(_ALNUM, 20),)],
            "keep": {"plain": "words"},
        }
        before = copy.deepcopy(event)

        out = redactor.redact(event)

        assert event == before
        assert out["keep"] is event["keep"]
        assert out["items"][0] == {"token": REDACTED}

    def test_container_types_are_kept(self, redactor: Redactor) -> None:
        """Lists, tuples, sets, frozensets and named tuples keep their type."""
        Pair = namedtuple("Pair", ["left", "right"])
        token = "Bearer " + _rand(_ALNUM, 20)

        out = redactor.redact(
            {
                "l": [token],
                "t": (token,),
                "s": {token},
                "f": frozenset([token]),
                "p": Pair(token, 1),
            }
        )

        assert out["l"] == ["Bearer [REDACTED:bearer]"]
        assert out["t"] == ("Bearer [REDACTED:bearer]",)
        assert out["s"] == {"Bearer [REDACTED:bearer]"}
        assert out["f"] == frozenset(["Bearer [REDACTED:bearer]"])
        assert out["p"] == Pair("Bearer [REDACTED:bearer]", 1)
        assert type(out["p"]) is Pair

    def test_dict_subclass_becomes_dict(self, redactor: Redactor) -> None:
        """A changed dict subclass comes back as a plain dict with the same order."""
        event = OrderedDict([("a", 1), ("password", "x")])

        assert redactor.redact(event) == {"a": 1, "password": REDACTED}

    def test_other_mappings(self, redactor: Redactor) -> None:
        """A non-dict Mapping is walked too."""

        class Frozen(Mapping[str, Any]):
            def __init__(self, data: dict[str, Any]) -> None:
                self._data = data

            def __getitem__(self, key: str) -> Any:
                return self._data[key]

            def __iter__(self) -> Iterator[str]:
                return iter(self._data)

            def __len__(self) -> int:
                return len(self._data)

        assert redactor.redact(Frozen({"api_key": "k", "n": 1})) == {"api_key": REDACTED, "n": 1}

    def test_dataclass_fields(self, redactor: Redactor) -> None:
        """A dataclass with a secret field becomes a redacted dict (orjson renders it)."""

        @dataclasses.dataclass
        class Login:
            user: str
            password: str

        login = Login("bob", "x")

        assert redactor.redact(login) == {"user": "bob", "password": REDACTED}
        assert login.password == "x"

    def test_json_in_string(self, redactor: Redactor) -> None:
        """JSON held in a string is parsed, redacted and re-serialised."""
        body = json.dumps({"user": "bob", "card": {"number": _card()}, "password": "x"})

        out = json.loads(redactor.redact({"body": body})["body"])

        assert out == {"user": "bob", "card": {"number": "[REDACTED:card]"}, "password": REDACTED}

    def test_json_in_string_unchanged_is_same_object(self, redactor: Redactor) -> None:
        """A JSON string with nothing to hide is returned as the same object."""
        body = '{"user": "bob", "items": [1, 2, 3]}'

        assert redactor.redact_string(body) is body

    def test_bytes(self, redactor: Redactor) -> None:
        """Bytes are scanned as Latin-1 and stay bytes."""
        token = _rand(_ALNUM, 20)

        out = redactor.redact({"raw": f"Authorization: Bearer {token}".encode()})

        assert out == {"raw": b"Authorization: [REDACTED]"}

    def test_unknown_objects_are_passed_through(self, redactor: Redactor) -> None:
        """Objects the redactor does not know are returned untouched."""
        marker = object()

        assert redactor.redact({"obj": marker})["obj"] is marker


class _Boom(Exception):
    """An exception no redaction code expects."""


class _HostileList(list[Any]):
    def __iter__(self) -> Iterator[Any]:
        raise _Boom

    def __len__(self) -> int:
        raise _Boom


class _HostileMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise _Boom

    def __iter__(self) -> Iterator[str]:
        raise _Boom

    def __len__(self) -> int:
        return 1


class _HostileKey:
    def __hash__(self) -> int:
        return 1

    def __eq__(self, other: object) -> bool:
        raise _Boom

    def __repr__(self) -> str:
        raise _Boom

    __str__ = __repr__


class TestRedactorNeverRaises:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (_HostileList([1]), "[REDACTED:error]"),
            (_HostileMapping(), "[REDACTED:error]"),
            ({"ok": [_HostileList([1])]}, {"ok": ["[REDACTED:error]"]}),
        ],
    )
    def test_hostile_values(self, redactor: Redactor, value: Any, expected: Any) -> None:
        """Hostile containers never make redaction raise: each becomes the error marker."""
        out = redactor.redact(value)

        assert out == expected

    @pytest.mark.parametrize("value", [{_HostileKey(): "plain"}, [_HostileKey()], {_HostileKey()}])
    def test_hostile_keys_pass_through(self, redactor: Redactor, value: Any) -> None:
        """Objects whose __eq__, __repr__ and __str__ raise are returned untouched."""
        out = redactor.redact(value)

        assert out is value

    def test_secret_under_hostile_key_is_hidden(self, redactor: Redactor) -> None:
        """A value under a key whose __eq__ and __repr__ raise is still scanned."""
        key = _HostileKey()
        token = _rand(_ALNUM, 20)

        out = redactor.redact({key: "Bearer " + token})

        assert out[key] == "Bearer [REDACTED:bearer]"

    def test_surrogates(self, redactor: Redactor) -> None:
        """Lone surrogates do not stop the scan."""
        token = _rand(_ALNUM, 20)

        assert redactor.redact("\ud800 Bearer " + token) == "\ud800 Bearer [REDACTED:bearer]"

    def test_non_utf8_bytes(self, redactor: Redactor) -> None:
        """Bytes that are not UTF-8 are still scanned, as Latin-1."""
        token = _rand(_ALNUM, 20).encode()

        assert redactor.redact(b"\xff\xfe Bearer " + token) == b"\xff\xfe Bearer [REDACTED:bearer]"

    def test_unreadable_container_fails_closed(self, redactor: Redactor) -> None:
        """A container that cannot be read is replaced by a marker, not passed on."""
        out = redactor.redact({"ok": 1, "bad": _HostileList([1])})

        assert out == {"ok": 1, "bad": "[REDACTED:error]"}

    @pytest.mark.parametrize("value", [None, 42, ["x"], {"a": 1}])
    def test_string_helpers_accept_anything(self, redactor: Redactor, value: Any) -> None:
        """The string helpers never raise on a non-string."""
        assert redactor.redact_string(value) == "[REDACTED:error]"
        assert redactor.redact_url(value) == "[REDACTED:error]"
        assert redactor.redact_query(value) == "[REDACTED:error]"

    def test_headers_helper_accepts_garbage(self, redactor: Redactor) -> None:
        """redact_headers fails closed with an empty dict on unreadable input."""
        assert redactor.redact_headers([("only-one-item",)]) == {}  # type: ignore[list-item]

    @pytest.mark.parametrize("limit", [0, -1, 1.5, "3"])
    def test_bad_limits_are_config_errors(self, limit: Any) -> None:
        """A limit that is not a positive integer is refused at construction."""
        with pytest.raises(TelemetryConfigError, match="max_depth must be a positive integer"):
            Redactor(max_depth=limit)


class TestRedactorBounds:
    def test_depth_is_bounded(self) -> None:
        """Containers deeper than max_depth become a marker."""
        value: Any = "leaf"
        for _ in range(50):
            value = [value]

        out = Redactor(max_depth=4).redact(value)

        assert out == [[[["[TRUNCATED:depth]"]]]]

    def test_very_deep_nesting_does_not_recurse_without_bound(self, redactor: Redactor) -> None:
        """A 100 000-level structure is cut at the default depth, not a RecursionError."""
        value: Any = {"password": "x"}
        for _ in range(100_000):
            value = {"k": value}

        out = redactor.redact(value)

        for _ in range(redactor.max_depth - 1):
            out = out["k"]
        assert out == {"k": "[TRUNCATED:depth]"}

    def test_cycles_are_detected(self, redactor: Redactor) -> None:
        """A container that contains itself becomes a cycle marker."""
        event: dict[str, Any] = {"password": "x"}
        event["self"] = event
        items: list[Any] = ["a"]
        items.append(items)

        assert redactor.redact(event) == {"password": REDACTED, "self": "[CYCLE]"}
        assert redactor.redact(items) == ["a", "[CYCLE]"]

    def test_shared_references_are_not_cycles(self, redactor: Redactor) -> None:
        """The same object reached twice on different paths is walked twice."""
        shared = {"token": "x"}

        assert redactor.redact([shared, shared]) == [{"token": REDACTED}] * 2

    def test_items_are_bounded(self) -> None:
        """A container keeps max_items entries and summarises the rest."""
        out = Redactor(max_items=10).redact(
            {"l": list(range(100)), "d": {str(i): i for i in range(100)}}
        )

        assert out["l"] == [*range(10), "[TRUNCATED:90 items]"]
        assert len(out["d"]) == 11
        assert out["d"]["[TRUNCATED]"] == "90 more items"

    def test_huge_string_is_cut_and_marked(self) -> None:
        """A string over max_string is cut before scanning and says how long it was."""
        text = "word " * 100_000

        out = Redactor(max_string=1000).redact_string(text)

        assert len(out) <= 1000 + len("[TRUNCATED:500000 chars]")
        assert out.endswith("[TRUNCATED:500000 chars]")

    def test_cut_never_leaves_half_a_secret(self) -> None:
        """The cut drops a partial token instead of leaving its visible half."""
        number = _card()
        text = "x " * 495 + number

        out = Redactor(max_string=1000).redact_string(text)

        assert number[:10] not in out

    def test_whole_call_budget(self, redactor: Redactor) -> None:
        """One call stops walking after its item budget and fails closed."""
        value = [[str(i) for i in range(1000)] for _ in range(200)]

        out = redactor.redact(value)

        assert out[-1] == "[TRUNCATED:budget]"
        assert out[0] is value[0]


class TestRedactURL:
    @pytest.mark.parametrize(
        ("template", "expected"),
        [
            ("https://bob:{v}@example.com/x", "https://bob:[REDACTED]@example.com/x"),
            (
                "postgres://app:{v}@db:5432/app?sslmode=require",
                "postgres://app:[REDACTED]@db:5432/app?sslmode=require",
            ),
            ("redis://:{v}@cache:6379/0", "redis://:[REDACTED]@cache:6379/0"),
            ("/cb?code=42&access_token={v}", "/cb?code=42&access_token=[REDACTED]"),
            ("https://h/cb#id_token={v}&state=1", "https://h/cb#id_token=[REDACTED]&state=1"),
            ("https://h/p?api%5Fkey={v}", "https://h/p?api%5Fkey=[REDACTED]"),
            ("https://h/p?Password={v}&page=2", "https://h/p?Password=[REDACTED]&page=2"),
        ],
    )
    def test_redact_url(self, redactor: Redactor, template: str, expected: str) -> None:
        """Passwords and secret parameters are hidden; the rest is kept byte for byte."""
        value = _rand(_ALNUM, 16)

        assert redactor.redact_url(template.format(v=value)) == expected

    def test_token_as_user_name(self, redactor: Redactor) -> None:
        """A token used as the user name of a URL is hidden by its pattern."""
        token = "gh" + "p_" + _rand(_ALNUM, 36)

        assert redactor.redact_url(f"https://{token}@github.com/o/r.git") == (
            "https://[REDACTED:github_token]@github.com/o/r.git"
        )

    def test_jwt_in_path_and_encoded_bearer_in_query(self, redactor: Redactor) -> None:
        """Patterns are found in the path and in percent-encoded values."""
        token = _jwt()
        url = f"https://h/reset/{token}?next=Bearer%20{_rand(_ALNUM, 20)}"

        assert (
            redactor.redact_url(url)
            == "https://h/reset/[REDACTED:jwt]?next=Bearer%20[REDACTED:bearer]"
        )

    @pytest.mark.parametrize(
        "url",
        [
            "https://example.com/items/42?page=2&sort=-name#top",
            "http://[::1]:8080/a%20b?x=%2F&y",
            "/relative/path?q=a+b&q=c",
            "ssh://git@github.com/o/r.git",
            "not a url at all",
        ],
    )
    def test_benign_urls_are_unchanged(self, redactor: Redactor, url: str) -> None:
        """A URL with nothing to hide is returned as the same object."""
        assert redactor.redact_url(url) is url

    def test_redact_query(self, redactor: Redactor) -> None:
        """Secret parameters are hidden and a leading '?' kept."""
        value = _rand(_ALNUM, 16)

        assert redactor.redact_query(f"?page=2&token={value}&token=&x") == (
            "?page=2&token=[REDACTED]&token=&x"
        )


class TestRedactHeaders:
    def test_mapping(self, redactor: Redactor) -> None:
        """Secret headers are hidden, others scanned, names kept as given."""
        headers = {
            "Authorization": "Bearer " + _rand(_ALNUM, 20),
            "Cookie": "sid=" + _rand(_ALNUM, 20),
            "X-Api-Key": _rand(_ALNUM, 20),
            "Referer": "https://bob:" + _rand(_ALNUM, 12) + "@h/",
            "Accept": "*/*",
        }

        assert redactor.redact_headers(headers) == {
            "Authorization": REDACTED,
            "Cookie": REDACTED,
            "X-Api-Key": REDACTED,
            "Referer": "https://bob:[REDACTED]@h/",
            "Accept": "*/*",
        }

    def test_asgi_byte_pairs_and_repeats(self, redactor: Redactor) -> None:
        """ASGI-style byte pairs are decoded and repeated names joined."""
        headers = [
            (b"set-cookie", b"a=" + _rand(_ALNUM, 10).encode()),
            (b"set-cookie", b"b=" + _rand(_ALNUM, 10).encode()),
            (b"accept", b"text/html"),
            (b"accept", b"application/json"),
        ]

        assert redactor.redact_headers(headers) == {
            "set-cookie": f"{REDACTED}, {REDACTED}",
            "accept": "text/html, application/json",
        }


class TestModuleFunctions:
    @pytest.mark.usefixtures("restore_redactor")
    def test_set_and_get_redactor(self) -> None:
        """set_redactor() changes the policy used by redact()."""
        set_redactor(Redactor(extra_keys=["merchant_pin"]))

        assert redact({"merchant_pin": 1}) == {"merchant_pin": REDACTED}
        assert get_redactor().extra_keys == ("merchant_pin",)

    def test_set_redactor_refuses_other_types(self) -> None:
        """set_redactor() names what it got when it is not a Redactor."""
        with pytest.raises(TypeError, match="needs a Redactor, got 'nope'"):
            set_redactor("nope")  # type: ignore[arg-type]

    def test_redact_attributes(self) -> None:
        """Span attributes: secret keys, URLs, queries, strings and string lists."""
        token = _rand(_ALNUM, 20)
        attrs = {
            "http.request.header.authorization": ("Bearer " + token,),
            "url.full": f"https://a:{token}@h/p?token={token}",
            "url.query": f"a=1&api_key={token}",
            "db.statement": f"SELECT 1 -- password={token}",
            "messages": ["Bearer " + token, "plain"],
            "http.response.status_code": 200,
            "enduser.id": None,
        }

        out = redact_attributes(attrs)

        assert out == {
            "http.request.header.authorization": REDACTED,
            "url.full": "https://a:[REDACTED]@h/p?token=[REDACTED]",
            "url.query": "a=1&api_key=[REDACTED]",
            "db.statement": "SELECT 1 -- password=[REDACTED]",
            "messages": ["Bearer [REDACTED:bearer]", "plain"],
            "http.response.status_code": 200,
            "enduser.id": None,
        }
        assert token not in orjson.dumps(out).decode()

    def test_redact_attributes_fails_closed(self) -> None:
        """Unreadable attributes give an empty dict rather than an exception."""
        assert redact_attributes(_HostileMapping()) == {}


# --------------------------------------------------------------------------- properties

_SAFE_WORD = st.text(alphabet="abcdefghijklm", min_size=1, max_size=8)
_FREE_TEXT = st.lists(_SAFE_WORD, max_size=6).map(" ".join)


def _b64url(min_size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=_B64URL, min_size=min_size, max_size=min_size + 30)


@st.composite
def _luhn_number(draw: st.DrawFn) -> str:
    length = draw(st.integers(min_value=13, max_value=19))
    body = draw(st.text(alphabet=string.digits, min_size=length - 1, max_size=length - 1))
    number = body + _luhn_check_digit(body)
    sep = draw(st.sampled_from(["", " ", "-"]))
    return _grouped(number, sep) if length % 4 == 0 else number


@st.composite
def _api_key(draw: st.DrawFn) -> str:
    prefix, alphabet, size = draw(
        st.sampled_from(
            [
                ("AK" + "IA", string.ascii_uppercase + string.digits, 16),
                ("sk" + "_live_", _ALNUM, 24),
                ("rk" + "_test_", _ALNUM, 24),
                ("gh" + "p_", _ALNUM, 36),
                ("github" + "_pat_", _ALNUM, 40),
                ("xo" + "xb-", _ALNUM + "-", 30),
                ("AI" + "za", _B64URL, 35),
                ("sk" + "-", _ALNUM, 40),
                ("S" + "K", _HEX, 32),
                ("np" + "m_", _ALNUM, 36),
            ]
        )
    )
    return prefix + draw(st.text(alphabet=alphabet, min_size=size, max_size=size))


@st.composite
def _secret(draw: st.DrawFn) -> tuple[str, str]:
    """Draw (text to plant, core that must not survive)."""
    choice = draw(st.integers(min_value=0, max_value=6))
    # Every core carries "Q7", which the benign text (a-m only) can never contain.
    if choice == 0:
        core = "eyJ" + draw(_b64url(6)) + "Q7." + draw(_b64url(6)) + "." + draw(_b64url(10)) + "Q7"
        return core, core
    if choice == 1:
        number = draw(_luhn_number())
        return number, number
    if choice == 2:
        key = draw(_api_key())
        return key, key
    if choice == 3:
        token = draw(_b64url(8)) + "Q7"
        return f"{draw(st.sampled_from(['Bearer', 'bearer']))} {token}", token
    if choice == 4:
        password = draw(st.text(alphabet=_ALNUM, min_size=6, max_size=20)) + "Q7"
        return f"https://user:{password}@host.example/path", password
    if choice == 5:
        raw = (
            draw(st.text(alphabet=_ALNUM, min_size=3, max_size=10))
            + ":"
            + draw(st.text(alphabet=_ALNUM, min_size=6, max_size=20))
        )
        token = base64.b64encode(raw.encode()).decode()
        return f"Basic {token}", token
    body = draw(st.text(alphabet=_ALNUM, min_size=20, max_size=60)) + "Q7"
    return f"-----BEGIN EC {'PRIVATE'} KEY-----\n{body}\n-----END EC {'PRIVATE'} KEY-----", body


@st.composite
def _secret_key_spelling(draw: st.DrawFn) -> str:
    words = draw(
        st.sampled_from(
            [
                ["password"],
                ["user", "password"],
                ["access", "token"],
                ["refresh", "token"],
                ["id", "token"],
                ["api", "key"],
                ["x", "api", "key"],
                ["client", "secret"],
                ["proxy", "authorization"],
                ["set", "cookie"],
                ["session", "id"],
                ["private", "key"],
                ["card", "number"],
                ["csrf", "token"],
                ["cvv"],
                ["otp"],
                ["iban"],
                ["ssn"],
            ]
        )
    )
    sep = draw(st.sampled_from(["", "_", "-", ".", " "]))
    cases = draw(
        st.lists(
            st.sampled_from([str.lower, str.upper, str.title]),
            min_size=len(words),
            max_size=len(words),
        )
    )
    return sep.join(case(word) for case, word in zip(cases, words, strict=True))


def _rendered(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


_LEAVES = st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary()
# Written with st.deferred: newer hypothesis releases reject this st.recursive extend
# as not using its argument.
_JSONISH: st.SearchStrategy[Any] = st.deferred(
    lambda: (
        _LEAVES
        | st.lists(_JSONISH, max_size=4)
        | st.tuples(_JSONISH, _JSONISH)
        | st.dictionaries(st.text(max_size=10), _JSONISH, max_size=4)
    )
)


class TestRedactorProperties:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(secret=_secret(), before=_FREE_TEXT, after=_FREE_TEXT)
    def test_secret_in_free_text_never_survives(
        self, secret: tuple[str, str], before: str, after: str
    ) -> None:
        """A generated secret inside free text is gone after redaction and rendering."""
        planted, core = secret
        event = {"message": f"{before} {planted} {after}".strip(), "list": [f"x {planted}"]}

        out = redact(event)

        assert core not in repr(out)
        assert core not in _rendered(out)

    @settings(max_examples=150, deadline=None)
    @given(
        key=_secret_key_spelling(), value=st.text(min_size=1, max_size=30), depth=st.integers(0, 5)
    )
    def test_value_under_generated_key_spelling_never_survives(
        self, key: str, value: str, depth: int
    ) -> None:
        """Any value under any spelling of a secret key is gone, at any depth."""
        event: Any = {key: value + "Q7"}
        for level in range(depth):
            event = {f"level{level}": [event]} if level % 2 else {f"level{level}": event}

        out = redact(event)

        assert value + "Q7" not in repr(out)
        assert (value + "Q7") not in _rendered(out)

    @settings(max_examples=100, deadline=None)
    @given(key=_secret_key_spelling(), secret=_secret())
    def test_secret_in_json_string_never_survives(self, key: str, secret: tuple[str, str]) -> None:
        """Secrets in JSON documents held in strings are gone, by key and by pattern."""
        planted, core = secret
        body = json.dumps({key: core, "note": planted, "n": [1, 2]})

        out = redact({"body": body})

        assert core not in _rendered(out)

    @settings(max_examples=100, deadline=None)
    @given(
        number=st.text(alphabet=string.digits, min_size=15, max_size=15),
        words=_FREE_TEXT,
        count=st.integers(0, 10**12),
    )
    def test_benign_look_alikes_survive(self, number: str, words: str, count: int) -> None:
        """Luhn-failing numbers and token_count-style keys survive untouched."""
        failing = number + str((int(_luhn_check_digit(number)) + 1) % 10)
        event = {
            "token_count": count,
            "max_tokens": count,
            "author": words,
            "passenger": words,
            "message": f"{words} order {failing} {words}",
        }

        assert redact(event) is event

    @settings(max_examples=100, deadline=None)
    @given(value=_JSONISH)
    def test_arbitrary_values_never_raise_or_mutate(self, value: Any) -> None:
        """Any JSON-ish value is redacted without raising and without mutation."""
        before = copy.deepcopy(value)

        redact(value)

        assert repr(value) == repr(before)


_BRANCH_SOURCES = [
    source
    for _, source in (
        *redaction._BRANCHES,
        redaction._EMAIL_BRANCH,
        *redaction._KV_BRANCHES,
    )
]
# Pieces of every pattern's trigger, shuffled into strings that sometimes pass the
# pre-check and sometimes hold a near-miss of a pattern.
_FRAGMENTS = st.sampled_from(
    [
        *string.ascii_letters,
        *string.digits,
        *"./+~,;?#&%'\"[]{}()\n\r",
        "0123456789012",
        "4111 1111 1111 1111",
        "eyJ",
        "AK" + "IA",
        "AI" + "za",
        "S" + "K",
        "S" + "G.",
        "Bearer ",
        "://",
        "-----BEGIN ",
        "gh" + "p_",
        "np" + "m_",
        "xo" + "xb-",
        "sk" + "-",
        "password=",
        "token: ",
        "@example.com",
    ]
)


class TestScanPrecheck:
    """The cheap pre-check in `Redactor._scan` never skips a string a pattern would hit."""

    @settings(max_examples=300, deadline=None)
    @given(data=st.data(), index=st.integers(0, len(_BRANCH_SOURCES) - 1))
    def test_every_branch_match_fails_the_precheck(self, data: st.DataObject, index: int) -> None:
        """A string any single branch matches is never declared clean."""
        branch = re.compile(_BRANCH_SOURCES[index])
        text = data.draw(st.from_regex(branch))
        if branch.search(text) is not None:
            assert not redaction._cannot_match(text)

    @settings(max_examples=300, deadline=None)
    @given(parts=st.lists(_FRAGMENTS, max_size=30))
    def test_clean_strings_hold_no_pattern(self, parts: list[str]) -> None:
        """Whatever passes the pre-check, neither combined pattern finds anything in."""
        text = "".join(parts)
        if redaction._cannot_match(text):
            assert redaction._PATTERN.search(text) is None
            assert redaction._PATTERN_EMAIL.search(text) is None

    @settings(max_examples=500, deadline=None)
    @given(
        text=st.one_of(
            st.text(st.sampled_from("0123456789ABJSZafz-:=@_ \t<%./é\u0663"), max_size=60),
            st.text(max_size=60),
        )
    )
    def test_precheck_is_the_trigger_and_long_run_searches(self, text: str) -> None:
        """However it is computed (short, ASCII, other), the verdict is the two searches'."""
        expected = (
            redaction._SCAN_TRIGGERS.isdisjoint(text) and redaction._LONG_RUN.search(text) is None
        )
        assert redaction._cannot_match(text) is expected

    def test_common_request_values_skip_the_scan(self) -> None:
        """Paths, addresses and hex request ids pass; a 13-digit run or a trigger does not."""
        for clean in ("/items/42", "127.0.0.1", "0f4b5a2c7d9e4e1f8a3b6c5d4e3f2a1b", "GET"):
            assert redaction._cannot_match(clean)
        suspects = ("4111111111111", "a=b", "x:y", "a b", "SK", "A", "eyJ", "a-b", "a_b")
        long = ("0f4b5a2c7d9e4e1f8a3b6c5d4e3f2a1b-", "0f4b5a2c7d9e4e1f8a3b6c5d4e3f2a1bA")
        for suspect in (*suspects, *long, "x" * 20 + "4111111111111", "é" * 20 + "_"):
            assert not redaction._cannot_match(suspect)

    def test_str_subclass_is_always_scanned(self) -> None:
        """A str subclass may lie through __iter__, so it never takes the shortcut."""

        class Sneaky(str):
            def __iter__(self) -> Iterator[str]:
                return iter(())

        assert not redaction._cannot_match(Sneaky("4111111111111111"))
        assert redaction.Redactor().redact_string(Sneaky(_card())) == "[REDACTED:card]"


_FLAT_KEYS = st.sampled_from(
    ["path", "client_ip", "route", "note", "password", "api_key", "token_count", "x", "Cookie"]
)
_FLAT_VALUES = st.one_of(
    st.lists(_FRAGMENTS, max_size=12).map("".join),
    st.integers(),
    st.floats(allow_nan=False),
    st.none(),
    st.booleans(),
    st.builds(lambda body: "[" + body + "]", st.lists(_FRAGMENTS, max_size=6).map("".join)),
)


class TestFlatDictShortcut:
    """`Redactor.redact` answers flat clean dicts without the walk, and agrees with it."""

    @settings(max_examples=300, deadline=None)
    @given(event=st.dictionaries(_FLAT_KEYS, _FLAT_VALUES, max_size=6))
    def test_shortcut_agrees_with_the_walk(self, event: dict[str, Any]) -> None:
        """Whatever the dict, redact() gives what the full walk gives."""
        redactor = Redactor()
        out = redactor.redact(event)
        for key, value in event.items():
            expected = redactor.redact([value])[0] if not redactor.is_secret_key(key) else None
            if expected is not None:
                assert out[key] == expected

    def test_clean_access_fields_come_back_as_they_are(self) -> None:
        """The access event's own values are the very same dict, not a copy."""
        fields = {"path": "/items/42", "client_ip": "127.0.0.1", "status_code": 200}
        assert Redactor().redact(fields) is fields

    def test_escaped_json_is_still_parsed(self) -> None:
        """A JSON string spelling a key with escapes takes the walk and is redacted."""
        key = "AK" + "IA" + _rand(string.ascii_uppercase + string.digits, 16)
        escaped = "".join(f"\\u{ord(char):04x}" for char in key)
        text = '["' + escaped + '"]'
        assert redaction._cannot_match(text)
        assert key not in orjson.dumps(Redactor().redact({"note": text})).decode()
        assert Redactor().redact({"note": text}) != {"note": text}

    def test_secret_key_and_nested_values_take_the_walk(self) -> None:
        """A secret key, a nested dict or an over-long string is never answered early."""
        redactor = Redactor(max_string=20)
        assert redactor.redact({"password": "x" * 8}) == {"password": REDACTED}
        assert redactor.redact({"inner": {"password": "x"}}) == {"inner": {"password": REDACTED}}
        assert redactor.redact({1: "Bearer " + "a1" * 3}) == {1: "Bearer [REDACTED:bearer]"}


class TestKeeps:
    """`Redactor.keeps` answers True only where `redact` returns the value untouched."""

    @settings(max_examples=400, deadline=None)
    @given(key=_FLAT_KEYS, value=_FLAT_VALUES)
    def test_keeps_implies_unchanged(self, key: str, value: Any) -> None:
        """Whatever the key and value, a True answer means the walk changes nothing."""
        redactor = Redactor(max_string=64)
        if redactor.keeps(key, value):
            event = {key: value}
            assert redactor.redact(event) is event

    def test_secret_keys_and_suspect_values_are_left_to_redact(self) -> None:
        """A secret key, a configured one, a pattern-shaped or long value answers False."""
        redactor = Redactor(extra_keys=["*_id"], max_string=20)
        assert not redactor.keeps("password", "x")
        assert not redactor.keeps("merchant_id", "m-1")
        assert not redactor.keeps("note", "a=b and more")
        assert not redactor.keeps("note", "{" + '"a": 1}')
        assert not redactor.keeps("note", "x" * 21)
        assert not redactor.keeps(1, "x")  # type: ignore[arg-type]
        assert not redactor.keeps("note", ["list"])
        token = "ghp_" + _rand(string.ascii_letters + string.digits, 36)
        assert not redactor.keeps(token, "x")

    def test_clean_request_values_are_kept(self) -> None:
        """A hex request id, a short merchant id and atomic values answer True."""
        redactor = Redactor()
        assert redactor.keeps("request_id", "0f4b5a2c7d9e4e1f8a3b6c5d4e3f2a1b")
        assert redactor.keeps("merchant_id", "m42")
        assert redactor.keeps("count", 3)
        assert redactor.keeps("flag", None)


class TestPlainQueryShortcut:
    """A query with nothing percent- or plus-encoded skips decoding, with the same result."""

    @settings(max_examples=300, deadline=None)
    @given(
        params=st.lists(
            st.tuples(
                st.sampled_from(["q", "page", "token", "api_key", "sort", "next"]),
                st.lists(_FRAGMENTS.filter(lambda f: not set(f) & set("&%+#")), max_size=8).map(
                    "".join
                ),
            ),
            max_size=5,
        )
    )
    def test_plain_query_matches_the_decoding_path(self, params: list[tuple[str, str]]) -> None:
        """Adding one encoded parameter (forcing the decoding path) changes nothing else."""
        query = "&".join(f"{name}={value}" for name, value in params)
        redactor = Redactor()
        plain = redactor.redact_query(query)
        with_encoded = redactor.redact_query(query + "&z=%41")
        assert with_encoded == plain + "&z=%41"


# ------------------------------------------------------- key families with gaps

# Each spelling of the issue: the value under it was printed before.
_GAP_KEYS = [
    "db_pass",
    "smtp_pass",
    "SMTP_PASS",
    "smtpPass",
    "pw",
    "PW",
    "db_pw",
    "access_tokens",
    "refreshTokens",
    "id_tokens",
    "token_v2",
    "access_token_v2",
    "tokenValue",
    "token_value",
    "secret_value",
    "secretValue",
    "privkey",
    "ssh_privkey",
    "ssh_key",
    "deploy-ssh-key",
    "otp_code",
    "otpCode",
    "verification_code",
    "email_verification_code",
    "cvv_code",
    "iban_number",
    "IbanNumber",
    "Ocp-Apim-Subscription-Key",
    "passcode",
    "recovery_codes",
]

# Look-alikes that name no secret: "pass" and "pw" only as a whole word at the
# end of a key, "tokens" only after a credential kind, a qualifier ("code",
# "value", "number") only after a secret word, and the rules about a password.
_INNOCENT_KEYS = [
    "passport",
    "passport_number",
    "compass",
    "bypass_cache",
    "pass_through",
    "passenger",
    "tokenizer",
    "token_count",
    "token_type",
    "max_tokens",
    "input_tokens",
    "valid_tokens",
    "tokens_used",
    "keyboard",
    "upwork_id",
    "pwm_duty",
    "password_policy",
    "password_min_length",
    "password_strength",
    "secret_name",
    "ssh_key_fingerprint",
    "country_code",
    "status_code",
    "zip_code",
    "phone_number",
    "order_number",
    "value",
    "code",
    "session_count",
    "access_key_id",
]


class TestKeyFamilies:
    @pytest.mark.parametrize("key", _GAP_KEYS)
    def test_gap_keys_are_secret(self, redactor: Redactor, key: str) -> None:
        """Every key family the issue listed hides its value, at any depth."""
        value = _rand(_ALNUM, 16)

        out = redactor.redact({key: value, "nested": [{key: value}]})

        assert out == {key: REDACTED, "nested": [{key: REDACTED}]}

    @pytest.mark.parametrize("key", _INNOCENT_KEYS)
    def test_innocent_look_alikes_are_kept(self, redactor: Redactor, key: str) -> None:
        """Keys that only look like the families stay readable, as the same object."""
        event = {key: "plain words", "nested": {key: 7}}

        assert not redactor.is_secret_key(key)
        assert redactor.redact(event) is event

    @pytest.mark.parametrize("key", ["db_pass", "otp_code", "token_v2", "ssh_key"])
    def test_gap_keys_in_free_text_and_queries(self, redactor: Redactor, key: str) -> None:
        """The same rules hold for key=value in text and for query parameters."""
        value = _rand(_ALNUM, 16)

        assert redactor.redact_string(f"retry {key}={value} later") == (
            f"retry {key}={REDACTED} later"
        )
        assert redactor.redact_query(f"a=1&{key}={value}") == f"a=1&{key}={REDACTED}"

    def test_password_rules_keys_keep_their_values(self, redactor: Redactor) -> None:
        """password_policy names the rules; password_hash and password_v2 stay hidden."""
        out = redactor.redact(
            {"password_policy": "min 12 chars", "password_hash": "h", "password_v2": "p"}
        )

        assert out == {
            "password_policy": "min 12 chars",
            "password_hash": REDACTED,
            "password_v2": REDACTED,
        }


# ------------------------------------------------ encoded and markup secrets


def _iban(country: str, bban: str) -> str:
    """Return a valid IBAN (ISO 13616 check digits) for *country* and *bban*."""
    number = "".join(str(int(char, 36)) for char in bban + country + "00")
    return f"{country}{98 - int(number) % 97:02d}{bban}"


def _iban_passes(candidate: str) -> bool:
    """The mod-97 check, computed independently of the library."""
    moved = candidate[4:] + candidate[:4]
    digits = "".join(str(ord(c) - 55) if c.isalpha() else c for c in moved)
    return int(digits) % 97 == 1


class TestEncodedSecrets:
    def test_percent_encoded_key_value(self, redactor: Redactor) -> None:
        """password%3D... in free text is decoded, hidden, and nothing of it is left."""
        value = _rand(_ALNUM, 18)

        out = redactor.redact_string(f"body was password%3D{value}%26user%3Dbob end")

        assert value not in out
        assert out == "body was password=[REDACTED]%26user=bob end"

    @pytest.mark.parametrize("rounds", [1, 2, 3])
    def test_encoded_redirect_uri_carrying_a_token(self, redactor: Redactor, rounds: int) -> None:
        """A redirect_uri encoded once, twice or three times hides its access_token."""
        token = _rand(_ALNUM, 24)
        inner = f"https://app.example/cb?access_token={token}&state=1"
        for _ in range(rounds):
            inner = quote(inner, safe="")

        text = f"GET /login?redirect_uri={inner}&x=2"

        for out in (
            redactor.redact_string(text),
            redactor.redact_url(text.split()[1]),
            redactor.redact_query(f"redirect_uri={inner}&x=2"),
            redactor.redact({"note": text})["note"],
        ):
            assert token not in out
            assert token[:8] not in unquote(unquote(unquote(out)))
            assert "[REDACTED]" in out

    def test_double_encoded_secret_parameter_name(self, redactor: Redactor) -> None:
        """A parameter name encoded twice (access%255Ftoken) is still a secret key."""
        token = _rand(_ALNUM, 20)

        out = redactor.redact_query(f"page=2&access%255Ftoken={token}")

        assert out == f"page=2&access%255Ftoken={REDACTED}"

    @pytest.mark.parametrize(
        "text",
        ["discount 50% today", "progress 100%25 done", "path /a%20b/c%2Fd", "q=caf%C3%A9&page=2"],
    )
    def test_encoded_text_without_secrets_is_kept(self, redactor: Redactor, text: str) -> None:
        """Percent signs and harmless escapes come back as the very same object."""
        assert redactor.redact_string(text) is text


class TestMarkupSecrets:
    @pytest.mark.parametrize(
        ("template", "expected"),
        [
            ("<Password>{v}</Password>", "<Password>[REDACTED]</Password>"),
            ("<password>{v}</password>", "<password>[REDACTED]</password>"),
            (
                '<wsse:Password Type="#PasswordText">{v}</wsse:Password>',
                '<wsse:Password Type="#PasswordText">[REDACTED]</wsse:Password>',
            ),
            ("<api_key>\n  {v}\n</api_key>", "<api_key>[REDACTED]</api_key>"),
            ("<Token><![CDATA[{v}]]></Token>", "<Token>[REDACTED]</Token>"),
            (
                "<user>bob</user><ClientSecret>{v}</ClientSecret>",
                "<user>bob</user><ClientSecret>[REDACTED]</ClientSecret>",
            ),
        ],
    )
    def test_xml_elements_with_secret_names(
        self, redactor: Redactor, template: str, expected: str
    ) -> None:
        """The text of an element named like a secret key is hidden; the tags are kept."""
        value = _rand(_ALNUM, 18)

        out = redactor.redact_string("soap " + template.format(v=value) + " end")

        assert out == "soap " + expected + " end"

    @pytest.mark.parametrize(
        "text",
        [
            "<user>bob</user><note>bold</note>",
            "<b>bold</b> and <i>italic</i>",
            "<Password/> was empty",
            "<Password></Password>",
            "a < b and c > d",
        ],
    )
    def test_other_markup_is_kept(self, redactor: Redactor, text: str) -> None:
        """Elements with other names, empty secret elements and comparisons are kept."""
        assert redactor.redact_string(text) is text

    def test_cut_cdata_value_is_hidden_to_the_cap(self, redactor: Redactor) -> None:
        """A CDATA section cut before its end is hidden, not shown half."""
        value = _rand(_ALNUM, 40)

        assert redactor.redact_string(f"<Token><![CDATA[{value}") == "<Token>[REDACTED]"

    def test_attributes_are_still_scanned(self, redactor: Redactor) -> None:
        """A tag that is not secret still has its key="value" attributes looked at."""
        value = _rand(_ALNUM, 18)

        out = redactor.redact_string(f'<login user="bob" token="{value}">x</login>')

        assert out == f'<login user="bob" token="{REDACTED}">x</login>'

    def test_pgp_private_key_block(self, redactor: Redactor) -> None:
        """An OpenPGP armored private key is hidden whole, like a PEM block."""
        kind = "PGP " + "PRIVATE KEY BLOCK"
        body = "\n".join(_rand(_ALNUM + "+/", 64) for _ in range(4))
        block = f"-----BEGIN {kind}-----\nVersion: x\n\n{body}\n=abcd\n-----END {kind}-----"

        out = redactor.redact_string(f"key:\n{block}\nend")

        assert out == "key:\n[REDACTED:private_key]\nend"

    def test_cut_pgp_private_key_block(self, redactor: Redactor) -> None:
        """A PGP block cut before its END line is hidden to the end."""
        kind = "PGP " + "PRIVATE KEY BLOCK"
        body = _rand(_ALNUM, 64)

        out = redactor.redact_string(f"-----BEGIN {kind}-----\n\n{body}")

        assert body not in out
        assert out == "[REDACTED:private_key]"


class TestIBAN:
    @pytest.mark.parametrize(
        ("country", "bban"),
        [
            ("DE", "370400440532013000"),
            ("GB", "NWBK60161331926819"),
            ("FR", "20041010050500013M02606"),
            ("NL", "ABNA0417164300"),
            ("NO", "86011117947"),
            ("SA", "8000000608010167519"),
            ("MT", "MALT011000012345MTLCAST001S"),
        ],
    )
    @pytest.mark.parametrize("spaced", [False, True])
    def test_ibans_in_free_text(
        self, redactor: Redactor, country: str, bban: str, spaced: bool
    ) -> None:
        """A valid IBAN is hidden, written whole or in groups of four."""
        iban = _iban(country, bban)
        shown = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4)) if spaced else iban

        out = redactor.redact_string(f"refund to {shown}, ref 42")

        assert out == "refund to [REDACTED:iban], ref 42"

    def test_iban_in_non_ascii_text(self, redactor: Redactor) -> None:
        """Text with non-ASCII letters takes the other gate and hides the IBAN too."""
        iban = _iban("FR", "20041010050500013M02606")

        assert redactor.redact_string(f"virement \u00e0 {iban} re\u00e7u") == (
            "virement \u00e0 [REDACTED:iban] re\u00e7u"
        )

    def test_iban_followed_by_a_group_of_four(self, redactor: Redactor) -> None:
        """A reference after a spaced IBAN is not taken into it, nor does it hide it."""
        iban = _iban("GB", "NWBK60161331926819")
        shown = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))

        assert redactor.redact_string(f"{shown} REF1") == "[REDACTED:iban] REF1"

    def test_failing_check_digits_are_kept(self, redactor: Redactor) -> None:
        """Change one character of a valid IBAN and it is ordinary text again."""
        iban = _iban("DE", "370400440532013000")
        broken = iban[:10] + str((int(iban[10]) + 1) % 10) + iban[11:]

        assert redactor.redact_string(f"ref {broken}") == f"ref {broken}"

    def test_random_upper_case_strings_are_kept(self, redactor: Redactor) -> None:
        """IBAN-shaped random strings are hidden only when they pass mod-97 (about 1 in 97)."""
        alphabet = string.ascii_uppercase + string.digits
        hidden = kept = 0
        for _ in range(400):
            candidate = (
                _RNG.choice(["DE", "GB", "FR", "ZZ", "QQ"])
                + _rand(string.digits, 2)
                + _rand(alphabet, _RNG.randint(11, 30))
            )
            out = redactor.redact_string(f"id {candidate} end")
            valid = candidate[:2] not in {"ZZ", "QQ"} and _iban_passes(candidate)
            assert (out == "id [REDACTED:iban] end") is valid, candidate
            hidden += valid
            kept += not valid
        assert kept > 350

    @pytest.mark.parametrize(
        "text",
        ["ORDER AB12CDEF3456GHIJ", "sku DE89-3704", "de89370400440532013000 lower case"],
    )
    def test_look_alikes_are_kept(self, redactor: Redactor, text: str) -> None:
        """Ids, short codes and lower-case runs are not IBANs."""
        assert redactor.redact_string(text) == text


# ------------------------------------------- values orjson writes by itself


class _Secrets(enum.Enum):
    LOGIN = "password=" + "hunter2-" + "x" * 8
    PLAIN = "checkout"
    NESTED = {"api_key": "k" * 12, "n": 1}  # noqa: RUF012 - an enum value, not a class attribute


class _Colour(str, enum.Enum):
    BEARER = "Bearer " + "a1" * 10


class TestNativeValues:
    def test_enum_member_is_its_redacted_value(self, redactor: Redactor) -> None:
        """A member is written as its value (by orjson), so its value is what is redacted."""
        out = redactor.redact({"a": _Secrets.LOGIN, "b": _Secrets.NESTED, "c": _Colour.BEARER})

        assert out == {
            "a": "password=[REDACTED]",
            "b": {"api_key": REDACTED, "n": 1},
            "c": "Bearer [REDACTED:bearer]",
        }
        assert "hunter2" not in orjson.dumps(out).decode()

    def test_clean_enum_member_is_kept(self, redactor: Redactor) -> None:
        """A member whose value hides nothing is the member itself."""
        event = {"step": _Secrets.PLAIN, "colour": _Colour.BEARER.__class__}

        assert redactor.redact(event) is event

    @pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
    def test_bytes_like_values(self, redactor: Redactor, kind: Callable[[bytes], Any]) -> None:
        """bytes, bytearray and memoryview are scanned and keep their type."""
        token = _rand(_ALNUM, 20)

        out = redactor.redact({"raw": kind(f"Authorization: Bearer {token}".encode())})

        assert type(out["raw"]) is kind
        assert bytes(out["raw"]) == b"Authorization: [REDACTED]"

    def test_clean_memoryview_is_kept(self, redactor: Redactor) -> None:
        """A memoryview with nothing to hide is the same object."""
        view = memoryview(b"plain words only")

        assert redactor.redact({"v": view})["v"] is view

    @pytest.mark.parametrize(
        "template",
        ["redis://app:{v}@cache:6379/0", "password={v} next", "say password: {v}"],
    )
    def test_bytes_are_read_as_utf8(self, redactor: Redactor, template: str) -> None:
        """Non-ASCII UTF-8 inside a secret does not stop the scan (as Latin-1 did)."""
        # "\u00e0" is C3 A0 in UTF-8, and A0 read as Latin-1 is a no-break space.
        secret = _rand(_ALNUM, 6) + "\u00e0" + _rand(_ALNUM, 6)
        data = template.format(v=secret).encode()

        out = bytes(redactor.redact({"raw": data})["raw"]).decode("utf-8", "replace")

        assert secret[:6] not in out
        assert secret[-6:] not in out

    def test_huge_bytes_are_bounded(self) -> None:
        """A long bytes value is decoded only as far as max_string needs, then cut and marked."""
        data = b"word " * 200_000

        out = Redactor(max_string=1000).redact({"raw": data})["raw"]

        assert len(out) < 1100
        assert out.endswith(b" chars]")


class TestSecretsInKeys:
    def test_token_used_as_a_key(self, redactor: Redactor) -> None:
        """A key that is itself a secret is written as its redacted text, in its place."""
        token = "gh" + "p_" + _rand(_ALNUM, 36)

        out = redactor.redact({"a": 1, token: "user-1", "z": 2})

        assert list(out) == ["a", "[REDACTED:github_token]", "z"]
        assert out["[REDACTED:github_token]"] == "user-1"

    def test_value_under_a_renamed_key_is_still_redacted(self, redactor: Redactor) -> None:
        """The value under a key that held a secret is walked, or hidden if the key is secret."""
        bearer = "Bearer " + _rand(_ALNUM, 20)
        out = redactor.redact(
            {bearer: "Bearer " + _rand(_ALNUM, 20), "password=" + _rand(_ALNUM, 12): "plain"}
        )

        assert out == {
            "Bearer [REDACTED:bearer]": "Bearer [REDACTED:bearer]",
            "password=[REDACTED]": REDACTED,
        }

    def test_renamed_keys_stay_unique(self, redactor: Redactor) -> None:
        """Two secrets as keys, and a key that already reads like the marker, all survive."""
        first, second = _jwt(), _jwt()

        out = redactor.redact({first: 1, "[REDACTED:jwt]": 2, second: 3})

        assert out == {"[REDACTED:jwt]<str>": 1, "[REDACTED:jwt]": 2, "[REDACTED:jwt]<str><str>": 3}

    def test_tuple_and_bytes_keys(self, redactor: Redactor) -> None:
        """Tuple keys are judged as the text they render as, bytes keys as UTF-8."""
        token = _rand(_ALNUM, 20)

        out = redactor.redact(
            {("user", "Bearer " + token): 1, f"Bearer {token}".encode(): 2, ("a", 1): 3}
        )

        assert out == {
            "('user', 'Bearer [REDACTED:bearer]')": 1,
            "Bearer [REDACTED:bearer]": 2,
            ("a", 1): 3,
        }

    def test_keys_in_json_strings_and_other_mappings(self, redactor: Redactor) -> None:
        """The rule holds in JSON held in strings and in non-dict mappings."""
        token = "sk" + "_live_" + _rand(_ALNUM, 24)

        body = redactor.redact_string(json.dumps({"by_key": {token: 1}}))
        mapping = redactor.redact(MappingProxyType({token: 1, "n": 2}))

        assert json.loads(body) == {"by_key": {"[REDACTED:stripe_key]": 1}}
        assert mapping == {"[REDACTED:stripe_key]": 1, "n": 2}

    def test_clean_keys_cost_nothing(self, redactor: Redactor) -> None:
        """Keys with separators, digits and capitals that hide nothing keep the event as is."""
        event = {"user_id": 1, "Content-Type": "json", "http.route": "/x", "2024-05-09": 3}

        assert redactor.redact(event) is event
