"""``kaleem-telemetry doctor``: show the effective configuration and check the backends.

It prints the configuration with its secrets masked, then checks that the OTLP
endpoint accepts a TCP connection and that the Sentry DSN parses and its host
accepts a connection. Every problem is one line starting with ``FAIL:``; the
exit code is 1 when there is at least one, else 0.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, TextIO
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from kaleem_telemetry.config import TelemetryConfig

__all__ = ["check_tcp", "parse_dsn", "run_doctor"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def run_doctor(config: TelemetryConfig, out: TextIO, *, timeout: float = 2.0) -> int:
    """Print the effective configuration and the backend checks to ``out``.

    Args:
        config: The configuration to check.
        out: Where to write the report.
        timeout: Seconds to wait for each TCP connection.

    Returns:
        0 when every check passed, 1 otherwise.
    """
    problems: list[str] = []
    out.write("kaleem-telemetry doctor\n\nEffective configuration (secrets masked):\n")
    for line in _config_lines(config):
        out.write(f"  {line}\n")
    out.write("\nChecks:\n")

    if config.sdk_disabled:
        out.write("  ok: tracing is disabled (OTEL_SDK_DISABLED), nothing to check\n")
    elif config.traces_exporter != "otlp":
        out.write(f"  ok: traces exporter is {config.traces_exporter!r}, no collector to check\n")
    else:
        url = config.otlp_traces_url
        where = _host_port(url)
        if where is None:
            problems.append(f"The OTLP endpoint {_strip_userinfo(url)!r} has no host.")
        else:
            error = check_tcp(*where, timeout=timeout)
            if error is None:
                out.write(f"  ok: OTLP endpoint {where[0]}:{where[1]} accepts connections\n")
            else:
                problems.append(
                    f"The OTLP endpoint {where[0]}:{where[1]} does not accept connections "
                    f"({error}); check OTEL_EXPORTER_OTLP_ENDPOINT and the collector."
                )

    if not config.sentry_dsn:
        out.write("  ok: Sentry is off (SENTRY_DSN is not set)\n")
    else:
        parsed = parse_dsn(config.sentry_dsn)
        if isinstance(parsed, str):
            problems.append(parsed)
        else:
            error = check_tcp(*parsed, timeout=timeout)
            if error is None:
                out.write(f"  ok: Sentry host {parsed[0]}:{parsed[1]} accepts connections\n")
            else:
                problems.append(
                    f"The Sentry host {parsed[0]}:{parsed[1]} does not accept connections "
                    f"({error}); check SENTRY_DSN and the network."
                )

    for problem in problems:
        out.write(f"FAIL: {problem}\n")
    if not problems:
        out.write("\nAll checks passed.\n")
    return 1 if problems else 0


def parse_dsn(dsn: str) -> tuple[str, int] | str:
    """Return the ``(host, port)`` of a Sentry DSN, or a one-line reason it is invalid.

    The reason never contains the DSN's key.

    Args:
        dsn: The DSN, ``http(s)://KEY@HOST[:PORT]/PROJECT_ID``.
    """
    try:
        parts = urlsplit(dsn)
        port = parts.port
    except ValueError:
        return "SENTRY_DSN is not a valid URL; expected http(s)://KEY@HOST[:PORT]/PROJECT_ID."
    if parts.scheme not in _DEFAULT_PORTS:
        return f"SENTRY_DSN must start with http:// or https://, got {parts.scheme!r}."
    if not parts.username:
        return "SENTRY_DSN has no public key; expected http(s)://KEY@HOST[:PORT]/PROJECT_ID."
    if not parts.hostname:
        return "SENTRY_DSN has no host; expected http(s)://KEY@HOST[:PORT]/PROJECT_ID."
    project = parts.path.rstrip("/").rpartition("/")[2]
    if not project.isdigit():
        return "SENTRY_DSN has no numeric project id at the end of its path."
    return parts.hostname, port or _DEFAULT_PORTS[parts.scheme]


def check_tcp(host: str, port: int, *, timeout: float = 2.0) -> str | None:
    """Try a TCP connection; return ``None`` on success, else the reason.

    Args:
        host: Host name or address.
        port: TCP port.
        timeout: Seconds to wait.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def _config_lines(config: TelemetryConfig) -> list[str]:
    masked = config.masked() if hasattr(config, "masked") else None
    if isinstance(masked, Mapping):
        return [f"{key} = {value!r}" for key, value in masked.items()]
    return [repr(config if masked is None else masked)]


def _host_port(url: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname, port or _DEFAULT_PORTS.get(parts.scheme, 4317)


def _strip_userinfo(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
