"""The voice mirror module in real Chromium, against a scripted websocket that answers
the way the mirror socket (voice/consumers.py) does when the server is in trouble."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.browser

# Replaces WebSocket with a scripted server, then drives the page's own Mirror with one
# function call. `script`:
# - "busy_at_the_door": every socket is accepted only to hear `unavailable` and be
#   closed with 1000 (the database or channel layer down at the handshake);
# - "busy_once": the first copy of each event is answered `unavailable` without a seq
#   (the database failed storing it), the socket stays open, resends are acked.
# Resolves after `waitMs`, or as soon as everything is acknowledged.
DRIVE_MIRROR = """
async ({ script, waitMs }) => {
  const log = { opened: [], states: [], written: [] };
  const started = performance.now();
  class ScriptedSocket {
    static CONNECTING = 0; static OPEN = 1; static CLOSING = 2; static CLOSED = 3;
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      log.opened.push(Math.round(performance.now() - started));
      setTimeout(() => {
        this.readyState = 1;
        this.onopen && this.onopen({});
        if (script === "busy_at_the_door") {
          this._reply({ type: "error", code: "unavailable", message: "The server is busy." });
          setTimeout(() => {
            this.readyState = 3;
            this.onclose && this.onclose({ code: 1000, reason: "" });
          }, 5);
        }
      }, 20);
    }
    _reply(data) { this.onmessage && this.onmessage({ data: JSON.stringify(data) }); }
    send(text) {
      const message = JSON.parse(text);
      log.written.push(message);
      if (script === "busy_once" && message.type === "mirror.event") {
        const first = log.written.filter((m) => m.seq === message.seq).length === 1;
        setTimeout(() => this._reply(first
          ? { type: "error", code: "unavailable", message: "The server is busy." }
          : { type: "mirror.ack", seq: message.seq }), 5);
      }
    }
    close() { this.readyState = 3; }
  }
  window.WebSocket = ScriptedSocket;
  const { Mirror } = await import("/static/js/voice/mirror.js");
  const mirror = new Mirror({
    url: "ws://scripted/ws/voice/1/", onState: (state) => log.states.push(state),
  });
  await new Promise((resolve) => setTimeout(resolve, 100));
  mirror.send("received", {
    type: "response.function_call_arguments.done",
    call_id: "call_1", name: "navigate_gallery", arguments: '{"action": "next"}',
  });
  const until = performance.now() + waitMs;
  while (performance.now() < until && !(script === "busy_once" && mirror.unacknowledged === 0)) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  log.unacknowledged = mirror.unacknowledged;
  return log;
}
"""


def test_a_server_busy_at_the_door_is_asked_less_and_less(new_page: Callable[..., Any]) -> None:
    page = new_page()
    page.goto("/terminals/")
    log = page.evaluate(DRIVE_MIRROR, {"script": "busy_at_the_door", "waitMs": 6000})
    # Backoff from 500 ms, doubling: at most five sockets in six seconds. Reset at every
    # open, it was one every 0.25–0.5 s, and it never reached its limit ("failed").
    assert 3 <= len(log["opened"]) <= 5, log["opened"]
    assert "failed" not in log["states"]


def test_an_event_the_server_could_not_store_is_sent_again_until_acknowledged(
    new_page: Callable[..., Any],
) -> None:
    page = new_page()
    page.goto("/terminals/")
    log = page.evaluate(DRIVE_MIRROR, {"script": "busy_once", "waitMs": 10000})
    copies = [m for m in log["written"] if m.get("type") == "mirror.event" and m["seq"] == 1]
    # Before, it waited for a reconnect that never came: the call never ran.
    assert len(copies) == 2
    assert copies[0] == copies[1]
    assert log["unacknowledged"] == 0
    assert len(log["opened"]) == 1
