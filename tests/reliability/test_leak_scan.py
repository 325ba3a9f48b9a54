"""No secret a caller hands the library reaches any sink: a byte scan with run-time canaries.

Every canary is generated when the test runs (``secrets.token_hex`` and
``token_urlsafe``, assembled into the shapes the redaction policy names in
docs/redaction.md), so no secret is a literal of this file and a hit in a sink
can only be a leak of this run. Each one is searched for by its raw secret part
and by a distinctive chunk of it (at least 12 characters), never by the whole
carrier string, so a sink that kept the secret but reformatted its surroundings
is still caught.

`TestServedApplication` plants them through everything a caller uses (keyword
values, message text, nested containers, exceptions and their causes, objects
whose ``repr()`` is the secret, bytes, URL query strings, JSON inside strings,
stdlib ``args`` and ``extra``, ``@instrument`` attributes, bound context, HTTP
headers, cookies, query strings and paths of requests served by the real ASGI
middleware under uvicorn, job headers through ``inject_context`` /
``extract_context``) and scans every sink as bytes: the server's stdout and
stderr, the OTLP/HTTP bodies received by the receiver of ``tests/receivers.py``
(raw and decoded), the Sentry envelopes sent by sentry-sdk's own transport to a
real DSN, and the ``/metrics`` body. `TestGeneratedStructures` does the same
in-process with nested structures hypothesis generates.

New canary shapes go in `PATTERNS` or `SECRET_KEYS`, one line each.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import secrets
import sys
from collections.abc import Callable
from contextlib import redirect_stdout
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

from tests.receivers import OTLPReceiver, SentryIngest
from tests.reliability._support import clean_env, free_port, serve

SERVICE = "leak-scan"

# --------------------------------------------------------------------- canaries


@dataclass(frozen=True)
class Canary:
    """One planted secret: the text a caller writes, and what a sink must never hold.

    Attributes:
        name: The shape's name, for the report.
        text: The carrier string as a caller would write it (``"password=..."``).
        secret: The raw secret part of ``text``.
        chunk: A distinctive piece of ``secret`` (12 characters or more).
    """

    name: str
    text: str
    secret: str
    chunk: str

    @property
    def needles(self) -> tuple[bytes, ...]:
        """The byte strings searched for in every sink."""
        return (self.secret.encode(), self.chunk.encode())


def _canary(name: str, text: str, secret: str, core: str | None = None) -> Canary:
    """Build a canary whose chunk is the middle of ``core`` (the random part of the secret)."""
    core = secret if core is None else core
    length = max(12, len(core) // 2)
    start = (len(core) - length) // 2
    chunk = core[start : start + length]
    assert len(chunk) >= 12, (name, core)
    assert chunk in secret, name
    assert secret in text, name
    return Canary(name, text, secret, chunk)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _jwt() -> Canary:
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps({"sub": secrets.token_hex(8), "iat": 1}).encode())
    signature = secrets.token_urlsafe(32)
    token = f"{header}.{payload}.{signature}"
    return _canary("jwt", token, token, signature)


def _luhn_card(prefix: str = "4", length: int = 16) -> str:
    body = prefix + "".join(str(secrets.randbelow(10)) for _ in range(length - len(prefix) - 1))
    total = 0
    # The check digit is appended: every digit of body at an even distance from
    # the end (counting the check digit as distance 0) gets doubled.
    for index, char in enumerate(reversed(body)):
        digit = int(char)
        if index % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return body + str((10 - total % 10) % 10)


def _card() -> Canary:
    number = _luhn_card()
    return _canary("card", number, number)


def _card_grouped(separator: str) -> Callable[[], Canary]:
    def make() -> Canary:
        number = _luhn_card("5")
        grouped = separator.join(number[i : i + 4] for i in range(0, 16, 4))
        return _canary(f"card_grouped{separator!r}", grouped, grouped)

    return make


def _pem(kind: str) -> Callable[[], Canary]:
    def make() -> Canary:
        body = base64.b64encode(secrets.token_bytes(144)).decode()
        lines = [body[i : i + 64] for i in range(0, len(body), 64)]
        label = f"{kind} PRIVATE KEY".strip()
        text = f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----"
        # The first body line: a sink that escapes newlines still holds it whole.
        return _canary(f"pem_{kind or 'pkcs8'}", text, lines[0])

    return make


def _basic() -> Canary:
    credential = base64.b64encode(
        f"u{secrets.token_hex(3)}:{secrets.token_hex(12)}".encode()
    ).decode()
    return _canary("basic", f"Basic {credential}", credential)


def _prefixed(name: str, prefix: str, core: Callable[[], str], suffix: str = "") -> Canary:
    random_part = core()
    secret = prefix + random_part + suffix
    return _canary(name, secret, secret, random_part)


def _kv(name: str, template: str) -> Callable[[], Canary]:
    """A ``key=value`` shape in free text; ``template`` has one ``{}`` for the value."""

    def make() -> Canary:
        value = secrets.token_hex(12)
        return _canary(name, template.format(value), value)

    return make


def _userinfo(scheme: str, user: str) -> Callable[[], Canary]:
    def make() -> Canary:
        password = secrets.token_hex(12)
        return _canary(
            f"url_{scheme}", f"{scheme}://{user}:{password}@db.internal:5432/app", password
        )

    return make


def _email() -> Canary:
    local = "u" + secrets.token_hex(8)
    address = f"{local}@{secrets.token_hex(3)}.example.com"
    return _canary("email", address, address, local)


def _pgp() -> Canary:
    body = base64.b64encode(secrets.token_bytes(144)).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    text = (
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n"
        + "\n".join(lines)
        + "\n=abcd\n-----END PGP PRIVATE KEY BLOCK-----"
    )
    return _canary("pgp", text, lines[0])


def _iban(spaced: bool) -> Callable[[], Canary]:
    """A German IBAN with a valid ISO 13616 check, random at run time."""

    def make() -> Canary:
        bban = "".join(str(secrets.randbelow(10)) for _ in range(18))
        # Country letters as numbers (D=13, E=14), the check digits as 00, mod 97.
        check = 98 - int(bban + "1314" + "00") % 97
        iban = f"DE{check:02d}{bban}"
        if spaced:
            grouped = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
            return _canary("iban_spaced", f"pay to {grouped} today", grouped)
        return _canary("iban", f"pay to {iban} today", iban, bban)

    return make


def _hex(n: int) -> Callable[[], str]:
    return lambda: secrets.token_hex(n)


def _upper_hex(n: int) -> Callable[[], str]:
    return lambda: secrets.token_hex(n).upper()


def _urlsafe(length: int) -> Callable[[], str]:
    # token_urlsafe(n) gives about 4n/3 characters; cut to the exact length a shape needs.
    return lambda: secrets.token_urlsafe(length)[:length]


#: Every value shape of the policy (docs/redaction.md, "Values that look like secrets").
#: One line per shape: name, generator. The e-mail shape needs REDACT_EMAILS, which
#: both tests turn on.
PATTERNS: list[tuple[str, Callable[[], Canary]]] = [
    ("jwt", _jwt),
    ("bearer", lambda: _prefixed("bearer", "Bearer ", _urlsafe(32))),
    ("basic", _basic),
    ("url_postgres", _userinfo("postgres", "app")),
    ("url_amqp", _userinfo("amqp", "guest")),
    ("card", _card),
    ("card_spaces", _card_grouped(" ")),
    ("card_dashes", _card_grouped("-")),
    ("aws_akia", lambda: _prefixed("aws_akia", "AKIA", _upper_hex(8))),
    ("aws_asia", lambda: _prefixed("aws_asia", "ASIA", _upper_hex(8))),
    ("stripe_sk", lambda: _prefixed("stripe_sk", "sk_" + "live_", _hex(12))),
    ("stripe_rk", lambda: _prefixed("stripe_rk", "rk_" + "test_", _hex(12))),
    ("stripe_pk", lambda: _prefixed("stripe_pk", "pk_" + "live_", _hex(12))),
    ("stripe_whsec", lambda: _prefixed("stripe_whsec", "whsec_", _hex(16))),
    ("github_ghp", lambda: _prefixed("github_ghp", "ghp_", _hex(18))),
    ("github_ghs", lambda: _prefixed("github_ghs", "ghs_", _hex(18))),
    ("github_pat", lambda: _prefixed("github_pat", "github_" + "pat_", _hex(20))),
    ("gitlab", lambda: _prefixed("gitlab", "glpat-", _urlsafe(20))),
    ("slack", lambda: _prefixed("slack", "xoxb-", _hex(8), "-" + secrets.token_hex(12))),
    ("google", lambda: _prefixed("google", "AIza", _urlsafe(35))),
    ("openai", lambda: _prefixed("openai", "sk-proj-", _urlsafe(40))),
    ("anthropic", lambda: _prefixed("anthropic", "sk-ant-api03-", _urlsafe(40))),
    ("sendgrid", lambda: _prefixed("sendgrid", "SG.", _urlsafe(22), "." + secrets.token_hex(20))),
    ("twilio", lambda: _prefixed("twilio", "SK", _hex(16))),
    ("npm", lambda: _prefixed("npm", "npm_", _hex(18))),
    ("pypi", lambda: _prefixed("pypi", "pypi-AgEIcHlwaS5vcmc", _urlsafe(60))),
    ("pem_rsa", _pem("RSA")),
    ("pem_pkcs8", _pem("")),
    ("pem_openssh", _pem("OPENSSH")),
    ("kv_password", _kv("kv_password", "retry with password={}")),
    ("kv_api_key", _kv("kv_api_key", "api_key: {}")),
    ("kv_json", _kv("kv_json", 'sent {{"client_secret": "{}"}}')),
    ("kv_quoted", _kv("kv_quoted", "cfg {{'access_token': '{}'}}")),
    ("kv_cookie_line", _kv("kv_cookie_line", "Cookie: sessionid={}; theme=dark")),
    ("kv_authorization_line", _kv("kv_authorization_line", "Authorization: Token {}")),
    ("email", _email),
    ("pgp", _pgp),
    ("iban", _iban(spaced=False)),
    ("iban_spaced", _iban(spaced=True)),
    ("xml_password", _kv("xml_password", "<Login><Password>{}</Password></Login>")),
    ("xml_attributes", _kv("xml_attributes", '<ns:password type="plain">{}</ns:password>')),
    ("percent_kv", _kv("percent_kv", "next=%2Fcb%3Fpassword%3D{}%26x%3D1")),
    (
        "percent_redirect",
        _kv("percent_redirect", "redirect_uri=https%3A%2F%2Fa.example%2Fcb%3Faccess_token%3D{}"),
    ),
]

#: Keys whose value is hidden whatever it is (docs/redaction.md, "Values under secret keys").
SECRET_KEYS: list[str] = [
    "password",
    "passwd",
    "pwd",
    "pass",
    "passphrase",
    "user_password",
    "secret",
    "client_secret",
    "credentials",
    "token",
    "access_token",
    "refresh_token",
    "X-Auth-Token",
    "jwt",
    "bearer",
    "api_key",
    "x-api-key",
    "apiKey",
    "private_key",
    "secret_key",
    "aws_secret_access_key",
    "signing_key",
    "auth",
    "authorization",
    "cookie",
    "Set-Cookie",
    "session",
    "sid",
    "sessionid",
    "csrf",
    "cvv",
    "ssn",
    "card_number",
    "otp",
    "mfa_code",
    "db_pass",
    "smtp_pass",
    "pw",
    "access_tokens",
    "token_v2",
    "tokenValue",
    "secret_value",
    "privkey",
    "ssh_key",
    "otp_code",
    "verification_code",
    "cvv_code",
    "iban_number",
    "Ocp-Apim-Subscription-Key",
]

# Characters a canary may hold to travel raw in a URL path or query (percent-encoded
# secrets are another matter) and in an HTTP header value.
_URL_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _url_safe(text: str) -> bool:
    return set(text) <= _URL_SAFE


def _header_safe(text: str) -> bool:
    return text.isascii() and "\n" not in text and "\r" not in text


def make_patterns() -> list[Canary]:
    """One fresh canary of every pattern shape."""
    return [make() for _, make in PATTERNS]


def make_keyed() -> list[tuple[str, Canary]]:
    """One fresh random value per secret key."""
    out = []
    for key in SECRET_KEYS:
        value = secrets.token_hex(12)
        out.append((key, _canary(f"key:{key}", value, value)))
    return out


def find_leaks(canaries: list[Canary], sinks: dict[str, bytes]) -> list[tuple[str, str]]:
    """Return (canary name, sink name) for every needle of a canary found in a sink."""
    return [
        (canary.name, sink)
        for sink, data in sinks.items()
        for canary in canaries
        if any(needle in data for needle in canary.needles)
    ]


# ------------------------------------------------------------ served application

# The service: every carrier of a caller, for the canaries the test wrote to
# $LEAK_CANARIES. Each endpoint answers how many placements it made.
_APP = f"""
import enum
import json
import logging
import os
import sys

