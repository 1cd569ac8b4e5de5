"""Daphne's TCP sockets send at once when nothing is queued, as asyncio's transports do.

Twisted queues every write and sends it when the reactor next finds the socket
writable. Under Daphne's asyncio reactor that is, for every message, an epoll
registration, a turn of the loop and a deregistration: a fifth of the site's CPU
while it broadcasts to a terminal's viewers (bench fanout, profiled with py-spy).

`install` makes a TCP connection whose queue is empty hand the bytes to the socket
straight away, through the connection's own `writeSomeData`. Whatever that does not
finish (a full socket buffer, a partial send, a lost connection), and every write
while something is still queued, goes through Twisted's own `write` as before, so the
order of the bytes, back-pressure and the handling of a broken connection are
Twisted's. Connections with TLS started are left alone.
"""

from __future__ import annotations

from typing import Any


def install() -> None:
    """Make `twisted.internet.tcp.Connection.write` eager; installing twice is harmless."""
    from twisted.internet import tcp

    queued_write = tcp.Connection.write
    if getattr(queued_write, "eager", False):
        return

    def write(self: Any, data: bytes) -> None:
        # Twisted's internals, read defensively: should a release rename one, every
        # write takes the queued path, as before this module.
        if (
            type(data) is bytes
            and data
            and self.connected
            and not getattr(self, "_writeDisconnected", True)
            and not getattr(self, "TLS", True)
            and not getattr(self, "_tempDataBuffer", True)
            and getattr(self, "offset", -1) == len(getattr(self, "dataBuffer", b""))
        ):
            sent = self.writeSomeData(data)
            if not isinstance(sent, int):  # lost: Twisted finds out again, and closes
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        queued_write(self, data)

    write.eager = True  # type: ignore[attr-defined]
    write.__doc__ = queued_write.__doc__
    tcp.Connection.write = write  # type: ignore[method-assign]
