"""Every message of the terminal socket (`ws/terminals/<slug>/`), both directions.

Client → server messages are parsed strictly by `parse_client_message`: unknown types,
missing, extra or wrong-typed fields are refused with a `ParseError` and never executed.
Server → client messages are built by the consumer from the TypedDicts below, and the
group messages that reach the consumer through the channel layer are listed at the end.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Final, Literal, NotRequired, TypedDict

# --- Client → server --------------------------------------------------------------------

NavigateAction = Literal["next", "previous", "first", "last", "goto"]
NAVIGATE_ACTIONS: Final[tuple[str, ...]] = ("next", "previous", "first", "last", "goto")
# Database ids are signed 64-bit; a larger number could never name an image and would
# overflow the database driver.
MAX_ID: Final = 2**63 - 1


class NavigateCommand(TypedDict):
    """Move the terminal; `image_id` is required with `goto` and refused otherwise."""

    type: Literal["terminal.navigate"]
    action: NavigateAction
    image_id: NotRequired[int]


class SyncCommand(TypedDict):
    """Ask for a fresh `terminal.state` (after a reconnect or a gap in `version`); with
    `jobs`, a `terminal.jobs` after it (a page showing jobs that may have ended while
    its socket was down)."""

    type: Literal["terminal.sync"]
    jobs: NotRequired[bool]


ClientMessage = NavigateCommand | SyncCommand

# --- Server → client --------------------------------------------------------------------


class ImageSummary(TypedDict):
    id: int
    title: str
    prompt: str
    url: str
    thumbnail_url: str
    position: int
    count: int


class NeighbourSummary(TypedDict):
    id: int
    title: str
    thumbnail_url: str
    position: int


class TerminalStateMessage(TypedDict):
    type: Literal["terminal.state"]
    version: int
    image: ImageSummary | None
    viewers: int
    neighbours: list[NeighbourSummary]
    can_control: bool


class TerminalViewersMessage(TypedDict):
    type: Literal["terminal.viewers"]
    viewers: int


class ImageProgress(TypedDict):
    """Built by `gallery.broadcast.image_progress_payload`."""

    id: int
    status: str
    progress: int
    error: str
    prompt: str
    title: str
    thumbnail_url: str
    url: str


class ImageProgressMessage(TypedDict):
    type: Literal["image.progress"]
    image: ImageProgress


class TerminalJobsMessage(TypedDict):
    """The terminal's jobs as they stand, for a page that may have missed their news:
    those being made and those that failed lately; a job it shows that is neither has
    ended."""

    type: Literal["terminal.jobs"]
    images: list[ImageProgress]


class ErrorMessage(TypedDict):
    type: Literal["error"]
    code: str
    message: str


ServerMessage = TerminalStateMessage | TerminalViewersMessage | ImageProgressMessage | ErrorMessage

# --- Channel-layer group messages (server side only) ------------------------------------
# To `terminal-<id>`:
# `terminal.state` {"version": n, "state": JSON text} (`terminal_state_event`): the state
#     without `viewers` and `can_control`, encoded once by the sender; each socket adds
#     those two from its cached rights (`terminal_state_text`).
# `terminal.viewers` {"viewers": n}: the count changed.
# `image.progress` {"image": ImageProgress}: an image of this terminal moved on.
# `terminal.access` {"terminal_id": id} (gallery.broadcast.terminal_access_changed): the
#     terminal went private, changed owner or was deleted; every socket re-reads its rights.
# To `user-<id>`:
# `terminal.access` {"terminal_id": id | None} (gallery.broadcast.user_access_changed):
#     the user's membership (on that terminal) or staff status (None: every terminal)
#     changed; that user's sockets re-read their rights.
# `user.logout` (gallery.broadcast.user_sockets_close): close.

# --- Error codes (`error` {code, message}) ----------------------------------------------
# Refused frames, never executed: `invalid_json`, `invalid_message`, `missing_type`,
# `unknown_type`, `unexpected_field`, `missing_field`, `invalid_field`, `invalid_action`,
# `binary_not_supported`, `message_too_large` (then close 4009).
# Refused commands (gallery.services): `forbidden`, `image_not_found`, `empty_terminal`,
# `invalid_image_id`, `invalid_action`.
# `busy`: more than WEBSOCKET_MESSAGE_BURST commands waiting (gallery.consumers); this
#     one was not run. `unavailable`: the database, session store or channel layer failed; not run
#     (on connect: then close 4503).
# Before a close: `rate_limited` (4429), `too_many_sockets` (4429), `logged_out` (4001),
# `forbidden` (4003: no longer allowed to watch), `terminal_not_found` (4003).

# Close codes. Daphne sends no code below 3000 but 1000, so each is a 4xxx named after the
# HTTP status or websocket code it stands for. The page reconnects after all but 4003.
CLOSE_LOGGED_OUT: Final = 4001  # = artterminal.sockets.CLOSE_LOGIN_GONE
CLOSE_FORBIDDEN: Final = 4003
CLOSE_MESSAGE_TOO_BIG: Final = 4009  # websocket 1009
# artterminal.sockets: CLOSE_TOO_MANY 4429 (messages or sockets), CLOSE_UNAVAILABLE 4503
# (the channel layer failed under the socket, or the database as it opened: reconnect).


class ParseError(Exception):
    """A client message refused before anything ran; `close_code` set means hang up."""

    def __init__(self, code: str, message: str, *, close_code: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code


def message_too_large(max_bytes: int) -> ParseError:
    return ParseError(
        "message_too_large",
        f"Messages may be at most {max_bytes} bytes.",
        close_code=CLOSE_MESSAGE_TOO_BIG,
    )


def error_message(code: str, message: str) -> ErrorMessage:
    return {"type": "error", "code": code, "message": message}


class TerminalStateEvent(TypedDict):
    """The group message that carries a committed state to every socket of a terminal."""

    type: Literal["terminal.state"]
    version: int
    state: str  # JSON: {"image": ImageSummary | None, "neighbours": [NeighbourSummary]}


def terminal_state_event(state: dict[str, Any]) -> TerminalStateEvent:
    """The group message for a state from `selectors.terminal_state`. Its shared part is
    encoded here, once: the layer then copies a string, not the state's dicts, for each
    of the terminal's sockets, and the sockets of a process share its decoding."""
    shared = {"image": state["image"], "neighbours": list(state.get("neighbours", []))}
    return {"type": "terminal.state", "version": int(state["version"]), "state": json.dumps(shared)}


