"""The voice panel's session module in real Chromium, driven with the mirror messages the
server sends, its call replaced by a recorder of what would go to the model."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.browser

# Loads the page's own module, gives it a call that records what it sends, and hands it
# the mirror messages in order. Returns what reached the call and the panel.
DRIVE_SESSION = """
async (messages) => {
  const { VoiceSession } = await import("/static/js/voice/session.js");
  const notices = [];
  const ui = {
    status() {}, active() {}, microphone() {}, transcript() {},
    notice(kind, text) { notices.push({ kind, text }); },
  };
  const session = new VoiceSession({
    tokenUrl: "/api/realtime/", terminal: "lobby", csrfToken: "", audioElement: null, ui,
  });
  const sent = [];
  session.call = { isOpen: true, send(event) { sent.push(event); return true; }, close() {} };
  for (const message of messages) session.mirrorHandlers[message.type](message);
  return { sent, notices };
}
"""


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
