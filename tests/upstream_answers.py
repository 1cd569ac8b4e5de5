"""How the local stand-ins for OpenAI send an answer: whole, a byte at a time, or far too
long. Shared by the Realtime stub (tests/voice/conftest.py) and the image API stub."""

from __future__ import annotations

import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

FILLER_CHUNK = b" " * (1024 * 1024)


@dataclass
class Delivery:
    """`trickle_seconds`: pause after each byte. `oversize_bytes`: stream this many bytes
    of filler instead of the body. `sent` counts what went out."""

    trickle_seconds: float = 0.0
    oversize_bytes: int = 0
    # False: no Content-Length, the body ends when the connection closes (HTTP/1.0).
    declare_length: bool = True
    sent: int = 0


def answer_write(
    handler: BaseHTTPRequestHandler,
    *,
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    delivery: Delivery | None = None,
    give_up_after: float = 10.0,
) -> None:
    """Send one answer; a client that hangs up ends it quietly (timeout tests)."""
    delivery = delivery or Delivery()
    length = delivery.oversize_bytes or len(body)
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        if delivery.declare_length:
            handler.send_header("Content-Length", str(length))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        if delivery.oversize_bytes:
            while delivery.sent < length:
                handler.wfile.write(FILLER_CHUNK[: length - delivery.sent])
                delivery.sent += min(len(FILLER_CHUNK), length - delivery.sent)
        elif delivery.trickle_seconds:
            stop = time.monotonic() + give_up_after
            for index in range(len(body)):
                if time.monotonic() > stop:
                    return
                handler.wfile.write(body[index : index + 1])
                handler.wfile.flush()
                delivery.sent += 1
                time.sleep(delivery.trickle_seconds)
        else:
            handler.wfile.write(body)
            delivery.sent += len(body)
    except (BrokenPipeError, ConnectionResetError):
        pass