@functools.lru_cache(maxsize=64)
def terminal_state_text(shared: str, *, version: int, viewers: int, can_control: bool) -> str:
    """One socket's `terminal.state` as sent: the shared part of a `TerminalStateEvent`
    plus what depends on the socket. Sockets that differ in neither (most of a terminal's
    viewers) get the same text, encoded once a process."""
    state = json.loads(shared)
    message: TerminalStateMessage = {
        "type": "terminal.state",
        "version": version,
        "image": state["image"],
        "viewers": viewers,
        "neighbours": state["neighbours"],
        "can_control": can_control,
    }
    return json.dumps(message)


def terminal_viewers_message(viewers: int) -> TerminalViewersMessage:
    return {"type": "terminal.viewers", "viewers": viewers}


def terminal_jobs_message(images: list[Any]) -> TerminalJobsMessage:
    return {"type": "terminal.jobs", "images": images}


# For each client type: its fields (besides `type`) with their types, and which are required.
_FIELDS: Final[dict[str, dict[str, type]]] = {
    "terminal.navigate": {"action": str, "image_id": int},
    "terminal.sync": {"jobs": bool},
}
_REQUIRED: Final[dict[str, frozenset[str]]] = {
    "terminal.navigate": frozenset({"action"}),
    "terminal.sync": frozenset(),
}


def parse_client_message(text: str, *, max_bytes: int) -> ClientMessage:
    """Validate one text frame from a browser and return the command it asks for.

    The size is checked on the raw text before any parsing, so an oversized frame costs
    nothing to refuse.
    """
    # A UTF-8 character is at most 4 bytes: most frames need no encoding to be measured.
    too_big = len(text) > max_bytes or (
        len(text) * 4 > max_bytes and len(text.encode("utf-8", "surrogatepass")) > max_bytes
    )
    if too_big:
        raise message_too_large(max_bytes)
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        # ValueError covers malformed JSON and numbers past Python's digit limit;
        # RecursionError deeply nested arrays.
        raise ParseError("invalid_json", "The message is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ParseError("invalid_message", "A message must be a JSON object with a “type”.")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ParseError("missing_type", "A message needs a “type” string.")
    if kind not in _FIELDS:
        raise ParseError("unknown_type", f"Unknown message type “{kind[:40]}”.")
    fields = _FIELDS[kind]
    extra = sorted(name for name in data if name != "type" and name not in fields)
    if extra:
        raise ParseError("unexpected_field", f"Unexpected field “{extra[0][:40]}” in {kind}.")
    missing = sorted(_REQUIRED[kind] - data.keys())
    if missing:
        raise ParseError("missing_field", f"{kind} needs the field “{missing[0]}”.")
    for name, expected in fields.items():
        if name in data and not _is_type(data[name], expected):
            raise ParseError(
                "invalid_field", f"Field “{name}” of {kind} must be a {_type_name(expected)}."
            )
    if kind == "terminal.navigate":
        return _navigate_command(data)
    if data.get("jobs") is True:
        return {"type": "terminal.sync", "jobs": True}
    return {"type": "terminal.sync"}


def _navigate_command(data: dict[str, Any]) -> NavigateCommand:
    action = data["action"]
    if action not in NAVIGATE_ACTIONS:
        raise ParseError(
            "invalid_action",
            f"Navigation action must be one of: {', '.join(NAVIGATE_ACTIONS)}.",
        )
    if action != "goto":
        if "image_id" in data:
            raise ParseError("unexpected_field", f"“image_id” goes only with “goto”, not {action}.")
        return {"type": "terminal.navigate", "action": action}
    image_id = data.get("image_id")
    if image_id is None:
        raise ParseError("missing_field", "“goto” needs the field “image_id”.")
    if not 1 <= image_id <= MAX_ID:
        raise ParseError("image_not_found", "That image is not on this terminal.")
    return {"type": "terminal.navigate", "action": "goto", "image_id": image_id}


def _is_type(value: Any, expected: type) -> bool:
    # bool is a subclass of int, but `true` is never an id.
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def _type_name(expected: type) -> str:
    return {int: "whole number", str: "string", bool: "true or false"}.get(
        expected, expected.__name__
    )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
