"""One redaction policy for every sink: log events, Sentry events and span attributes.

The same `Redactor` runs in the log pipeline, as Sentry's ``before_send`` and on
span attributes (query strings, headers, ``@instrument`` attributes), so a
secret that is hidden in one place is hidden everywhere (docs/reference.md, Redaction).

It hides two kinds of things:

* **Values under secret keys**, at any depth of mappings, lists, tuples, sets,
  dataclasses and JSON documents held in strings.
  Keys are compared case- and separator-insensitively: ``Password``,
  ``user-password``, ``API_KEY``, ``x-api-key``, ``accessToken``, ``access.token``
  and ``HTTP_AUTHORIZATION`` are all secret keys, and so are ``db_pass``,
  ``token_v2`` and ``otp_code`` (keys are read as words too), while
  ``token_count``, ``max_tokens``, ``author``, ``authority``, ``passenger`` and
  ``compass`` are not. The rules are listed (and commented) in ``_SECRET_KEYS``,
  ``_SECRET_SUFFIXES``, ``_SECRET_PREFIXES`` and the word rules below;
  ``extra_keys`` adds your own.
* **Values that look like secrets**, anywhere inside any string, also when
  percent-encoded: JWTs, ``Bearer``/``Basic`` credentials, the password in
  ``scheme://user:pass@host``, payment card numbers that pass the Luhn check,
  IBANs that pass the mod-97 check, well-known API key formats (AWS, Stripe,
  GitHub, GitLab, Slack, Google, OpenAI, SendGrid, Twilio, npm, PyPI), PEM and
  PGP private key blocks, ``key=value`` and ``"key": "value"`` pairs and XML
  elements whose key is secret, and (opt-in) e-mail addresses. A mapping key
  that holds such a value is written as its redacted text.

A hidden value becomes ``"[REDACTED]"``; a pattern hit says what it was, as in
``"[REDACTED:jwt]"``. The marker never contains any part of the secret.

Guarantees:

* **Copy-on-write.** The caller's objects are never mutated; a value with
  nothing to hide is returned as the very same object, so the common case
  allocates nothing.
* **Never raises.** A hostile object (its ``__iter__``, ``__hash__`` or
  ``__eq__`` raises), a non-str key, bytes, lone surrogates: the worst outcome is
  that the unreadable part is replaced by ``"[REDACTED:error]"`` (it fails
  closed) and one rate-limited warning is logged.
* **Bounded cost.** Containers nested deeper than ``max_depth`` become
  ``"[TRUNCATED:depth]"``, a container is cut after ``max_items`` entries, a
  cycle becomes ``"[CYCLE]"``, a string longer than ``max_string`` is cut (and
  marked) before it is scanned, and one call visits at most ``_ITEM_BUDGET``
  container entries and scans at most ``_CHAR_BUDGET`` characters.
  Every pattern scan is linear in the length of the string.

Typical use::

    from kaleem_telemetry.redaction import get_redactor, redact

    redact({"user": "bob", "password": "hunter2", "note": "Bearer abc.def.ghi"})
    # {'user': 'bob', 'password': '[REDACTED]', 'note': 'Bearer [REDACTED:bearer]'}
    get_redactor().redact_url("https://bob:hunter2@example.com/cb?code=42&access_token=xyz")
    # 'https://bob:[REDACTED]@example.com/cb?code=42&access_token=[REDACTED]'

`setup_telemetry()` installs the process-wide redactor (with
``KALEEM_TELEMETRY_REDACT_KEYS`` and ``KALEEM_TELEMETRY_REDACT_EMAILS``) through
`set_redactor()`; until then `get_redactor()` returns the default policy.

Added in 0.1.0.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import itertools
import json
import re
import string
from collections.abc import Callable, Container, Iterable, Mapping
from typing import Any, cast
from urllib.parse import quote, unquote, unquote_plus

from kaleem_telemetry._guard import report_internal_error
from kaleem_telemetry.exceptions import TelemetryConfigError

__all__ = ["Redactor", "get_redactor", "redact", "set_redactor"]

#: What a hidden value is replaced with (a pattern hit appends its kind: ``[REDACTED:jwt]``).
REDACTED = "[REDACTED]"

_CYCLE = "[CYCLE]"
_TRUNCATED_DEPTH = "[TRUNCATED:depth]"
_TRUNCATED_BUDGET = "[TRUNCATED:budget]"
_UNREADABLE = "[REDACTED:error]"

_DEFAULT_MAX_DEPTH = 16
_DEFAULT_MAX_ITEMS = 1000
_DEFAULT_MAX_STRING = 64 * 1024

# Whole-call budgets, so that max_items ** max_depth can never be reached: past
# them, containers and strings are replaced by _TRUNCATED_BUDGET (failing closed).
_ITEM_BUDGET = 100_000
_CHAR_BUDGET = 8 * 1024 * 1024

# Key normalisation cache size: keys are a small, repetitive vocabulary in practice.
_KEY_CACHE_SIZE = 4096
# Longer keys are judged on every sight rather than held by the cache.
_KEY_CACHE_MAX_CHARS = 1024

# --------------------------------------------------------------------------- keys
#
# A key is normalised by lower-casing it and deleting "-", "_", "." and spaces, so
# "X-Api-Key", "x_api_key", "xApiKey" and "HTTP_X_API_KEY" compare alike. It is a
# secret key when its normalised form is in _SECRET_KEYS, ends with one of
# _SECRET_SUFFIXES or starts with one of _SECRET_PREFIXES. Short, ambiguous words
# ("pass", "pan", "cc", "auth", "session") are exact-only, which is what keeps
# "passenger", "compass", "company", "author" and "authority" readable. "token" is a
# suffix but not a prefix and "tokens" is not a suffix, so "token_count",
# "tokens_used" and "max_tokens" stay readable too.

_SECRET_KEYS = frozenset(
    {
        # passwords
        "pass",
        "passwd",
        "password",
        "passwords",
        "pwd",
        "pw",
        "dbpwd",
        "mysqlpwd",
        # generic secrets and credentials
        "secret",
        "secrets",
        "credential",
        "credentials",
        # authentication
        "auth",
        "basicauth",
        "httpauth",
        "proxyauth",
        "bearer",
        "jwt",
        # sessions and CSRF
        "session",
        "sid",
        "phpsessid",
        "connectsid",
        "csrf",
        "xsrf",
        # cookies
        "cookie",
        "cookies",
        # payment cards
        "cc",
        "ccnum",
        "ccnumber",
        "cardnum",
        "cardno",
        "creditcard",
        "pan",
        "cvv",
        "cvv2",
        "cvc",
        "cvc2",
        "ccv",
        # bank accounts, national ids
        "iban",
        "ssn",
        "socialsecuritynumber",
        # one-time passwords
        "otp",
        "totp",
        "hotp",
        "mfacode",
        "twofactorcode",
    }
)

_SECRET_SUFFIXES = (
    "password",  # user_password, db-password, PGPASSWORD
    "passwd",
    "passphrase",
    "secret",  # client_secret, webhook_secret, AWS_SECRET
    "token",  # access/refresh/id/api/auth/bearer/session/csrf token, X-Auth-Token
    "apikey",  # api_key, x-api-key, stripe_api_key
    "privatekey",  # private_key, ssh_private_key
    "secretkey",
    "accesskey",  # aws_secret_access_key (the access key *id* is not secret)
    "signingkey",
    "encryptionkey",
    "masterkey",
    "sessionkey",
    "authkey",
    "privkey",  # ssh_privkey, gpg-privkey
    "sshkey",  # ssh_key, deploy_ssh_key
    "subscriptionkey",  # Ocp-Apim-Subscription-Key (Azure API Management)
    "accesstokens",  # plural tokens of a credential kind (max_tokens stays readable)
    "refreshtokens",
    "authtokens",
    "apitokens",
    "bearertokens",
    "sessiontokens",
    "oauthtokens",
    "csrftokens",
    "xsrftokens",
    "authorization",  # Authorization, Proxy-Authorization, HTTP_AUTHORIZATION
    "cookie",  # Cookie, Set-Cookie, session_cookie
    "sessionid",  # sessionid, JSESSIONID
    "csrf",
    "xsrf",
    "credentials",
    "cardnumber",  # card_number, credit_card_number
    "securitycode",  # card security code
    "cvv",
    "cvc",
    "iban",
    "ssn",
    "otp",  # sms_otp, email-otp
    "jwt",
    # compounds written as one word; with separators the qualifier rule below
    # finds them too (otp_code is "otp" + "code").
    "otpcode",
    "cvvcode",
    "cvccode",
    "ibannumber",
    "passcode",
    "verificationcode",  # e-mail and SMS verification codes
    "recoverycode",  # two-factor recovery codes
    "recoverycodes",
)

_SECRET_PREFIXES = (
    "password",  # password_hash, password_confirmation
    "passwd",
    "apikey",
    "privatekey",
    "secretkey",
    "clientsecret",
    "cardnumber",
)

_KEY_SEPARATORS = str.maketrans("", "", "-_. ")

# Word rules, for what the normalised form cannot tell apart ("db_pass" from
# "compass"): a key is split into words at separators and camelCase humps
# ("smtpPass" is smtp + pass, "DBPass" is db + pass).
_WORD_SPLIT = re.compile(r"[-_. ]+|(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
# A key whose last word is one of these is secret (db_pass, smtp-pass, mysql_pw),
# which "pass" inside a word never is (compass, bypass_cache, passenger).
_SECRET_LAST_WORDS = frozenset({"pass", "pw", "pwd"})
# "tokens" is secret only after the kind of credential it holds (access_tokens,
# id_tokens), never after a count (max_tokens, input_tokens, tokens_used).
_TOKEN_KINDS = frozenset(
    {"access", "refresh", "id", "auth", "api", "bearer", "session", "oauth", "csrf", "xsrf"}
)
# Trailing words that say how a secret is written, not what it is: without them,
# the rest of the key is judged (token_v2, tokenValue, secret_value, otp_code,
# cvv_code, iban_number). "count", "id", "type", "length" are not among them, so
# token_count, access_key_id and token_type stay readable.
_QUALIFIER_WORDS = frozenset(
    {
        "value",
        "string",
        "str",
        "raw",
        "plain",
        "plaintext",
        "code",
        "number",
        "num",
        "no",
        "b64",
        "base64",
        "hex",
        "bytes",
        "encoded",
    }
)
_VERSION_WORD = re.compile(r"v?[0-9]+")
# A key that starts with "password" names the password (password_hash,
# password_confirmation), unless it ends with one of these: then it names the
# rules about it (password_policy, password_min_length), which hide nothing.
_PASSWORD_PREFIXES = ("password", "passwd")
_PASSWORD_META_SUFFIXES = (
    "policy",
    "length",
    "strength",
    "rules",
    "expiry",
    "expiresat",
    "changedat",
    "updatedat",
)

# Span attributes whose string value is a whole URL or a query string.
_URL_ATTRIBUTES = frozenset({"url.full", "http.url", "url.original", "http.target"})
_QUERY_ATTRIBUTES = frozenset({"url.query"})

# ----------------------------------------------------------------------- patterns
#
# Every branch of the combined pattern starts with a literal character *outside*
# its capturing group, which lets the regex engine skip ahead with a first-character
# set instead of trying every branch at every position (about 5x faster on plain
# text). Each branch has exactly one capturing group, so `match.lastindex` names the
# branch. Unbounded repeats either end the branch (a failing attempt stops within
# the minimum length) or sit behind a "token starts here" look-behind, which keeps
# each scan linear. Lookups that Python does better (Luhn, base64, the key before a
# "=") happen in `Redactor._scan`.

_CARD_BRANCHES = tuple(
    ("card", rf"{d}((?<![0-9A-Za-z]{d})(?:[ -]?[0-9]){{12,18}}(?![0-9A-Za-z]))")
    for d in "0123456789"
)
_KV_LOOKBEHIND = r"(?:(?<=[A-Za-z_\"' \t\]]{sep})|(?<=[A-Za-z][0-9]{sep}))"

_BRANCHES: tuple[tuple[str, str], ...] = (
    # PEM private keys (RSA, EC, OPENSSH, ENCRYPTED ...) and OpenPGP armored
    # private key blocks. A block that is cut before its END line is hidden up to
    # the cap rather than left half visible.
    (
        "private_key",
        r"-(----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
        r"(?:[\s\S]{0,16384}?-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|[\s\S]{0,16384}))",
    ),
    # An XML start tag (<Password>, <wsse:Password Type="...">); the element name
    # and the text after the tag are read in Python, and only when the name is a
    # secret key is the text consumed.
    ("xml", r"<([A-Za-z_][A-Za-z0-9_.:-]{0,63}(?:[ \t\r\n][^<>]{0,512})?>)"),
    # scheme://user:password@ (the password may contain "@"; "/" ends the authority).
    ("url_password", r":((?<=[A-Za-z0-9+.-]:)//[^\s/?#@:]{0,256}:[^\s/?#]{1,256}@)"),
    # JWT / JWS: base64url header starting with '{"' (eyJ), payload, signature.
    (
        "jwt",
        r"e((?<![A-Za-z0-9_-]e)yJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*)",
    ),
    # "Bearer <token>" and "Basic <base64>", any case; Basic is checked in Python.
    ("auth", r"B((?<![A-Za-z0-9]B)(?i:earer|asic)[ \t]+[A-Za-z0-9._~+/=-]{6,})"),
    ("auth", r"b((?<![A-Za-z0-9]b)(?i:earer|asic)[ \t]+[A-Za-z0-9._~+/=-]{6,})"),
    # AWS access key ids (long-term AKIA, temporary ASIA).
    ("aws_access_key", r"A((?:KIA|SIA)[A-Z0-9]{16})"),
    # Google API keys.
    ("google_api_key", r"A(Iza[0-9A-Za-z_-]{35})"),
    # Stripe secret, restricted and publishable keys, webhook signing secrets.
    ("stripe_key", r"s(k_(?:live|test)_[0-9A-Za-z]{10,})"),
    ("stripe_key", r"r(k_(?:live|test)_[0-9A-Za-z]{10,})"),
    ("stripe_key", r"p(k_(?:live|test)_[0-9A-Za-z]{10,})"),
    ("stripe_key", r"w(hsec_[0-9A-Za-z]{20,})"),
    # GitHub personal/OAuth/user/server/refresh tokens and fine-grained PATs.
    ("github_token", r"g(h[pousr]_[0-9A-Za-z]{20,})"),
    ("github_token", r"g(ithub_pat_[0-9A-Za-z_]{20,})"),
    # GitLab personal access tokens.
    ("gitlab_token", r"g(lpat-[0-9A-Za-z_-]{20,})"),
    # Slack bot/user/app/refresh tokens.
    ("slack_token", r"x(ox[abprse]-[0-9A-Za-z-]{10,})"),
    # OpenAI (and Anthropic "sk-ant-") keys; the look-behind spares "risk-assessment-...".
    ("openai_key", r"s((?<![A-Za-z0-9_-]s)k-[0-9A-Za-z_-]{20,})"),
    # SendGrid API keys.
    ("sendgrid_key", r"S((?<![A-Za-z0-9_-]S)G\.[0-9A-Za-z_-]{16,}\.[0-9A-Za-z_-]{16,})"),
    # Twilio API key SIDs (SK + 32 hex).
    ("twilio_key", r"S((?<![A-Za-z0-9]S)K[0-9a-fA-F]{32}(?![0-9A-Za-z]))"),
    # npm access tokens.
    ("npm_token", r"n(pm_[0-9A-Za-z]{36})"),
    # PyPI API tokens (a macaroon whose first bytes always encode "pypi.org").
    ("pypi_token", r"p(ypi-AgEIcHlwaS5vcmc[0-9A-Za-z_-]{50,})"),
    # 13-19 digits, optionally grouped by single spaces or dashes; Luhn checked in Python.
    *_CARD_BRANCHES,
)

# E-mail addresses (opt-in): the branch anchors on "@"; the local part is found
# by looking back in Python, which keeps the scan linear.
_EMAIL_BRANCH = (
    "email",
    r"@([A-Za-z0-9][A-Za-z0-9-]{0,62}(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}(?![A-Za-z0-9-]))",
)

# "key=value" and "key: value" separators, looked at only when the character before
# them can end a key; the key and the value are parsed in Python, and only when the
# key is secret is the value consumed.
_KV_BRANCHES = (
    ("kv", "=(" + _KV_LOOKBEHIND.format(sep="=") + ")"),
    ("kv", ":(?!//)(" + _KV_LOOKBEHIND.format(sep=":") + ")"),
)

# The key before a separator, matched on the *reversed* text before it.
_KEY_BEHIND = re.compile(r"[ \t]*(?:[\"'](?:\\{1,2})?|\])?([A-Za-z0-9_.-]{1,64})")
# The value after the separator of a secret key.
_KV_VALUE = re.compile(
    r"""[ \t]*(?:
        "(?:[^"\\\n]|\\.){0,4096}"                      # a JSON string
      | \\"[^"\n]{0,4096}?\\"                           # an escaped JSON string in a string
      | '[^'\n]{0,4096}'                                # a quoted string
      | (?P<prefix>\\?["']?(?:(?i:bearer|basic|digest|token|negotiate|apikey)[ \t]+)?)
        [^\s&,;"'<>]{1,4096}                            # a bare word, maybe "Bearer <token>"
    )""",
    re.VERBOSE,
)
# The element name of an XML start tag (without "<" and ">"), and the element's text.
_XML_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]*")
# A CDATA section cut before its "]]>" is hidden up to the cap, like a PEM block.
_XML_VALUE = re.compile(r"<!\[CDATA\[(?:[\s\S]{0,4096}?\]\]>|[\s\S]{0,4096})|[^<]{1,4096}")
# A run of text holding a %XX escape, delimited by whitespace or quotes. The
# look-behind makes a run start only at its first character, which keeps the
# search linear; the lazy repeat stops at the run's first escape.
_ENCODED_RUN = re.compile(r"(?<![^\s\"'<>])[^\s\"'<>]*?%[0-9A-Fa-f]{2}[^\s\"'<>]*")
#: How many times a run is percent-decoded (``%25`` nests once per round).
_MAX_DECODE_ROUNDS = 3
#: What `quote` keeps of a redacted, decoded run: the markers and URL
#: punctuation that does not split a query value.
_ENCODED_SAFE = "[]:/@!$'()*+,;="
# The value of a header-style "Cookie: ..." or "Authorization: ..." runs to the end of the line.
_KV_LINE_VALUE = re.compile(r"[ \t]*[^\r\n]{1,4096}")
_LINE_KEYS = ("cookie", "authorization")
# The local part of an e-mail address, matched on the reversed text before "@".
_EMAIL_LOCAL_BEHIND = re.compile(r"[A-Za-z0-9._%+-]{1,64}")
# A trailing run of non-space characters (reversed), dropped when a long string is cut.
_PARTIAL_TOKEN = re.compile(r"\S{0,1024}")
_DIGIT_GROUP = re.compile(r"[0-9]+")
#: Where a run of card digit groups continues: a separator, then a digit.
_GROUP_SEPARATOR = re.compile(r"[ -](?=[0-9])")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def _compile(branches: Iterable[tuple[str, str]]) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """Compile branches into one pattern and the kind of each capturing group.

    Branches that start with the same literal are folded under it (``s(?:k_...|k-...)``),
    so that at a candidate position the engine tests each first character once.
    Branches with different first characters cannot match at the same position,
    and the order among branches sharing one is kept, so priority is unchanged.
    """
    folded: dict[str, list[tuple[str, str]]] = {}
    for kind, source in branches:
        folded.setdefault(source[0], []).append((kind, source[1:]))
    parts, kinds = [], [""]
    for first, rests in folded.items():
        alternatives = "|".join(rest for _, rest in rests)
        parts.append(re.escape(first) + (f"(?:{alternatives})" if len(rests) > 1 else alternatives))
        kinds.extend(kind for kind, _ in rests)
    return re.compile("|".join(parts)), tuple(kinds)


_PATTERN, _KINDS = _compile((*_BRANCHES, *_KV_BRANCHES))
_PATTERN_EMAIL, _KINDS_EMAIL = _compile((*_BRANCHES, _EMAIL_BRANCH, *_KV_BRANCHES))

# A cheap proof that a string holds no pattern hit, tried before the combined
# pattern, whose search costs about 60 ns at every candidate character (every
# digit, "e", "b", "s"...) and so over 1 us on a hex request id. Every branch
# above needs one of these characters: "-" (private_key, gitlab, slack, openai,
# pypi), ":" (url_password, kv), "=" (kv), "@" (email), "_" (stripe, github,
# npm), a space or tab (auth), "A" (aws, google), "J" (jwt "eyJ"), "S" (sendgrid,
# twilio), "<" (xml). The card branch needs none of them, but without " " or "-"
# its 13 to 19 digits are one unbroken run; an IBAN (`_IBAN`) without spaces is
# a run of 15 or more upper-case letters and digits: `_LONG_RUN` finds either
# with one search as cheap as the digits alone (a hex id's lower-case letters
# break it, as they do a digit run). "%" sends
# percent-encoded text to the scan, which decodes it (`Redactor._scan_encoded`).
# A new branch must keep this true: the property test `TestScanPrecheck` checks
# the combined patterns against it.
_SCAN_TRIGGERS = frozenset("-:=@_ \tAJS<%")
_LONG_RUN = re.compile(r"[0-9A-Z]{13}")
_LONG_RUN_MIN = 13
# On a string of 13 characters or more, both searches cost about 60 ns a
# character (a 32-digit hex request id: 9,000 instructions). An ASCII one is
# proved clean in three C passes instead (a third of that): `bytes.translate`
# deletes the triggers (so a shorter result means one was there) and writes
# every upper-case letter and digit as "0", every other byte as "."; a long run
# is then 13 zeros in a row, which `bytes.find` looks for.
_RUN_CLASSES = bytes(
    ord("0") if chr(byte) in string.ascii_uppercase + string.digits else ord(".")
    for byte in range(256)
)
_TRIGGER_BYTES = "".join(sorted(_SCAN_TRIGGERS)).encode("ascii")
_RUN_BYTES = b"0" * _LONG_RUN_MIN
# IBANs (ISO 13616): country, check digits, 11 to 30 more upper-case letters and
# digits, unbroken or in groups of four, standing apart from other letters and
# digits; the country and the mod-97 check are verified in Python. Not a branch
# of the combined pattern, where every digit (or letter) would become a candidate
# position and every scan about a fifth slower: searched on its own, after it,
# and only in a string with an upper-case letter (``s.lower() != s`` says so
# several times faster than `str.islower` or a search) followed by another and
# two digits (`_IBAN_CLASSES` turns an ASCII string into its character classes,
# two C calls, where a regex search costs about 10 ns a character).
_IBAN = re.compile(
    r"[A-Z](?<![0-9A-Za-z][A-Z])[A-Z][0-9]{2}"
    r"(?:[0-9A-Z]{11,30}|(?: [0-9A-Z]{4}){2,7}(?: [0-9A-Z]{1,3})?)(?![0-9A-Za-z])"
)
_IBAN_SEARCH = _IBAN.search
_IBAN_CLASSES = bytes.maketrans(
    (string.ascii_uppercase + string.digits).encode(), b"A" * 26 + b"0" * 10
)
_IBAN_MIN = 15


def _cannot_match(s: str) -> bool:
    """Return True when no branch of the combined patterns can match in *s*."""
    # Exact str only: a subclass could lie through __iter__ or __len__, which
    # the regex engine never calls.
    if type(s) is not str:
        return False
    if len(s) < _LONG_RUN_MIN:
        return _SCAN_TRIGGERS.isdisjoint(s)
    return _long_cannot_match(s)


def _long_cannot_match(s: str) -> bool:
    """`_cannot_match` for an exact ``str`` of `_LONG_RUN_MIN` characters or more."""
    if s.isascii():
        classes = s.encode("ascii").translate(_RUN_CLASSES, _TRIGGER_BYTES)
        return len(classes) == len(s) and classes.find(_RUN_BYTES) < 0
    return _SCAN_TRIGGERS.isdisjoint(s) and _LONG_RUN.search(s) is None


#: The shortest string a pattern can hit ("pwd=x"); shorter ones are never scanned.
_SHORTEST_HIT = 5
#: First characters of a string the walk parses as JSON.
_JSON_OPENERS = ("{", "[")
#: First characters that prove a string is no JSON document (see `_redact_str`):
#: printable ASCII except the openers. Anything else is left to `_redact_str`.
_PLAIN_FIRST = frozenset(map(chr, range(0x21, 0x7F))) - frozenset(_JSON_OPENERS)

# Values that can never hold a secret worth hiding and are returned unchanged.
_ATOMIC: frozenset[type] = frozenset({int, float, bool, type(None), complex})


# The per-call limits on work, one list per call: ``[items, chars, path]``, the
# container entries and the characters still allowed, and the ids of the
# containers being walked (the path from the root, at most ``max_depth`` long,
# so a list is cheaper than a set). A list because it is built on every call,
# and building one costs a fraction of a class instance's ``__init__``.
_Budget = list[Any]
_ITEMS = 0
_CHARS = 1
_PATH = 2


def _budget() -> _Budget:
    """Return a fresh budget with an empty path."""
    return [_ITEM_BUDGET, _CHAR_BUDGET, []]


_ContainerWalk = Callable[[Any, int, _Budget], Any]


class Redactor:
    """Hide secrets in any value before it leaves the process.

    One instance is one policy; it is immutable and safe to share between
    threads. The process-wide instance is reached through `get_redactor()`.

    Args:
        extra_keys: More secret key names, compared like the built-in ones
            (case- and separator-insensitive, exact match). A leading or trailing
            ``*`` turns a name into a suffix or prefix rule (``"*pin"`` hides
            ``card_pin`` and ``PIN``; ``"merchant_secret*"`` hides
            ``merchant_secret_v2``). A single string is read as a comma-separated
            list, like ``KALEEM_TELEMETRY_REDACT_KEYS``.
        mask_emails: Also replace e-mail addresses in strings with
            ``[REDACTED:email]`` (off by default: addresses are often what you
            need to debug, and they are personal data rather than credentials).
        max_depth: Containers nested deeper than this become ``[TRUNCATED:depth]``.
        max_items: A container keeps its first ``max_items`` entries; the rest is
            summarised by a ``[TRUNCATED:N items]`` marker.
        max_string: A string (or bytes) value longer than this is cut, without
            leaving half a token at the cut, and ends with ``[TRUNCATED:N chars]``.

    Raises:
        TelemetryConfigError: A limit is not a positive integer.

    Example:
        >>> r = Redactor(extra_keys=["merchant_pin"])
        >>> r.redact({"merchant-PIN": 1234, "max_tokens": 10})
        {'merchant-PIN': '[REDACTED]', 'max_tokens': 10}
    """

    __slots__ = (
        "_exact",
        "_extra_keys",
        "_extra_prefixes",
        "_infixes",
        "_key_cache",
        "_kinds",
        "_mask_emails",
        "_max_depth",
        "_max_items",
        "_max_string",
        "_pattern",
        "_suffixes",
    )

    def __init__(
        self,
        *,
        extra_keys: Iterable[str] = (),
        mask_emails: bool = False,
        max_depth: int = _DEFAULT_MAX_DEPTH,
        max_items: int = _DEFAULT_MAX_ITEMS,
        max_string: int = _DEFAULT_MAX_STRING,
    ) -> None:
        for name, limit in (
            ("max_depth", max_depth),
            ("max_items", max_items),
            ("max_string", max_string),
        ):
            if type(limit) is not int or limit < 1:
                msg = f"Redactor {name} must be a positive integer, got {limit!r}."
                raise TelemetryConfigError(msg)
        if isinstance(extra_keys, str):
            extra_keys = extra_keys.split(",")
        extras = tuple(k.strip() for k in extra_keys if isinstance(k, str) and k.strip())
        exact, suffixes, prefixes, infixes = set(_SECRET_KEYS), [], [], []
        for raw in extras:
            norm = _normalise(raw.strip("*"))
            if not norm:
                continue
            if raw.startswith("*") and raw.endswith("*"):
                infixes.append(norm)
            elif raw.startswith("*"):
                suffixes.append(norm)
            elif raw.endswith("*"):
                prefixes.append(norm)
            else:
                exact.add(norm)
        self._extra_keys = extras
        self._exact = frozenset(exact)
        self._suffixes = _SECRET_SUFFIXES + tuple(suffixes)
        self._extra_prefixes = tuple(prefixes)
        self._infixes = tuple(infixes)
        self._mask_emails = bool(mask_emails)
        self._max_depth = max_depth
        self._max_items = max_items
        self._max_string = max_string
        self._pattern, self._kinds = (
            (_PATTERN_EMAIL, _KINDS_EMAIL) if self._mask_emails else (_PATTERN, _KINDS)
        )
        self._key_cache: dict[str, bool | str] = {}

    def __repr__(self) -> str:
        return (
            f"Redactor(extra_keys={self._extra_keys!r}, mask_emails={self._mask_emails!r}, "
            f"max_depth={self._max_depth!r}, max_items={self._max_items!r}, "
            f"max_string={self._max_string!r})"
        )

    @property
    def extra_keys(self) -> tuple[str, ...]:
        """The extra secret key names this redactor was built with, as given."""
        return self._extra_keys

    @property
    def mask_emails(self) -> bool:
        """Whether e-mail addresses are masked."""
        return self._mask_emails

    @property
    def max_depth(self) -> int:
        """The deepest container nesting that is kept."""
        return self._max_depth

    @property
    def max_items(self) -> int:
        """The most entries kept per container."""
        return self._max_items

    @property
    def max_string(self) -> int:
        """The longest string (in characters) kept whole."""
        return self._max_string

    # ------------------------------------------------------------------ public API

    def redact(self, value: Any) -> Any:
        """Return *value* with every secret hidden, without touching *value* itself.

        Mappings (``dict`` and its subclasses become a plain ``dict`` when
        something changes), lists, tuples (named tuples keep their type), sets,
        frozensets and dataclass instances (which become a ``dict`` when
        something changes) are walked; strings are scanned for patterns and, when
        they hold a JSON object or array, parsed, redacted and re-serialised;
        ``bytes``, ``bytearray`` and ``memoryview`` are scanned as UTF-8 text and
        an ``Enum`` member as its value (which is what orjson writes). Other
        objects are returned as they are: this function never calls ``repr()``
        or ``str()`` on them.

        Under a secret key the whole value is replaced, whatever its type, except
        ``None``, booleans and empty strings, which hide nothing and keep their
        debugging value (``"password": None`` says that none was given).

        Args:
            value: Anything: a structlog event dict, a Sentry event, a string.

        Returns:
            The same object when nothing had to be hidden, else a redacted copy.
            Never raises.
        """
        try:
            if type(value) is dict:
                # The shape of nearly every log event: straight into the dict
                # walk, entered as `_enter` would at depth 0 (where no limit
                # can apply yet), to save two calls on the hot path.
                return self._walk_dict(value, 1, None)
            return self._walk(value, 0, _budget())
        except Exception:  # noqa: BLE001 - fail closed; see _fail_closed().
            return _fail_closed()

    def redact_string(self, s: str) -> str:
        """Return *s* with every secret pattern and secret ``key=value`` hidden.

        A string that holds a JSON object or array is parsed, redacted by key and
        by pattern, and re-serialised only when something changed. A string longer
        than ``max_string`` is cut first and marked.

        Args:
            s: Any text: a log message, an exception message, a header value.

        Returns:
            *s* itself when there was nothing to hide. Never raises.

        Example:
            >>> Redactor().redact_string("retry with password=hunter2 later")
            'retry with password=[REDACTED] later'
        """
        try:
            if not _is_str(s):
                return _UNREADABLE
            return self._redact_str(s, 0, _budget())
        except Exception:  # noqa: BLE001 - fail closed; see _fail_closed().
            return _fail_closed()

    def redact_url(self, url: str) -> str:
        """Return *url* with its password, secret query parameters and tokens hidden.

        The password of ``scheme://user:password@host`` is replaced (the user name
        is kept unless it is itself a token), query parameters and
        ``#fragment`` parameters whose name is a secret key get a ``[REDACTED]``
        value, and the path and other values are scanned for patterns. Everything
        else is kept byte for byte, including the order and encoding of
        parameters.

        Args:
            url: An absolute or relative URL, or a bare path with a query string.

        Returns:
            *url* itself when there was nothing to hide. Never raises.

        Example:
            >>> Redactor().redact_url("postgres://app:s3cret@db:5432/app?sslmode=require")
            'postgres://app:[REDACTED]@db:5432/app?sslmode=require'
        """
        try:
            if not _is_str(url):
                return _UNREADABLE
            return self._redact_url(url)
        except Exception:  # noqa: BLE001 - fail closed; see _fail_closed().
            return _fail_closed()

    def redact_query(self, query: str) -> str:
        """Return a query string with the values of secret parameters hidden.

        Parameters are split on ``&``; a name is percent-decoded before it is
        compared with the secret keys, so ``api%5Fkey=...`` is caught. Other
        values are scanned for patterns both as they are and percent-decoded.
        A leading ``?`` is kept.

        Args:
            query: The part of a URL after ``?``, such as ``a=1&token=xyz``.

        Returns:
            *query* itself when there was nothing to hide. Never raises.

        Example:
            >>> Redactor().redact_query("page=2&access_token=abc&sort=name")
            'page=2&access_token=[REDACTED]&sort=name'
        """
        try:
            if not _is_str(query):
                return _UNREADABLE
            return self._redact_query(query)
        except Exception:  # noqa: BLE001 - fail closed; see _fail_closed().
            return _fail_closed()

    def redact_headers(
        self, headers: Mapping[str, str] | Iterable[tuple[str, str]]
    ) -> dict[str, str]:
        """Return a copy of HTTP headers with secret ones hidden.

        Header names are keys (``Authorization``, ``Proxy-Authorization``,
        ``Cookie``, ``Set-Cookie``, ``X-Api-Key``, ``X-Auth-Token``,
        ``X-CSRFToken`` ...); other values are scanned for patterns. Names and
        values may be ``str`` or ``bytes`` (ASGI headers are Latin-1 bytes); names
        keep their spelling, and a name that repeats is joined with ``", "``.

        Args:
            headers: A mapping, or an iterable of ``(name, value)`` pairs.

        Returns:
            A new ``dict``. Never raises; unreadable input gives ``{}``.
        """
        try:
            return self._redact_headers(headers)
        except Exception:  # noqa: BLE001 - fail closed; see _fail_closed().
            _fail_closed()
            return {}

    def is_secret_key(self, key: object) -> bool:
        """Tell whether values stored under *key* are hidden.

        Args:
            key: A mapping key, header name or parameter name. ``bytes`` are read
                as Latin-1; any other non-string is never a secret key.

        Returns:
            ``True`` for ``"Password"``, ``"x-api-key"``, ``"accessToken"``,
            ``"Set-Cookie"``, ``"card_number"``; ``False`` for ``"token_count"``,
            ``"author"``, ``"passenger"``. Never raises.
        """
        try:
            if isinstance(key, str):
                return self._is_secret_str(str.__str__(key))
            if isinstance(key, (bytes, bytearray)):
                return self._is_secret_str(bytes(key).decode("latin-1"))
        except Exception:  # noqa: BLE001 - fail closed; see _fail_closed().
            _fail_closed()
            return True
        return False

    def keeps(self, key: str, value: Any) -> bool:
        """Tell, cheaply, that `redact` would return ``{key: value}`` unchanged.

        ``True`` only for the cases the walk itself settles without a scan: a
        key that is no secret, holding an atomic value or a short string that
        cannot hold a pattern hit. ``False`` means "redact it to know", not
        that something would be hidden. Never raises.

        Args:
            key: A mapping key.
            value: Its value.
        """
        try:
            if type(key) is not str:
                return False
            # The walk's own verdict: a secret key, or a key that holds a secret.
            secret = self._key_cache.get(key)
            if secret is None:
                secret = self._key_verdict(key)
            if secret:
                return False
            kind = type(value)
            if kind is str:
                length = len(value)
                # `_cannot_match`, written out: one call fewer on a hot path.
                return length < _SHORTEST_HIT or (
                    length <= self._max_string
                    and value[0] in _PLAIN_FIRST
                    and (
                        _SCAN_TRIGGERS.isdisjoint(value)
                        if length < _LONG_RUN_MIN
                        else _long_cannot_match(value)
                    )
                )
            return kind in _ATOMIC
        except Exception:  # noqa: BLE001 - "redact it to know" is always safe.
            return False

    # ------------------------------------------------------------------- key rules

    def _is_secret_str(self, key: str) -> bool:
        """Tell whether an exact-``str`` key is a secret key; see `_key_verdict`."""
        verdict = self._key_cache.get(key)
        if verdict is None:
            verdict = self._key_verdict(key)
        return verdict is True or type(verdict) is _HiddenKey

    def _key_verdict(self, key: str) -> bool | str:
        """Judge an exact-``str`` key once, through a bounded cache.

        ``True``: a secret key, whose value is hidden. ``False``: a plain key. A
        string: the key itself holds a secret (a token used as a key), and this
        is the key to write instead, the secret replaced by its marker; a
        `_HiddenKey` string when the key is a secret key as well
        (``"password=hunter2"``), whose value is then hidden too. A key is
        judged by the key rules and scanned like a value, once; the cache makes
        every later lookup one dict access.
        """
        cache = self._key_cache
        verdict = cache.get(key)
        if verdict is not None:
            return verdict
        verdict = self._matches_key_rules(key)
        if len(key) >= _SHORTEST_HIT and not _cannot_match(key):
            text = key if len(key) <= self._max_string else _cut(key, self._max_string)
            scanned = self._scan(text)
            if scanned is not key:
                name = scanned if text is key else f"{scanned}[TRUNCATED:{len(key)} chars]"
                verdict = _HiddenKey(name) if verdict else name
        if len(key) <= _KEY_CACHE_MAX_CHARS:
            if len(cache) >= _KEY_CACHE_SIZE:
                # Dropping everything is cheaper than LRU bookkeeping, and a workload
                # with more distinct keys than this is rare enough not to matter.
                cache.clear()
            cache[key] = verdict
        return verdict

    def _matches_key_rules(self, key: str) -> bool:
        """Match a key against the rules: its normalised form, then its words."""
        if self._matches_normalised(_normalise(key)):
            return True
        words = [str.lower(word) for word in _WORD_SPLIT.split(key) if word]
        if _matches_words(words):
            return True
        stripped = words
        while len(stripped) > 1 and (
            stripped[-1] in _QUALIFIER_WORDS or _VERSION_WORD.fullmatch(stripped[-1])
        ):
            stripped = stripped[:-1]
        return stripped is not words and (
            self._matches_normalised("".join(stripped)) or _matches_words(stripped)
        )

    def _matches_normalised(self, norm: str) -> bool:
        """Match a normalised key against the exact, suffix, prefix and infix rules."""
        if (
            norm in self._exact
            or norm.endswith(self._suffixes)
            or any(part in norm for part in self._infixes)
        ):
            return True
        if norm.startswith(_SECRET_PREFIXES) and not (
            norm.startswith(_PASSWORD_PREFIXES) and norm.endswith(_PASSWORD_META_SUFFIXES)
        ):
            return True
        return norm.startswith(self._extra_prefixes)

    def _other_key_verdict(self, key: Any) -> bool | str:
        """Judge a key that is not an exact ``str``, like `_key_verdict`.

        A ``str`` subclass is judged by its text. ``bytes``-like keys are secret
        keys by their Latin-1 text (as `is_secret_key` says) and scanned as
        UTF-8. A tuple of strings, numbers and such tuples is scanned as the
        text it renders as (``str(key)``): the log renderer writes it so. Any
        other key (a number, an enum member, an object) is left alone, and the
        redactor never calls its ``str()``.
        """
        if isinstance(key, str):
            return self._key_verdict(str.__str__(key))
        if isinstance(key, (bytes, bytearray, memoryview)):
            raw = bytes(key)
            secret = self._is_secret_str(raw.decode("latin-1"))
            verdict = self._key_verdict(raw.decode("utf-8", "surrogateescape"))
            if isinstance(verdict, str):
                return _HiddenKey(verdict) if secret else verdict
            return secret
        if type(key) is tuple and _plain_tuple(key, 0):
            text = repr(key)
            if _cannot_match(text):
                return False
            scanned = self._scan(text)
            return False if scanned is text else scanned
        return False

    # --------------------------------------------------------------------- walking

    def _walk(self, value: Any, depth: int, budget: _Budget) -> Any:
        """Redact any value; containers fail closed one by one."""
        kind = type(value)
        if kind is str:
            return self._redact_str(value, depth, budget)
        if kind in _ATOMIC:
            return value
        try:
            if kind is dict:
                # The shape of every log event: straight to the walk, past the
                # subclass checks of _walk_other.
                return self._enter(value, depth, budget, self._walk_dict)
            return self._walk_other(value, kind, depth, budget)
        except Exception:  # noqa: BLE001 - user objects may raise anything; fail closed.
            return _fail_closed()

    def _walk_other(self, value: Any, kind: type, depth: int, budget: _Budget) -> Any:
        """Redact everything that is not an exact ``str`` or an atomic value."""
        if issubclass(kind, str):
            return self._redact_str(value, depth, budget)
        if issubclass(kind, (bytes, bytearray, memoryview)):
            return self._redact_bytes(value, depth, budget)
        if issubclass(kind, dict):
            return self._enter(value, depth, budget, self._walk_dict)
        if issubclass(kind, (list, tuple, set, frozenset)):
            return self._enter(value, depth, budget, self._walk_collection)
        if issubclass(kind, Mapping):
            return self._enter(value, depth, budget, self._walk_mapping)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return self._enter(value, depth, budget, self._walk_dataclass)
        if issubclass(kind, enum.Enum):
            # orjson writes a member as its value: the value is what is redacted.
            inner = value.value
            new = self._walk(inner, depth, budget)
            return value if new is inner else new
        return value

    def _enter(self, value: Any, depth: int, budget: _Budget, walk: _ContainerWalk) -> Any:
        """Apply the depth, cycle and budget limits around one container walk."""
        if depth >= self._max_depth:
            return _TRUNCATED_DEPTH
        ident = id(value)
        path = budget[_PATH]
        if ident in path:
            return _CYCLE
        if budget[_ITEMS] <= 0:
            return _TRUNCATED_BUDGET
        path.append(ident)
        try:
            return walk(value, depth + 1, budget)
        finally:
            path.pop()

    def _walk_dict(self, value: dict[Any, Any], depth: int, budget: _Budget | None) -> Any:
        """Redact a ``dict`` (or subclass) through ``dict``'s own methods.

        Most values logged are atomic or short strings under plain keys, so
        those are settled here without a call: a string is charged to the
        budget and kept as it is when `_redact_str` could only return it
        unchanged (too short to hold a hit, or cleared by the scan pre-check
        and neither cut nor parsed as JSON); anything else goes to it.

        ``budget=None`` is the root of a `redact` call: the budget is built
        only when a value needs a call, since most events never do.
        """
        size = len(value)
        # The characters still allowed, kept in a local while strings are
        # settled here and handed back to the budget around every call.
        if budget is None:
            chars = _CHAR_BUDGET
        else:
            budget[_ITEMS] -= size
            chars = budget[_CHARS]
        items: Iterable[tuple[Any, Any]] = dict.items(value)
        truncated = size > self._max_items
        if truncated:
            items = itertools.islice(items, self._max_items)
        out: dict[Any, Any] | None = None
        cached = self._key_cache.get
        limit = self._max_string
        plain_first = _PLAIN_FIRST
        triggers = _SCAN_TRIGGERS
        renamed: dict[int, str] | None = None
        for key, item in items:
            if type(key) is str:
                secret = cached(key)
                if secret is None:
                    secret = self._key_verdict(key)
            else:
                secret = self._other_key_verdict(key)
            if secret:
                if secret is True:
                    new = _mask(item)
                else:
                    # The key itself holds a secret: it is written as `secret`,
                    # and its value is hidden too or walked like any other.
                    if renamed is None:
                        renamed = {}
                    renamed[id(key)] = secret
                    if type(secret) is _HiddenKey:
                        new = _mask(item)
                    else:
                        if budget is None:
                            budget = [_ITEM_BUDGET - size, chars, [id(value)]]
                        else:
                            budget[_CHARS] = chars
                        new = self._walk(item, depth, budget)
                        chars = budget[_CHARS]
            else:
                kind = type(item)
                if kind is str:
                    length = len(item)
                    if chars >= length and (
                        length < _SHORTEST_HIT
                        or (
                            length <= limit
                            and item[0] in plain_first
                            and (
                                triggers.isdisjoint(item)
                                if length < _LONG_RUN_MIN
                                else _long_cannot_match(item)
                            )
                        )
                    ):
                        chars -= length
                        continue
                elif kind in _ATOMIC:
                    continue
                if budget is None:
                    budget = [_ITEM_BUDGET - size, chars, [id(value)]]
                else:
                    budget[_CHARS] = chars
                if kind is str:
                    new = self._redact_str(item, depth, budget)
                else:
                    new = self._walk(item, depth, budget)
                chars = budget[_CHARS]
            if new is not item:
                if out is None:
                    out = dict(itertools.islice(dict.items(value), self._max_items))
                out[key] = new
        if renamed is not None:
            if out is None:
                out = dict(itertools.islice(dict.items(value), self._max_items))
            out = _rename_keys(out, renamed)
        if truncated:
            if out is None:
                out = dict(itertools.islice(dict.items(value), self._max_items))
            out["[TRUNCATED]"] = f"{size - self._max_items} more items"
        if budget is not None:
            budget[_CHARS] = chars
        if out is None:
            return value
        return out

    def _walk_mapping(self, value: Mapping[Any, Any], depth: int, budget: _Budget) -> Any:
        """Redact a non-``dict`` mapping into a plain ``dict`` when something changed."""
        size = len(value)
        budget[_ITEMS] -= size
        pairs = list(itertools.islice(value.items(), self._max_items))
        changed = size > self._max_items
        out: dict[Any, Any] = {}
        renamed: dict[int, str] = {}
        for key, item in pairs:
            verdict = self._key_verdict(key) if type(key) is str else self._other_key_verdict(key)
            if verdict and verdict is not True:
                renamed[id(key)] = verdict
                verdict = type(verdict) is _HiddenKey
            new = _mask(item) if verdict else self._walk(item, depth, budget)
            changed = changed or new is not item
            out[key] = new
        if renamed:
            out = _rename_keys(out, renamed)
        elif not changed:
            return value
        if size > self._max_items:
            out["[TRUNCATED]"] = f"{size - self._max_items} more items"
        return out

    def _walk_collection(self, value: Any, depth: int, budget: _Budget) -> Any:
        """Redact a list, tuple, set or frozenset, keeping its type where possible."""
        size = len(value)
        budget[_ITEMS] -= size
        walk = self._walk
        changed = size > self._max_items
        out = []
        for item in itertools.islice(value, self._max_items):
            new = item if type(item) in _ATOMIC else walk(item, depth, budget)
            changed = changed or new is not item
            out.append(new)
        if not changed:
            return value
        if size > self._max_items:
            out.append(f"[TRUNCATED:{size - self._max_items} items]")
        return _rebuild(value, out)

    def _walk_dataclass(self, value: Any, depth: int, budget: _Budget) -> Any:
        """Redact a dataclass instance's fields; a changed one becomes a ``dict``.

        orjson renders dataclasses as objects natively, so their fields must be
        redacted like a mapping's entries.
        """
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        redacted = self._walk_dict(fields, depth, budget)
        return value if redacted is fields else redacted

    # --------------------------------------------------------------------- strings

    def _redact_str(self, s: str, depth: int, budget: _Budget) -> str:
        """Redact one string: cut it to ``max_string``, parse JSON, scan patterns."""
        size = len(s)
        budget[_CHARS] -= size
        if budget[_CHARS] < 0:
            return _TRUNCATED_BUDGET
        if size > self._max_string:
            return self._scan(_cut(s, self._max_string)) + f"[TRUNCATED:{size} chars]"
        if size < _SHORTEST_HIT:
            # No pattern fits in four characters (the shortest is "pwd=x").
            return s
        first = s[0]
        if first == "{" or first == "[" or (first.isspace() and s.lstrip()[:1] in ("{", "[")):
            parsed = self._redact_json(s, depth, budget)
            if parsed is not None:
                return parsed
        return self._scan(s)

    def _redact_json(self, s: str, depth: int, budget: _Budget) -> str | None:
        """Redact a JSON document held in a string; ``None`` if it is not one."""
        if s.rstrip()[-1:] not in ("}", "]"):
            return None
        try:
            document = json.loads(s)
        except (ValueError, RecursionError):
            # Not JSON after all (or absurdly nested): scan it as text instead.
            return None
        redacted = self._walk(document, depth + 1, budget)
        if redacted is document:
            # Nothing hidden by key or in a string value; a number that looks like
            # a card, or a secret in a key, can still be caught by the text scan.
            return self._scan(s)
        try:
            return json.dumps(redacted, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):
            return _UNREADABLE

    def _redact_bytes(
        self, value: bytes | bytearray | memoryview, depth: int, budget: _Budget
    ) -> Any:
        """Scan bytes as UTF-8 text, which is how the log renderer writes them.

        Undecodable bytes are carried through as they are (``surrogateescape``),
        so a changed value keeps its type and every byte that hid nothing. Only
        the first ``4 * max_string`` bytes are decoded: that many hold more than
        ``max_string`` characters, so the string is cut and marked as usual.
        """
        view = memoryview(value)
        if view.ndim != 1 or view.itemsize != 1:
            view = memoryview(view.tobytes())
        limit = 4 * self._max_string + 4
        raw = bytes(view[:limit]) if len(view) > limit else bytes(view)
        text = raw.decode("utf-8", "surrogateescape")
        redacted = self._redact_str(text, depth, budget)
        if redacted is text:
            return value
        try:
            data = redacted.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            data = redacted.encode("utf-8", "replace")
        if isinstance(value, bytearray):
            return bytearray(data)
        return memoryview(data) if isinstance(value, memoryview) else data

    def _scan(self, s: str, decode: bool = True) -> str:
        """Replace every pattern hit in *s*; return *s* itself when there is none.

        IBANs are looked for after the combined pattern (see `_IBAN`); with
        *decode*, percent-encoded runs
        (``password%3D...``, an encoded ``redirect_uri``) are decoded and scanned
        too (see `_scan_encoded`). `re.sub` cannot resume the scan where a
        handler decides, nor look at text before the match, so the substitution
        loop is written out here.
        """
        if _cannot_match(s):
            return s
        result = s
        search = self._pattern.search
        match = search(s)
        if match is not None:
            kinds = self._kinds
            out: list[str] = []
            copied = 0  # s[:copied] is already in out (or replaced).
            while match is not None:
                kind = kinds[match.lastindex or 0]
                start, end = match.span()
                hit: tuple[int, int, str] | None
                resume = end
                if kind == "kv":
                    hit = self._scan_kv(s, start, end)
                elif kind == "card":
                    hit = _scan_card(s, start, end)
                    if hit is None:
                        # The run may start with another number ("order 10023 4111 ..."):
                        # the pattern then stops at 19 digits, short of the card, so
                        # look again from the run's next digit group.
                        separator = _GROUP_SEPARATOR.search(s, start, end)
                        if separator is not None:
                            resume = separator.end()
                elif kind == "auth":
                    hit = _scan_auth(match.group(0), start, end)
                    if hit is None:
                        resume = start + 6  # scan what follows the scheme word normally
                elif kind == "url_password":
                    text = match.group(0)
                    user = text[3 : text.index(":", 3)]
                    hit = (start, end, "://" + self._scan(user) + ":" + REDACTED + "@")
                elif kind == "email":
                    hit = _scan_email(s, start, end)
                elif kind == "xml":
                    hit = self._scan_xml(s, start, end)
                    if hit is None:
                        resume = start + 1  # the attributes may hold key=value pairs
                else:
                    hit = (start, end, _MARKERS[kind])
                if hit is not None:
                    begin, stop, text = hit
                    begin = max(begin, copied)
                    out.append(s[copied:begin])
                    out.append(text)
                    copied = stop
                    resume = max(resume, stop)
                match = search(s, resume)
            if out:
                out.append(s[copied:])
                joined = "".join(out)
                if joined != s:
                    result = joined
        if (
            len(result) >= _IBAN_MIN
            and result.lower() != result
            and (
                b"AA00" in result.encode().translate(_IBAN_CLASSES)
                if result.isascii()
                else _IBAN_SEARCH(result)
            )
        ):
            result = _scan_ibans(result)
        if decode and "%" in result:
            result = self._scan_encoded(result)
        return result

    def _scan_encoded(self, s: str) -> str:
        """Scan each whitespace-delimited run holding ``%XX`` escapes, decoded.

        A run is decoded up to `_MAX_DECODE_ROUNDS` times (double-encoded
        ``%253D`` is ``=`` too). When the decoded text holds a secret, the run
        is replaced by the redacted text, encoded once more as a query value
        would be (``&``, ``?``, ``#`` and spaces escaped; the markers readable).
        """
        out: list[str] = []
        copied = 0
        for match in _ENCODED_RUN.finditer(s):
            run = match.group(0)
            decoded = run
            for _ in range(_MAX_DECODE_ROUNDS):
                step = unquote(decoded)
                if step == decoded:
                    break
                decoded = step
                if "%" not in decoded:
                    break
            if decoded is run:
                continue
            redacted = self._scan(decoded, decode=False)
            if redacted is decoded:
                continue
            start, end = match.span()
            out.append(s[copied:start])
            out.append(quote(redacted, safe=_ENCODED_SAFE))
            copied = end
        if not out:
            return s
        out.append(s[copied:])
        return "".join(out)

    def _scan_kv(self, s: str, start: int, end: int) -> tuple[int, int, str] | None:
        """Hide the value after ``=``/``:`` at *start* when the key before it is secret."""
        found = _KEY_BEHIND.match(s[max(0, start - 72) : start][::-1])
        if found is None:
            return None
        key = found.group(1)[::-1]
        if not self._is_secret_str(key):
            return None
        norm = _normalise(key)
        if s[start] == ":" and norm.endswith(_LINE_KEYS):
            line = _KV_LINE_VALUE.match(s, end)
            if line is None:
                return None
            text = line.group(0)
            lead = len(text) - len(text.lstrip(" \t"))
            return end + lead, line.end(), REDACTED
        value = _KV_VALUE.match(s, end)
        if value is None:
            return None
        text = value.group(0)
        lead = len(text) - len(text.lstrip(" \t"))
        body = text[lead:]
        stop = value.end()
        prefix = value.group("prefix")
        if prefix is not None:
            # A bare value can be the first word of a longer secret ("-----BEGIN
            # ... PRIVATE KEY-----" spans lines): hide whatever a pattern sees there.
            inner = self._pattern.match(s, end + lead + len(prefix))
            if inner is not None and self._kinds[inner.lastindex or 0] != "kv":
                stop = max(stop, inner.end())
            replacement = prefix + REDACTED
        elif body.startswith('\\"'):
            replacement = '\\"' + REDACTED + '\\"'
        else:
            replacement = body[0] + REDACTED + body[0]
        return end + lead, stop, replacement

    def _scan_xml(self, s: str, start: int, end: int) -> tuple[int, int, str] | None:
        """Hide the text of an XML element at *start* whose name is a secret key.

        ``<Password>x</Password>``, ``<wsse:Password Type="...">x</wsse:Password>``
        and a ``<![CDATA[...]]>`` value are hidden; the tags are kept.
        """
        tag = s[start + 1 : end - 1]
        if tag.endswith("/"):
            return None  # <Password/> holds nothing
        name = _XML_NAME.match(tag)
        if name is None or not self._is_secret_str(name.group(0).rpartition(":")[2]):
            return None
        value = _XML_VALUE.match(s, end)
        if value is None:
            return None
        return end, value.end(), REDACTED

    # ------------------------------------------------------------------ URL, query

    def _redact_url(self, url: str) -> str:
        """Redact a URL piece by piece, keeping every other byte."""
        if len(url) > self._max_string:
            return self._scan(_cut(url, self._max_string)) + f"[TRUNCATED:{len(url)} chars]"
        head = ""
        rest = url
        authority = _URL_AUTHORITY.match(url)
        if authority is not None:
            prefix, userinfo, host = authority.group("prefix", "userinfo", "host")
            if userinfo is not None:
                user, colon, password = userinfo.partition(":")
                user = self._scan(user)
                userinfo = user + colon + (REDACTED if password else "")
                head = prefix + userinfo + "@" + self._scan(host)
            else:
                head = prefix + self._scan(host)
            rest = url[authority.end() :]
        rest, hash_mark, fragment = rest.partition("#")
        path, question, query = rest.partition("?")
        parts = [head, self._scan(path)]
        if question:
            parts += [question, self._redact_query(query)]
        if hash_mark:
            fragment = self._redact_query(fragment) if "=" in fragment else self._scan(fragment)
            parts += [hash_mark, fragment]
        result = "".join(parts)
        return url if result == url else result

    def _redact_query(self, query: str) -> str:
        """Redact ``name=value`` pairs separated by ``&``."""
        if len(query) > self._max_string:
            return self._scan(_cut(query, self._max_string)) + f"[TRUNCATED:{len(query)} chars]"
        lead = "?" if query.startswith("?") else ""
        params = query[len(lead) :].split("&")
        # Nothing percent- or plus-encoded (the usual query): names and values
        # are read as they are, and a value the pre-check clears needs no scan.
        encoded = "%" in query or "+" in query
        is_secret = self._is_secret_str
        known = self._key_cache.get
        triggers = _SCAN_TRIGGERS
        changed = False
        for index, param in enumerate(params):
            name, equals, value = param.partition("=")
            if not equals:
                new = self._scan(param)
                if new is param:
                    continue
            elif value and (
                is_secret(_unquote(name))
                if encoded
                else (hit if (hit := known(name)) is not None else is_secret(name))
            ):
                new = name + "=" + REDACTED
            elif not encoded and (
                triggers.isdisjoint(value)
                if len(value) < _LONG_RUN_MIN
                else _long_cannot_match(value)
            ):
                # `_cannot_match`, written out: a query has a few values per request.
                continue
            else:
                new_value = self._scan(value)
                if new_value is value and encoded:
                    decoded = _unquote(value)
                    if decoded is not value:
                        redacted = self._scan(decoded)
                        if redacted is not decoded:
                            new_value = quote(redacted, safe="[]:/@!$'()*,;=")
                new = param if new_value is value else name + "=" + new_value
            if new is not param:
                params[index] = new
                changed = True
        if not changed:
            return query
        return lead + "&".join(params)

    def _redact_headers(
        self, headers: Mapping[str, str] | Iterable[tuple[str, str]]
    ) -> dict[str, str]:
        """Redact header pairs into a new ``dict``; see `redact_headers`."""
        pairs: Iterable[Any] = headers.items() if isinstance(headers, Mapping) else headers
        out: dict[str, str] = {}
        for pair in itertools.islice(pairs, self._max_items):
            name, value = pair
            name_text = _header_text(name)
            value_text = _header_text(value)
            if self._is_secret_str(name_text):
                new = REDACTED if value_text else value_text
            else:
                new = self.redact_string(value_text)
            previous = out.get(name_text)
            out[name_text] = new if previous is None else previous + ", " + new
        return out

    def _redact_attributes(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """Redact span attributes; see `redact_attributes`."""
        out: dict[str, Any] = {}
        for key, value in itertools.islice(attrs.items(), self._max_items):
            if value is None:
                out[key] = value
            elif self.is_secret_key(key):
                out[key] = _mask(value)
            elif isinstance(value, str):
                if key in _URL_ATTRIBUTES:
                    out[key] = self.redact_url(value)
                elif key in _QUERY_ATTRIBUTES:
                    out[key] = self.redact_query(value)
                else:
                    out[key] = self.redact_string(value)
            elif isinstance(value, (list, tuple)):
                items = [self.redact_string(v) if isinstance(v, str) else v for v in value]
                out[key] = tuple(items) if isinstance(value, tuple) else items
            else:
                out[key] = value
        return out


# ------------------------------------------------------------------- module state

_REDACTOR = Redactor()


def get_redactor() -> Redactor:
    """Return the process-wide redactor (the default policy until setup).

    Returns:
        The `Redactor` last given to `set_redactor()`, else ``Redactor()``.
    """
    return _REDACTOR


def set_redactor(redactor: Redactor) -> None:
    """Install the process-wide redactor used by logs, Sentry and spans.

    `setup_telemetry()` calls this with the configured extra keys and e-mail
    masking; call it yourself only to change the policy at run time.

    Args:
        redactor: The new policy. Takes effect for every later call.

    Raises:
        TypeError: *redactor* is not a `Redactor`.
    """
    global _REDACTOR  # one process-wide policy; rebinding a name is atomic.
    if not isinstance(cast("object", redactor), Redactor):
        msg = f"set_redactor() needs a Redactor, got {redactor!r}."
        raise TypeError(msg)
    _REDACTOR = redactor


def redact(value: Any) -> Any:
    """Redact *value* with the process-wide redactor; see `Redactor.redact`.

    Args:
        value: Anything.

    Returns:
        The same object when nothing had to be hidden, else a redacted copy.
    """
    return _REDACTOR.redact(value)


def redact_attributes(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Redact span attributes with the process-wide redactor.

    A secret key (``http.request.header.authorization``, ``db.password``) gets
    ``[REDACTED]`` whatever its value; ``url.full``, ``http.url``,
    ``url.original`` and ``http.target`` are redacted as URLs, ``url.query`` as a
    query string, other strings and the strings in list or tuple values by
    pattern. Numbers and booleans under other keys are kept.

    Args:
        attrs: OpenTelemetry attributes (str keys; str, bool, int, float or
            homogeneous sequence values).

    Returns:
        A new ``dict``. Never raises; unreadable input gives ``{}``.
    """
    redactor = _REDACTOR
    try:
        return redactor._redact_attributes(attrs)
    except Exception:  # noqa: BLE001 - fail closed; see _fail_closed().
        _fail_closed()
        return {}


# ------------------------------------------------------------------- helpers


_MARKERS = {
    kind: f"[REDACTED:{kind}]" for kind in (*(k for k, _ in (*_BRANCHES, _EMAIL_BRANCH)), "iban")
}

_URL_AUTHORITY = re.compile(
    r"(?P<prefix>(?:[A-Za-z][A-Za-z0-9+.-]{0,31}:)?//)"
    r"(?:(?P<userinfo>[^/?#]{0,512})@)?(?P<host>[^/?#@]*)"
)


def _fail_closed() -> str:
    """Log the exception being handled (rate-limited) and return the error marker.

    Redaction must never raise into the application and must never let an
    unreadable value through: the walkers catch with a plain ``except`` and
    answer with this.
    """
    report_internal_error("kaleem_telemetry.redaction")
    return _UNREADABLE


def _is_str(value: object) -> bool:
    """Tell whether *value* is a string (public entry points accept anything)."""
    return isinstance(value, str)


def _matches_words(words: list[str]) -> bool:
    """Match a key's lower-case words against the word rules."""
    if not words:
        return False
    last = words[-1]
    if last in _SECRET_LAST_WORDS:
        return True
    return last == "tokens" and len(words) > 1 and words[-2] in _TOKEN_KINDS


def _normalise(key: str) -> str:
    """Lower-case *key* and drop ``-``, ``_``, ``.`` and spaces."""
    return str.lower(key).translate(_KEY_SEPARATORS)


def _mask(value: Any) -> Any:
    """Replace a value stored under a secret key, unless it hides nothing."""
    if value is None or value is True or value is False:
        return value
    if type(value) in (str, bytes) and not value:
        return value
    return REDACTED


class _HiddenKey(str):
    """The new name of a secret key that held a secret itself: its value is hidden too."""

    __slots__ = ()


#: Key types whose ``repr`` runs no user code, for `_plain_tuple`.
_PLAIN_KEY_TYPES = frozenset({str, bytes, int, float, bool, type(None)})


def _plain_tuple(key: tuple[Any, ...], depth: int) -> bool:
    """Tell whether ``repr(key)`` runs only built-in code (nested at most a few deep)."""
    if depth > 4 or len(key) > 64:
        return False
    return all(
        type(part) in _PLAIN_KEY_TYPES or (type(part) is tuple and _plain_tuple(part, depth + 1))
        for part in key
    )


def unique_key(name: str, key: object, taken: Container[Any]) -> str:
    """Return *name*, made unique among *taken* by appending ``<type>`` of *key*.

    The one rule for keys that render alike: the redactor uses it when a key
    that holds a secret is replaced by its redacted text, and the log renderer
    when it turns keys into strings (``{1: .., "1": ..}`` keeps both). The same
    input always gives the same keys.
    """
    while name in taken:
        name = f"{name}<{type(key).__name__}>"
    return name


def _rename_keys(source: dict[Any, Any], renamed: dict[int, str]) -> dict[Any, Any]:
    """Rebuild *source* in order, with the keys named in *renamed* (by id) replaced."""
    taken: set[Any] = {key for key in source if id(key) not in renamed}
    out: dict[Any, Any] = {}
    for key, item in source.items():
        name = renamed.get(id(key))
        if name is None:
            out[key] = item
        else:
            name = unique_key(str.__str__(name), key, taken)
            taken.add(name)
            out[name] = item
    return out


def _rebuild(original: Any, items: list[Any]) -> Any:
    """Build a container of *original*'s kind from redacted *items*."""
    if isinstance(original, list):
        return items
    if isinstance(original, tuple):
        make = getattr(type(original), "_make", None)
        if make is not None:
            try:
                return make(items)
            except (TypeError, ValueError):
                # A truncated or odd named tuple: a plain tuple still renders fine.
                return tuple(items)
        return tuple(items)
    try:
        return frozenset(items) if isinstance(original, frozenset) else set(items)
    except TypeError:
        # A redacted item became unhashable (a dataclass turned into a dict).
        return items


def _cut(s: str, limit: int) -> str:
    """Cut *s* to *limit* characters without leaving half a token at the end."""
    head = s[:limit]
    tail = _PARTIAL_TOKEN.match(head[-1024:][::-1])
    drop = tail.end() if tail is not None else 0
    return head[: len(head) - drop]


def _luhn(digits: str) -> bool:
    """Tell whether a digit string passes the Luhn checksum."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        if index % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _scan_card(s: str, start: int, end: int) -> tuple[int, int, str] | None:
    """Find a Luhn-valid card number among the digit groups at ``s[start:end]``.

    The whole run is tried first, then runs that drop leading or trailing groups
    (``"4111 1111 1111 1111 12"`` hides the card and keeps ``12``).
    """
    groups = [m.span() for m in _DIGIT_GROUP.finditer(s, start, end)]
    digits = [s[a:b] for a, b in groups]
    count = len(groups)
    candidates = [(0, count)]
    candidates += [(0, stop) for stop in range(count - 1, 0, -1)]
    candidates += [(first, count) for first in range(1, count)]
    for first, stop in candidates:
        number = "".join(digits[first:stop])
        if 13 <= len(number) <= 19 and _luhn(number):
            return groups[first][0], groups[stop - 1][1], _MARKERS["card"]
    return None


def _scan_auth(text: str, start: int, end: int) -> tuple[int, int, str] | None:
    """Hide the credential of ``Bearer x`` / ``Basic x`` (keeping the scheme word).

    A ``Basic`` credential must decode to ``user:password`` or look random (have a
    digit or a base64 symbol), which spares prose such as "basic information".
    """
    scheme = text[:6] if text[:6].lower() == "bearer" else text[:5]
    credential = text[len(scheme) :].lstrip(" \t")
    if scheme.lower() == "basic" and not _looks_like_basic(credential):
        return None
    kind = "bearer" if len(scheme) == 6 else "basic"
    return end - len(credential), end, f"[REDACTED:{kind}]"


def _looks_like_basic(credential: str) -> bool:
    """Tell whether a ``Basic`` credential is base64 ``user:pass`` or random-looking."""
    if any(c.isdigit() or c in "+/=" for c in credential):
        return True
    if _BASE64.fullmatch(credential) is None:
        return False
    try:
        decoded = base64.b64decode(credential + "=" * (-len(credential) % 4))
    except (binascii.Error, ValueError):
        return False
    return b":" in decoded


#: Country codes of the IBAN registry (ISO 13616) and of the national formats built on it.
_IBAN_COUNTRIES = frozenset(
    (  # noqa: SIM905 - a table, easier to check against the registry as text
        "AD AE AL AO AT AZ BA BE BF BG BH BI BJ BR BY CF CG CH CI CM CR CV CY CZ DE DJ DK DO DZ "
        "EE EG ES FI FK FO FR GA GB GE GI GL GQ GR GT GW HN HR HU IE IL IQ IR IS IT JO KM KW KZ "
        "LB LC LI LT LU LV LY MA MC MD ME MG MK ML MN MR MT MU MZ NE NI NL NO OM PK PL PS PT QA "
        "RO RS RU SA SC SD SE SI SK SM SN SO ST SV TD TG TL TN TR UA VA VG XK YE"
    ).split()
)
_IBAN_MAX = 34
_IBAN_LETTER_VALUES = {
    ord(letter): str(value) for value, letter in enumerate(string.ascii_uppercase, 10)
}


def _iban_valid(iban: str) -> bool:
    """Tell whether an upper-case IBAN without spaces passes the ISO 13616 mod-97 check."""
    if not _IBAN_MIN <= len(iban) <= _IBAN_MAX or iban[:2] not in _IBAN_COUNTRIES:
        return False
    # Letters count as 10 (A) to 35 (Z), digits as themselves.
    return int((iban[4:] + iban[:4]).translate(_IBAN_LETTER_VALUES)) % 97 == 1


def _scan_ibans(s: str) -> str:
    """Replace each valid IBAN in *s* with its marker.

    A candidate that fails the check is tried again without its trailing
    groups of four (a reference number after the IBAN), and the search goes on
    from its next character, so a failing candidate cannot hide a valid one.
    """
    out: list[str] = []
    copied = 0
    match = _IBAN_SEARCH(s)
    while match is not None:
        start, end = match.span()
        if s[start : start + 2] in _IBAN_COUNTRIES:
            groups = s[start:end].split(" ")
            for stop in range(len(groups), 0, -1):
                if _iban_valid("".join(groups[:stop])):
                    out.append(s[copied:start])
                    out.append(_MARKERS["iban"])
                    copied = start + len(" ".join(groups[:stop]))
                    break
        match = _IBAN_SEARCH(s, max(copied, start + 1))
    if not out:
        return s
    out.append(s[copied:])
    return "".join(out)


def _scan_email(s: str, start: int, end: int) -> tuple[int, int, str] | None:
    """Hide an e-mail address whose ``@domain`` part is ``s[start:end]``."""
    local = _EMAIL_LOCAL_BEHIND.match(s[max(0, start - 64) : start][::-1])
    if local is None:
        return None
    return start - local.end(), end, _MARKERS["email"]


def _header_text(value: object) -> str:
    """Turn a header name or value (``str`` or Latin-1 ``bytes``) into ``str``."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1")
    return str(value)


def _unquote(text: str) -> str:
    """``unquote_plus``, repeated for nested escapes; *text* itself when nothing is encoded."""
    if "%" not in text and "+" not in text:
        return text
    decoded = unquote_plus(text)
    for _ in range(_MAX_DECODE_ROUNDS - 1):
        if "%" not in decoded:
            break
        step = unquote(decoded)
        if step == decoded:
            break
        decoded = step
    return decoded
