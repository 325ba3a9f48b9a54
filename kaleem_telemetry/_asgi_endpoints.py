"""The small ASGI plumbing shared by the endpoints we serve: /metrics and /health/*."""

from __future__ import annotations

from kaleem_telemetry._types import Receive, Send

__all__ = ["send_response", "serve_lifespan"]


async def serve_lifespan(receive: Receive, send: Send) -> None:
    """Answer a lifespan scope: acknowledge startup and shutdown, hold no state."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def send_response(
    send: Send, status: int, headers: list[tuple[str, str]], body: bytes
) -> None:
    """Send one complete HTTP response.

    Args:
        send: The ASGI send callable.
        status: The status code.
        headers: Header names and values, as text.
        body: The whole body.
    """
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        }
    )
    await send({"type": "http.response.body", "body": body})
