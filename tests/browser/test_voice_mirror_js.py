"""The voice mirror module in real Chromium, against a scripted websocket that answers
the way the mirror socket (voice/consumers.py) does when the server is in trouble."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.browser

# Replaces WebSocket with a scripted server, then drives the page's own Mirror with
# `events` transcript events (the first one at once, while the first socket is still
# opening). `script`:
# - "busy_at_the_door": every socket is accepted only to hear `unavailable` and be
#   closed with 1000 (the database or channel layer down at the handshake);
# - "busy_once": the first copy of each event is answered `unavailable` without a seq
#   (the database failed storing it), the socket stays open, resends are acked;
# - "crowded": the first socket hears `too_many_sockets` and is closed with 4429 (the
#   session stays open), the next one is served;
# - "away": the first socket never opens (1006), the next one is served.
# A served socket acks each event. Resolves after `waitMs`, or once all is acked.
DRIVE_MIRROR = """
async ({ script, waitMs, events = 1 }) => {
  const log = { opened: [], states: [], written: [], writtenAt: [] };
  const started = performance.now();
  const now = () => Math.round(performance.now() - started);
  class ScriptedSocket {
    static CONNECTING = 0; static OPEN = 1; static CLOSING = 2; static CLOSED = 3;
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.index = log.opened.length;
      log.opened.push(now());
      setTimeout(() => {
        if (script === "away" && this.index === 0) return this._closed(1006);
        this.readyState = 1;
        this.onopen && this.onopen({});
        if (script === "busy_at_the_door") {
          this._reply({ type: "error", code: "unavailable", message: "The server is busy." });
          setTimeout(() => this._closed(1000), 5);
        }
        if (script === "crowded" && this.index === 0) {
          this._reply({ type: "error", code: "too_many_sockets", message: "Too many." });
          setTimeout(() => this._closed(4429), 5);
        }
      }, 20);
    }
    _closed(code) {
      this.readyState = 3;
      this.onclose && this.onclose({ code, reason: "" });
    }
    _reply(data) { this.onmessage && this.onmessage({ data: JSON.stringify(data) }); }
    send(text) {
      const message = JSON.parse(text);
      const refusing = script === "busy_at_the_door" || (script === "crowded" && !this.index);
      if (message.type !== "mirror.event" || refusing) return;
      log.written.push(message);
      log.writtenAt.push(now());
      const first = log.written.filter((m) => m.seq === message.seq).length === 1;
      const busy = script === "busy_once" && first;
      setTimeout(() => this._reply(busy
        ? { type: "error", code: "unavailable", message: "The server is busy." }
        : { type: "mirror.ack", seq: message.seq }), 5);
    }
    close() { this.readyState = 3; }
  }
  window.WebSocket = ScriptedSocket;
  const { Mirror } = await import("/static/js/voice/mirror.js");
  const mirror = new Mirror({
    url: "ws://scripted/ws/voice/1/", onState: (state) => log.states.push(state),
  });
  for (let n = 0; n < events; n += 1) {
    mirror.send("received", { type: "response.output_audio_transcript.delta", delta: `w${n}` });
  }
  const until = performance.now() + waitMs;
  while (performance.now() < until && !(log.written.length && mirror.unacknowledged === 0)) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  log.unacknowledged = mirror.unacknowledged;
  return log;
}
"""


def test_a_server_busy_at_the_door_is_asked_less_and_less(new_page: Callable[..., Any]) -> None:
    page = new_page()
    page.goto("/terminals/")
    log = page.evaluate(DRIVE_MIRROR, {"script": "busy_at_the_door", "waitMs": 6000, "events": 0})
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


def test_a_backlog_after_an_outage_is_resent_in_order_within_the_servers_rate(
    new_page: Callable[..., Any],
) -> None:
    page = new_page()
    page.goto("/terminals/")
    log = page.evaluate(DRIVE_MIRROR, {"script": "away", "waitMs": 15000, "events": 600})
    seqs = [message["seq"] for message in log["written"]]
    # All of it, once, in order: events sent meanwhile wait behind the backlog.
    assert seqs == list(range(1, 601))
    assert log["unacknowledged"] == 0
    # Never more at once than the server's burst takes (500; past it, it ends the call),
    # and no faster than its rate (100/s) after that.
    opened = log["writtenAt"][0]
    in_first_second = [at for at in log["writtenAt"] if at - opened < 1000]
    assert len(in_first_second) <= 200
    assert log["writtenAt"][-1] - opened >= 4000


def test_a_mirror_refused_for_too_many_sockets_tries_again(
    new_page: Callable[..., Any],
) -> None:
    page = new_page()
    page.goto("/terminals/")
    log = page.evaluate(DRIVE_MIRROR, {"script": "crowded", "waitMs": 10000})
    # The session stays open for a socket that fits: before, 4429 ended the call.
    assert "failed" not in log["states"]
    assert len(log["opened"]) == 2
    assert log["unacknowledged"] == 0
