"""The mirror: the browser forwards its data-channel events; the server stores them and
runs the assistant's tool calls. Protocol in voice/events.py."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError, DataError, IntegrityError

from artterminal.groups import user_group_name, voice_session_group_name
from artterminal.sockets import CLOSE_LOGIN_GONE, CLOSE_TOO_MANY, SocketGuard
from gallery import selectors as gallery_selectors
from voice import events, selectors, services, tools
from voice.models import VoiceSession

logger = logging.getLogger(__name__)

CLOSE_SESSION_ENDED = 4000
CLOSE_MESSAGE_TOO_BIG = 1009


@database_sync_to_async
def _session_for(session_id: int, user: Any) -> VoiceSession | None:
    session = selectors.voice_session_for_mirror(session_id=session_id, user=user)
    if session is None or not gallery_selectors.terminal_can_control(
        user=user, terminal=session.terminal
    ):
        return None
    return session


class VoiceMirrorConsumer(AsyncJsonWebsocketConsumer):
    """One browser's mirror of one voice session."""

    session: VoiceSession | None = None
    groups_joined: list[str]
    ending: bool
    guard: SocketGuard | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.groups_joined = []
        self.ending = False
        self.guard = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """The socket's whole life: however it ends (close, crash, cancellation), its
        place in the user's socket count and its login re-checks end with it."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.guard is not None:
                await self.guard.stop()

    async def connect(self) -> None:
        """On the handshake: only the session's owner, while it is open, still in control,
        and within the user's cap on open sockets."""
        user = self.scope.get("user")
        session_id = self.scope["url_route"]["kwargs"]["session_id"]
        session = await _session_for(session_id, user) if user is not None else None
        if session is None:
            await self.close()
            return
        self.guard = SocketGuard(
            scope=self.scope,
            rate=settings.VOICE_MIRROR_MESSAGES_PER_SECOND,
            burst=settings.VOICE_MIRROR_MESSAGE_BURST,
        )
        if not await self.guard.admit(socket_id=self.channel_name):
            # Accepted only to say why; the session stays open for a socket that fits.
            self.ending = True
            await self.accept()
            await self.send_json(
                events.error(
                    code="too_many_sockets",
                    message="Too many connections are open; close other tabs and try again.",
                )
            )
            await self.close(code=CLOSE_TOO_MANY)
            return
        self.session = session
        # The user's group too: logging out ends the call (gallery.broadcast.user_sockets_close).
        self.groups_joined = [voice_session_group_name(session.pk), user_group_name(user.pk)]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        self.guard.watch(on_login_gone=self._login_gone)

    async def disconnect(self, code: int) -> None:
        """On close: leave the groups. The session stays open, so the browser can reconnect."""
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)
        if self.guard is not None:
            await self.guard.stop()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """On each frame: the socket's rate, size and JSON checks here, then the
        catalogue, then a service."""
        if self.ending or self.guard is None:
            return
        if not self.guard.allow_message():
            await self._stop(
                end_reason="too many messages",
                message=events.error(
                    code="rate_limited", message="Too many messages; the call was ended."
                ),
                code=CLOSE_TOO_MANY,
            )
            return
        if text_data is None:
            await self.send_json(events.error(code="text_only", message="Send JSON text frames."))
            return
        if len(text_data) > settings.WEBSOCKET_MAX_MESSAGE_BYTES or (
            len(text_data.encode()) > settings.WEBSOCKET_MAX_MESSAGE_BYTES
        ):
            await self.send_json(
                events.error(
                    code="frame_too_large",
                    message=(
                        f"Messages are limited to {settings.WEBSOCKET_MAX_MESSAGE_BYTES} bytes; "
                        "strip audio before mirroring."
                    ),
                    seq=events.leading_seq(text_data),
                )
            )
            return
        try:
            data = json.loads(text_data, parse_constant=_refuse_constant, parse_float=_finite)
        except (ValueError, RecursionError):
            await self.send_json(events.error(code="invalid_json", message="Send valid JSON."))
            return
        await self.receive_json(data)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        try:
            message = events.browser_message_parse(content)
        except events.MessageInvalid as invalid:
            await self.send_json(
                events.error(code=invalid.code, message=invalid.message, seq=invalid.seq)
            )
            return
        if message["type"] == "mirror.hangup":
            await self._hang_up()
            return
        await self._mirror(message)

    async def _mirror(self, message: events.MirrorEvent) -> None:
        assert self.session is not None
        seq, event = message["seq"], message["event"]
        call: events.FunctionCall | None = None
        if message["direction"] == "received" and event["type"] == events.FUNCTION_CALL_DONE:
            try:
                call = events.function_call_parse(event)
            except events.MessageInvalid as invalid:
                # Kept in the timeline, but nothing to execute.
                await self.send_json(events.error(code=invalid.code, message=invalid.message))
        # Acting for the user needs their login to hold right now.
        if call is not None and self.guard is not None and not await self.guard.login_holds():
            await self._login_gone()
            return
        try:
            stored = await database_sync_to_async(services.voice_event_record)(
                session=self.session, event=message
            )
        except services.VoiceSessionClosed as closed:
            await self._end(reason=closed.reason)
            return
        except (DataError, IntegrityError):
            # The database refuses this very event (PostgreSQL and \u0000, say): resending
            # cannot help, so the error names its seq.
            logger.warning("Voice session %s: event %s cannot be stored", self.session.pk, seq)
            await self.send_json(
                events.error(code="invalid_event", message="This event cannot be stored.", seq=seq)
            )
            return
        except DatabaseError:
            await self._database_busy()
            return
        if call is not None:
            try:
                result = await database_sync_to_async(tools.tool_call_execute)(
                    session=self.session,
                    call_id=call["call_id"],
                    name=call["name"],
                    arguments=call["arguments"],
                )
            except DatabaseError:
                # The event is stored but not acked: its resend runs the call.
                await self._database_busy()
                return
            # A resent seq was never acked, so its tool.result may have been lost with
            # the socket: repeat it. A new seq repeating an answered call_id gets none,
            # since the browser already has that call's result.
            if not result.replayed or not stored:
                await self.send_json(
                    events.tool_result(
                        call_id=result.call_id, name=result.name, output=result.output_text
                    )
                )
        await self.send_json(events.mirror_ack(seq=seq))

    async def _database_busy(self) -> None:
        """No seq in the error: the browser keeps the event and resends it on reconnect."""
        session_id = self.session.pk if self.session is not None else None
        logger.exception("Voice session %s: the database failed", session_id)
        await self.send_json(
            events.error(code="unavailable", message="The server is busy; try again shortly.")
        )

    async def _hang_up(self, *, reason: str = "hangup") -> None:
        assert self.session is not None
        ended = await database_sync_to_async(services.voice_session_end)(
            session=self.session, reason=reason
        )
        if not ended:
            await self._end(reason="ended")
        # Otherwise the group message announcing the end closes this socket.

    async def session_ended(self, message: dict[str, Any]) -> None:
        """On `session.ended` to the session's group (hang-up, or staff ended it)."""
        await self._end(reason=str(message.get("reason", "ended")))

    async def user_logout(self, message: dict[str, Any]) -> None:
        """On `user.logout` to the user's group: the login behind this call is gone."""
        await self._hang_up(reason="logged out")

    async def _login_gone(self) -> None:
        """The login behind this call ended without a logout signal reaching this
        process (session expired or deleted, password changed, user deactivated)."""
        await self._stop(
            end_reason="signed out",
            message=events.session_ended(reason="signed out"),
            code=CLOSE_LOGIN_GONE,
        )

    async def _stop(self, *, end_reason: str, message: Any, code: int) -> None:
        """End the session here and close with `code`; its group announcement, which
        would close with the generic code, is ignored."""
        if self.ending:
            return
        self.ending = True
        if self.session is not None:
            await database_sync_to_async(services.voice_session_end)(
                session=self.session, reason=end_reason
            )
        await self.send_json(message)
        await self.close(code=code)

    async def _end(self, *, reason: str) -> None:
        if self.ending:  # a hang-up's own announcement can follow its direct reply
            return
        self.ending = True
        await self.send_json(events.session_ended(reason=reason))
        await self.close(code=CLOSE_SESSION_ENDED)


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; stored, they would fail the database's JSON check.
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 overflows to infinity
        raise ValueError("number out of range")
    return value
