"""The fan-out baseline: a minimal broadcast server written with `websockets`.

It speaks just enough of the terminal socket for the same benchmark clients: a socket
gets the current `terminal.state` on connect, and every `terminal.navigate` bumps the
version and sends one JSON encoding of the new state to every socket. No database, no
channel layer, no per-socket rights: the floor that the real path is measured against.
Nor compression: Daphne declines permessage-deflate, so a baseline that accepted it
(as `websockets` does by default) would spend its time deflating every frame for each
socket, work the site never does, and flatter the site's ratio.

Run as `python -m bench.broadcast_server --fd N` on a socket the benchmark bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast, serve


def sample_state(version: int) -> dict[str, Any]:
    """A state the size of the site's own (one image and a strip of seven)."""
    neighbours = [
        {
            "id": 100 + n,
            "title": f"Picture {n}",
            "thumbnail_url": f"/media/thumbnails/bench/{n}.png",
            "position": n + 1,
        }
        for n in range(7)
    ]
    return {
        "type": "terminal.state",
        "version": version,
        "image": {
            "id": 103,
            "title": "Picture 3",
            "prompt": "amber harbour fox number 3",
            "url": "/media/images/bench/3.png",
            "thumbnail_url": "/media/thumbnails/bench/3.png",
            "position": 4,
            "count": 20,
        },
        "viewers": 0,
        "neighbours": neighbours,
        "can_control": True,
    }


class Broadcaster:
    def __init__(self) -> None:
        self.version = 0
        self.sockets: set[ServerConnection] = set()

    async def handle(self, connection: ServerConnection) -> None:
        self.sockets.add(connection)
        try:
            await connection.send(json.dumps(sample_state(self.version)))
            async for text in connection:
                message = json.loads(text)
                if message.get("type") == "terminal.navigate":
                    self.version += 1
                    broadcast(self.sockets, json.dumps(sample_state(self.version)))
        finally:
            self.sockets.discard(connection)


async def serve_forever(fd: int) -> None:
    listener = socket.socket(fileno=fd)
    broadcaster = Broadcaster()
    async with serve(broadcaster.handle, sock=listener, max_queue=None, compression=None) as server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fd", type=int, required=True)
    asyncio.run(serve_forever(parser.parse_args().fd))


if __name__ == "__main__":
    main()
