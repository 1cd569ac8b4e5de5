"""The mirror socket's event catalogue (`ws/voice/<session_id>/`): every message, both ways.

The browser forwards each data-channel event it sends or receives (audio payloads
stripped) so the server can keep the timeline and run the assistant's tool calls.

Browser → server
- `mirror.event` {seq: int ≥ 1, unique per session and increasing,
                  direction: "sent" (browser → upstream) | "received" (upstream → browser),
                  event: the data-channel event object, with a string `type`}
  Keep each event in a resend buffer until its `mirror.ack` (or an `error` naming its
  seq) arrives; after a reconnect resend what is left, with the same seq numbers.
- `mirror.hangup` {} — the user hung up; the server ends the session.

Server → browser
- `mirror.ack` {seq} — the event is stored (or was already): drop it from the buffer.
- `tool.result` {call_id, name, output: JSON string} — a received
  `response.function_call_arguments.done` was executed. Send `conversation.item.create`
  {item: {type: "function_call_output", call_id, output}} then `response.create`.
  Sent before the ack of the event that asked for it. A resent event (same seq, never
  acked) gets the stored result again, as the first may have been lost: answer each
  call_id once. The same call_id under a new seq is not executed and gets no result.
- `session.ended` {reason} — the session is over (hang-up, or ended by staff); the socket
  closes right after. Hang up the call.
- `error` {code, message, seq?} — a message was refused and never executed. With `seq`,
  that event will never be stored: drop it, do not resend. Without, keep it and resend.

Error codes
- with `seq` (drop that event): `invalid_message` (an unknown field),
  `invalid_direction`, `invalid_event` (event not an object, a bad event.type, or an
  event the database cannot store), `frame_too_large` (when the seq can be read from
  the start of the frame), `seq_reused` (the seq is stored with another event: a
  resend must be the same event; nothing in it runs).
- without `seq`: `invalid_json`, `invalid_message` (not an object, a hangup with
  fields), `unknown_type`, `invalid_seq` (no usable seq to name), `text_only` (a binary
  frame), `frame_too_large` (no readable seq), `invalid_tool_call` (the event is stored
  and acked, but names no call to run), `unavailable` (the database or the channel layer
  failed: keep the event and resend it), `too_many_sockets` and `rate_limited` (each
  followed by a close).

Close codes (Daphne sends 1000 or 3000–4999 only)
- 4000 `CLOSE_SESSION_ENDED` — after `session.ended` (hang-up, staff, control revoked;
  a hang-up or logout the database failed to record too: the session expires later).
- 4001 `CLOSE_LOGIN_GONE` — the login behind the call ended; the session is ended too.
- 4429 `CLOSE_TOO_MANY` — too many messages (the session is ended) or too many sockets
  of this user (the session stays open for a socket that fits).
- 1000 `CLOSE_RETRY` — the channel layer failed under the socket (Redis restarting), or
  the database failed while it opened: reconnect with backoff and resend what was not
  acked. (Not a 4xxx code: the page
  takes those as the server refusing the session, and stops.)
A refused handshake (not the owner, session closed, no control) has no code.

Unknown message types, unknown fields and malformed values are refused with `error`.
"""

from __future__ import annotations

import re
from typing import Any, Literal, TypedDict

CLOSE_SESSION_ENDED = 4000
CLOSE_RETRY = 1000
# Shared with the terminal socket (artterminal.sockets): 4001 login gone, 4429 too many.

MAX_SEQ = 2**31 - 1  # VoiceEvent.seq is a PositiveIntegerField
MAX_EVENT_TYPE_CHARS = 100
Direction = Literal["sent", "received"]
DIRECTIONS: tuple[str, ...] = ("sent", "received")
_EVENT_TYPE = re.compile(r"[A-Za-z0-9_.\-]{1,100}")
_LEADING_SEQ = re.compile(r'^\s*\{[^{]{0,200}?"seq"\s*:\s*(\d{1,10})\b')


# --- Browser → server ------------------------------------------------------------------


class MirrorEvent(TypedDict):
    type: Literal["mirror.event"]
    seq: int
    direction: Direction
    event: dict[str, Any]


class MirrorHangup(TypedDict):
    type: Literal["mirror.hangup"]


BrowserMessage = MirrorEvent | MirrorHangup


