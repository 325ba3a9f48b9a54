"""Local peers for the exporters: an OTLP receiver (gRPC and HTTP) and a Sentry ingest.

Both listen on 127.0.0.1 on a free port, decode what the real clients send with the
official definitions (``opentelemetry-proto`` for OTLP, the envelope format for
Sentry), and can misbehave on purpose so the fault tests can check that the
application is unaffected:

* ``healthy``: answer at once;
* ``slow``: answer after ``delay`` seconds;
* ``blackhole``: accept the TCP connection and never answer;
* ``closed``: nothing listens on the port.

Use them as context managers; they stop their threads and close their sockets on
exit::

    with OTLPReceiver("grpc") as receiver:
        cfg = TelemetryConfig.from_env(environ=receiver.env())
        ...
        spans = receiver.wait_for(1, timeout=10)
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import zlib
from collections.abc import Mapping
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

__all__ = [
    "Mode",
    "OTLPReceiver",
    "ReceivedSpan",
    "SentryIngest",
    "decode_envelope",
]

Mode = Literal["healthy", "slow", "blackhole", "closed"]
HOST = "127.0.0.1"


@dataclass(frozen=True)
class ReceivedSpan:
    """A span as the receiver decoded it from an ``ExportTraceServiceRequest``."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    links: list[tuple[str, str]]
    status_code: int
    resource: dict[str, Any]
    scope: str


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    raw = getattr(value, kind)
    if kind == "array_value":
        return [_any_value(v) for v in raw.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in raw.values}
    return raw


def _attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in kvs}


def _decode_spans(request: Any) -> list[ReceivedSpan]:
    out = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out.append(
                    ReceivedSpan(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        kind=span.kind,
                        attributes=_attributes(span.attributes),
                        events=[(e.name, _attributes(e.attributes)) for e in span.events],
                        links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                        status_code=span.status.code,
                        resource=resource,
                        scope=scope_spans.scope.name,
                    )
                )
    return out


@dataclass
class _Sink:
    """Thread-safe store of what arrived, with a blocking ``wait_for``."""

    items: list[Any] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def add(self, items: list[Any], metadata: Mapping[str, str], body: bytes = b"") -> None:
        with self.cond:
            self.items.extend(items)
            self.metadata.append({k.lower(): v for k, v in metadata.items()})
            self.bodies.append(body)
            self.cond.notify_all()

    def wait_for(self, n: int, timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.items) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.cond.wait(remaining)
            return list(self.items)