import sentry_sdk
from fastapi import FastAPI, Request
from opentelemetry import trace

from kaleem_telemetry import (
    bind_context,
    capture_exception,
    extract_context,
    get_logger,
    inject_context,
    instrument,
    instrument_app,
    setup_telemetry,
    telemetry_context,
)

setup_telemetry(service_name={SERVICE!r}, log_format="json")
# The library writes nothing to stderr; this line proves the scan reads the real stream.
print({SERVICE!r} + " started", file=sys.stderr, flush=True)

with open(os.environ["LEAK_CANARIES"]) as file:
    CANARIES = json.load(file)
TEXTS = CANARIES["texts"]
KEYED = dict(CANARIES["keyed"])

app = FastAPI()
log = get_logger("leak.app")
std = logging.getLogger("leak.std")
tracer = trace.get_tracer("leak.app")


class Reveal:
    # What a caller's own object shows: the secret, from repr() and str().
    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text

    __str__ = __repr__


def request_data(request):
    # What sentry-sdk's Starlette integration attaches to an event of the request.
    data = {{
        "url": str(request.url),
        "method": request.method,
        "query_string": request.url.query,
        "headers": dict(request.headers),
        "cookies": dict(request.cookies),
    }}

    def add(event, hint):
        event["request"] = data
        return event

    sentry_sdk.get_isolation_scope().add_event_processor(add)


