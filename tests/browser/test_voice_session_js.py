"""The voice panel's session module in real Chromium, driven with the mirror messages the
server sends, its call replaced by a recorder of what would go to the model."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.browser

# The page's own session module, with a panel that records its notices.
NEW_SESSION = """
  const { VoiceSession } = await import("/static/js/voice/session.js");
  const notices = [];
  const ui = {
    status() {}, active() {}, microphone() {}, transcript() {},
    notice(kind, text) { notices.push({ kind, text }); },
  };
  const session = new VoiceSession({
    tokenUrl: "/api/realtime/", terminal: "lobby", csrfToken: "", audioElement: null, ui,
  });
"""

# Gives a new session a call that records what it sends, and hands it the mirror
# messages in order. Returns what reached the call and the panel.
DRIVE_SESSION = (
    "async (messages) => {"
    + NEW_SESSION
    + """
  const sent = [];
  session.call = { isOpen: true, send(event) { sent.push(event); return true; }, close() {} };
  for (const message of messages) session.mirrorHandlers[message.type](message);
  return { sent, notices };
}
"""
)


def tool_result(call_id: str, *, ok: bool = True, message: str = "Now showing Study 2.") -> dict:
    return {
        "type": "tool.result",
        "call_id": call_id,
        "name": "navigate_gallery",
        "output": json.dumps({"ok": ok, "message": message}),
    }


def outputs_for(sent: list[dict[str, Any]], call_id: str) -> list[dict[str, Any]]:
    return [
        event
        for event in sent
        if event["type"] == "conversation.item.create"
        and event["item"]["type"] == "function_call_output"
        and event["item"]["call_id"] == call_id
    ]


def test_a_tool_result_resent_for_an_answered_call_is_not_answered_again(
    new_page: Callable[..., Any],
) -> None:
    page = new_page()
    page.goto("/terminals/")
    first = tool_result("call_a")
    failed = tool_result("call_b", ok=False, message="There is no picture before the first.")

    result = page.evaluate(DRIVE_SESSION, [first, first, failed, first, failed])

    sent = result["sent"]
    assert len(outputs_for(sent, "call_a")) == 1
    assert len(outputs_for(sent, "call_b")) == 1
    assert [event["type"] for event in sent].count("response.create") == 2
    assert outputs_for(sent, "call_a")[0]["item"]["output"] == first["output"]
    assert result["notices"] == [
        {"kind": "tool-ok", "text": "Navigate gallery"},
        {"kind": "tool-failed", "text": "There is no picture before the first."},
    ]


def test_malformed_tool_results_are_ignored_and_do_not_block_the_real_one(
    new_page: Callable[..., Any],
) -> None:
    page = new_page()
    page.goto("/terminals/")
    malformed = {"type": "tool.result", "call_id": "call_c", "output": {"ok": True}}

    result = page.evaluate(DRIVE_SESSION, [malformed, tool_result("call_c")])

    assert len(outputs_for(result["sent"], "call_c")) == 1


def test_a_streaming_answer_is_read_out_once_whole_not_word_by_word(
    live_site: Any, new_page: Callable[..., Any]
) -> None:
    terminal = live_site.seed_terminal("read-aloud", images=1)
    page = new_page("controller")
    page.goto(terminal.path)
    panel = page.locator("[data-voice-panel]")
    announcer = panel.locator("[data-voice-announce]")
    transcript = panel.locator("[data-transcript]")
    # The list is no live region: a screen reader would read every fragment of it.
    assert transcript.get_attribute("aria-live") is None
    assert announcer.get_attribute("aria-live") == "polite"

    page.evaluate(
        """() => {
          const ui = document.querySelector("[data-voice-panel]").voiceSession.ui;
          for (const delta of ["Now ", "showing ", "the fox."]) {
            ui.transcript({ role: "assistant", key: "item_1", text: delta, append: true });
          }
        }"""
    )
    assert announcer.text_content() == ""
    assert transcript.locator(".voice-line__text").text_content() == "Now showing the fox."

    page.evaluate(
        """() => document.querySelector("[data-voice-panel]").voiceSession.ui.transcript({
          role: "assistant", key: "item_1", text: "Now showing the fox.", final: true,
        })"""
    )
    assert announcer.text_content() == "Assistant: Now showing the fox."
    page.evaluate(
        """() => document.querySelector("[data-voice-panel]").voiceSession.ui.notice(
          "tool-failed", "There is no picture before the first.")"""
    )
    assert announcer.text_content() == "Failed: There is no picture before the first."


def test_typed_commands_waiting_for_a_call_that_never_came_are_said_unsent(
    new_page: Callable[..., Any],
) -> None:
    page = new_page()
    page.goto("/terminals/")
    notices = page.evaluate(
        "async () => {"
        + NEW_SESSION
        + """
          session.start = () => { session.active = true; };  // a call still being placed
          session.sendText("show the next picture");
          session.sendText("describe it");
          session._fail(new Error("the microphone went away"));
          session.sendText("hello");  // a later start, stopped by hand
          session.stop();
          return notices;
        }"""
    )
    assert notices == [
        {"kind": "info", "text": "Your 2 typed commands were not sent."},
        {"kind": "info", "text": "Your typed command was not sent."},
    ]


def test_what_a_call_does_before_its_mirror_exists_is_mirrored_first_in_order(
    new_page: Callable[..., Any],
) -> None:
    # The data channel can open, and a waiting typed command go out, before the answer's
    # continuation makes the mirror: the server must still record (and run) all of it.
    page = new_page()
    page.goto("/terminals/")
    mirrored = page.evaluate(
        "async () => {"
        + NEW_SESSION
        + """
          const call = { isOpen: true, send() { return true; }, close() {} };
          session.active = true;
          session.call = call;
          session.queue.push("next image");
          session._received(call, { type: "session.created", session: {} });
          session._opened(call);
          session._received(call, { type: "response.output_audio.delta", delta: "AAAA" });
          session._attachMirror(987654);
          session._received(call, { type: "response.done", response: {} });
          const messages = [...session.mirror.pending.values()];
          session.stop();
          return messages.map((m) => [m.seq, m.direction, m.event.type]);
        }"""
    )
    assert mirrored == [
        [1, "received", "session.created"],
        [2, "sent", "conversation.item.create"],
        [3, "sent", "response.create"],
        [4, "received", "response.done"],
    ]


def test_a_retiring_mirror_cannot_answer_into_or_end_the_call_that_replaced_it(
    new_page: Callable[..., Any],
) -> None:
    # After a lost call the old mirror stays up until its events are acknowledged; the
    # server's answers on it belong to the old session, not to the new call.
    page = new_page()
    page.goto("/terminals/")
    result = page.evaluate(
        "async () => {"
        + NEW_SESSION
        + """
          const placed = (sent) => ({
            isOpen: true, send(event) { sent.push(event); return true; }, close() {},
          });
          const oldSent = [], newSent = [];
          session.active = true;
          session.call = placed(oldSent);
          session._attachMirror(987654);
          const retiring = session.mirror;
          session._teardownCall();
          session.call = placed(newSent);
          session._attachMirror(987655);
          retiring.handlers["tool.result"]({
            type: "tool.result", call_id: "call_old", name: "navigate_gallery",
            output: JSON.stringify({ ok: true, message: "Now showing Study 2." }),
          });
          retiring.handlers["session.ended"]({ type: "session.ended", reason: "hangup" });
          const stillActive = session.active;
          session.mirror.handlers["tool.result"]({
            type: "tool.result", call_id: "call_new", name: "navigate_gallery",
            output: JSON.stringify({ ok: true, message: "Now showing Study 3." }),
          });
          session.stop();
          const names = newSent.map((event) => (event.item ? event.item.call_id : event.type));
          return { stillActive, oldSent, newSent: names };
        }"""
    )
    assert result["stillActive"] is True
    assert result["oldSent"] == []
    assert result["newSent"] == ["call_new", "response.create"]


# A session whose call is being placed again, with a mirror of the new session that the
# test drives; `statuses` records what the panel was told.
REPLACING_CALL = (
    "async () => {"
    + NEW_SESSION
    + """
  const statuses = [];
  session.ui.status = (name, detail = "") => statuses.push([name, detail]);
  const call = { isOpen: true, send() { return true; }, close() {} };
  session.active = true;
  session.reconnecting = true;
  session.call = call;
  session._attachMirror(987700);
  const mirror = session.mirror;
