from __future__ import annotations

import copy
import dataclasses
import json
import math
import pickle
import re
import secrets
from pathlib import Path

import pytest

from kaleem_telemetry.config import (
    MASK,
    Setting,
    TelemetryConfig,
    _settings_markdown,
    sdk_settings,
    settings_table,
)
from kaleem_telemetry.exceptions import TelemetryConfigError

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
#: Every variable name that a reader could mistake for a setting of ours.
VARIABLE = re.compile(r"\b(?:OTEL|SENTRY|KALEEM_TELEMETRY|PROMETHEUS)_[A-Z0-9_]*[A-Z0-9]\b")


def _build(**env: str) -> TelemetryConfig:
    return TelemetryConfig.from_env(environ=env)


def _error(environ: dict[str, str] | None = None, **overrides: object) -> str:
    with pytest.raises(TelemetryConfigError) as info:
        TelemetryConfig.from_env(environ=environ or {}, **overrides)
    assert isinstance(info.value, ValueError)
    return str(info.value)


class TestDefaults:
    def test_empty_environment_gives_the_documented_defaults(self):
        """With no variables and no arguments every field has its default."""
        cfg = _build()

        assert cfg == TelemetryConfig()
        assert cfg.service_name == "unknown_service"
        assert cfg.environment == "development"
        assert cfg.version == "0.0.0"
        assert dict(cfg.resource_attributes) == {}
        assert cfg.sdk_disabled is False
        assert cfg.traces_exporter == "otlp"
        assert cfg.otlp_endpoint is None
        assert cfg.otlp_traces_endpoint is None
        assert cfg.otlp_protocol == "grpc"
        assert dict(cfg.otlp_headers) == {}
        assert cfg.traces_sampler == "parentbased_traceidratio"
        assert cfg.traces_sampler_arg is None
        assert cfg.sentry_dsn is None
        assert cfg.sentry_environment is None
        assert cfg.sentry_release is None
        assert cfg.sentry_log_events is True
        assert cfg.prometheus_multiproc_dir is None
        assert cfg.log_level == "info"
        assert cfg.log_format == "auto"
        assert cfg.redact_keys == ()
        assert cfg.redact_emails is False
        assert cfg.request_id_header == "X-Request-ID"
        assert cfg.metrics_port is None
        assert cfg.metrics_addr == "0.0.0.0"
        assert cfg.metrics_token is None
        assert cfg.metrics_series_limit == 2000
        assert cfg.trust_trace_headers is True
        assert cfg.shutdown_timeout == 5.0

    def test_unrelated_variables_are_ignored(self):
        """Variables that are not settings do not matter."""
        assert _build(PATH="/usr/bin", OTEL_UNKNOWN_THING="x") == TelemetryConfig()


class TestPrecedence:
    def test_argument_beats_environment_beats_default(self):
        """An override wins over its variable, which wins over the default."""
        environ = {"KALEEM_TELEMETRY_LOG_LEVEL": "warning", "KALEEM_TELEMETRY_VERSION": "1.2.3"}

        cfg = TelemetryConfig.from_env(environ=environ, log_level="debug")

        assert cfg.log_level == "debug"
        assert cfg.version == "1.2.3"
        assert cfg.environment == "development"

    def test_override_hides_a_bad_environment_value(self):
        """A variable whose setting is overridden is not read, so its bad value does not matter."""
        cfg = TelemetryConfig.from_env(
            environ={"KALEEM_TELEMETRY_LOG_FORMAT": "xml"}, log_format="json"
        )

        assert cfg.log_format == "json"

    def test_none_override_is_ignored(self):
        """An override of None leaves the environment value in place."""
        cfg = TelemetryConfig.from_env(
            environ={"OTEL_SERVICE_NAME": "from-env"}, service_name=None, metrics_port=None
        )

        assert cfg.service_name == "from-env"
        assert cfg.metrics_port is None

    def test_empty_string_override_clears_an_optional_setting(self):
        """sentry_dsn="" turns Sentry off even when SENTRY_DSN is set."""
        cfg = TelemetryConfig.from_env(
            environ={"SENTRY_DSN": "https://key@o1.ingest.sentry.io/1"}, sentry_dsn=""
        )

        assert cfg.sentry_dsn is None

    def test_empty_string_override_of_a_required_setting_is_an_error(self):
        """An empty service name argument is rejected, naming the argument."""
        message = _error(service_name="")

        assert "setup_telemetry(service_name=...)" in message
        assert "''" in message

    @pytest.mark.parametrize("value", ["", "   "])
    def test_empty_variable_counts_as_unset(self, value):
        """An empty (or blank) variable is unset, as the OpenTelemetry spec says."""
        cfg = _build(
            OTEL_SERVICE_NAME=value,
            KALEEM_TELEMETRY_METRICS_PORT=value,
            OTEL_TRACES_SAMPLER_ARG=value,
            OTEL_SDK_DISABLED=value,
            SENTRY_DSN=value,
        )

        assert cfg == TelemetryConfig()

    def test_surrounding_whitespace_is_ignored(self):
        """Values are stripped, e.g. a secret mounted with a trailing newline."""
        cfg = _build(KALEEM_TELEMETRY_METRICS_TOKEN="tok\n", KALEEM_TELEMETRY_METRICS_PORT=" 9100 ")

        assert cfg.metrics_token == "tok"
        assert cfg.metrics_port == 9100

    def test_none_environ_reads_os_environ(self, monkeypatch):
        """End to end: environ=None reads the process environment."""
        monkeypatch.setenv("OTEL_SERVICE_NAME", "from-os-environ")
        monkeypatch.setenv("KALEEM_TELEMETRY_METRICS_PORT", "9100")
        monkeypatch.setenv("KALEEM_TELEMETRY_LOG_FORMAT", "json")

        cfg = TelemetryConfig.from_env()

        assert cfg.service_name == "from-os-environ"
        assert cfg.metrics_port == 9100
        assert cfg.log_format == "json"

    def test_unknown_override_is_an_error_that_suggests_the_name(self):
        """A misspelt argument raises, names it, and suggests the closest field."""
        message = _error(log_fromat="json", frobnicate=1)

        assert "'log_fromat'" in message
        assert "'frobnicate'" in message
        assert "did you mean 'log_format'?" in message


