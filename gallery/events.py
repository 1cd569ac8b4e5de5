"""Every message of the terminal socket (`ws/terminals/<slug>/`), both directions.

Client → server messages are parsed strictly by `parse_client_message`: unknown types,
missing, extra or wrong-typed fields are refused with a `ParseError` and never executed.
Server → client messages are built by the consumer from the TypedDicts below, and the
group messages that reach the consumer through the channel layer are listed at the end.
"""

from __future__ import annotations

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
    """Ask for a fresh `terminal.state` (after a reconnect or a gap in `version`)."""

    type: Literal["terminal.sync"]


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


class ErrorMessage(TypedDict):
    type: Literal["error"]
    code: str
    message: str


ServerMessage = TerminalStateMessage | TerminalViewersMessage | ImageProgressMessage | ErrorMessage

# --- Channel-layer group messages (server side only) ------------------------------------
# `terminal.state` (from gallery.broadcast.terminal_state): the state without `viewers`
#     and `can_control`, which the consumer adds per socket.
# `terminal.viewers` {"viewers": n}: the count changed.
# `image.progress` {"image": ImageProgress}: an image of this terminal moved on.
# `user.logout` (to `user-<id>`, from gallery.broadcast.user_sockets_close): close.

# Close codes beside the standard ones (4000–4999 are the application's).
CLOSE_MESSAGE_TOO_BIG: Final = 1009
CLOSE_LOGGED_OUT: Final = 4001
CLOSE_FORBIDDEN: Final = 4003


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


def terminal_state_message(
    state: dict[str, Any], *, viewers: int, can_control: bool
) -> TerminalStateMessage:
    """One socket's `terminal.state`: the shared state (`selectors.terminal_state`) plus
    what depends on the socket."""
    return {
        "type": "terminal.state",
        "version": int(state["version"]),
        "image": state["image"],
        "viewers": viewers,
        "neighbours": list(state.get("neighbours", [])),
        "can_control": can_control,
    }


def terminal_viewers_message(viewers: int) -> TerminalViewersMessage:
    return {"type": "terminal.viewers", "viewers": viewers}


# For each client type: its fields (besides `type`) with their types, and which are required.
_FIELDS: Final[dict[str, dict[str, type]]] = {
    "terminal.navigate": {"action": str, "image_id": int},
    "terminal.sync": {},
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
    return {int: "whole number", str: "string"}.get(expected, expected.__name__)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
