"""The test receivers decode what the real senders send."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from typing import Any

import pytest

from tests.receivers import SentryIngest, decode_body


@pytest.fixture(name="ingest")
def _ingest() -> Iterator[SentryIngest]:
    with SentryIngest() as ingest:
        yield ingest


def _send_one(ingest: SentryIngest, **experiments: Any) -> list[dict[str, Any]]:
    """Send one event through a real sentry-sdk client and transport; return what arrived."""
    import sentry_sdk

    client = sentry_sdk.Client(dsn=ingest.dsn, default_integrations=False, _experiments=experiments)
    try:
        client.capture_event({"message": "over the wire", "level": "error"})
        client.flush(timeout=5)
    finally:
        client.close(timeout=2)
    return ingest.wait_for_events(1)


class TestSentryIngest:
    def test_decodes_brotli_from_the_real_transport(self, ingest: SentryIngest) -> None:
        """An envelope sentry-sdk compresses with brotli arrives decoded as one event."""
        pytest.importorskip("brotli")
        import sentry_sdk.transport

        if getattr(sentry_sdk.transport, "brotli", None) is None:
            # Brotli compression came to the transport after the floor (2.12).
            pytest.skip(f"sentry-sdk {sentry_sdk.VERSION} has no brotli transport compression")

        events = _send_one(ingest, transport_compression_algo="br")

        assert [e["message"] for e in events] == ["over the wire"]
        assert ingest.headers[0]["content-encoding"] == "br"

    def test_decodes_gzip_from_the_real_transport(self, ingest: SentryIngest) -> None:
        """An envelope sentry-sdk compresses with gzip arrives decoded as one event."""
        events = _send_one(ingest, transport_compression_algo="gzip")

        assert [e["message"] for e in events] == ["over the wire"]
        assert ingest.headers[0]["content-encoding"] == "gzip"

    def test_decodes_uncompressed_from_the_real_transport(self, ingest: SentryIngest) -> None:
        """An envelope sentry-sdk sends uncompressed arrives as one event."""
        # The option's name before and after sentry-sdk's brotli support.
        events = _send_one(
            ingest, transport_compression_level=0, transport_zlib_compression_level=0
        )

        assert [e["message"] for e in events] == ["over the wire"]
        assert "content-encoding" not in ingest.headers[0]


class TestDecodeBody:
    def test_identity_and_absent_encodings_pass_the_body_through(self) -> None:
        """A body with no or an identity Content-Encoding is returned unchanged."""
        results = [decode_body(b"raw", None), decode_body(b"raw", "identity")]

        assert results == [b"raw", b"raw"]

    def test_gzip_is_decompressed(self) -> None:
        """A gzip body is decompressed whatever the header's case."""
        result = decode_body(gzip.compress(b"payload"), "GZip")

        assert result == b"payload"

    def test_unknown_encoding_is_an_error(self) -> None:
        """An encoding the receiver does not know fails loudly instead of passing bytes on."""
        with pytest.raises(ValueError, match="zstd"):
            decode_body(b"x", "zstd")
