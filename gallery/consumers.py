"""The terminal socket: every viewer of a terminal sees the same image, live.

Messages and their fields are catalogued in `gallery.events`; the rules of who may watch
or drive a terminal live in `gallery.selectors`, and navigation in `gallery.services`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import DatabaseError

from artterminal.groups import terminal_group_name, user_group_name
from artterminal.sockets import CLOSE_LOGIN_GONE, CLOSE_TOO_MANY, SocketGuard
from gallery import events, selectors, services
from gallery.models import Terminal
from gallery.presence import viewer_registry

logger = logging.getLogger(__name__)

# A socket behind the terminal's version that hears nothing for this long has lost the
# newest states to the channel layer, and is sent the current one.
CATCH_UP_SECONDS = 1.0


class TerminalConsumer(AsyncJsonWebsocketConsumer):
    """`ws/terminals/<slug>/`: state, viewer count and image progress of one terminal."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.terminal_id: int | None = None
        self.user: selectors.AnyUser = AnonymousUser()
        self.joined_groups: list[str] = []
        # Highest version this socket has been sent: a broadcast that raced the state
        # read at connect or sync is not sent twice.
        self.sent_version = -1
        # The terminal's version in the database when this socket last forwarded a state.
        self.known_version = -1
        self.catch_up_task: asyncio.Task[None] | None = None
        self.viewers = 0
        self.sent_viewers = -1
        self.presence_task: asyncio.Task[None] | None = None
        self.guard: SocketGuard | None = None
        # Once the server hangs up, frames and broadcasts still queued are dropped.
        self.closing = False
        self.commands: dict[str, Callable[[Any], Awaitable[None]]] = {
            "terminal.navigate": self.navigate,
            "terminal.sync": self.sync,
        }

    # --- Lifecycle ------------------------------------------------------------------

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """The socket's whole life: whatever ends it (a close, a crash, the server
        cancelling it), its place in the user's count and its timers end with it."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            for task in (self.presence_task, self.catch_up_task):
                if task is not None:
                    task.cancel()
            if self.guard is not None:
                await self.guard.stop()

    async def connect(self) -> None:
        """Runs on the websocket handshake: authorize, join the groups, accept, then send
        the current state. An unknown terminal or one the user may not watch is refused
        before the handshake completes; a user with too many sockets open is told why."""
        self.user = self.scope.get("user") or AnonymousUser()
        slug = self.scope["url_route"]["kwargs"]["slug"]
        terminal = await database_sync_to_async(_watchable_terminal)(slug=slug, user=self.user)
        if terminal is None:
            await self.close()
            return
        self.guard = SocketGuard(
            scope=self.scope,
            rate=settings.WEBSOCKET_MESSAGES_PER_SECOND,
            burst=settings.WEBSOCKET_MESSAGE_BURST,
        )
        if not await self.guard.admit(socket_id=self.channel_name):
            # Accepted only to say why: a refused handshake reaches the page without a code.
            await self.accept()
            await self._send_error(
                "too_many_sockets", "You have too many terminals open; close some and reload."
            )
            await self.close(code=CLOSE_TOO_MANY)
            return
        self.terminal_id = terminal.pk
        # Join before reading the state, so a navigation committing meanwhile arrives
        # through the group instead of being lost.
        groups = [terminal_group_name(terminal.pk)]
        if self.user.is_authenticated and self.user.pk is not None:
            groups.append(user_group_name(self.user.pk))
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)
            self.joined_groups.append(group)
        await self.accept()

        registry = viewer_registry()
        self.viewers = await registry.join(terminal_id=terminal.pk, channel_name=self.channel_name)
        if registry.refresh_seconds is not None:
            self.presence_task = asyncio.create_task(self._keep_presence(registry.refresh_seconds))
        await self._send_fresh_state()
        await self._broadcast_viewers()
        await _start_image_relay()
        self.guard.watch(on_login_gone=self._close_login_gone)

    async def disconnect(self, code: int) -> None:
        """Runs when the socket closes, whoever closed it: leave the groups and tell the
        remaining viewers the new count."""
        if self.presence_task is not None:
            self.presence_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.presence_task
            self.presence_task = None
        if self.catch_up_task is not None:
            self.catch_up_task.cancel()
            self.catch_up_task = None
        if self.guard is not None:
            await self.guard.stop()
        for group in self.joined_groups:
            await self.channel_layer.group_discard(group, self.channel_name)
        self.joined_groups = []
        if self.terminal_id is not None:
            self.viewers = await viewer_registry().leave(
                terminal_id=self.terminal_id, channel_name=self.channel_name
            )
            await self._broadcast_viewers()
            self.terminal_id = None

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Runs when the server hangs up (refusal, oversized frame, revoked access,
        logout): nothing queued behind it is executed any more."""
        self.closing = True
        await super().close(code=code, reason=reason)

    # --- Browser → server -----------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Runs for every frame from the browser: count it against the socket's rate,
        parse it strictly, re-check the login, then dispatch it to the command it names.
        A refused frame gets an `error` and is never executed."""
        if self.closing or self.guard is None:
            return
        if not self.guard.allow_message():
            await self._send_error("rate_limited", "Too many messages; reconnecting in a moment.")
            await self.close(code=CLOSE_TOO_MANY)
            return
        limit = settings.WEBSOCKET_MAX_MESSAGE_BYTES
        if text_data is None:
            if len(bytes_data or b"") > limit:
                await self._refuse(events.message_too_large(limit))
            else:
                await self._send_error("binary_not_supported", "Send messages as JSON text.")
            return
        try:
            command = events.parse_client_message(text_data, max_bytes=limit)
        except events.ParseError as error:
            await self._refuse(error)
            return
        if not await self.guard.login_holds():
            await self._close_login_gone()
            return
        if self.closing:  # closed while the login was being checked
            return
        await self.commands[command["type"]](command)

    async def navigate(self, command: events.NavigateCommand) -> None:
        """Runs on `terminal.navigate`: the service moves the terminal, and after commit
        the new state reaches every viewer, this one included, through the group."""
        if self.terminal_id is None:
            return
        try:
            await database_sync_to_async(_navigate)(
                terminal_id=self.terminal_id,
                user=self.user,
                action=command["action"],
                image_id=command.get("image_id"),
            )
        except services.GalleryError as error:
            await self._send_error(error.code, error.message)
        except Terminal.DoesNotExist:
            await self._close_gone()
        except DatabaseError:
            logger.exception("Navigating terminal %s failed", self.terminal_id)
            await self._send_error("unavailable", "The gallery is busy; please try again.")

    async def sync(self, command: events.SyncCommand) -> None:
        """Runs on `terminal.sync` (after a reconnect or a gap in versions): answer this
        socket alone with the current state."""
        await self._send_fresh_state()

    # --- Group messages (server → this socket) --------------------------------------

    async def terminal_state(self, event: dict[str, Any]) -> None:
        """Runs after a navigation committed: forward the state with this socket's
        viewer count and rights, re-checked now since they may have changed.

        The channel layer silently drops messages for a socket that falls behind, the
        newest ones first, so no later message reveals the loss. When the terminal has
        already moved past this state, the socket waits for the newer ones; if none
        comes, `_catch_up` sends the current state."""
        if self.closing or self.terminal_id is None or int(event["version"]) <= self.sent_version:
            return
        found = await database_sync_to_async(_rights_and_version)(
            terminal_id=self.terminal_id, user=self.user
        )
        if found is None:
            await self._close_gone()
            return
        rights, version = found
        if not rights.can_watch:
            await self._close_forbidden()
            return
        await self._send_state(event, can_control=rights.can_control)
        self.known_version = max(self.known_version, version)
        if self.known_version > self.sent_version and (
            self.catch_up_task is None or self.catch_up_task.done()
        ):
            self.catch_up_task = asyncio.create_task(self._catch_up())

    async def terminal_viewers(self, event: dict[str, Any]) -> None:
        """Runs when a socket of this terminal opened or closed anywhere. A count holds
        nothing private, so it skips the rights check that every other message gets."""
        self.viewers = int(event["viewers"])
        await self._send_viewers_if_changed()

    async def image_progress(self, event: dict[str, Any]) -> None:
        """Runs when an image made for this terminal is queued, progresses, is ready or
        fails (gallery.broadcast.image_changed)."""
        if self.closing or self.terminal_id is None:
            return
        rights = await database_sync_to_async(_rights)(terminal_id=self.terminal_id, user=self.user)
        if rights is None:
            await self._close_gone()
        elif not rights.can_watch:
            await self._close_forbidden()
        else:
            message: events.ImageProgressMessage = {
                "type": "image.progress",
                "image": event["image"],
            }
            await self.send_json(message)

    async def user_logout(self, event: dict[str, Any]) -> None:
        """Runs when this socket's user logged out (gallery.broadcast.user_sockets_close):
        the session that authorized the socket is gone, so is the socket."""
        await self.close(code=events.CLOSE_LOGGED_OUT)

    # --- Helpers --------------------------------------------------------------------

    async def _send_fresh_state(self) -> None:
        if self.terminal_id is None:
            return
        found = await database_sync_to_async(_state_and_rights)(
            terminal_id=self.terminal_id, user=self.user
        )
        if found is None:
            await self._close_gone()
            return
        state, rights = found
        if not rights.can_watch:
            await self._close_forbidden()
            return
        await self._send_state(state, can_control=rights.can_control)

    async def _send_state(self, state: dict[str, Any], *, can_control: bool) -> None:
        message = events.terminal_state_message(
            state, viewers=self.viewers, can_control=can_control
        )
        if message["version"] < self.sent_version:  # read before a newer one was sent
            return
        self.sent_version = max(self.sent_version, message["version"])
        self.sent_viewers = self.viewers
        await self.send_json(message)

    async def _broadcast_viewers(self) -> None:
        if self.terminal_id is None:
            return
        message = events.terminal_viewers_message(self.viewers)
        await self.channel_layer.group_send(terminal_group_name(self.terminal_id), message)

    async def _send_viewers_if_changed(self) -> None:
        if self.viewers != self.sent_viewers and not self.closing:
            self.sent_viewers = self.viewers
            await self.send_json(events.terminal_viewers_message(self.viewers))

    async def _catch_up(self) -> None:
        """While this socket is behind the version it saw in the database: as long as
        newer states keep arriving, wait for them; after a quiet CATCH_UP_SECONDS, they
        were lost, so send the current state."""
        while not self.closing and self.sent_version < self.known_version:
            seen = self.sent_version
            await asyncio.sleep(CATCH_UP_SECONDS)
            if self.sent_version == seen and not self.closing:
                try:
                    await self._send_fresh_state()
                except Exception:
                    logger.exception("Catching up terminal %s failed", self.terminal_id)
                    return

    async def _keep_presence(self, interval: float) -> None:
        """Keeps this socket counted in a shared registry, and picks up counts that
        changed without a broadcast (a process that died with its viewers)."""
        while self.terminal_id is not None:
            await asyncio.sleep(interval)
            try:
                self.viewers = await viewer_registry().refresh(
                    terminal_id=self.terminal_id, channel_name=self.channel_name
                )
            except Exception:
                logger.exception("Refreshing presence on terminal %s failed", self.terminal_id)
                continue
            await self._send_viewers_if_changed()

    async def _refuse(self, error: events.ParseError) -> None:
        await self._send_error(error.code, error.message)
        if error.close_code is not None:
            await self.close(code=error.close_code)

    async def _send_error(self, code: str, message: str) -> None:
        await self.send_json(events.error_message(code, message))

    async def _close_forbidden(self) -> None:
        await self._send_error("forbidden", "You may no longer watch this terminal.")
        await self.close(code=events.CLOSE_FORBIDDEN)

    async def _close_login_gone(self) -> None:
        """The session behind this socket ended (logout elsewhere, deactivation, a
        password change): the page reconnects as whoever its browser is now."""
        if self.closing:
            return
        await self._send_error("logged_out", "You were signed out; reload to continue.")
        await self.close(code=CLOSE_LOGIN_GONE)

    async def _close_gone(self) -> None:
        await self._send_error("terminal_not_found", "This terminal no longer exists.")
        await self.close(code=events.CLOSE_FORBIDDEN)


def _watchable_terminal(*, slug: str, user: selectors.AnyUser) -> Terminal | None:
    terminal = Terminal.objects.filter(slug=slug).first()
    if terminal is None or not selectors.terminal_rights(user=user, terminal=terminal).can_watch:
        return None
    return terminal


def _rights(*, terminal_id: int, user: selectors.AnyUser) -> selectors.TerminalRights | None:
    terminal = Terminal.objects.filter(pk=terminal_id).first()
    if terminal is None:
        return None
    return selectors.terminal_rights(user=user, terminal=terminal)


def _rights_and_version(
    *, terminal_id: int, user: selectors.AnyUser
) -> tuple[selectors.TerminalRights, int] | None:
    terminal = Terminal.objects.filter(pk=terminal_id).first()
    if terminal is None:
        return None
    return selectors.terminal_rights(user=user, terminal=terminal), terminal.version


def _state_and_rights(
    *, terminal_id: int, user: selectors.AnyUser
) -> tuple[dict[str, Any], selectors.TerminalRights] | None:
    terminal = Terminal.objects.select_related("current_image").filter(pk=terminal_id).first()
    if terminal is None:
        return None
    return (
        selectors.terminal_state(terminal=terminal),
        selectors.terminal_rights(user=user, terminal=terminal),
    )


def _navigate(
    *, terminal_id: int, user: selectors.AnyUser, action: str, image_id: int | None
) -> None:
    terminal = Terminal.objects.get(pk=terminal_id)
    services.terminal_navigate(terminal=terminal, user=user, action=action, image_id=image_id)


async def _start_image_relay() -> None:
    """Image progress from task workers reaches the channel layer through the relay;
    it lands separately, so a site without it still serves terminals."""
    try:
        relay = importlib.import_module("gallery.relay")
    except ModuleNotFoundError as error:
        if error.name == "gallery.relay":
            return
        raise
    ensure = getattr(relay, "ensure_image_relay", None)
    if ensure is None:
        return
    try:
        await ensure()
    except Exception:
        logger.exception("Starting the image relay failed")