def log_request(request):
    log.info(
        "leak.request",
        headers=dict(request.headers),
        cookies=dict(request.cookies),
        query=request.url.query,
        url=str(request.url),
        params=dict(request.query_params),
    )
    return 5


def failing_chain(text):
    # Three exceptions chained with "raise ... from ...", each carrying the text.
    try:
        try:
            raise KeyError(text)
        except KeyError as first:
            raise RuntimeError(Reveal(text)) from first
    except RuntimeError as second:
        raise ValueError("wrapped: " + text) from second


def job(headers, text):
    # A producer injects its context into message headers; the consumer extracts it.
    inject_context(headers)
    extracted = extract_context(headers)
    with tracer.start_as_current_span(
        "leak.job", context=extracted.otel_context, attributes={{"messaging.note": text}}
    ):
        log.info("leak.job", headers=headers)


@app.get("/plant/{{i}}")
async def plant(i: int, request: Request):
    text = TEXTS[i]
    planted = log_request(request)
    request_data(request)
    log.info("leak.kwarg", note=text)
    log.info("leak.message " + text)
    log.info("leak.positional %s", text)
    nested = {{"outer": [{{"inner": (1, text)}}], "set": {{text}}, "deep": {{"a": [text]}}}}
    log.info("leak.nested", data=nested)
    log.info("leak.bytes", blob=text.encode())
    log.info("leak.url", link="https://api.example.test/callback?state=ok&note=" + text)
    log.info("leak.json", payload=json.dumps({{"note": text, "items": [text]}}))
    log.info("leak.repr", obj=Reveal(text))
    # orjson writes these natively: the redactor must still see them.
    log.info("leak.enum", kind=enum.Enum("Leak", {{"SECRET": text}}).SECRET)
    log.info("leak.memoryview", blob=memoryview(text.encode()))
    log.info("leak.dict_key", data={{text: 1}})
    log.info("leak.tuple_key", data={{(text, 1): 1}})
    # Across the 16,384-character cut of a long value.
    log.info("leak.straddle", blob="w" * (16_384 - len(text) // 2) + " " + text + " tail")
    planted += 5
    std.warning("leak.std %s", text)
    std.warning("leak.std_extra", extra={{"note": text}})
    planted += 12  # leak.nested holds it three times: in a tuple, a set, a list
    with telemetry_context(note=text):
        log.info("leak.bound")
    bind_context(note_bound=text)
    log.info("leak.bind")
    planted += 2

    def work():
        span = trace.get_current_span()
        span.set_attribute("leak.note", text)
        span.add_event("leak.event", {{"note": text}})
        raise ValueError(text)

    try:
        instrument(name="leak.instrumented", attributes={{"note": text}})(work)()
    except ValueError:
        pass
    planted += 4  # static attribute, live attribute, event, exception event
    job({{"x-note": text}}, text)
    planted += 2
    note = text  # a frame local, sent with the Sentry event
    sentry_sdk.get_isolation_scope().set_extra("leak_note", note)
    try:
        failing_chain(text)
    except ValueError as exc:
        log.exception("leak.exception")
        capture_exception(exc)
    planted += 8  # three exception texts (log and Sentry), the local, the extra
    return {{"planted": planted}}


@app.get("/fail/{{i}}")
async def fail(i: int, request: Request):
    # Unhandled: the middleware records it on the span, in the log and in Sentry.
    request_data(request)
    failing_chain(TEXTS[i])


@app.get("/path/{{note}}")
async def path(note: str, request: Request):
    return {{"planted": log_request(request)}}


@app.get("/keyed")
async def keyed(request: Request):
    planted = log_request(request)
    request_data(request)
    log.info("leak.keyed", **KEYED)
    log.info("leak.keyed_nested", data={{"config": [dict(KEYED)], "copy": (dict(KEYED),)}})
    log.info("leak.keyed_json", payload=json.dumps(KEYED))
    std.warning("leak.keyed_std", extra=dict(KEYED))
    # As %-format arguments, each value a list: formatted only after redaction.
    as_lists = {{key: [value] for key, value in KEYED.items()}}
    log.info("leak.keyed_args %s", as_lists)
    std.warning("leak.keyed_std_args %s", as_lists)
    planted += 7 * len(KEYED)
    with telemetry_context(**KEYED):
        log.info("leak.keyed_bound")
    planted += len(KEYED)

    def work():
        trace.get_current_span().set_attributes(KEYED)

    instrument(name="leak.keyed_span", attributes=KEYED)(work)()
    planted += 2 * len(KEYED)
    headers = dict(KEYED)
    job(headers, "x")
    planted += len(KEYED)
    sentry_sdk.get_isolation_scope().set_extra("leak_config", dict(KEYED))
    sentry_sdk.get_isolation_scope().set_context("leak", dict(KEYED))
    password = KEYED["password"]  # a frame local under a secret name
    try:
        raise RuntimeError("keyed " + str(len(password)))
    except RuntimeError as exc:
        capture_exception(exc)
    planted += 2 * len(KEYED) + 1
    return {{"planted": planted}}


instrument_app(app)
"""


@dataclass
class _Request:
    """One request of the test, with canaries of its own in its headers, cookies and query."""

    path: str
    headers: dict[str, str]
    canaries: list[Canary]
    placements: int


def _token(name: str) -> Canary:
    value = secrets.token_urlsafe(24)
    return _canary(name, value, value)


def _request(path: str, text: Canary | None) -> _Request:
    """A GET of ``path`` whose headers, cookies and query carry fresh canaries (and ``text``)."""
    bearer, session, csrf, api_key, custom = (
        _token(n)
        for n in (
            "h:authorization",
            "h:cookie_session",
            "h:cookie_csrf",
            "h:x-api-key",
            "h:x-service-token",
        )
    )
    query_token, query_password = _token("q:access_token"), _token("q:password")
    headers = {
        "Authorization": "Bearer " + bearer.secret,
        "Cookie": f"sessionid={session.secret}; csrftoken={csrf.secret}; theme=dark",
        "X-Api-Key": api_key.secret,
        "X-Service-Token": custom.secret,
    }
    query = f"access_token={query_token.secret}&password={query_password.secret}&page=2"
    canaries = [bearer, session, csrf, api_key, custom, query_token, query_password]
    placements = len(canaries)
    if text is not None and _header_safe(text.text):
        headers["X-Note"] = text.text
        headers["User-Agent"] = "leak-probe/1.0 " + text.text
        placements += 2
    if text is not None and _url_safe(text.text):
        query += "&note=" + text.text
        placements += 1
    return _Request(f"{path}?{query}", headers, canaries, placements)


@dataclass
class _Sinks:
    """Everything the service emitted, as bytes, and what the receivers decoded."""

    raw: dict[str, bytes]
    spans: list[Any]
    events: list[dict[str, Any]]
    #: The OTLP request headers, which must carry the configured header token: the
    #: positive control that the scan finds a canary where one belongs.
    export_headers: bytes


def _uvicorn(port: int) -> list[str]:
    # No --no-access-log: the library must silence uvicorn's access logger itself.
    return [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(port)]


def _decoded_spans(spans: list[Any]) -> bytes:
    """The decoded spans (attributes, events, resource) as JSON, for a second scan."""
    return json.dumps([vars(span) for span in spans], default=repr).encode()


def _decoded_envelopes(envelopes: list[Any]) -> bytes:
    """Every envelope item parsed and written back without escapes, for a second scan."""
    out = []
    for _header, items in envelopes:
        for item_header, payload in items:
            try:
                out.append(json.loads(payload))
            except ValueError:
                out.append(payload.decode("utf-8", "replace"))
            out.append(item_header)
    return json.dumps(out, ensure_ascii=False).encode()


@pytest.fixture(name="served", scope="module")
def _served(tmp_path_factory: pytest.TempPathFactory) -> tuple[_Sinks, list[Canary], int]:
    """Run the service under uvicorn, plant every canary through it, and collect every sink."""
    import httpx

    project = tmp_path_factory.mktemp("leak")
    texts = make_patterns()
    keyed = make_keyed()
    metrics_token = _token("config:metrics_token")
    otlp_token = _token("config:otlp_header")
    wrong_token = _token("h:metrics_wrong_token")
    (project / "app.py").write_text(_APP)
    (project / "canaries.json").write_text(
        json.dumps({"texts": [c.text for c in texts], "keyed": [(k, c.secret) for k, c in keyed]})
    )
    requests = [_request(f"/plant/{i}", c) for i, c in enumerate(texts)]
    requests += [_request(f"/fail/{i}", c) for i, c in enumerate(texts)]
    for text in texts:
        if _url_safe(text.text):
            requests.append(_request(f"/path/{text.text}", None))
            requests.append(_request(f"/nowhere/{text.text}", None))
    requests.append(_request("/keyed", None))
    canaries = [*texts, *(c for _, c in keyed), metrics_token, otlp_token, wrong_token]
    for request in requests:
        canaries += request.canaries
    placements = 3  # the two configuration tokens and the wrong scrape token
    with OTLPReceiver("http/protobuf") as collector, SentryIngest() as sentry:
        env = clean_env(
            **collector.env(),
            SENTRY_DSN=sentry.dsn,
            LEAK_CANARIES=str(project / "canaries.json"),
            OTEL_TRACES_SAMPLER="always_on",
            OTEL_BSP_SCHEDULE_DELAY="200",
            OTEL_EXPORTER_OTLP_HEADERS=f"authorization=Bearer {otlp_token.secret}",
            KALEEM_TELEMETRY_ENVIRONMENT="test",
            KALEEM_TELEMETRY_REDACT_EMAILS="true",
            KALEEM_TELEMETRY_METRICS_TOKEN=metrics_token.secret,
        )
        port = free_port()
        with (
            serve(_uvicorn(port), project, env, port) as server,
            httpx.Client(base_url=server.url, timeout=30) as client,
        ):
            for request in requests:
                # uvicorn drops the connection after an unhandled error: one per request.
                headers = {**request.headers, "Connection": "close"}
                answer = client.get(request.path, headers=headers)
                placements += request.placements
                if request.path.startswith(("/plant/", "/keyed", "/path/")):
                    assert answer.status_code == 200, (request.path, answer.text)
                    placements += answer.json()["planted"]
                elif request.path.startswith("/fail/"):
                    assert answer.status_code == 500
                    placements += 3
                else:
                    assert answer.status_code == 404
            refused = client.get(
                "/metrics", headers={"Authorization": "Bearer " + wrong_token.secret}
            )
            assert refused.status_code in (401, 403)
            scrape = client.get(
                "/metrics", headers={"Authorization": "Bearer " + metrics_token.secret}
            )
            assert scrape.status_code == 200
            # SIGTERM: the bounded shutdown flushes the spans and the Sentry queue,
            # then uvicorn dies of the signal it re-raises (docs/shutdown.md).
            assert server.terminate() in (0, -15)
            stdout, stderr = server.out_path.read_bytes(), server.err_path.read_bytes()
        spans = collector.wait_for(len(requests), timeout=10)
        events = sentry.wait_for_events(2 * len(texts) + 1, timeout=10)
        raw = {
            "stdout": stdout,
            "stderr": stderr,
            "otlp (raw)": b"".join(collector.bodies),
            "otlp (decoded)": _decoded_spans(spans),
            "sentry (raw)": b"".join(sentry.bodies),
            "sentry (decoded)": _decoded_envelopes(sentry.envelopes),
            "/metrics": scrape.content,
        }
        export_headers = json.dumps(collector.metadata).encode()
    return _Sinks(raw, spans, events, export_headers), canaries, placements


class TestServedApplication:
    def test_no_canary_reaches_any_sink(self, served: tuple[_Sinks, list[Canary], int]) -> None:
        """Not one canary, by its secret or a chunk of it, is in any sink's bytes."""
        sinks, canaries, placements = served

        leaks = find_leaks(canaries, sinks.raw)
        print(
            f"\n[leak scan] {len(canaries)} canaries, {placements} placements, found {len(leaks)}"
        )
        for sink, data in sinks.raw.items():
            print(f"[leak scan]   {sink}: {len(data):,} bytes scanned")
        assert leaks == []

    def test_every_sink_received_the_service_data(
        self, served: tuple[_Sinks, list[Canary], int]
    ) -> None:
        """The scan is not vacuous: each sink holds the service's name and the planted events."""
        sinks, canaries, _ = served
        raw = sinks.raw
        patterns = len(PATTERNS)

        # About 20 lines a shape; fewer for the shapes that cannot travel raw in a URL.
        assert raw["stdout"].count(f'"service":"{SERVICE}"'.encode()) >= 15 * patterns
        assert raw["stdout"].count(b'"event":"leak.kwarg"') == patterns
        for carrier in ("enum", "memoryview", "dict_key", "tuple_key", "straddle"):
            assert raw["stdout"].count(f'"event":"leak.{carrier}"'.encode()) == patterns
        assert raw["stdout"].count(b'"event":"leak.keyed"') == 1
        assert b"[REDACTED" in raw["stdout"]
        assert SERVICE.encode() in raw["stderr"]
        assert len(sinks.spans) >= 4 * patterns
        assert {span.resource.get("service.name") for span in sinks.spans} == {SERVICE}
        assert SERVICE.encode() in raw["otlp (raw)"]
        assert {"leak.instrumented", "leak.job", "leak.keyed_span"} <= {s.name for s in sinks.spans}
        assert any(name == "exception" for s in sinks.spans for name, _ in s.events)
        # One capture_exception per /plant, one unhandled error per /fail, one from /keyed.
        assert len(sinks.events) >= 2 * patterns + 1
        assert {event.get("tags", {}).get("service") for event in sinks.events} == {SERVICE}
        assert all("request" in event for event in sinks.events)
        assert f'service="{SERVICE}"'.encode() in raw["/metrics"]
        assert b"http_requests_total" in raw["/metrics"]
        assert all(len(c.chunk) >= 12 for c in canaries)

    def test_the_scan_finds_a_canary_where_one_belongs(
        self, served: tuple[_Sinks, list[Canary], int]
    ) -> None:
        """The exporter sends the configured header token to the collector, and the scan sees it."""
        sinks, canaries, _ = served
        [otlp_token] = [c for c in canaries if c.name == "config:otlp_header"]

        assert find_leaks(canaries, {"otlp headers": sinks.export_headers}) == [
            ("config:otlp_header", "otlp headers")
        ]
        assert otlp_token.secret.encode() in sinks.export_headers

    @pytest.mark.parametrize(
        "kind",
        [
            "jwt",
            "bearer",
            "basic",
            "card",
            "aws_access_key",
            "stripe_key",
            "github_token",
            "gitlab_token",
            "slack_token",
            "google_api_key",
            "openai_key",
            "sendgrid_key",
            "twilio_key",
            "npm_token",
            "pypi_token",
            "private_key",
            "email",
        ],
    )
    def test_every_shape_was_recognised_by_the_policy(
        self, served: tuple[_Sinks, list[Canary], int], kind: str
    ) -> None:
        """Each shape's marker is in the logs: the canary was planted and recognised, not lost."""
        sinks, _, _ = served

        assert f"[REDACTED:{kind}]".encode() in sinks.raw["stdout"]


# ------------------------------------------------------------ generated structures

EXAMPLES = 150


@dataclass(frozen=True)
class _Slot:
    """Where the template of a structure gets a canary when the example runs.

    A ``pattern`` slot becomes a string holding a shape of `PATTERNS` (alone, or
    between innocent words); a ``keyed`` slot becomes ``{secret key: token}``, the
    token bare or inside a container. Canaries are made in the test body, never
    drawn, so hypothesis never stores or prints one.
    """

    kind: str
    index: int
    wrapped: bool


_WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
_INNOCENT_KEYS = st.sampled_from(["user", "items", "count", "note", "order", "state", "meta"])
_INNOCENT = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    _WORDS,
)
_PATTERN_SLOT = st.builds(
    _Slot, st.just("pattern"), st.integers(0, len(PATTERNS) - 1), st.booleans()
)
_KEYED_SLOT = st.builds(
    _Slot, st.just("keyed"), st.integers(0, len(SECRET_KEYS) - 1), st.booleans()
)
_SLOT = st.one_of(_PATTERN_SLOT, _KEYED_SLOT)
_HASHABLE = st.one_of(_WORDS, st.integers(-100, 100), _PATTERN_SLOT)

# Innocent values and slots, nested in dicts, lists, tuples and sets.
_TREE: st.SearchStrategy[Any] = st.deferred(
    lambda: st.one_of(
        _INNOCENT,
        _SLOT,
        st.lists(_TREE, max_size=4),
        st.lists(_TREE, max_size=3).map(tuple),
        st.dictionaries(_INNOCENT_KEYS, _TREE, max_size=4),
        st.frozensets(_HASHABLE, max_size=3).map(set),
    )
)

# One slot for sure, at a random depth: wrapped by a drawn list of containers.
_DEPTH = st.lists(st.sampled_from(["list", "tuple", "dict", "set"]), max_size=8)


def _wrap(inner: Any, shells: list[str]) -> Any:
    for shell in shells:
        if shell == "set" and isinstance(inner, _Slot) and inner.kind == "pattern":
            inner = {inner, "plain"}
        elif shell == "tuple":
            inner = ("plain", inner)
        elif shell == "dict":
            inner = {"level_up": inner, "count": 1}
        else:
            inner = [0, inner]
    return inner


_DOCUMENT = st.builds(
    lambda tree, slot, shells: {"tree": tree, "placed": _wrap(slot, shells)},
    _TREE,
    _SLOT,
    _DEPTH,
)


@dataclass
class _Planted:
    """What `_materialise` planted: every canary, the shaped strings, the keyed tokens."""

    canaries: list[Canary]
    texts: list[str]
    keyed: dict[str, str]


def _materialise(template: Any, planted: _Planted, words: list[str]) -> Any:
    """Replace every slot of ``template`` by a fresh canary; record what was planted."""
    if isinstance(template, _Slot):
        if template.kind == "pattern":
            canary = PATTERNS[template.index][1]()
            planted.canaries.append(canary)
            text = f"{words[0]} {canary.text} {words[1]}" if template.wrapped else canary.text
            planted.texts.append(text)
            return text
        key = SECRET_KEYS[template.index]
        canary = _token(f"key:{key}")
        planted.canaries.append(canary)
        planted.keyed[key] = canary.secret
        value: Any = canary.secret
        return {key: [value, {"inner": value}]} if template.wrapped else {key: value}
    if isinstance(template, dict):
        return {k: _materialise(v, planted, words) for k, v in template.items()}
    if isinstance(template, list):
        return [_materialise(v, planted, words) for v in template]
    if isinstance(template, tuple):
        return tuple(_materialise(v, planted, words) for v in template)
    if isinstance(template, set):
        return {_materialise(v, planted, words) for v in template}
    return template


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, set):
        return sorted((_jsonable(v) for v in value), key=repr)
    return value


