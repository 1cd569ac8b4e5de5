"""One terminal workload, shared by the fault tests: controllers, viewers and a voice
mirror drive a site while a fault strikes, then everything is compared with the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tests.faults.clients import Endpoint, MirrorClient, TerminalClient
from tests.faults.conftest import Daphnes

SETUP = """
from importlib import import_module
from django.conf import settings
from django.contrib.auth import (
    BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model,
)
from gallery.models import Image, Terminal
from voice.models import VoiceSession

owner = get_user_model().objects.create_user(f"owner-{TAG}", password="a-long-test-password")

def terminal(slug):
    made = Terminal.objects.create(slug=slug, name=slug, owner=owner, is_public=True)
    ids = [
        Image.objects.create(
            owner=owner, terminal=made, prompt=f"picture {n}", provider="local",
            status=Image.Status.READY, progress=100,
        ).pk
        for n in range(5)
    ]
    made.current_image_id = ids[0]
    made.save(update_fields=["current_image"])
    return {"slug": slug, "id": made.pk, "version": made.version, "images": ids}

store = import_module(settings.SESSION_ENGINE).SessionStore()
store[SESSION_KEY] = str(owner.pk)
store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
store[HASH_SESSION_KEY] = owner.get_session_auth_hash()
store.create()
voice_terminal = terminal(f"{TAG}-voice")
voice = VoiceSession.objects.create(
    user=owner, terminal_id=voice_terminal["id"], upstream="engine", model="gpt-realtime",
    voice="verse",
)
result = {
    "session": store.session_key,
    "terminals": [terminal(f"{TAG}-{n}") for n in range(TERMINALS)],
    "voice_terminal": voice_terminal,
    "voice_session": voice.pk,
}
"""

READ_BACK = """
from gallery.models import Terminal
from voice.models import ToolCall, VoiceEvent
result = {
    "versions": dict(Terminal.objects.filter(slug__startswith=TAG).values_list("slug", "version")),
    "events": VoiceEvent.objects.filter(session_id=SESSION).count(),
    "calls": ToolCall.objects.filter(session_id=SESSION).count(),
}
"""

ACTIONS = ("next", "previous", "first", "last")


@dataclass
class Outcome:
    data: dict[str, Any]
    controllers: list[TerminalClient]
    viewers: list[list[TerminalClient]]
    mirror: MirrorClient
    calls: list[str]
    seqs: int
    live_misses: list[str]
    stored: dict[str, Any]


async def drive(
    site: Daphnes,
    *,
    tag: str,
    terminals: int,
    seconds: float,
    faults: int,
    fault: Callable[[], Awaitable[None]],
) -> Outcome:
    """Controllers on process 0 and viewers on the last process navigate and watch while
    `fault` strikes `faults` times, evenly spread over `seconds`."""
    data: dict[str, Any] = await asyncio.to_thread(
        site.python, f"TAG = {tag!r}\nTERMINALS = {terminals}\n{SETUP}"
    )
    last = len(site.ports) - 1

    def endpoint(index: int, path: str, *, session: bool) -> Endpoint:
        cookie = data["session"] if session else ""
        return Endpoint(site.ws_url(index, path), site.origin(index), cookie)

    controllers = [
        TerminalClient(endpoint(0, f"/ws/terminals/{t['slug']}/", session=True), t["slug"])
        for t in data["terminals"]
    ]
    viewers = [
        [
            TerminalClient(endpoint(last, f"/ws/terminals/{t['slug']}/", session=False), t["slug"])
            for _ in range(2)
        ]
        for t in data["terminals"]
    ]
    mirror = MirrorClient(endpoint(0, f"/ws/voice/{data['voice_session']}/", session=True))
    everyone = [*controllers, *(v for vs in viewers for v in vs)]
    runners = [asyncio.create_task(c.run()) for c in everyone]
    runners.append(asyncio.create_task(mirror.run()))
    stop = asyncio.Event()
    calls: list[str] = []
    seqs = 0

    async def control(client: TerminalClient) -> None:
        while not stop.is_set():
            if client.socket is not None and client.pending_from is None:
                await client.navigate(random.choice(ACTIONS))
            await asyncio.sleep(random.uniform(0.02, 0.1))

    async def speak() -> None:
        nonlocal seqs
        while not stop.is_set():
            seqs += 1
            event: dict[str, Any]
            if seqs % 2:
                call_id = f"call-{seqs}"
                calls.append(call_id)
                event = {
                    "type": "response.function_call_arguments.done",
                    "call_id": call_id,
                    "name": "navigate_gallery",
                    "arguments": json.dumps({"action": "next"}),
                }
            else:
                event = {"type": "response.done", "response": {"status": "completed"}}
            await mirror.mirror(seqs, event)
            await asyncio.sleep(random.uniform(0.05, 0.15))

    try:
        async with asyncio.timeout(30):
            for client in everyone:
                await client.connected.wait()
        load = [asyncio.create_task(control(c)) for c in controllers]
        load.append(asyncio.create_task(speak()))
        for _ in range(faults):
            await asyncio.sleep(seconds / (faults + 1))
            await fault()
        await asyncio.sleep(seconds / (faults + 1))
        stop.set()
        await asyncio.gather(*load)

        for controller in controllers:
            await controller.settle(timeout=30)
        await mirror.drained(timeout=30)
        # Broadcasts work again: one more navigation per terminal reaches every viewer
        # without being asked for.
        live_misses = []
        for controller, watchers in zip(controllers, viewers, strict=True):
            for watcher in watchers:
                watcher.state_arrived.clear()
            before = controller.version
            assert await controller.navigate("next"), "controller offline after the faults"
            await controller.settle(timeout=20)
            for watcher in watchers:
                try:
                    async with asyncio.timeout(10):
                        while watcher.version <= before:
                            await watcher.state_arrived.wait()
                            watcher.state_arrived.clear()
                except TimeoutError:
                    live_misses.append(f"{watcher.name} stayed at {watcher.version}")
        for client in everyone:
            await client.sync_and_wait(timeout=20)
        stored: dict[str, Any] = await asyncio.to_thread(
            site.python, f"TAG = {tag!r}\nSESSION = {data['voice_session']}\n{READ_BACK}"
        )
    finally:
        stop.set()
        stops = [client.stop() for client in everyone]
        for stopping in [*stops, mirror.stop()]:
            with contextlib.suppress(Exception):
                await stopping
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
    return Outcome(data, controllers, viewers, mirror, calls, seqs, live_misses, stored)


def assert_converged(
    outcome: Outcome, *, faults: int, site: Daphnes, cuts_per_fault: int = 1
) -> None:
    """Nothing executed twice, nothing acknowledged lost, everyone on the stored state.
    Each fault cuts a socket at most `cuts_per_fault` times."""
    versions = outcome.stored["versions"]
    for terminal, controller, watchers in zip(
        outcome.data["terminals"], outcome.controllers, outcome.viewers, strict=True
    ):
        stored = versions[terminal["slug"]]
        assert controller.anomalies == [], controller.anomalies
        assert controller.refused == 0, controller.errors
        # Every navigation that ran was seen to run, and none ran twice.
        assert stored == terminal["version"] + controller.executed, (stored, controller)
        # At most the one navigation in flight per cut went down with the socket.
        assert controller.not_executed <= faults * cuts_per_fault, controller.not_executed
        for client in [controller, *watchers]:
            assert client.version == stored, (client.name, client.version, stored)
            for history in client.histories:
                assert history == sorted(history), history
    assert outcome.live_misses == [], f"{outcome.live_misses}\n{site.logs()}"

    mirror = outcome.mirror
    assert mirror.buffer == {}
    assert mirror.acked == set(range(1, outcome.seqs + 1))
    # A reconnect that lands in an outage is answered "unavailable" and closed, as the
    # page is told to retry; any other error is a refusal, which must never happen.
    assert [e for e in mirror.errors if e.get("code") != "unavailable"] == [], mirror.errors
    assert outcome.stored["events"] == outcome.seqs
    assert outcome.stored["calls"] == len(outcome.calls)
    # Each call ran exactly once, however often its event was resent, and was answered.
    voice_terminal = outcome.data["voice_terminal"]
    assert versions[voice_terminal["slug"]] == voice_terminal["version"] + len(outcome.calls)
    assert set(mirror.results) == set(outcome.calls)
