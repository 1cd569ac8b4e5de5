"""The terminal socket: every viewer of a terminal sees the same image, live.

Messages and their fields are catalogued in `gallery.events`; the rules of who may watch
or drive a terminal live in `gallery.selectors`, and navigation in `gallery.services`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, cast

from autobahn.exception import Disconnected
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.db import DatabaseError
from django.utils import timezone

from artterminal.groups import user_group_name
from artterminal.layers import (
    LAYER_ERRORS,
    HeldMessage,
    group_send_held,
    group_sends_held,
    layer_failure,
)
from artterminal.sockets import (
    CLOSE_LOGIN_GONE,
    CLOSE_TOO_MANY,
    CLOSE_UNAVAILABLE,
    OUTAGES,
    SocketGuard,
)
from gallery import events, selectors, services
from gallery.broadcast import image_progress_payload
from gallery.catch_up import catch_up
from gallery.feeds import feeds
from gallery.models import Terminal
from gallery.presence import count_announcer, viewer_registry

logger = logging.getLogger(__name__)
# Image progress held while a socket's rights are re-read: the newest this many.
HELD_PROGRESS = 50
# A page back from an outage hears of jobs that failed this recently (older failures
# it would have heard of, or is better off not hearing of now).
JOBS_FAILED_WITHIN = timedelta(minutes=15)

# Commands one socket may have waiting to run, past which it is told `busy`: as many as
# its message burst (WEBSOCKET_MESSAGE_BURST), so only a socket that keeps sending
# faster than its commands run is refused.
# After the browser hangs up, commands it sent before still run for at most this long
# (well within Daphne's 10 s application_close_timeout); the rest are dropped, logged.
DRAIN_SECONDS = 3.0


class TerminalConsumer(AsyncJsonWebsocketConsumer):
    """`ws/terminals/<slug>/`: state, viewer count and image progress of one terminal.

    The terminal's group messages reach the socket through its process's feed of that
    terminal (gallery.feeds), not a group membership of its own; the user's group (access
    changes, logout) it joins itself. Broadcasts cost no database query per viewer: the
    socket's rights are read at connect and again when they may have changed (a
    `terminal.access` event, sent on commit by gallery.signals) and on the periodic
    re-check of its login. Commands from the browser wait in a small queue run by one
    task, so group messages and the close are never stuck behind a slow command."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.terminal_id: int | None = None
        self.user: selectors.AnyUser = AnonymousUser()
        self.rights = selectors.TerminalRights(can_watch=False, can_control=False)
        self.joined_groups: list[str] = []
        self.fed = False  # in its terminal's feed
        # What the feed hands over before the handshake is accepted (nothing may be sent
        # yet); None once accepted and replayed.
        self.early: list[dict[str, Any]] | None = []
        # Highest version this socket has been sent: a broadcast that raced the state
        # read at connect or sync is not sent twice.
        self.sent_version = -1
        # Rights changed but the state carrying them could not be read: the next
        # periodic check sends it.
        self.state_owed = False
        # Re-reads of the rights after a `terminal.access` still in flight, or one
        # that failed: the change may have taken this socket's right to watch, and a
        # state reaching it meanwhile (through the feed, which nothing orders against
        # the user's group) is held back until the rights are known again.
        self.rights_rereads = 0
        self.rights_doubtful = False
        self.held_progress: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=HELD_PROGRESS
        )
        self.viewers = 0
        self.sent_viewers = -1
        self.presence_task: asyncio.Task[None] | None = None
        self.guard: SocketGuard | None = None
        # Once the server hangs up, frames, commands and broadcasts still queued are dropped.
        self.closing = False
        self.queue: asyncio.Queue[events.ClientMessage] = asyncio.Queue(
            maxsize=settings.WEBSOCKET_MESSAGE_BURST
        )
        self.worker: asyncio.Task[None] | None = None
        self.commands: dict[str, Callable[[Any], Awaitable[None]]] = {
            "terminal.navigate": self.navigate,
            "terminal.sync": self.sync,
        }
        # Commands whose handler checks the login itself, in the one trip to the
        # database thread it makes anyway: every trip waits for a turn of the loop and
        # of that thread, and navigation is the command sent many times a minute.
        self.commands_checking_login = {"terminal.navigate"}

    # --- Lifecycle ------------------------------------------------------------------

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """The socket's whole life: whatever ends it (a close, a crash, the server
        cancelling it), its place in the user's count and its timers end with it. A
        channel layer that fails (Redis restarting empty forgets every group) closes
        the socket with CLOSE_UNAVAILABLE, so the page reconnects and re-joins; the
        commands it sent before run first, as the database is still there."""
        try:
            await super().__call__(scope, receive, send)
        except LAYER_ERRORS as error:
            logger.warning(
                "Terminal socket on %s lost the channel layer (%s); closing it so the page "
                "reconnects",
                scope.get("path", ""),
                layer_failure(error),
            )
            await self._drain_commands()
            await self._close_quietly(send)
        finally:
            for task in (self.presence_task, self.worker):
                if task is not None:
                    task.cancel()
            if self.terminal_id is not None:
                catch_up().discard(terminal_id=self.terminal_id, viewer=self)
                await self._leave_feed(self.terminal_id)
                # Ended without disconnect() (cancelled by the server, or a handler's
                # error): the in-memory registry never forgets a viewer by itself.
                await self._uncount()
            if self.guard is not None:
                await self.guard.stop()

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Every frame and group message runs its handler directly. Channels would
        first close stale database connections on the one database thread of the
        process, a queue behind every write; this consumer only touches the database
        through `database_sync_to_async`, which closes them itself."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        """Runs on the websocket handshake: authorize, join the groups, accept, then send
        the current state. An unknown terminal or one the user may not watch, and a user
        with too many sockets open, are told why and closed."""
        self.user = self.scope.get("user") or AnonymousUser()
        slug = self.scope["url_route"]["kwargs"]["slug"]
        try:
            found = await database_sync_to_async(_watchable_terminal)(slug=slug, user=self.user)
        except DatabaseError as error:
            logger.warning("Opening terminal %s: the database failed (%s)", slug, error)
            await self.accept()
            await self._close_unavailable()
            return
        if found is None:
            # Accepted only to say so: a handshake refused outright reaches the page as
            # a dropped connection (1006), which it retries for ever; 4003 is final. The
            # same answer whether it does not exist or may not be watched, as the page's 404.
            await self.accept()
            await self._send_error("terminal_not_found", "There is no such terminal.")
            await self.close(code=events.CLOSE_FORBIDDEN)
            return
        terminal, self.rights = found
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
        # through the feed instead of being lost.
        try:
            await feeds().join(terminal_id=terminal.pk, socket=self)
            self.fed = True
            if self.user.is_authenticated and self.user.pk is not None:
                group = user_group_name(self.user.pk)
                await self.channel_layer.group_add(group, self.channel_name)
                self.joined_groups.append(group)
        except LAYER_ERRORS as error:
            logger.warning(
                "Terminal %s: joining its groups failed (%s); asking the page to retry",
                terminal.pk,
                layer_failure(error),
            )
            await self.accept()
            await self._close_unavailable()
            return
        await self.accept()
        await self._replay_early()

        registry = viewer_registry()
        try:
            self.viewers = await registry.join(
                terminal_id=terminal.pk, channel_name=self.channel_name
            )
        except LAYER_ERRORS as error:
            # Counted on the next refresh; the picture matters more than the count.
            logger.warning("Counting viewers of terminal %s failed (%s)", terminal.pk, error)
            self.viewers = max(self.viewers, 1)
        if registry.refresh_seconds is not None:
            self.presence_task = asyncio.create_task(self._keep_presence(registry.refresh_seconds))
        catch_up().add(terminal_id=terminal.pk, viewer=self)
        self.worker = asyncio.create_task(self._run_commands())
        try:
            await self._send_fresh_state()
        except DatabaseError as error:
            logger.warning("Reading terminal %s for a new socket failed (%s)", terminal.pk, error)
            await self._close_unavailable()
            return
        count_announcer().changed(terminal_id=terminal.pk)
        await _start_image_relay()
        self.guard.watch(on_login_gone=self._close_login_gone, on_check=self._check_periodically)

    async def disconnect(self, code: int) -> None:
        """Runs when the socket closes, whoever closed it: leave the groups, let the
        commands the browser sent before hanging up finish (for at most DRAIN_SECONDS;
        none after a server-side close), and tell the remaining viewers the new count."""
        if self.presence_task is not None:
            self.presence_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.presence_task
            self.presence_task = None
        if self.guard is not None:
            await self.guard.stop()
        if self.terminal_id is not None:
            await self._leave_feed(self.terminal_id)
        for group in self.joined_groups:
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except LAYER_ERRORS as error:
                # The membership expires with the layer's group_expiry.
                logger.warning("Leaving %s failed (%s)", group, layer_failure(error))
                break
        self.joined_groups = []
        await self._drain_commands()
        if self.terminal_id is not None:
            catch_up().discard(terminal_id=self.terminal_id, viewer=self)
            await self._uncount()
            self.terminal_id = None

    async def _uncount(self) -> None:
        """Leave the terminal's viewers, and have the count announced."""
        assert self.terminal_id is not None
        try:
            self.viewers = await viewer_registry().leave(
                terminal_id=self.terminal_id, channel_name=self.channel_name
            )
            count_announcer().changed(terminal_id=self.terminal_id)
        except LAYER_ERRORS as error:
            # A shared registry's entry expires by itself (gallery.presence).
            logger.warning(
                "Uncounting a viewer of terminal %s failed (%s)",
                self.terminal_id,
                layer_failure(error),
            )

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Runs when the server hangs up (refusal, oversized frame, revoked access,
        logout): nothing queued behind it is executed any more."""
        self.closing = True
        while not self.queue.empty():
            self.queue.get_nowait()
            self.queue.task_done()
        await super().close(code=code, reason=reason)

    # --- Browser → server -----------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Runs for every frame from the browser: count it against the socket's rate,
        parse it strictly and queue the command it names. A refused frame gets an
        `error` and is never executed; so does a command past a full queue (`busy`)."""
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
        try:
            self.queue.put_nowait(command)
        except asyncio.QueueFull:
            logger.warning(
                "Terminal %s: a socket of %s sent commands faster than they run",
                self.terminal_id,
                self.guard.who,
            )
            await self._send_error(
                "busy", "Still working on your earlier commands; this one was not run."
            )

    async def _run_commands(self) -> None:
        """The socket's one command runner: each queued command, in order, after a
        fresh look at the login behind it."""
        while True:
            command = await self.queue.get()
            try:
                await self._run_command(command)
            except Exception:
                # One command's failure is its own: the runner goes on with the next,
                # or every later command of the socket would queue with no answer.
                logger.exception("Terminal %s: %s failed", self.terminal_id, command["type"])
                await self._send_error("unavailable", "The gallery is busy; please try again.")
            finally:
                self.queue.task_done()

    async def _run_command(self, command: events.ClientMessage) -> None:
        if self.closing or self.guard is None:
            return
        checks_itself = command["type"] in self.commands_checking_login
        if not checks_itself and not await self._login_holds():
            return
        await self.commands[command["type"]](command)

    async def _login_holds(self) -> bool:
        """A fresh look at the login behind the socket before a command; False, having
        answered or closed the socket, when the command must not run."""
        assert self.guard is not None
        try:
            holds = await self.guard.login_holds()
        except OUTAGES as error:
            await self._login_check_failed(error)
            return False
        if not holds:
            await self._close_login_gone()
            return False
        return not self.closing  # closed while the login was being checked

    async def _login_check_failed(self, error: BaseException) -> None:
        assert self.guard is not None
        logger.warning(
            "Terminal %s: checking the login of %s failed (%s)",
            self.terminal_id,
            self.guard.who,
            layer_failure(error),
        )
        await self._send_error("unavailable", "The gallery is busy; please try again.")

    async def _drain_commands(self) -> None:
        worker, self.worker = self.worker, None
        if worker is None:
            return
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                await self.queue.join()
        except TimeoutError:
            logger.warning(
                "Terminal %s: dropped %d commands of a socket that closed with them queued",
                self.terminal_id,
                self.queue.qsize(),
            )
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker

    async def navigate(self, command: events.NavigateCommand) -> None:
        """Runs on `terminal.navigate`, once the login behind the socket is seen to hold
        (checked in the same trip to the database): the service moves the terminal, and
        after commit the new state reaches every viewer, this one included, through the
        group."""
        if self.terminal_id is None or self.guard is None:
            return
        # Shielded: a hang-up cancels the command runner after DRAIN_SECONDS, but a
        # navigation already on the database thread commits all the same, and its
        # viewers must still hear of it.
        moving = asyncio.ensure_future(self._navigate_and_broadcast(command))
        try:
            login_holds = await asyncio.shield(moving)
        except asyncio.CancelledError:
            moving.add_done_callback(_outcome_unheard)
            raise
        except services.GalleryError as error:
            await self._send_error(error.code, error.message)
            return
        except Terminal.DoesNotExist:
            await self._close_gone()
            return
        except DatabaseError:
            logger.exception("Navigating terminal %s failed", self.terminal_id)
            await self._send_error("unavailable", "The gallery is busy; please try again.")
            return
        except LAYER_ERRORS as error:  # the session cache, read for the login check
            await self._login_check_failed(error)
            return
        if not login_holds:
            await self._close_login_gone()

    async def _navigate_and_broadcast(self, command: events.NavigateCommand) -> bool:
        assert self.terminal_id is not None and self.guard is not None
        broadcasts: list[HeldMessage] = []
        try:
            return await database_sync_to_async(_navigate)(
                guard=self.guard,
                terminal_id=self.terminal_id,
                user=self.user,
                action=command["action"],
                image_id=command.get("image_id"),
                broadcasts=broadcasts,
            )
        finally:
            # The new state, sent from here rather than from the database thread.
            await group_send_held(broadcasts)

    async def sync(self, command: events.SyncCommand) -> None:
        """Runs on `terminal.sync` (after a reconnect or a gap in versions): answer this
        socket alone with the current state."""
        try:
            await self._send_fresh_state(with_jobs=command.get("jobs", False))
        except DatabaseError:
            logger.exception("Reading terminal %s for a sync failed", self.terminal_id)
            await self._send_error("unavailable", "The gallery is busy; please try again.")

    # --- Group messages (server → this socket) --------------------------------------

    async def deliver(self, message: dict[str, Any]) -> None:
        """A message of the terminal's group, from the feed (gallery.feeds). The feed
        runs beside this socket's own task: until the handshake is accepted, messages
        wait, in order (gallery.feeds joins before the state is read)."""
        if self.early is not None:
            self.early.append(message)
            return
        try:
            await self.dispatch(message)
        except Disconnected:
            # The browser hung up while this was on its way (Daphne raises autobahn's
            # error for a send during the close handshake); its disconnect follows.
            logger.debug("Terminal %s: a socket closed as a message reached it", self.terminal_id)

    async def _replay_early(self) -> None:
        """Once accepted: handle what the feed handed over meanwhile, then go live."""
        while self.early:
            await self.dispatch(self.early.pop(0))
        self.early = None

    async def feed_lost(self, error: BaseException) -> None:
        """The channel layer failed under the terminal's feed: as when it fails under
        this socket's own channel, close with CLOSE_UNAVAILABLE so the page reconnects
        (the commands it sent before still run)."""
        self.fed = False
        if self.closing:
            return
        await self._drain_commands()
        await self._close_quietly(self.base_send)

    async def terminal_state(self, event: dict[str, Any]) -> None:
        """Runs after a navigation committed: forward the state with this socket's
        viewer count and its cached rights (kept current by `terminal_access`).

        The channel layer silently drops messages for a process that falls behind, the
        newest ones first, so no later message reveals the loss: once the terminal's
        states go quiet, gallery.catch_up checks this process's sockets against the
        database, once for all of them (the feed tells it of each state)."""
        if self.closing or self.terminal_id is None or int(event["version"]) <= self.sent_version:
            return
        if not self.rights.can_watch:
            return
        if self._rights_in_doubt():
            self.state_owed = True
            return
        await self._send_state(
            cast(events.TerminalStateEvent, event), can_control=self.rights.can_control
        )

    async def terminal_access(self, event: dict[str, Any]) -> None:
        """Runs when who may watch or drive this terminal may have changed (a membership,
        the terminal's privacy or owner, the user's staff status; gallery.signals):
        read this socket's rights again, close it if it may no longer watch."""
        terminal_id = event.get("terminal_id")
        if terminal_id is not None and terminal_id != self.terminal_id:
            return
        self.rights_rereads += 1
        try:
            read = await self._refresh_rights(send_if_behind=False, rereads_before_me=1)
        finally:
            self.rights_rereads -= 1
        if not read:
            self.rights_doubtful = True
            self.state_owed = True
        await self._release_held_progress()

    async def terminal_viewers(self, event: dict[str, Any]) -> None:
        """Runs when a socket of this terminal opened or closed anywhere. A count holds
        nothing private, so it skips the rights check that every other message gets."""
        self.viewers = int(event["viewers"])
        await self._send_viewers_if_changed()

    async def image_progress(self, event: dict[str, Any]) -> None:
        """Runs when an image made for this terminal is queued, progresses, is ready or
        fails (gallery.broadcast.image_changed)."""
        if self.closing or self.terminal_id is None or not self.rights.can_watch:
            return
        if self._rights_in_doubt():
            # Held, not dropped: a job's end is news a state does not carry.
            self.held_progress.append(event)
            return
        message: events.ImageProgressMessage = {"type": "image.progress", "image": event["image"]}
        await self.send_json(message)

    def _rights_in_doubt(self) -> bool:
        return self.rights_rereads > 0 or self.rights_doubtful

    async def _release_held_progress(self) -> None:
        """Once the rights are known again: the progress held meanwhile, if this socket
        may still watch (a closing one drops it)."""
        if self._rights_in_doubt() or not self.held_progress:
            return
        while self.held_progress:
            await self.image_progress(self.held_progress.popleft())

    async def user_logout(self, event: dict[str, Any]) -> None:
        """Runs when this socket's user logged out (gallery.broadcast.user_sockets_close):
        the session that authorized the socket is gone, so is the socket."""
        await self.close(code=events.CLOSE_LOGGED_OUT)

    # --- Helpers --------------------------------------------------------------------

    async def catch_up(self, event: events.TerminalStateEvent) -> None:
        """gallery.catch_up found this socket behind the terminal: send the current state."""
        if self.closing or not self.rights.can_watch:
            return
        if self._rights_in_doubt():
            self.state_owed = True
            return
        await self._send_state(event, can_control=self.rights.can_control)

    async def _check_periodically(self) -> None:
        """Every WEBSOCKET_SESSION_CHECK_SECONDS (artterminal.sockets): rights that
        changed without a signal (a `QuerySet.update`), and states lost to the channel
        layer that gallery.catch_up never heard of (every one of them lost)."""
        await self._refresh_rights(send_if_behind=True)
        await self._release_held_progress()

    async def _refresh_rights(self, *, send_if_behind: bool, rereads_before_me: int = 0) -> bool:
        """Read this socket's rights (and its user) again; close it if it may no longer
        watch, and send the state again if what it may do changed (or, with
        `send_if_behind`, when the terminal moved past what this socket was sent).
        False when the rights could not be read. `rereads_before_me`: this call's own
        count in `rights_rereads`; a re-read started after it has the last word."""
        if self.closing or self.terminal_id is None:
            return True
        try:
            found = await database_sync_to_async(_current_rights)(
                terminal_id=self.terminal_id, user=self.user
            )
        except DatabaseError:
            logger.warning("Re-reading rights on terminal %s failed", self.terminal_id)
            return False
        if found is None:
            await self._close_gone()
            return True
        self.user, rights, version = found
        changed, self.rights = rights != self.rights, rights
        self.rights_doubtful = False
        wanted = changed or self.state_owed or (send_if_behind and version > self.sent_version)
        if not rights.can_watch:
            await self._close_forbidden()
        elif self.rights_rereads > rereads_before_me:
            # A later change is still being read: what it allows decides what is sent.
            self.state_owed = self.state_owed or wanted
        elif wanted:
            try:
                await self._send_fresh_state()
            except DatabaseError:
                logger.warning("Reading terminal %s for new rights failed", self.terminal_id)
                self.state_owed = True
        return True

    async def _send_fresh_state(self, *, with_jobs: bool = False) -> None:
        """The current state, read now; `with_jobs` adds the terminal's jobs, whose news
        a page may have missed while its socket was down."""
        if self.terminal_id is None:
            return
        found = await database_sync_to_async(_state_and_rights)(
            terminal_id=self.terminal_id, user=self.user, with_jobs=with_jobs
        )
        if found is None:
            await self._close_gone()
            return
        state, self.rights, jobs = found
        self.state_owed = False
        if not self.rights.can_watch:
            await self._close_forbidden()
            return
        await self._send_state(
            events.terminal_state_event(state), can_control=self.rights.can_control, force=True
        )
        if jobs is not None and not self.closing:
            await self.send_json(events.terminal_jobs_message(jobs))

    async def _send_state(
        self, event: events.TerminalStateEvent, *, can_control: bool, force: bool = False
    ) -> None:
        """Send a state unless a newer one was sent already; `force` resends the
        current one (a sync, or rights that changed). The text comes from a cache the
        process's sockets share: a broadcast is encoded once, not once per viewer."""
        version = event["version"]
        if version < self.sent_version or (version == self.sent_version and not force):
            return
        self.sent_version = version
        self.sent_viewers = self.viewers
        if not self.closing:
            text = events.terminal_state_text(
                event["state"], version=version, viewers=self.viewers, can_control=can_control
            )
            # Straight to the server: the hot path of a broadcast, once per viewer.
            await self.base_send({"type": "websocket.send", "text": text})

    async def _send_viewers_if_changed(self) -> None:
        # Never before the first state: the page draws the terminal from that, and the
        # state carries the count as it stands when it is sent.
        if self.sent_version < 0:
            return
        if self.viewers != self.sent_viewers and not self.closing:
            self.sent_viewers = self.viewers
            await self.send_json(events.terminal_viewers_message(self.viewers))

    async def _keep_presence(self, interval: float) -> None:
        """Keeps this socket counted in a shared registry, and picks up counts that
        changed without a broadcast (a process that died with its viewers)."""
        while self.terminal_id is not None:
            await asyncio.sleep(interval)
            try:
                self.viewers = await viewer_registry().refresh(
                    terminal_id=self.terminal_id, channel_name=self.channel_name
                )
            except LAYER_ERRORS as error:
                logger.warning(
                    "Refreshing presence on terminal %s failed (%s)",
                    self.terminal_id,
                    layer_failure(error),
                )
                continue
            await self._send_viewers_if_changed()

    async def _leave_feed(self, terminal_id: int) -> None:
        if self.fed:
            self.fed = False
            await feeds().leave(terminal_id=terminal_id, socket=self)

    async def _close_quietly(self, send: Any) -> None:
        """Close with CLOSE_UNAVAILABLE after the layer failed under the socket; the
        browser may be gone already, which is fine."""
        self.closing = True
        with contextlib.suppress(Exception):
            await send({"type": "websocket.close", "code": CLOSE_UNAVAILABLE})

    async def _refuse(self, error: events.ParseError) -> None:
        await self._send_error(error.code, error.message)
        if error.close_code is not None:
            await self.close(code=error.close_code)

    async def _send_error(self, code: str, message: str) -> None:
        if not self.closing:
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

    async def _close_unavailable(self) -> None:
        """The page reconnects after CLOSE_UNAVAILABLE (with a growing delay)."""
        await self._send_error("unavailable", "The server is busy; reconnecting shortly.")
        await self.close(code=CLOSE_UNAVAILABLE)

    async def _close_gone(self) -> None:
        await self._send_error("terminal_not_found", "This terminal no longer exists.")
        await self.close(code=events.CLOSE_FORBIDDEN)