@pytest.fixture(name="in_process")
def _in_process(span_exporter: Any) -> Any:
    """JSON logs and redacted in-memory spans in this process, e-mails masked."""
    from kaleem_telemetry import logs
    from kaleem_telemetry.config import TelemetryConfig
    from kaleem_telemetry.redaction import Redactor, set_redactor

    environ = {
        "OTEL_SERVICE_NAME": SERVICE,
        "KALEEM_TELEMETRY_ENVIRONMENT": "test",
        "KALEEM_TELEMETRY_LOG_FORMAT": "json",
        "KALEEM_TELEMETRY_REDACT_EMAILS": "true",
    }
    logs.configure_logging(TelemetryConfig.from_env(environ=environ))
    set_redactor(Redactor(mask_emails=True))
    return span_exporter


class TestGeneratedStructures:
    def test_no_canary_in_logs_or_spans_of_generated_structures(self, in_process: Any) -> None:
        """Nested structures with canaries at random depths leave no canary in a line or span."""
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        from kaleem_telemetry import get_logger

        log = get_logger("leak.generated")
        std = logging.getLogger("leak.generated.std")
        tracer = trace.get_tracer("leak.generated")
        totals = {"examples": 0, "canaries": 0, "found": 0, "log bytes": 0, "span bytes": 0}

        @settings(max_examples=EXAMPLES, deadline=None, database=None)
        @given(document=_DOCUMENT, words=st.lists(_WORDS, min_size=2, max_size=2))
        def check(document: Any, words: list[str]) -> None:
            planted = _Planted([], [], {})
            value = _materialise(document, planted, words)
            canaries = planted.canaries
            in_process.clear()
            out = io.StringIO()
            with redirect_stdout(out):
                log.info("generated", payload=value)
                log.info("generated %s", value)
                std.warning("generated %s", value, extra={"payload": value})
            encoded = json.dumps(_jsonable(value))
            # Span attributes hold no containers: the structure as JSON, the shaped
            # strings as a list, and each keyed token under its own key.
            attributes = {"payload": encoded, "leaves": planted.texts, **planted.keyed}
            with tracer.start_as_current_span("generated", attributes=attributes) as span:
                span.add_event("generated", {"payload": encoded})
            spans = in_process.get_finished_spans()
            sinks = {
                "stdout": out.getvalue().encode(),
                "otlp": encode_spans(spans).SerializeToString(),
            }

            assert canaries
            assert len(spans) == 1
            assert sinks["stdout"].count(f'"service":"{SERVICE}"'.encode()) == 3
            leaks = find_leaks(canaries, sinks)
            totals["found"] += len(leaks)
            assert leaks == []
            totals["examples"] += 1
            totals["canaries"] += len(canaries)
            totals["log bytes"] += len(sinks["stdout"])
            totals["span bytes"] += len(sinks["otlp"])

        check()
        print(
            f"\n[leak scan, generated] {totals['examples']} examples, {totals['canaries']} "
            f"canaries, found {totals['found']}; {totals['log bytes']:,} log bytes and "
            f"{totals['span bytes']:,} OTLP span bytes scanned"
        )
