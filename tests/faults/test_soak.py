"""Soak: many clients send random commands (navigations, syncs, junk) and hang up at
random against a real Daphne; afterwards the versions everyone saw, the navigations that
must have run and the database agree, and the server logged no error.

Successes are known without asking the server: the terminal always has pictures, so a
controller's next/previous/first/last or goto to one of its pictures must run, while a
viewer's navigation, a goto to a missing picture and junk must be refused.

What no server can promise: a navigation sent on a connection the client then drops
abruptly (no close frame) may die in the network stack before the server reads it; the
client cannot know and re-syncs on reconnect. Those may or may not run. Every other
valid navigation must run exactly once, and every state a client was sent must be
stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
from typing import Any

import pytest
from websockets.exceptions import WebSocketException

from tests.faults.clients import TerminalClient
from tests.faults.conftest import Daphnes
from tests.faults.scenario import SETUP, Endpoint

pytestmark = pytest.mark.timeout(600)

EXPECTED_REFUSALS = {
    "forbidden",
    "image_not_found",
    "invalid_json",
    "invalid_message",
    "unknown_type",
    "unexpected_field",
    "invalid_action",
    "invalid_image_id",
    "invalid_field",
}
DROPPED = re.compile(r"dropped (\d+) commands of a socket that closed")
JUNK = [
    "not json",
    "[]",
    json.dumps({"type": "terminal.unknown"}),
    json.dumps({"type": "terminal.navigate", "action": "sideways"}),
    json.dumps({"type": "terminal.navigate", "action": "next", "extra": 1}),
    json.dumps({"type": "terminal.navigate", "action": "goto", "image_id": "7"}),
    json.dumps({"type": "terminal.sync", "version": 3}),
]


@pytest.mark.parametrize(
    ("clients", "seconds"),
    [
        pytest.param(5, 5.0, id="quick", marks=pytest.mark.slow),
        pytest.param(20, 60.0, id="minute", marks=pytest.mark.faults),
    ],
)
async def test_random_clients_leave_a_consistent_terminal(
    sqlite_daphne: Daphnes, clients: int, seconds: float
) -> None:
    site = sqlite_daphne
    data: dict[str, Any] = await asyncio.to_thread(
        site.python, f"TAG = 'soak'\nTERMINALS = 1\n{SETUP}"
    )
    terminal = data["terminals"][0]
    path = f"/ws/terminals/{terminal['slug']}/"
    origin = site.origin(0)

    def client(name: str, *, controller: bool) -> TerminalClient:
        cookie = data["session"] if controller else ""
        return TerminalClient(Endpoint(site.ws_url(0, path), origin, cookie), name)

    # Half control the terminal, half only watch; one more watches without hanging up.
    crowd = [client(f"client-{n}", controller=n % 2 == 0) for n in range(clients)]
    observer = client("observer", controller=False)
    runners = [asyncio.create_task(c.run()) for c in [*crowd, observer]]
    sent_successes = 0
    # Valid navigations per (client, connection), and the connections each client dropped.
    sent_on: dict[tuple[str, int], int] = {}
    dropped: set[tuple[str, int]] = set()
    stop = asyncio.Event()

    async def act(member: TerminalClient, controller: bool) -> None:
        nonlocal sent_successes
        while not stop.is_set():
            await asyncio.sleep(random.uniform(0.1, 0.4))
            socket, connection = member.socket, (member.name, member.connections)
            if socket is None:
                continue
            roll = random.random()
            valid = False
            if roll < 0.45:
                command: Any = {
                    "type": "terminal.navigate",
                    "action": random.choice(("next", "previous", "first", "last")),
                }
                valid = controller
            elif roll < 0.55:
                command = {
                    "type": "terminal.navigate",
                    "action": "goto",
                    "image_id": random.choice(terminal["images"]),
                }
                valid = controller
            elif roll < 0.6:
                command = {"type": "terminal.navigate", "action": "goto", "image_id": 10**12}
            elif roll < 0.75:
                command = {"type": "terminal.sync"}
            elif roll < 0.92:
                command = random.choice(JUNK)
            else:
                dropped.add(connection)
                await member.drop()  # abrupt: no close frame
                continue
            text = command if isinstance(command, str) else json.dumps(command)
            try:
                await socket.send(text)
            except WebSocketException:
                continue  # the socket went away first: not sent
            if valid:
                sent_successes += 1
                sent_on[connection] = sent_on.get(connection, 0) + 1

    try:
        async with asyncio.timeout(30):
            for member in [*crowd, observer]:
                await member.connected.wait()
        actors = [asyncio.create_task(act(member, n % 2 == 0)) for n, member in enumerate(crowd)]
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*actors)
        # Let the server finish what it received, then everyone asks where it stands.
        await asyncio.sleep(2)
        for member in [*crowd, observer]:
            await member.sync_and_wait(timeout=30)
        stored: int = await asyncio.to_thread(
            site.python,
            "from gallery.models import Terminal\n"
            f"result = Terminal.objects.get(slug={terminal['slug']!r}).version",
        )
    finally:
        stop.set()
        for member in [*crowd, observer]:
            with contextlib.suppress(Exception):
                await member.stop()
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)

    initial = terminal["version"]
    in_doubt = sum(n for connection, n in sent_on.items() if connection in dropped)
    certain = sent_successes - in_doubt
    print(
        f"\nsoak: {sent_successes} valid navigations sent, {in_doubt} of them on connections "
        f"dropped afterwards; stored {stored - initial}"
    )
    assert sent_successes > 0
    # Everything sent on a connection that was not cut must have run; nothing ran twice
    # or from nowhere.
    assert initial + certain <= stored <= initial + sent_successes, (
        stored,
        initial,
        certain,
        sent_successes,
    )
    assert observer.connections == 1
    seen: set[int] = set()
    for member in [*crowd, observer]:
        assert member.version == stored, (member.name, member.version)
        for history in member.histories:
            assert history == sorted(history), (member.name, history)
            seen.update(history)
        unexpected = [e for e in member.errors if e.get("code") not in EXPECTED_REFUSALS]
        assert unexpected == [], unexpected
    # Every committed version reached someone who watched; none beyond the database's.
    assert seen == set(range(initial, stored + 1)), sorted(set(range(initial, stored + 1)) - seen)
    assert any(c.connections > 1 for c in crowd), "nobody hung up"
    assert site.failures() == [], site.logs()
    # A hang-up never leaves a consumer working until Daphne kills it.
    lines = [
        line
        for log in site.workdir.glob("daphne-*.log")
        for line in log.read_text(errors="replace").splitlines()
    ]
    killed = [line for line in lines if "took too long to shut down" in line]
    assert killed == [], killed
    # Nothing vanished silently: what did not run was received by a socket that hung up
    # with a backlog, and the server said how many commands it dropped.
    logged_drops = sum(int(m.group(1)) for line in lines if (m := DROPPED.search(line)))
    assert sent_successes - (stored - initial) <= logged_drops, (
        sent_successes,
        stored,
        logged_drops,
    )