class TestServiceName:
    def test_otel_service_name_wins_over_resource_attributes(self):
        """OTEL_SERVICE_NAME beats service.name in OTEL_RESOURCE_ATTRIBUTES."""
        cfg = _build(OTEL_SERVICE_NAME="a", OTEL_RESOURCE_ATTRIBUTES="service.name=b")

        assert cfg.service_name == "a"

    def test_resource_attributes_supply_the_name_when_it_is_unset(self):
        """service.name in OTEL_RESOURCE_ATTRIBUTES is used when OTEL_SERVICE_NAME is unset."""
        cfg = _build(OTEL_RESOURCE_ATTRIBUTES="service.name=from%20attrs,team=core")

        assert cfg.service_name == "from attrs"
        assert dict(cfg.resource_attributes) == {"service.name": "from attrs", "team": "core"}

    def test_argument_wins_over_both(self):
        """The service_name argument beats both variables."""
        cfg = TelemetryConfig.from_env(
            environ={"OTEL_SERVICE_NAME": "a", "OTEL_RESOURCE_ATTRIBUTES": "service.name=b"},
            service_name="c",
        )

        assert cfg.service_name == "c"


class TestEnvironmentValues:
    @pytest.mark.parametrize(
        ("var", "value", "field", "expected"),
        [
            ("OTEL_SERVICE_NAME", "kaleem-api", "service_name", "kaleem-api"),
            ("KALEEM_TELEMETRY_ENVIRONMENT", "production", "environment", "production"),
            ("KALEEM_TELEMETRY_VERSION", "2.14.0+g1a2b", "version", "2.14.0+g1a2b"),
            ("OTEL_SDK_DISABLED", "TRUE", "sdk_disabled", True),
            ("OTEL_SDK_DISABLED", "0", "sdk_disabled", False),
            ("OTEL_TRACES_EXPORTER", "Console", "traces_exporter", "console"),
            ("OTEL_TRACES_EXPORTER", "none", "traces_exporter", "none"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317", "otlp_endpoint", "https://c:4317"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://127.0.0.1:4318/v1/traces",
                "otlp_traces_endpoint",
                "http://127.0.0.1:4318/v1/traces",
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf", "otlp_protocol", "http/protobuf"),
            ("OTEL_TRACES_SAMPLER", "ALWAYS_ON", "traces_sampler", "always_on"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25", "traces_sampler_arg", 0.25),
            ("OTEL_TRACES_SAMPLER_ARG", "0", "traces_sampler_arg", 0.0),
            ("OTEL_TRACES_SAMPLER_ARG", "1", "traces_sampler_arg", 1.0),
            ("SENTRY_DSN", "https://k@o1.ingest.sentry.io/42", "sentry_dsn", None),
            ("SENTRY_ENVIRONMENT", "staging", "sentry_environment", "staging"),
            ("SENTRY_RELEASE", "api@2.14.0", "sentry_release", "api@2.14.0"),
            ("KALEEM_TELEMETRY_SENTRY_LOG_EVENTS", "off", "sentry_log_events", False),
            ("PROMETHEUS_MULTIPROC_DIR", "/tmp/prom", "prometheus_multiproc_dir", "/tmp/prom"),
            ("KALEEM_TELEMETRY_LOG_LEVEL", "WARNING", "log_level", "warning"),
            ("KALEEM_TELEMETRY_LOG_FORMAT", "json", "log_format", "json"),
            ("KALEEM_TELEMETRY_REDACT_KEYS", " pin , *_otp,,", "redact_keys", ("pin", "*_otp")),
            (
                "KALEEM_TELEMETRY_INTEGRATIONS",
                " Redis , auto,redis",
                "integrations",
                ("redis", "auto"),
            ),
            ("KALEEM_TELEMETRY_REDACT_EMAILS", "yes", "redact_emails", True),
            ("KALEEM_TELEMETRY_REQUEST_ID_HEADER", "X-Correlation-ID", "request_id_header", None),
            ("KALEEM_TELEMETRY_METRICS_PORT", "9100", "metrics_port", 9100),
            ("KALEEM_TELEMETRY_METRICS_ADDR", "::1", "metrics_addr", "::1"),
            ("KALEEM_TELEMETRY_METRICS_ADDR", "metrics.local", "metrics_addr", "metrics.local"),
            ("KALEEM_TELEMETRY_METRICS_TOKEN", "s3cr3t", "metrics_token", "s3cr3t"),
            ("KALEEM_TELEMETRY_METRICS_SERIES_LIMIT", "1", "metrics_series_limit", 1),
            ("KALEEM_TELEMETRY_TRUST_TRACE_HEADERS", "False", "trust_trace_headers", False),
            ("KALEEM_TELEMETRY_SHUTDOWN_TIMEOUT", "0.5", "shutdown_timeout", 0.5),
        ],
    )
    def test_valid_value_is_parsed(self, var, value, field, expected):
        """A valid variable value lands, normalised, in its field."""
        cfg = _build(**{var: value})

        assert getattr(cfg, field) == (value if expected is None else expected)


#: (variable, bad value): every variable of settings_table() appears at least once,
#: here or in SECRET_BAD_VALUES.
BAD_VALUES = [
    ("OTEL_SERVICE_NAME", "api\nFAKE LOG LINE"),
    ("KALEEM_TELEMETRY_ENVIRONMENT", "prod/eu"),
    ("KALEEM_TELEMETRY_ENVIRONMENT", "x" * 65),
    ("KALEEM_TELEMETRY_VERSION", "1.0\x00rc1"),
    ("OTEL_RESOURCE_ATTRIBUTES", "service.name"),
    ("OTEL_RESOURCE_ATTRIBUTES", "a=1,=2"),
    ("OTEL_RESOURCE_ATTRIBUTES", "a=%FF"),
    ("OTEL_RESOURCE_ATTRIBUTES", "a=line%0Abreak"),
    ("OTEL_SDK_DISABLED", "maybe"),
    ("OTEL_TRACES_EXPORTER", "jaeger"),
    ("OTEL_TRACES_EXPORTER", "otlp,console"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4317"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector:4317"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:70000"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:port"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://col lector:4317"),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4318/v1/traces"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "smtp"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
    ("OTEL_TRACES_SAMPLER", "sometimes"),
    ("OTEL_TRACES_SAMPLER", "jaeger_remote"),
    ("OTEL_TRACES_SAMPLER_ARG", "abc"),
    ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
    ("OTEL_TRACES_SAMPLER_ARG", "-0.1"),
    ("OTEL_TRACES_SAMPLER_ARG", "nan"),
    ("SENTRY_ENVIRONMENT", "a/b"),
    ("SENTRY_RELEASE", "r" * 201),
    ("KALEEM_TELEMETRY_SENTRY_LOG_EVENTS", "sometimes"),
    ("PROMETHEUS_MULTIPROC_DIR", "/tmp/a\x00b"),
    ("KALEEM_TELEMETRY_LOG_LEVEL", "verbose"),
    ("KALEEM_TELEMETRY_LOG_FORMAT", "xml"),
    ("KALEEM_TELEMETRY_REDACT_KEYS", "pin,*"),
    ("KALEEM_TELEMETRY_INTEGRATIONS", "redis,mysql"),
    ("KALEEM_TELEMETRY_REDACT_EMAILS", "2"),
    ("KALEEM_TELEMETRY_REQUEST_ID_HEADER", "X Request ID"),
    ("KALEEM_TELEMETRY_REQUEST_ID_HEADER", "X-Request-ID:"),
    ("KALEEM_TELEMETRY_METRICS_PORT", "70000"),
    ("KALEEM_TELEMETRY_METRICS_PORT", "-1"),
    ("KALEEM_TELEMETRY_METRICS_PORT", "0"),
    ("KALEEM_TELEMETRY_METRICS_PORT", "abc"),
    ("KALEEM_TELEMETRY_METRICS_PORT", "9100.5"),
    ("KALEEM_TELEMETRY_METRICS_ADDR", "0.0.0.0:9100"),
    ("KALEEM_TELEMETRY_METRICS_ADDR", "not an address"),
    ("KALEEM_TELEMETRY_METRICS_SERIES_LIMIT", "0"),
    ("KALEEM_TELEMETRY_METRICS_SERIES_LIMIT", "many"),
    ("KALEEM_TELEMETRY_TRUST_TRACE_HEADERS", "perhaps"),
    ("KALEEM_TELEMETRY_FLUSH_ON_SIGTERM", "sometimes"),
    ("KALEEM_TELEMETRY_SHUTDOWN_TIMEOUT", "0"),
    ("KALEEM_TELEMETRY_SHUTDOWN_TIMEOUT", "-1"),
    ("KALEEM_TELEMETRY_SHUTDOWN_TIMEOUT", "inf"),
    ("KALEEM_TELEMETRY_SHUTDOWN_TIMEOUT", "soon"),
]


def _secret() -> str:
    return "s" + secrets.token_hex(12)


#: (variable, function of a run-time secret -> bad value containing it).
SECRET_BAD_VALUES = [
    ("OTEL_EXPORTER_OTLP_HEADERS", lambda s: f"authorization Bearer {s}"),
    ("OTEL_EXPORTER_OTLP_HEADERS", lambda s: f"ok=1,={s}"),
    ("OTEL_EXPORTER_OTLP_HEADERS", lambda s: f"Authorization: Bearer {s}=x"),
    ("OTEL_EXPORTER_OTLP_HEADERS", lambda s: f"x-api-key={s}%0D%0Ainjected: 1"),
    ("OTEL_EXPORTER_OTLP_HEADERS", lambda s: f"x-api-key={s}%FF"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", lambda s: f"http://user:{s}@collector:99999"),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", lambda s: f"user:{s}@collector:4318"),
    ("SENTRY_DSN", lambda s: s),
    ("SENTRY_DSN", lambda s: f"https://{s}@o1.ingest.sentry.io/not-a-number"),
    ("SENTRY_DSN", lambda s: f"ftp://{s}@o1.ingest.sentry.io/42"),
    ("SENTRY_DSN", lambda s: f"https://{s}@/42"),
    ("SENTRY_DSN", lambda s: "https://o1.ingest.sentry.io/42"),
    ("KALEEM_TELEMETRY_METRICS_TOKEN", lambda s: f"{s}\x01"),
]


class TestBadEnvironmentValues:
    @pytest.mark.parametrize(("var", "value"), BAD_VALUES)
    def test_bad_value_names_the_variable_and_the_value(self, var, value):
        """A bad value raises TelemetryConfigError naming the variable and showing the value."""
        message = _error({var: value})

        assert message.startswith(var)
        assert repr(value) in message
        assert message.endswith(".")

    @pytest.mark.parametrize(("var", "make"), SECRET_BAD_VALUES)
    def test_bad_secret_value_names_the_variable_but_never_the_secret(self, var, make):
        """A bad secret raises naming the variable, and the message does not contain the secret."""
        secret = _secret()

        message = _error({var: make(secret)})

        assert message.startswith(var)
        assert secret not in message

    def test_every_variable_has_a_bad_value_test(self):
        """The two tables above cover every variable of settings_table()."""
        tested = {var for var, _ in BAD_VALUES} | {var for var, _ in SECRET_BAD_VALUES}

        assert {row.env_var for row in settings_table()} <= tested

    def test_unsupported_protocol_says_why(self):
        """http/json is rejected with a message that says it is unsupported."""
        message = _error({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})

        assert "not supported" in message
        assert "'http/protobuf'" in message

    def test_message_follows_the_style_guide(self):
        """The log format message is exactly the one STYLE.md shows (with 'auto')."""
        message = _error({"KALEEM_TELEMETRY_LOG_FORMAT": "xml"})

        assert (
            message == "KALEEM_TELEMETRY_LOG_FORMAT must be 'auto', 'json' or 'console', got 'xml'."
        )

    def test_header_error_gives_the_entry_position(self):
        """A malformed header entry is located by position when its text may be secret."""
        message = _error({"OTEL_EXPORTER_OTLP_HEADERS": "a=1,b=2,oops"})

        assert "entry 3" in message
        assert "oops" not in message

    def test_header_value_error_names_the_header(self):
        """A bad header value is located by its (non-secret) header name."""
        message = _error({"OTEL_EXPORTER_OTLP_HEADERS": "X-Api-Key=a%0Ab"})

        assert "'x-api-key'" in message

    def test_endpoint_without_credentials_is_shown(self):
        """An endpoint without credentials is shown as given, to help fix it."""
        message = _error({"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4317"})

        assert "'localhost:4317'" in message
        assert "http://" in message


#: (argument, bad typed value).
BAD_OVERRIDES = [
    ("service_name", 42),
    ("environment", "prod/eu"),
    ("resource_attributes", {"a": 1}),
    ("resource_attributes", "no-equals"),
    ("sdk_disabled", "maybe"),
    ("sdk_disabled", 1),
    ("traces_exporter", "zipkin"),
    ("otlp_endpoint", "ftp://collector"),
    ("otlp_protocol", "smtp"),
    ("traces_sampler", "sometimes"),
    ("traces_sampler_arg", 1.5),
    ("traces_sampler_arg", "abc"),
    ("traces_sampler_arg", math.nan),
    ("traces_sampler_arg", True),
    ("prometheus_multiproc_dir", 42),
    ("log_level", "verbose"),
    ("log_format", "xml"),
    ("redact_keys", 42),
    ("redact_keys", ["pin", 7]),
    ("request_id_header", "X Request"),
    ("metrics_port", 70000),
    ("metrics_port", "abc"),
    ("metrics_port", True),
    ("metrics_port", 9100.0),
    ("metrics_addr", "0.0.0.0:9100"),
    ("metrics_series_limit", 0),
    ("trust_trace_headers", "perhaps"),
    ("shutdown_timeout", 0),
    ("shutdown_timeout", math.inf),
]


class TestOverrides:
    @pytest.mark.parametrize(("name", "value"), BAD_OVERRIDES)
    def test_bad_override_names_the_argument_and_the_value(self, name, value):
        """A bad argument raises naming setup_telemetry(<name>=...) and showing the value."""
        message = _error(**{name: value})

        assert message.startswith(f"setup_telemetry({name}=...)")
        assert repr(value) in message

    def test_override_message_matches_the_environment_one(self):
        """An argument and its variable get the same message but for the name."""
        by_argument = _error(log_format="xml")

        assert by_argument == (
            "setup_telemetry(log_format=...) must be 'auto', 'json' or 'console', got 'xml'."
        )

    @pytest.mark.parametrize(
        ("name", "value", "expected"),
        [
            ("metrics_port", 9101, 9101),
            ("metrics_port", "9101", 9101),
            ("redact_keys", ("pin",), ("pin",)),
            ("redact_keys", ["pin", " otp "], ("pin", "otp")),
            ("redact_keys", "pin, otp", ("pin", "otp")),
            ("otlp_headers", {"Api-Key": "v a"}, {"api-key": "v a"}),
            ("otlp_headers", "Api-Key=v%20a", {"api-key": "v a"}),
            ("resource_attributes", {"team": "core"}, {"team": "core"}),
            ("resource_attributes", "team=core", {"team": "core"}),
            ("sdk_disabled", True, True),
            ("sdk_disabled", "on", True),
            ("traces_sampler_arg", 1, 1.0),
            ("traces_sampler_arg", "0.5", 0.5),
            ("shutdown_timeout", 2, 2.0),
            ("prometheus_multiproc_dir", Path("/tmp/prom"), "/tmp/prom"),
            ("log_level", "DEBUG", "debug"),
        ],
    )
    def test_typed_and_string_forms_are_accepted(self, name, value, expected):
        """An argument may take the field's type or the environment's string form."""
        cfg = TelemetryConfig.from_env(environ={}, **{name: value})

        assert getattr(cfg, name) == expected

    def test_secret_override_of_the_wrong_type_is_not_shown(self):
        """A metrics token of the wrong type is reported by type, never by value."""
        message = _error(metrics_token=123456789)

        assert "setup_telemetry(metrics_token=...)" in message
        assert "123456789" not in message

    def test_secret_header_value_of_the_wrong_type_is_not_shown(self):
        """A non-string header value is reported by its header name and type only."""
        message = _error(otlp_headers={"x-api-key": 123456789})

        assert "'x-api-key'" in message
        assert "123456789" not in message


class TestKeyValueLists:
    def test_headers_are_parsed_decoded_and_lower_cased(self):
        """Headers follow the OTel format: commas, '=', percent-decoding; names lower-cased."""
        cfg = _build(
            OTEL_EXPORTER_OTLP_HEADERS=" Authorization = Bearer%20abc , x-a=b=c,x%2Db=%2C, "
        )

        assert dict(cfg.otlp_headers) == {
            "authorization": "Bearer abc",
            "x-a": "b=c",
            "x-b": ",",
        }

    def test_empty_header_value_is_allowed(self):
        """A header with an empty value is kept."""
        assert dict(_build(OTEL_EXPORTER_OTLP_HEADERS="x-empty=").otlp_headers) == {"x-empty": ""}

    def test_resource_attribute_values_are_decoded(self):
        """Resource attribute values are percent-decoded; keys are kept as written."""
        cfg = _build(OTEL_RESOURCE_ATTRIBUTES="Team=a%2Cb,region= eu-west-1 ,k8s.pod.name=p%3D1")

        assert dict(cfg.resource_attributes) == {
            "Team": "a,b",
            "region": "eu-west-1",
            "k8s.pod.name": "p=1",
        }


class TestSentryDsn:
    @pytest.mark.parametrize(
        "dsn",
        [
            "https://abc123@o1.ingest.sentry.io/42",
            "http://abc123@127.0.0.1:9000/1",
            "https://abc123:legacysecret@sentry.example.com/prefix/7",
            "https://abc123@sentry.example.com/42/",
        ],
    )
    def test_valid_dsn_is_kept(self, dsn):
        """Sentry DSNs with a port, a path prefix or a legacy secret are accepted as given."""
        assert _build(SENTRY_DSN=dsn).sentry_dsn == dsn

    def test_effective_environment_and_release_fall_back(self):
        """The Sentry environment and release default to the environment and version."""
        cfg = _build(KALEEM_TELEMETRY_ENVIRONMENT="staging", KALEEM_TELEMETRY_VERSION="1.2")
        explicit = _build(SENTRY_ENVIRONMENT="canary", SENTRY_RELEASE="api@1.2")

        assert (cfg.effective_sentry_environment, cfg.effective_sentry_release) == (
            "staging",
            "1.2",
        )
        assert explicit.effective_sentry_environment == "canary"
        assert explicit.effective_sentry_release == "api@1.2"


class TestMasking:
    @pytest.fixture(name="secret_config")
    def _secret_config(self):
        """A configuration holding run-time secrets in every secret field."""
        keys = {name: _secret() for name in ("dsn", "header", "token", "password", "query")}
        cfg = _build(
            SENTRY_DSN=f"https://{keys['dsn']}@o1.ingest.sentry.io/42",
            OTEL_EXPORTER_OTLP_HEADERS=f"authorization=Bearer%20{keys['header']}",
            KALEEM_TELEMETRY_METRICS_TOKEN=keys["token"],
            OTEL_EXPORTER_OTLP_ENDPOINT=f"https://user:{keys['password']}@collector:4318",
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"https://collector:4318/v1/traces?k={keys['query']}",
        )
        return cfg, keys

    def test_repr_and_str_hide_every_secret(self, secret_config):
        """repr() and str() show no secret, but keep the DSN host and project."""
        cfg, keys = secret_config

        for text in (repr(cfg), str(cfg)):
            assert not [name for name, key in keys.items() if key in text]
            assert "sentry_dsn='https://***@o1.ingest.sentry.io/42'" in text
            assert "otlp_headers={'authorization': '***'}" in text
            assert "metrics_token='***'" in text
            assert "otlp_endpoint='https://***@collector:4318'" in text

    def test_masked_is_a_json_ready_dict_of_every_field(self, secret_config):
        """masked() has one JSON-serialisable entry per field and no secret."""
        cfg, keys = secret_config

        masked = cfg.masked()
        text = json.dumps(masked)

        assert list(masked) == [f.name for f in dataclasses.fields(TelemetryConfig)]
        assert not [name for name, key in keys.items() if key in text]
        assert masked["otlp_headers"] == {"authorization": MASK}
        assert masked["sentry_dsn"] == "https://***@o1.ingest.sentry.io/42"
        assert masked["otlp_traces_endpoint"] == "https://collector:4318/v1/traces?***"

    def test_secrets_are_still_usable(self, secret_config):
        """Masking is for display only: the fields hold the real values."""
        cfg, keys = secret_config

        assert cfg.metrics_token == keys["token"]
        assert cfg.otlp_headers["authorization"] == f"Bearer {keys['header']}"

    def test_repr_of_defaults_is_readable(self):
        """Without secrets repr shows the plain values."""
        text = repr(TelemetryConfig())

        assert text.startswith("TelemetryConfig(service_name='unknown_service', ")
        assert "redact_keys=()" in text
        assert "sentry_dsn=None" in text


class TestFrozen:
    def test_fields_cannot_be_assigned(self):
        """The configuration is a frozen dataclass."""
        cfg = TelemetryConfig()

        with pytest.raises(dataclasses.FrozenInstanceError):
            cfg.log_level = "debug"  # type: ignore[misc]

    def test_mappings_are_read_only(self):
        """The mapping fields cannot be changed in place either."""
        cfg = _build(OTEL_EXPORTER_OTLP_HEADERS="a=b", OTEL_RESOURCE_ATTRIBUTES="c=d")

        with pytest.raises(TypeError):
            cfg.otlp_headers["a"] = "x"
        with pytest.raises(TypeError):
            cfg.resource_attributes["c"] = "x"

    def test_construction_copies_the_given_mapping(self):
        """Changing a dict after passing it in does not change the configuration."""
        headers = {"a": "b"}
        cfg = TelemetryConfig(otlp_headers=headers)

        headers["a"] = "changed"

        assert cfg.otlp_headers["a"] == "b"

    def test_hashable_picklable_and_copyable(self):
        """A configuration can be hashed, pickled and deep-copied, and stays equal."""
        cfg = _build(OTEL_EXPORTER_OTLP_HEADERS="a=b", KALEEM_TELEMETRY_REDACT_KEYS="pin")

        clone = pickle.loads(pickle.dumps(cfg))

        assert clone == cfg
        assert hash(clone) == hash(cfg)
        assert copy.deepcopy(cfg) == cfg
        assert {cfg: 1}[clone] == 1

    def test_direct_construction_is_validated(self):
        """TelemetryConfig(...) checks values like from_env, naming the field."""
        with pytest.raises(TelemetryConfigError, match=r"^TelemetryConfig\(log_format=\.\.\.\)"):
            TelemetryConfig(log_format="xml")

    def test_direct_construction_normalises(self):
        """TelemetryConfig(...) normalises values like from_env."""
        cfg = TelemetryConfig(log_level="DEBUG", otlp_headers={"X-A": "b"}, redact_keys=["pin"])  # type: ignore[arg-type]

        assert cfg.log_level == "debug"
        assert dict(cfg.otlp_headers) == {"x-a": "b"}
        assert cfg.redact_keys == ("pin",)

    def test_replace_is_validated(self):
        """dataclasses.replace() goes through the same checks."""
        cfg = TelemetryConfig()

        assert dataclasses.replace(cfg, log_level="ERROR").log_level == "error"
        with pytest.raises(TelemetryConfigError):
            dataclasses.replace(cfg, metrics_port=0)

    def test_equal_inputs_give_equal_configs(self):
        """Two builds from the same input compare equal (setup_telemetry relies on it)."""
        env = {"OTEL_EXPORTER_OTLP_HEADERS": "a=b", "OTEL_SERVICE_NAME": "svc"}

        assert _build(**env) == _build(**env)
        assert _build(**env) != _build(OTEL_SERVICE_NAME="svc")


class TestProperties:
    @pytest.mark.parametrize(
        ("env", "expected"),
        [
            ({}, 1.0),
            ({"KALEEM_TELEMETRY_ENVIRONMENT": "production"}, 0.1),
            ({"KALEEM_TELEMETRY_ENVIRONMENT": "Production"}, 0.1),
            ({"KALEEM_TELEMETRY_ENVIRONMENT": "staging"}, 1.0),
            ({"KALEEM_TELEMETRY_ENVIRONMENT": "production", "OTEL_TRACES_SAMPLER_ARG": "0.5"}, 0.5),
            ({"OTEL_TRACES_SAMPLER_ARG": "0"}, 0.0),
        ],
    )
    def test_sampler_ratio(self, env, expected):
        """The ratio is the sampler arg, else 0.1 in production and 1.0 elsewhere."""
        assert _build(**env).sampler_ratio == expected

    @pytest.mark.parametrize(
        ("env", "expected"),
        [
            ({}, "http://localhost:4317"),
            ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "http://localhost:4318/v1/traces"),
            ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, "http://c:4317"),
            (
                {
                    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                },
                "http://c:4318/v1/traces",
            ),
            (
                {
                    "OTEL_EXPORTER_OTLP_ENDPOINT": "https://c/otlp/",
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                },
                "https://c/otlp/v1/traces",
            ),
            (
                {
                    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://base:4318",
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:4318/custom",
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                },
                "http://t:4318/custom",
            ),
        ],
    )
    def test_otlp_traces_url_follows_the_otel_spec(self, env, expected):
        """The traces URL is the traces endpoint, else the base (+/v1/traces), else the default."""
        assert _build(**env).otlp_traces_url == expected


#: A value no setting accepts: control characters are refused by every check.
GARBAGE = "not\x00a\x7fvalue"
#: The rows whose default is a value ("unset" and "empty" are the absence of one).
WRITTEN_DEFAULTS = [row for row in settings_table() if row.default not in ("unset", "empty")]
#: The command docs/configuration.md gives for rewriting its generated tables.
REGENERATE = (
    'python -c "import pathlib, kaleem_telemetry.config as c; '
    "p = pathlib.Path('docs/configuration.md'); p.write_text(c._settings_markdown(p.read_text()))\""
)


class TestSettingsTable:
    def test_one_row_per_field_in_field_order(self):
        """settings_table() has exactly one row per TelemetryConfig field, in order."""
        rows = settings_table()

        assert [row.field for row in rows] == [f.name for f in dataclasses.fields(TelemetryConfig)]
        assert all(isinstance(row, Setting) for row in rows)
        assert len({row.env_var for row in rows}) == len(rows)

    def test_every_setting_has_a_variable_and_a_description(self):
        """Each row names a variable of the families we read and says what it does."""
        for row in settings_table():
            assert VARIABLE.fullmatch(row.env_var), row
            assert row.description.strip(), row

    def test_own_variables_follow_the_naming_rule(self):
        """Our variables are KALEEM_TELEMETRY_ plus the field name (STYLE.md §3)."""
        for row in settings_table():
            if row.env_var.startswith("KALEEM_TELEMETRY_"):
                assert row.env_var == f"KALEEM_TELEMETRY_{row.field.upper()}"

    def test_descriptions_are_single_sentences(self):
        """Every description is one sentence ending with a full stop."""
        for row in [*settings_table(), *sdk_settings()]:
            assert row.description.endswith("."), row
            assert ". " not in row.description.replace("e.g. ", ""), row

    def test_descriptions_fit_in_a_table_cell(self):
        """No description has a line break or a '|', which would break the Markdown table."""
        for row in [*settings_table(), *sdk_settings()]:
            assert "|" not in row.description, row
            assert "\n" not in row.description, row

    def test_defaults_pass_their_own_check_unchanged(self):
        """Every default is a valid, already normalised value of its field."""
        cfg = TelemetryConfig()

        for field in dataclasses.fields(TelemetryConfig):
            assert getattr(cfg, field.name) == field.default, field.name
            assert type(getattr(cfg, field.name)) is type(field.default), field.name

    @pytest.mark.parametrize("row", WRITTEN_DEFAULTS, ids=lambda row: row.env_var)
    def test_documented_default_read_from_the_variable_is_the_default(self, row):
        """Setting a variable to the default that the table shows changes nothing."""
        assert _build(**{row.env_var: row.default}) == TelemetryConfig()

    @pytest.mark.parametrize("row", settings_table(), ids=lambda row: row.env_var)
    def test_every_variable_rejects_a_bad_value_naming_itself(self, row):
        """Each variable's check refuses garbage with a message that starts with its name."""
        message = _error({row.env_var: GARBAGE})

        assert message.startswith(f"{row.env_var} must ")

    @pytest.mark.parametrize("row", settings_table(), ids=lambda row: row.field)
    def test_every_argument_rejects_a_bad_value_naming_itself(self, row):
        """Each argument's check refuses garbage with a message that names the argument."""
        message = _error(**{row.field: GARBAGE})

        assert message.startswith(f"setup_telemetry({row.field}=...) must ")

    def test_sdk_variables_are_known_to_opentelemetry(self):
        """Every pass-through variable is one the OpenTelemetry SDK defines."""
        from opentelemetry import environment_variables as api_vars
        from opentelemetry.sdk import environment_variables as sdk_vars

        for row in sdk_settings():
            assert row.field is None
            assert hasattr(sdk_vars, row.env_var) or hasattr(api_vars, row.env_var), row


class TestDocumentation:
    def test_tables_are_generated_from_the_declarations(self):
        """docs/configuration.md's variable tables are exactly what the declarations produce."""
        page = DOC.read_text(encoding="utf-8")

        expected = _settings_markdown(page)

        assert page == expected, (
            f"The variable tables of docs/configuration.md differ from kaleem_telemetry/config.py. "
            f"Rewrite them from the repository root with: {REGENERATE}"
        )

    def test_the_page_gives_the_command_that_rewrites_it(self):
        """The regeneration command this test suggests is the one the page's comment shows."""
        assert REGENERATE in DOC.read_text(encoding="utf-8")

    def test_every_variable_has_a_row(self):
        """Both generated tables are on the page: every variable has a row of its own."""
        rows = [
            line.split("|")[1].strip().strip("`")
            for line in DOC.read_text(encoding="utf-8").splitlines()
            if line.startswith("| `")
        ]

        assert sorted(rows) == sorted(s.env_var for s in [*settings_table(), *sdk_settings()])

    def test_doc_mentions_no_unknown_variable(self):
        """Every variable named anywhere in the page is one the code knows."""
        known = {s.env_var for s in [*settings_table(), *sdk_settings()]}

        mentioned = set(VARIABLE.findall(DOC.read_text(encoding="utf-8")))

        assert mentioned - known == set()
