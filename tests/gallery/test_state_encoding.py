"""A committed state is encoded once for the channel layer and once per kind of socket."""

from __future__ import annotations

import json

from gallery import events

STATE = {
    "type": "terminal.state",
    "version": 7,
    "image": {"id": 3, "title": "Red fox", "position": 2, "count": 9},
    "neighbours": [{"id": 2, "title": "Owl", "thumbnail_url": "/t/2.webp", "position": 1}],
}


def test_the_group_message_carries_the_shared_state_as_text() -> None:
    event = events.terminal_state_event(STATE)
    assert (event["type"], event["version"]) == ("terminal.state", 7)
    assert json.loads(event["state"]) == {
        "image": STATE["image"],
        "neighbours": STATE["neighbours"],
    }


def test_each_socket_gets_its_viewer_count_and_rights() -> None:
    shared = events.terminal_state_event(STATE)["state"]
    watcher = json.loads(
        events.terminal_state_text(shared, version=7, viewers=4, can_control=False)
    )
    controller = json.loads(
        events.terminal_state_text(shared, version=7, viewers=4, can_control=True)
    )
    assert watcher == {
        "type": "terminal.state",
        "version": 7,
        "image": STATE["image"],
        "viewers": 4,
        "neighbours": STATE["neighbours"],
        "can_control": False,
    }
    assert controller == {**watcher, "can_control": True}


def test_sockets_alike_share_one_encoding() -> None:
    events.terminal_state_text.cache_clear()
    # Each socket receives its own copy of the group message: equal text, not the same object.
    copies = [events.terminal_state_event(STATE)["state"] for _ in range(50)]
    texts = {
        id(events.terminal_state_text(shared, version=7, viewers=50, can_control=False))
        for shared in copies
    }
    assert len(texts) == 1
    assert events.terminal_state_text.cache_info().misses == 1