class _BlackHole:
    """A TCP listener that accepts connections and never reads or answers."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((HOST, 0))
        self._sock.listen(128)
        self._sock.settimeout(0.05)
        self.port: int = self._sock.getsockname()[1]
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="blackhole", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                # The timeout that lets the loop see ``_stop``, or the socket closed.
                continue
            self._held.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        for conn in self._held:
            conn.close()
        self._sock.close()


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


def decode_body(body: bytes, encoding: str | None) -> bytes:
    """Undo a request body's ``Content-Encoding``: gzip, deflate, br or identity.

    sentry-sdk compresses with brotli when the ``brotli`` package is importable
    and with gzip otherwise; brotli is imported only when a ``br`` body arrives,
    so it stays optional.

    Args:
        body: The raw request body.
        encoding: The ``Content-Encoding`` header, or ``None`` when absent.

    Raises:
        ValueError: For an encoding this receiver does not know.
    """
    name = (encoding or "identity").strip().lower()
    if name in ("", "identity"):
        return body
    if name in ("gzip", "x-gzip"):
        return gzip.decompress(body)
    if name == "deflate":
        return zlib.decompress(body)
    if name == "br":
        import brotli  # optional: only a sender that has it uses br

        decompressed: bytes = brotli.decompress(body)
        return decompressed
    raise ValueError(f"unsupported Content-Encoding: {encoding!r}")


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output clean."""

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        return decode_body(body, self.headers.get("Content-Encoding"))

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server:
    """A threading HTTP server on 127.0.0.1 serving in a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer((HOST, 0), handler)
        self.httpd.daemon_threads = True
        self.port: int = self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(2.0)


class OTLPReceiver:
    """An OTLP/gRPC or OTLP/HTTP trace receiver on 127.0.0.1.

    Args:
        protocol: ``"grpc"`` or ``"http/protobuf"`` (``"http"`` is accepted too).
        mode: How it behaves; see the module docstring.
        delay: The answer delay in ``slow`` mode, in seconds.
    """

    def __init__(self, protocol: str = "grpc", mode: Mode = "healthy", delay: float = 0.5) -> None:
        self.protocol = "grpc" if protocol == "grpc" else "http/protobuf"
        self.mode = mode
        self.delay = delay
        self.port = 0
        self._sink = _Sink()
        self._stop = threading.Event()
        self._closers: list[Any] = []

    # -- lifecycle -------------------------------------------------------------

    def __enter__(self) -> OTLPReceiver:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start listening (or, in ``closed`` mode, pick a port nothing listens on)."""
        if self.mode == "closed":
            self.port = _closed_port()
        elif self.mode == "blackhole":
            hole = _BlackHole()
            self.port = hole.port
            self._closers.append(hole.close)
        elif self.protocol == "grpc":
            self._start_grpc()
        else:
            self._start_http()

    def stop(self) -> None:
        """Stop the server and close every socket; safe to call twice."""
        self._stop.set()
        while self._closers:
            self._closers.pop()()

    # -- results ---------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The URL to give the exporter (with ``/v1/traces`` for HTTP)."""
        base = f"http://{HOST}:{self.port}"
        return base if self.protocol == "grpc" else f"{base}/v1/traces"

    def env(self, **extra: str) -> dict[str, str]:
        """Return the environment that points `TelemetryConfig` at this receiver."""
        env = {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": self.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": self.protocol,
        }
        env.update(extra)
        return env

    @property
    def spans(self) -> list[ReceivedSpan]:
        """The spans received so far."""
        with self._sink.cond:
            return list(self._sink.items)

    @property
    def metadata(self) -> list[dict[str, str]]:
        """The request headers (gRPC metadata) of every export request, lower-cased."""
        with self._sink.cond:
            return list(self._sink.metadata)

    @property
    def bodies(self) -> list[bytes]:
        """The body of every export request as it arrived (decompressed), in order."""
        with self._sink.cond:
            return list(self._sink.bodies)

    def wait_for(self, n: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """Wait until ``n`` spans arrived or ``timeout`` passed; return what arrived."""
        spans: list[ReceivedSpan] = self._sink.wait_for(n, timeout)
        return spans

    # -- servers ---------------------------------------------------------------

    def _pause(self) -> None:
        if self.mode == "slow":
            self._stop.wait(self.delay)

    def _start_grpc(self) -> None:
        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        receiver = self

        class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                receiver._pause()
                metadata = {m.key: str(m.value) for m in context.invocation_metadata()}
                receiver._sink.add(_decode_spans(request), metadata, request.SerializeToString())
                return trace_service_pb2.ExportTraceServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), server)
        self.port = server.add_insecure_port(f"{HOST}:0")
        server.start()
        self._closers.append(lambda: server.stop(grace=0).wait(2.0))

    def _start_http(self) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        receiver = self

        class Handler(_Quiet):
            def do_POST(self) -> None:
                body = self._body()
                if self.path != "/v1/traces":
                    self._reply(404, b"", "text/plain")
                    return
                receiver._pause()
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._sink.add(_decode_spans(request), dict(self.headers.items()), body)
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self._reply(200, answer, "application/x-protobuf")

        server = _Server(Handler)
        self.port = server.port
        self._closers.append(server.close)


