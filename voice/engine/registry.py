"""The live calls of this process: the cap, lookup for hangup, and the time limits.

Calls live on the event loop of the process that answered the SDP offer, so the
registry is per process; the cap (ENGINE_MAX_CALLS) bounds each process's CPU for
speech recognition and synthesis.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

from django.conf import settings

from voice.engine.errors import EngineError
from voice.engine.events import new_id

if TYPE_CHECKING:
    from voice.engine.call import Call

# A peer that has not connected by then never will (it went away mid-handshake).
CONNECT_TIMEOUT_SECONDS = 30.0
# OpenAI ends a Realtime session after 60 minutes; so does the engine.
MAX_CALL_SECONDS = 60 * 60.0


class CallRegistry:
    def __init__(self) -> None:
        self._calls: dict[str, Call] = {}
        self._reserved: set[str] = set()
        self.connect_timeout_seconds = CONNECT_TIMEOUT_SECONDS
        self.max_call_seconds = MAX_CALL_SECONDS
        self._hangs_up_at_shutdown = False

    def __len__(self) -> int:
        return len(self._calls) + len(self._reserved)

    def check_capacity(self) -> None:
        if len(self) >= settings.ENGINE_MAX_CALLS:
            raise EngineError(
                f"The engine is at its limit of {settings.ENGINE_MAX_CALLS} concurrent calls; "
                "try again when a call has ended.",
                status=503,
                type="server_error",
                code="too_many_calls",
            )

    def reserve(self) -> str:
        """Hold a slot for a call being set up (no await between check and hold)."""
        self.check_capacity()
        call_id = new_id("rtc")
        self._reserved.add(call_id)
        return call_id

    def release(self, call_id: str) -> None:
        self._reserved.discard(call_id)
        self._calls.pop(call_id, None)

    def add(self, call: Call) -> None:
        self._reserved.discard(call.id)
        if not call.closed:
            self._calls[call.id] = call
            self._hang_up_at_shutdown()

    def get(self, call_id: str) -> Call | None:
        return self._calls.get(call_id)

    def calls(self) -> list[Call]:
        return list(self._calls.values())

    async def close_all(self, reason: str) -> None:
        await asyncio.gather(*(call.close(reason) for call in self.calls()))

    def _hang_up_at_shutdown(self) -> None:
        """Under Daphne, end every call before the server stops.

        A call's peer has a decoder thread that only its close ends, and the interpreter
        waits for such threads before it exits: a server stopped with calls up would
        never exit, and hold its port. Daphne has no ASGI lifespan; it ends its own
        applications in a Twisted "before shutdown" trigger, and so do the calls.
        """
        reactor: Any = sys.modules.get("twisted.internet.reactor")
        if self._hangs_up_at_shutdown or reactor is None or not reactor.running:
            return
        from twisted.internet.defer import Deferred

        def hang_up_all() -> Deferred[None]:
            return Deferred.fromFuture(
                asyncio.ensure_future(self.close_all("the server is shutting down"))
            )

        reactor.addSystemEventTrigger("before", "shutdown", hang_up_all)
        self._hangs_up_at_shutdown = True


registry = CallRegistry()
