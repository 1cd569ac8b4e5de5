"""The voice session and its WebRTC call in real Chromium, without an upstream: the page's
own modules, a fake microphone, and an in-page peer that answers the calls, so the order
in which a stale call and a new one finish can be chosen exactly."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS

pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser(playwright_sync: Any) -> Iterator[Any]:
    # Two peers in one page reach each other by their host addresses.
    launched = playwright_sync.chromium.launch(
        executable_path=str(CHROMIUM),
        headless=True,
        args=[
            *CHROMIUM_ARGS,
            "--disable-features=WebRtcHideLocalIpsWithMdns",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            "--autoplay-policy=no-user-gesture-required",
        ],
    )
    try:
        yield launched
    finally:
        launched.close()


# Installs, in the page: a token endpoint and a /calls endpoint answered by an in-page
# peer (each /calls request can be held back and released later, or answered with
# `refuse` as its status), a mirror socket that never connects, and a VoiceSession on an
# <audio> element. `window.harness` drives it.
HARNESS = """
async () => {
  const realFetch = window.fetch.bind(window);
  const calls = [];  // one entry per /calls request: { release(), answered }
  let tokens = 0;
  async function answer(offerSdp) {
    const peer = new RTCPeerConnection();
    const tone = new AudioContext();
    const oscillator = tone.createOscillator();
    const out = tone.createMediaStreamDestination();
    oscillator.connect(out);
    oscillator.start();
    peer.ondatachannel = () => {};
    await peer.setRemoteDescription({ type: "offer", sdp: offerSdp });
    for (const track of out.stream.getAudioTracks()) peer.addTrack(track, out.stream);
    await peer.setLocalDescription(await peer.createAnswer());
    await new Promise((resolve) => {
      if (peer.iceGatheringState === "complete") return resolve();
      peer.onicegatheringstatechange = () => peer.iceGatheringState === "complete" && resolve();
      setTimeout(resolve, 2000);
    });
    window.answerers = [...(window.answerers || []), peer];
    return peer.localDescription.sdp;
  }
  window.fetch = async (url, options = {}) => {
    if (String(url).endsWith("/api/realtime/")) {
      tokens += 1;
      return new Response(JSON.stringify({
        value: `ek_${tokens}`, expires_at: 0, calls_url: "/fake/v1/realtime/calls",
        session_id: 1000 + tokens,
      }), { status: 200, headers: { "Content-Type": "application/json" } });
    }
    if (String(url).startsWith("/fake/v1/realtime/calls")) {
      const entry = {};
      entry.held = new Promise((resolve) => { entry.release = resolve; });
      calls.push(entry);
      await entry.held;
      if (entry.refuse) return new Response("{}", { status: entry.refuse });
      const sdp = await answer(options.body);
      return new Response(sdp, {
        status: 201, headers: { Location: `/v1/realtime/calls/rtc_${calls.length}` },
      });
    }
    return realFetch(url, options);
  };
  class QuietSocket {
    static CONNECTING = 0; static OPEN = 1; static CLOSING = 2; static CLOSED = 3;
    constructor() { this.readyState = 0; }
    send() {}
    close() { this.readyState = 3; }
  }
  window.WebSocket = QuietSocket;

  const { VoiceSession } = await import("/static/js/voice/session.js");
  const audio = document.createElement("audio");
  document.body.append(audio);
  const statuses = [];
  const ui = {
    status(name) { statuses.push(name); }, active() {}, microphone() {}, transcript() {},
    notice() {},
  };
  const session = new VoiceSession({
    tokenUrl: "/api/realtime/", terminal: "lobby", csrfToken: "", audioElement: audio, ui,
  });
  const until = async (test, ms = 10000) => {
    const end = performance.now() + ms;
    while (!test()) {
      if (performance.now() > end) throw new Error("timed out");
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
  window.harness = { session, audio, calls, statuses, until, tokens: () => tokens };
}
"""


def test_a_stopped_calls_late_failure_does_not_silence_the_call_that_replaced_it(
    new_page: Callable[..., Any],
) -> None:
    page = new_page()
    page.goto("/terminals/")
    page.evaluate(HARNESS)

    result = page.evaluate(
        """async () => {
          const { session, audio, calls, statuses, until } = window.harness;
          // Start voice: the first call's offer is posted and its answer is slow.
          session.start();
          await until(() => calls.length === 1);
          const first = session.call;
          // Stop, and start again (a double click, a change of mind).
          session.stop();
          session.start();
          await until(() => calls.length === 2);
          calls[1].release();
          await until(() => session.call && session.call.isOpen && audio.srcObject);
          const second = session.call;
          const remote = audio.srcObject;
          // Now the first call's answer arrives: the call was stopped, so it gives up.
          calls[0].release();
          await until(() => first.pc === null && first.closed);
          await new Promise((resolve) => setTimeout(resolve, 500));
          return {
            sameCall: session.call === second,
            open: second.isOpen,
            audioKept: audio.srcObject === remote,
            audioIsNull: audio.srcObject === null,
            status: statuses[statuses.length - 1],
          };
        }"""
    )

    assert result["sameCall"] and result["open"], result
    assert result["status"] == "listening", result
    # The stale call's close() cleared the shared <audio> element: the live call's
    # assistant voice is never heard again (ontrack does not fire a second time).
    assert result["audioKept"], result


def test_a_call_stopped_before_its_key_was_refused_mints_no_other(
    new_page: Callable[..., Any],
) -> None:
    """A 401 from /calls is answered with one fresh key, but not for a call that was
    stopped meanwhile: that key would open a voice session on the site that nothing
    ever ends."""
    page = new_page()
    page.goto("/terminals/")
    page.evaluate(HARNESS)

    minted = page.evaluate(
        """async () => {
          const { session, calls, until, tokens } = window.harness;
          session.start();
          await until(() => calls.length === 1);
          const first = session.call;
          session.stop();
          calls[0].refuse = 401;
          calls[0].release();
          await until(() => first.pc === null);
          await new Promise((resolve) => setTimeout(resolve, 300));
          return tokens();
        }"""
    )

    assert minted == 1