class MessageInvalid(Exception):
    """A browser message the catalogue refuses; `seq` when the event can be named."""

    def __init__(self, code: str, message: str, *, seq: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.seq = seq


def _valid_seq(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_SEQ


def json_storable(value: Any) -> bool:
    """Whether every text in a decoded JSON value can be stored: PostgreSQL refuses a
    NUL character, and UTF-8 an unpaired surrogate (JSON can spell both, as \\u0000
    and \\ud800). Walked without recursion: JSON may nest deeper than Python does."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                return False
            try:
                item.encode()
            except UnicodeEncodeError:
                return False
    return True


def browser_message_parse(data: Any) -> BrowserMessage:
    """Check a decoded browser message against the catalogue."""
    if not isinstance(data, dict):
        raise MessageInvalid("invalid_message", "Each message must be a JSON object.")
    kind = data.get("type")
    if kind == "mirror.hangup":
        if set(data) != {"type"}:
            raise MessageInvalid("invalid_message", "mirror.hangup takes no fields.")
        return {"type": "mirror.hangup"}
    if kind != "mirror.event":
        raise MessageInvalid("unknown_type", "Unknown message type; expected mirror.event.")
    seq = data.get("seq")
    if not _valid_seq(seq):
        raise MessageInvalid("invalid_seq", f"seq must be a whole number from 1 to {MAX_SEQ}.")
    assert isinstance(seq, int)
    extra = set(data) - {"type", "seq", "direction", "event"}
    if extra:
        raise MessageInvalid(
            "invalid_message", f"Unknown field “{sorted(extra)[0][:40]}”.", seq=seq
        )
    direction = data.get("direction")
    if direction not in DIRECTIONS:
        raise MessageInvalid("invalid_direction", "direction must be sent or received.", seq=seq)
    event = data.get("event")
    if not isinstance(event, dict):
        raise MessageInvalid("invalid_event", "event must be a JSON object.", seq=seq)
    event_type = event.get("type")
    if not isinstance(event_type, str) or not _EVENT_TYPE.fullmatch(event_type):
        raise MessageInvalid(
            "invalid_event", "event.type must be a data-channel event name.", seq=seq
        )
    if not json_storable(event):
        # Refused with its seq: a resend of the same event could never be stored.
        raise MessageInvalid(
            "invalid_event",
            "The event holds text that cannot be stored (a NUL or an unpaired surrogate).",
            seq=seq,
        )
    return {"type": "mirror.event", "seq": seq, "direction": direction, "event": event}


def leading_seq(text: str) -> int | None:
    """The seq near the start of a frame too large to decode, so the browser can drop it."""
    match = _LEADING_SEQ.match(text[:300])
    if match is None:
        return None
    seq = int(match.group(1))
    return seq if _valid_seq(seq) else None


# --- Data-channel events the server acts on ---------------------------------------------


class FunctionCall(TypedDict):
    call_id: str
    name: str
    arguments: Any


FUNCTION_CALL_DONE = "response.function_call_arguments.done"


def function_call_parse(event: dict[str, Any]) -> FunctionCall:
    """The call in a `response.function_call_arguments.done`; arguments are checked later."""
    call_id, name = event.get("call_id"), event.get("name")
    if not isinstance(call_id, str) or not 1 <= len(call_id) <= 100:
        raise MessageInvalid("invalid_tool_call", "The function call has no usable call_id.")
    if not isinstance(name, str) or not 1 <= len(name) <= 100:
        raise MessageInvalid("invalid_tool_call", "The function call has no usable name.")
    return {"call_id": call_id, "name": name, "arguments": event.get("arguments")}


# --- Server → browser ------------------------------------------------------------------


class MirrorAck(TypedDict):
    type: Literal["mirror.ack"]
    seq: int


class ToolResult(TypedDict):
    type: Literal["tool.result"]
    call_id: str
    name: str
    output: str


class SessionEnded(TypedDict):
    type: Literal["session.ended"]
    reason: str


def mirror_ack(*, seq: int) -> MirrorAck:
    return {"type": "mirror.ack", "seq": seq}


def tool_result(*, call_id: str, name: str, output: str) -> ToolResult:
    return {"type": "tool.result", "call_id": call_id, "name": name, "output": output}


def session_ended(*, reason: str) -> SessionEnded:
    return {"type": "session.ended", "reason": reason}


def error(*, code: str, message: str, seq: int | None = None) -> dict[str, Any]:
    message_out: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if seq is not None:
        message_out["seq"] = seq
    return message_out


# --- Channel-layer messages to group voice_session_group_name(id) -----------------------
# `session.ended` {reason} (below). To the user's group (artterminal.groups.user_group_name):
# `user.logout` (gallery.broadcast.user_sockets_close) ends the call; `terminal.access`
# {terminal_id} (gallery.broadcast.user_access_changed) re-checks control of the terminal.


def session_ended_group_message(*, reason: str) -> dict[str, Any]:
    """Handled by the mirror consumer's `session_ended`: tell the browser, then close."""
    return {"type": "session.ended", "reason": reason}
