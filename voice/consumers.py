"""The mirror: the browser forwards its data-channel events; the server stores them and
runs the assistant's tool calls. Protocol in voice/events.py."""

from __future__ import annotations

import contextlib
import json
import logging
import math
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import DatabaseError, DataError, IntegrityError

from artterminal.groups import user_group_name, voice_session_group_name
from artterminal.layers import LAYER_ERRORS, layer_failure
from artterminal.sockets import CLOSE_LOGIN_GONE, CLOSE_TOO_MANY, OUTAGES, SocketGuard
from gallery import selectors as gallery_selectors
from gallery.models import Terminal
from voice import events, selectors, services, tools
from voice.models import VoiceSession

logger = logging.getLogger(__name__)

CLOSE_SESSION_ENDED = events.CLOSE_SESSION_ENDED


@database_sync_to_async
def _session_for(session_id: int, user: Any) -> VoiceSession | None:
    session = selectors.voice_session_for_mirror(session_id=session_id, user=user)
    if session is None or not gallery_selectors.terminal_can_control(
        user=user, terminal=session.terminal
    ):
        return None
    return session


@database_sync_to_async
def _still_controls(session: VoiceSession) -> bool:
    user = get_user_model().objects.filter(pk=session.user_id).first()
    terminal = Terminal.objects.filter(pk=session.terminal_id).first()
    return (
        user is not None
        and terminal is not None
        and gallery_selectors.terminal_can_control(user=user, terminal=terminal)
    )


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
        place in the user's socket count and its login re-checks end with it. A channel
        layer that fails under it (Redis restarting empty forgets every group) closes it
        with CLOSE_RETRY: the browser reconnects and resends what was not acked."""
        try:
            await super().__call__(scope, receive, send)
        except LAYER_ERRORS as error:
            logger.warning(
                "Voice mirror on %s lost the channel layer (%s); closing it so the page reconnects",
                scope.get("path", ""),
                layer_failure(error),
            )
            self.ending = True
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": events.CLOSE_RETRY})
        finally:
            if self.guard is not None:
                await self.guard.stop()

    async def connect(self) -> None:
        """On the handshake: only the session's owner, while it is open, still in control,
        and within the user's cap on open sockets."""
        user = self.scope.get("user")
        session_id = self.scope["url_route"]["kwargs"]["session_id"]
        try:
            session = await _session_for(session_id, user) if user is not None else None
        except DatabaseError as error:
            logger.warning("Voice session %s: reading it failed (%s)", session_id, error)
            await self._refuse_for_now()
            return
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
        groups = [voice_session_group_name(session.pk), user_group_name(user.pk)]
        try:
            for group in groups:
                await self.channel_layer.group_add(group, self.channel_name)
                self.groups_joined.append(group)
        except LAYER_ERRORS as error:
            logger.warning(
                "Voice session %s: joining its groups failed (%s); asking the page to retry",
                session.pk,
                layer_failure(error),
            )
            await self._refuse_for_now()
            return
        await self.accept()
        self.guard.watch(on_login_gone=self._login_gone)

    async def _refuse_for_now(self) -> None:
        """Accepted only to say why: the page reconnects after CLOSE_RETRY."""
        self.ending = True
        await self.accept()
        await self.send_json(
            events.error(code="unavailable", message="The server is busy; reconnecting.")
        )
        await self.close(code=events.CLOSE_RETRY)

    async def disconnect(self, code: int) -> None:
        """On close: leave the groups. The session stays open, so the browser can reconnect."""
        for group in self.groups_joined:
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except LAYER_ERRORS as error:
                # The membership expires with the layer's group_expiry.
                logger.warning("Leaving %s failed (%s)", group, layer_failure(error))
                break
        self.groups_joined = []
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
        if call is not None and self.guard is not None:
            try:
                holds = await self.guard.login_holds()
            except OUTAGES as failure:
                logger.warning(
                    "Voice session %s: checking the login failed (%s)",
                    self.session.pk,
                    layer_failure(failure),
                )
                await self._send_unavailable()
                return
            if not holds:
                await self._login_gone()
                return
        try:
            stored = await database_sync_to_async(services.voice_event_record)(
                session=self.session, event=message
            )
        except services.VoiceSessionClosed as closed:
            await self._end(reason=closed.reason)
            return
        except services.VoiceEventConflict:
            # Only a resend of the stored event may run its call again (its result was
            # maybe lost); another event under a used seq would run unrecorded.
            await self.send_json(
                events.error(
                    code="seq_reused",
                    message="This seq already holds another event.",
                    seq=seq,
                )
            )
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
            except DataError:
                # The database refuses this very call: resending cannot help.
                logger.warning(
                    "Voice session %s: the function call in event %s cannot be stored",
                    self.session.pk,
                    seq,
                )
                await self.send_json(
                    events.error(
                        code="invalid_event", message="This function call cannot be run.", seq=seq
                    )
                )
                return
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
        session_id = self.session.pk if self.session is not None else None
        logger.exception("Voice session %s: the database failed", session_id)
        await self._send_unavailable()

    async def _send_unavailable(self) -> None:
        """No seq in the error: the browser keeps the event and resends it on reconnect."""
        await self.send_json(
            events.error(code="unavailable", message="The server is busy; try again shortly.")
        )

    async def _hang_up(self, *, reason: str = "hangup") -> None:
        ended = await self._session_end(reason=reason)
        if ended is None:
            await self._end(reason=reason)
        elif not ended:
            await self._end(reason="ended")
        # Otherwise the group message announcing the end closes this socket.

    async def _session_end(self, *, reason: str) -> bool | None:
        """Record the session's end (`services.voice_session_end`); None when the
        database failed. The call ends all the same: the page's hang-up or a lost login
        cannot wait for the database, and the session left open ends with
        `voice_sessions_expire` once it has mirrored nothing for a while."""
        if self.session is None:
            return False
        try:
            return await database_sync_to_async(services.voice_session_end)(
                session=self.session, reason=reason
            )
        except DatabaseError as error:
            logger.warning(
                "Voice session %s: recording its end (%s) failed (%s); it ends when it expires",
                self.session.pk,
                reason,
                error,
            )
            return None

    async def session_ended(self, message: dict[str, Any]) -> None:
        """On `session.ended` to the session's group (hang-up, or staff ended it)."""
        await self._end(reason=str(message.get("reason", "ended")))

    async def terminal_access(self, message: dict[str, Any]) -> None:
        """On `terminal.access` to the user's group (gallery.signals): the user's rights
        changed. A user who may no longer control the session's terminal ends the call;
        every tool call checks the rights again anyway (voice.tools)."""
        session = self.session
        terminal_id = message.get("terminal_id")
        if self.ending or session is None:
            return
        if terminal_id is not None and terminal_id != session.terminal_id:
            return
        try:
            controls = await _still_controls(session)
        except DatabaseError as error:
            # Every tool call checks the rights again, so the call can go on.
            logger.warning("Voice session %s: re-reading rights failed (%s)", session.pk, error)
            return
        if not controls:
            await self._stop(
                end_reason="control revoked",
                message=events.session_ended(reason="control revoked"),
                code=CLOSE_SESSION_ENDED,
            )

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
        await self._session_end(reason=end_reason)
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