"""
)


def test_a_mirror_down_while_a_call_was_replaced_is_said_once_the_call_opens(
    new_page: Callable[..., Any],
) -> None:
    page = new_page()
    page.goto("/terminals/")
    statuses = page.evaluate(
        REPLACING_CALL
        + """
          session._mirrorState(mirror, "reconnecting");
          session._opened(call);
          const opened = statuses[statuses.length - 1];
          session._mirrorState(mirror, "open");
          const back = statuses[statuses.length - 1];
          session.stop();
          return { opened, back };
        }"""
    )
    # Not "Listening" while the site cannot hear the call (its tool calls wait).
    assert statuses["opened"][0] == "reconnecting"
    assert statuses["back"] == ["listening", "Reconnected."]


def test_a_mirror_refused_while_a_call_was_replaced_places_the_call_again(
    new_page: Callable[..., Any],
) -> None:
    page = new_page()
    page.goto("/terminals/")
    result = page.evaluate(
        REPLACING_CALL
        + """
          session.reconnectAttempt = 3;
          session._mirrorState(mirror, "failed", "This voice session has ended.");
          session._opened(call);
          const after = {
            replaced: session.call !== call,
            reconnecting: session.reconnecting,
            attempt: session.reconnectAttempt,
            status: statuses[statuses.length - 1],
          };
          session.stop();
          return after;
        }"""
    )
    # A call the site will not record cannot run a tool: it is placed again, as a
    # failed attempt (not from the first backoff step).
    assert result["replaced"] and result["reconnecting"]
    assert result["attempt"] == 4
    assert result["status"][0] == "reconnecting"
    assert "This voice session has ended." in result["status"][1]
