"""A Daphne stopped with voice calls up ends them and exits, as it does without any."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import pytest

from tests.engine.client import RealtimeClient
from tests.engine.server import start_engine_server, stop_engine_server
from tests.engine.test_call import mint


async def test_a_server_stopped_mid_call_hangs_up_and_exits(tmp_path: Path) -> None:
    server = start_engine_server(tmp_path / "engine")
    client = RealtimeClient()
    try:
        response = await client.connect(server.engine_url, mint(server))
        assert response.status_code == 201, response.text
        await client.wait_for("session.created", timeout=15)

        server.process.send_signal(signal.SIGTERM)
        try:
            # A call's decoder thread used to hold the interpreter open for ever.
            server.process.wait(timeout=8)
        except subprocess.TimeoutExpired:
            pytest.fail("Daphne did not exit with a call up:\n" + server.log_tail())
        # Hung up, not just gone: the peer said so, and the client's channel closed at
        # once (a vanished peer is only noticed when ICE consent runs out, 30 s later).
        async with asyncio.timeout(3):
            while client.channel.readyState != "closed":
                await asyncio.sleep(0.05)
    finally:
        await client.close()
        stop_engine_server(server)