def decode_envelope(body: bytes) -> tuple[dict[str, Any], list[tuple[dict[str, Any], bytes]]]:
    """Split a Sentry envelope into its header and ``(item header, payload)`` pairs.

    Args:
        body: The decompressed envelope bytes.
    """
    first_end = body.find(b"\n")
    first_end = len(body) if first_end == -1 else first_end
    header: dict[str, Any] = json.loads(body[:first_end] or b"{}")
    items: list[tuple[dict[str, Any], bytes]] = []
    pos = first_end + 1
    while pos < len(body):
        end = body.find(b"\n", pos)
        end = len(body) if end == -1 else end
        line = body[pos:end]
        pos = end + 1
        if not line.strip():
            continue
        item_header = json.loads(line)
        length = item_header.get("length")
        if length is not None:
            payload = body[pos : pos + length]
            pos += length + 1
        else:
            end = body.find(b"\n", pos)
            end = len(body) if end == -1 else end
            payload = body[pos:end]
            pos = end + 1
        items.append((item_header, payload))
    return header, items


class SentryIngest:
    """A Sentry envelope endpoint on 127.0.0.1 behind a real DSN.

    Args:
        mode: How it behaves; see the module docstring.
        delay: The answer delay in ``slow`` mode, in seconds.
    """

    def __init__(self, mode: Mode = "healthy", delay: float = 0.5) -> None:
        self.mode = mode
        self.delay = delay
        self.port = 0
        self._sink = _Sink()
        self._stop = threading.Event()
        self._closers: list[Any] = []

    def __enter__(self) -> SentryIngest:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def dsn(self) -> str:
        """A DSN that points the real sentry-sdk transport here."""
        return f"http://publickey@{HOST}:{self.port}/1"

    def start(self) -> None:
        """Start listening, according to the mode."""
        if self.mode == "closed":
            self.port = _closed_port()
            return
        if self.mode == "blackhole":
            hole = _BlackHole()
            self.port = hole.port
            self._closers.append(hole.close)
            return
        ingest = self

        class Handler(_Quiet):
            def do_POST(self) -> None:
                body = self._body()
                if not (self.path.startswith("/api/") and self.path.endswith("/envelope/")):
                    self._reply(404, b"", "text/plain")
                    return
                if ingest.mode == "slow":
                    ingest._stop.wait(ingest.delay)
                header, items = decode_envelope(body)
                ingest._sink.add([(header, items)], dict(self.headers.items()), body)
                self._reply(
                    200, json.dumps({"id": header.get("event_id")}).encode(), "application/json"
                )

        server = _Server(Handler)
        self.port = server.port
        self._closers.append(server.close)

    def stop(self) -> None:
        """Stop the server and close every socket; safe to call twice."""
        self._stop.set()
        while self._closers:
            self._closers.pop()()

    @property
    def envelopes(self) -> list[tuple[dict[str, Any], list[tuple[dict[str, Any], bytes]]]]:
        """Every envelope received: its header and its items."""
        with self._sink.cond:
            return list(self._sink.items)

    @property
    def headers(self) -> list[dict[str, str]]:
        """The request headers of every envelope received, names lower-cased."""
        with self._sink.cond:
            return [dict(h) for h in self._sink.metadata]

    @property
    def bodies(self) -> list[bytes]:
        """The body of every envelope request as it arrived (decompressed), in order."""
        with self._sink.cond:
            return list(self._sink.bodies)

    @property
    def events(self) -> list[dict[str, Any]]:
        """The decoded payloads of the ``event`` items received so far."""
        out = []
        for _header, items in self.envelopes:
            for item_header, payload in items:
                if item_header.get("type") == "event":
                    out.append(json.loads(payload))
        return out

    def wait_for_events(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until ``n`` events arrived or ``timeout`` passed; return the events."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.events
            if len(events) >= n or time.monotonic() >= deadline:
                return events
            with self._sink.cond:
                self._sink.cond.wait(min(0.1, max(0.0, deadline - time.monotonic())))