def _watchable_terminal(
    *, slug: str, user: selectors.AnyUser
) -> tuple[Terminal, selectors.TerminalRights] | None:
    terminal = Terminal.objects.filter(slug=slug).first()
    if terminal is None:
        return None
    rights = selectors.terminal_rights(user=user, terminal=terminal)
    return (terminal, rights) if rights.can_watch else None


def _current_rights(
    *, terminal_id: int, user: selectors.AnyUser
) -> tuple[selectors.AnyUser, selectors.TerminalRights, int] | None:
    """The user as stored now (staff status may have changed), their rights on the
    terminal and its version; None when the terminal is gone."""
    terminal = Terminal.objects.filter(pk=terminal_id).first()
    if terminal is None:
        return None
    if user.is_authenticated:
        user = get_user_model().objects.filter(pk=user.pk).first() or AnonymousUser()
    return user, selectors.terminal_rights(user=user, terminal=terminal), terminal.version


def _state_and_rights(
    *, terminal_id: int, user: selectors.AnyUser, with_jobs: bool = False
) -> tuple[dict[str, Any], selectors.TerminalRights, list[dict[str, Any]] | None] | None:
    terminal = Terminal.objects.select_related("current_image").filter(pk=terminal_id).first()
    if terminal is None:
        return None
    rights = selectors.terminal_rights(user=user, terminal=terminal)
    jobs = None
    if with_jobs and rights.can_watch:
        jobs = [
            image_progress_payload(image)
            for image in selectors.terminal_jobs_news(
                terminal_id=terminal_id, failed_since=timezone.now() - JOBS_FAILED_WITHIN
            )
        ]
    return selectors.terminal_state(terminal=terminal), rights, jobs


def _outcome_unheard(task: asyncio.Future[Any]) -> None:
    """A navigation whose socket went away meanwhile: its broadcast went out, and its
    answer (an error for that socket) has nobody left to hear it."""
    if not task.cancelled() and task.exception() is not None:
        logger.info("A navigation ended after its socket closed: %r", task.exception())


def _navigate(
    *,
    guard: SocketGuard,
    terminal_id: int,
    user: selectors.AnyUser,
    action: str,
    image_id: int | None,
    broadcasts: list[HeldMessage],
) -> bool:
    """The login check and the move in one trip to the database thread; False, having
    moved nothing, when the login behind the socket has ended. The new state's
    broadcast waits in `broadcasts` for the caller to send."""
    if not guard.login_holds_here():
        return False
    with group_sends_held(broadcasts):
        services.terminal_navigate(
            terminal_id=terminal_id, user=user, action=action, image_id=image_id
        )
    return True


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
