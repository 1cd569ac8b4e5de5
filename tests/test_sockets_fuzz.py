"""Property: whatever a browser sends to either socket (arbitrary or malformed JSON, wrong
types, huge strings, deep nesting, unknown types, binary frames), the consumer never
raises and never closes by accident. Every frame gets an answer (an error, an ack or a
state) unless the server hangs up deliberately, with one of its documented codes.

Driven through the real ASGI application with WebsocketCommunicator: an exception in a
consumer surfaces from the communicator (Daphne would close with 1011 instead)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from gallery.models import Terminal
from tests.test_sockets_hardening import (  # noqa: F401  (autouse fixtures too)
    Socket,
    cookie_for,
    fresh_counts,
    mirror_path,
    stop_relay_after_test,
    terminal_path,
)
from voice.models import VoiceEvent, VoiceSession
from voice.tools import TOOLS

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 5
# Close codes the server uses on purpose: too big, call ended, signed out, forbidden,
# too many.
DELIBERATE_CLOSES = {4000, 4001, 4003, 4009, 4429}
FUZZ = hypothesis_settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- What a hostile browser sends ---------------------------------------------------------

texts = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**62, max_value=2**70)
    | st.floats()
    | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)
depths = st.sampled_from([2, 100, 900, 990, 1000, 1200, 5000]) | st.integers(1, 60_000)


def nested(depth: int, *, opener: str = "[") -> str:
    closer = {"[": "]", '{"a":': "}"}[opener]
    return opener * depth + "0" + closer * depth


def envelope(prefix: str, depth: int, opener: str) -> str:
    """A well-formed message whose one field is nested `depth` deep."""
    return prefix + nested(depth, opener=opener) + "}" * (prefix.count("{"))


def huge(payload: Callable[[str], Any]) -> st.SearchStrategy[str]:
    limit = settings.WEBSOCKET_MAX_MESSAGE_BYTES
    sizes = st.sampled_from([limit - 200, limit - 30, limit, limit + 1]) | st.integers(0, 2 * limit)
    return st.builds(lambda n, c: json.dumps(payload(c * n)), sizes, st.sampled_from("xé€😀"))


def often(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy:
    """`common` three times in four: deep paths need the early checks passed."""
    return st.one_of(common, common, common, rare)


def frames(
    known: st.SearchStrategy[dict[str, Any]],
    envelope_prefix: str,
    padded: Callable[[str], dict[str, Any]],
) -> st.SearchStrategy[tuple[str, Any]]:
    """One frame as ("text", str) or ("bytes", bytes)."""
    text = st.one_of(
        known.map(json.dumps),
        known.map(json.dumps),
        known.map(json.dumps),
        json_values.map(json.dumps),
        texts,  # mostly not JSON at all
        st.sampled_from(["NaN", "[1e999]", '{"type": Infinity}', "{", "", "null", '"type"']),
        st.builds(nested, depths, opener=st.sampled_from(["[", '{"a":'])),
        st.builds(envelope, st.just(envelope_prefix), depths, st.sampled_from(["[", '{"a":'])),
        huge(padded),
        st.integers(0, 12).map(lambda n: "9" * (4000 + n * 100)),  # past Python's digit limit
    )
    binary = st.binary(max_size=64) | st.integers(0, 2 * settings.WEBSOCKET_MAX_MESSAGE_BYTES).map(
        lambda n: b"\x00" * n
    )
    return st.one_of(text.map(lambda t: ("text", t)), binary.map(lambda b: ("bytes", b)))


navigate_actions = st.sampled_from(["next", "previous", "first", "last", "goto"])
terminal_messages = st.fixed_dictionaries(
    {"type": often(st.sampled_from(["terminal.navigate", "terminal.sync"]), texts)},
    optional={
        "action": often(navigate_actions, json_values),
        "image_id": json_values | st.integers(-(2**70), 2**70),
        "extra": json_values,
    },
)
terminal_frames = frames(
    terminal_messages,
    '{"type": "terminal.sync", "deep": ',
    lambda blob: {"type": "terminal.sync", "blob": blob},
)

event_types = st.sampled_from(
    ["response.function_call_arguments.done", "response.done", "session.created"]
) | st.from_regex(r"[A-Za-z0-9_.\-]{1,100}", fullmatch=True)
function_calls = st.fixed_dictionaries(
    {
        "type": st.just("response.function_call_arguments.done"),
        "call_id": texts,
        "name": st.sampled_from(sorted(TOOLS)) | texts,
        "arguments": json_values.map(json.dumps) | json_values,
    }
)
mirror_events = st.fixed_dictionaries(
    {
        "type": often(st.just("mirror.event"), st.just("mirror.hangup") | texts),
        "seq": often(st.integers(1, 2**31 - 1), json_values),
        "direction": often(st.sampled_from(["sent", "received"]), json_values),
        "event": often(
            function_calls
            | st.dictionaries(texts, json_values, max_size=3).flatmap(
                lambda extra: event_types.map(lambda kind: {**extra, "type": kind})
            ),
            json_values,
        ),
    },
    optional={"extra": json_values},
)
mirror_frames = frames(
    mirror_events,
    '{"type": "mirror.event", "seq": 1, "direction": "received", '
    '"event": {"type": "response.done", "deep": ',
    lambda blob: {
        "type": "mirror.event",
        "seq": 2,
        "direction": "received",
        "event": {"type": "response.done", "blob": blob},
    },
)

# --- Checking the answers -----------------------------------------------------------------


async def send_frames(
    socket: Socket, batch: list[tuple[str, Any]], *, answers: set[str]
) -> list[dict[str, Any]]:
    """Send `batch`, then read until each frame was answered or the server hung up;
    returns the messages received."""
    communicator = socket.communicator
    for kind, data in batch:
        # As Daphne hands frames over; send_to() would refuse the empty ones a browser can send.
        await communicator.send_input({"type": "websocket.receive", kind: data})
    answered = 0
    received: list[dict[str, Any]] = []
    while answered < len(batch):
        output = await communicator.receive_output(timeout=TIMEOUT)
        if output["type"] == "websocket.close":
            assert output.get("code") in DELIBERATE_CLOSES, output
            return received
        assert output["type"] == "websocket.send", output
        message = json.loads(output["text"])
        assert isinstance(message, dict), message
        if message["type"] == "error":
            assert isinstance(message["code"], str) and message["code"]
            assert isinstance(message["message"], str) and message["message"]
        received.append(message)
        if message["type"] in answers:
            answered += 1
    return received


@pytest.fixture
def terminal_and_cookie(make_terminal: Callable[..., Terminal], owner: Any) -> Any:
    """The terminal and the owner's login, made once for all of a test's examples."""
    made: list[tuple[Terminal, bytes]] = []

    @database_sync_to_async
    def get() -> tuple[Terminal, bytes]:
        if not made:
            made.append((make_terminal(slug="lobby", images=3), cookie_for(owner)))
        return made[0]

    return get


@FUZZ
@given(batch=st.lists(terminal_frames, min_size=1, max_size=4), logged_in=st.booleans())
async def test_the_terminal_socket_survives_anything(
    terminal_and_cookie: Callable[[], Any], batch: list[tuple[str, Any]], logged_in: bool
) -> None:
    terminal, cookie = await terminal_and_cookie()
    socket = Socket(terminal_path(terminal), cookie=cookie if logged_in else None)
    assert await socket.connect()
    try:
        assert (await socket.receive())["type"] == "terminal.state"
        await send_frames(socket, batch, answers={"error", "terminal.state"})
    finally:
        await socket.disconnect()


def mirrored(event: str) -> tuple[str, str]:
    prefix = '{"type": "mirror.event", "seq": 7, "direction": "received", "event": '
    return ("text", prefix + event + "}")


@FUZZ
@given(batch=st.lists(mirror_frames, min_size=1, max_size=4))
# Not JSON, yet Python's json reads them: stored, they would break the database's JSON
# check, and an acked event that was never stored is lost for good.
@example(batch=[mirrored('{"type": "response.done", "x": NaN}')])
@example(batch=[mirrored('{"type": "response.done", "x": -Infinity}')])
@example(batch=[mirrored('{"type": "response.done", "x": 1e999}')])
@example(batch=[mirrored('{"type": "x", "d": ' + nested(985) + "}")])
async def test_the_voice_mirror_survives_anything(
    terminal_and_cookie: Callable[[], Any], owner: Any, batch: list[tuple[str, Any]]
) -> None:
    terminal, cookie = await terminal_and_cookie()
    session = await database_sync_to_async(VoiceSession.objects.create)(
        user=owner, terminal=terminal, upstream="engine", model="gpt-realtime", voice="verse"
    )
    socket = Socket(mirror_path(session), cookie=cookie)
    assert await socket.connect()
    try:
        received = await send_frames(
            socket, batch, answers={"error", "mirror.ack", "session.ended"}
        )
    finally:
        await socket.disconnect()
    # An ack promises the event is stored: the browser drops it from its resend buffer.
    acked = {message["seq"] for message in received if message["type"] == "mirror.ack"}
    stored = await database_sync_to_async(set)(
        VoiceEvent.objects.filter(session=session).values_list("seq", flat=True)
    )
    assert acked <= stored
