"""Daphne's TCP connections send at once when nothing is queued (artterminal.eager_writes),
and leave everything else to Twisted: tested on real sockets and Twisted's own
connection class, with Twisted's in-memory reactor recording what waits to be written."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet import protocol, tcp
from twisted.internet.testing import MemoryReactor

from artterminal import eager_writes


@pytest.fixture
def connection() -> Iterator[tuple[tcp.Connection, socket.socket, MemoryReactor]]:
    """A Twisted TCP connection on one end of a socket pair; the test reads the other."""
    eager_writes.install()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.settimeout(5)
    reactor = MemoryReactor()
    # Both provide their zope interfaces, which mypy cannot see.
    made = tcp.Connection(ours, protocol.Protocol(), reactor=reactor)  # type: ignore[arg-type]
    made.connected = 1
    yield made, theirs, reactor
    ours.close()
    theirs.close()


def read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        assert chunk, "the connection closed early"
        chunks += chunk
    return bytes(chunks)


def test_a_write_with_nothing_queued_is_sent_at_once(
    connection: tuple[tcp.Connection, socket.socket, MemoryReactor],
) -> None:
    made, theirs, reactor = connection
    made.write(b'{"type": "terminal.state"}')
    # On the peer already, and nothing left waiting for the reactor to find it writable.
    assert theirs.recv(100) == b'{"type": "terminal.state"}'
    assert made not in reactor.getWriters()


def test_what_the_socket_cannot_take_queues_in_order_behind_what_it_took(
    connection: tuple[tcp.Connection, socket.socket, MemoryReactor],
) -> None:
    """A peer that does not read: the socket buffer fills, the rest is Twisted's to
    send when writable, and later writes wait behind it instead of overtaking."""
    made, theirs, reactor = connection
    big = bytes(range(256)) * 40_000  # 10 MB: more than any socket buffer holds
    made.write(big)
    assert made in reactor.getWriters()
    made.write(b"after")
    made.write(b"and last")

    received = bytearray()
    expected = len(big) + len(b"after") + len(b"and last")
    while len(received) < expected:
        received += theirs.recv(1 << 20)
        if made in reactor.getWriters():
            made.doWrite()  # what the reactor does when the socket is writable
    assert bytes(received) == big + b"afterand last"
    assert made not in reactor.getWriters()

    made.write(b"queue empty again")  # so back to sending at once
    assert read_exactly(theirs, 17) == b"queue empty again"
    assert made not in reactor.getWriters()


def test_a_write_to_a_lost_connection_is_left_to_twisted(
    connection: tuple[tcp.Connection, socket.socket, MemoryReactor],
) -> None:
    """The peer is gone: the send fails, the bytes are queued, and Twisted's next
    write attempt reports the loss the way it always has."""
    made, theirs, reactor = connection
    theirs.close()
    made.write(b"to nobody")
    assert made in reactor.getWriters()
    assert made.doWrite() is not None  # ConnectionLost or ConnectionDone: Twisted closes


def test_writes_after_the_connection_closed_for_writing_are_dropped(
    connection: tuple[tcp.Connection, socket.socket, MemoryReactor],
) -> None:
    made, theirs, reactor = connection
    made._writeDisconnected = True
    made.write(b"never sent")
    theirs.setblocking(False)
    with pytest.raises(BlockingIOError):
        theirs.recv(100)
    assert made not in reactor.getWriters()


def test_installing_twice_keeps_one_layer() -> None:
    eager_writes.install()
    once = tcp.Connection.write
    eager_writes.install()
    assert tcp.Connection.write is once


def test_the_site_installs_it() -> None:
    """Daphne loads artterminal.asgi; a fresh process shows what that import does."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import artterminal.asgi; from twisted.internet import tcp; "
            "print(getattr(tcp.Connection.write, 'eager', False))",
        ],
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "artterminal.settings"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "True"
