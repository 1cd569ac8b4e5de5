// One voice conversation as the user sees it: microphone, WebRTC call and mirror tied
// together, with the status, the transcript, tool results and reconnection. It knows
// nothing about the DOM; the panel renders what it reports.

import { Earcons } from "./earcons.js";
import { backoffDelay, Mirror, mirrorable, mirrorUrl } from "./mirror.js";
import { mintToken, openMicrophone, RealtimeCall, VoiceError } from "./realtime.js";

// A call that stays "disconnected" this long is taken as lost (ICE may still recover
// from a shorter blip by itself).
const DISCONNECTED_GRACE_MS = 4000;
const MAX_RECONNECT_ATTEMPTS = 8;
const CHANNEL_OPEN_TIMEOUT_MS = 15000;
const MIRROR_DOWN = "The connection to the site dropped; trying again.";
// Call ids already answered, remembered for this many calls: far more than one
// conversation's resend window.
const ANSWERED_CALLS_KEPT = 500;

function parseToolOutput(output) {
  if (typeof output !== "string") return {};
  try {
    const parsed = JSON.parse(output);
    return parsed && typeof parsed === "object" ? parsed : {};
  } catch {
    return {};
  }
}

// Tool outputs are `{"ok", "message", ...}`: the message is a sentence meant for people.
function toolMessage(result, fallback) {
  if (typeof result.message === "string" && result.message) return result.message;
  return fallback;
}

// "navigate_gallery" → "Navigate gallery": the assistant says what happened, the line
// only records which tool ran.
function toolLabel(name) {
  const words = typeof name === "string" && name ? name.replaceAll("_", " ") : "tool";
  return words.charAt(0).toUpperCase() + words.slice(1);
}

export class VoiceSession {
  // `ui` receives status(name, detail), transcript({role, key, text, final, append}),
  // notice(kind, text) and active(boolean).
  constructor({ tokenUrl, terminal, csrfToken, audioElement, ui }) {
    this.tokenUrl = tokenUrl;
    this.terminal = terminal;
    this.csrfToken = csrfToken;
    this.audioElement = audioElement;
    this.ui = ui;
    this.earcons = new Earcons();
    this.stream = null;
    this.wantMuted = false;
    this.call = null;
    this.mirror = null;
    // The current call's events from before its mirror exists: the data channel can open,
    // and a waiting typed command go out, before the answer's continuation makes it.
    this.unmirrored = [];
    this.sessionId = null;
    this.active = false;
    this.generation = 0;
    this.speaking = false;
    this.queue = [];
    this.disconnectTimer = null;
    this.reconnecting = false;
    this.reconnectAttempt = 0;
    this.retryAfterMs = 0;
    this.mirrorDown = false;
    // Why the current call's mirror gave up, heard while the call was still being
    // placed: the call cannot serve without it, so it is placed again once open.
    this.mirrorFailure = "";
    this.answeredCalls = new Set();
    this.callHandlers = this._callHandlers();
    this.mirrorHandlers = this._mirrorHandlers();
  }

  // What the person chose, kept apart from the stream: Mute can be pressed while the
  // browser still asks for the microphone, and the stream must open muted then.
  get muted() {
    return this.wantMuted;
  }

  setMuted(muted) {
    this.wantMuted = Boolean(muted);
    this._applyMute();
  }

  _applyMute() {
    if (!this.stream) return;
    for (const track of this.stream.getAudioTracks()) track.enabled = !this.wantMuted;
  }

  async start() {
    if (this.active) return;
    this.active = true;
    this.earcons.unlock();
    this.ui.active(true);
    this.ui.status("connecting");
    const generation = ++this.generation;
    try {
      // The microphone first: a denied permission is then reported as what it is, and no
      // voice session is created on the server for a call that cannot happen.
      const stream = await openMicrophone();
      if (generation !== this.generation) {
        for (const track of stream.getTracks()) track.stop();
        return;
      }
      this.stream = stream;
      this._applyMute();
      this.ui.microphone(stream);
      await this._connect(generation);
    } catch (error) {
      if (generation !== this.generation) return;
      this._fail(error);
    }
  }

  // Mints a key, places the call and opens its mirror; resolves once the data channel
  // is open, so a call that never connects counts as a failed attempt.
  async _connect(generation) {
    const mint = () =>
      mintToken({ tokenUrl: this.tokenUrl, terminal: this.terminal, csrfToken: this.csrfToken });
    const token = await mint();
    if (generation !== this.generation) return;
    const call = new RealtimeCall({
      stream: this.stream,
      audioElement: this.audioElement,
      onEvent: (event) => this._received(call, event),
      onOpen: () => this._opened(call),
      onClose: () => this._channelClosed(call),
      onConnectionState: (state) => this._connectionState(call, state),
    });
    this.call = call;
    try {
      const used = await call.connect({ token, mint });
      if (generation !== this.generation || this.call !== call) {
        call.close();
        return;
      }
      this._attachMirror(used.session_id);
      await call.opened(CHANNEL_OPEN_TIMEOUT_MS);
    } catch (error) {
      if (this.call === call) this._teardownCall();
      else call.close();
      throw error;
    }
  }

  // The mirror of the current call's session, given first what the call did without one.
  _attachMirror(sessionId) {
    this.sessionId = sessionId;
    this.mirrorDown = false;
    this.mirrorFailure = "";
    // A mirror retiring after its call was lost still hears the server until its events
    // are acknowledged: its tool results and its session's end are not the new call's.
    const handlers = {};
    for (const [type, handle] of Object.entries(this.mirrorHandlers)) {
      handlers[type] = (message) => {
        if (mirror === this.mirror) handle(message);
      };
    }
    const mirror = new Mirror({
      url: mirrorUrl(sessionId),
      handlers,
      onState: (state, reason) => this._mirrorState(mirror, state, reason),
    });
    this.mirror = mirror;
    for (const [direction, event] of this.unmirrored.splice(0)) mirror.send(direction, event);
  }

  _mirrorSend(direction, event) {
    if (this.mirror) this.mirror.send(direction, event);
    else if (this.call && mirrorable(event)) this.unmirrored.push([direction, event]);
  }

  _opened(call) {
    if (call !== this.call) return;
    const wasReconnecting = this.reconnecting;
    this.reconnecting = false;
    this.speaking = false;
    if (this.mirrorFailure) {
      // Counted as a failed attempt: a site that refuses every new session is not
      // asked again and again at the first backoff step.
      this._lost(this.mirrorFailure, { attempts: this.reconnectAttempt });
      return;
    }
    this.reconnectAttempt = 0;
    if (this.mirrorDown) {
      this.ui.status("reconnecting", MIRROR_DOWN);
    } else {
      this.ui.status("listening", wasReconnecting ? "Reconnected." : "");
    }
    this.earcons.play("connect");
    const queued = this.queue.splice(0);
    for (const text of queued) this._sendText(text);
  }

  _received(call, event) {
    if (call !== this.call) return;
    this._mirrorSend("received", event);
    const handler = this.callHandlers[event.type];
    if (handler) handler(event);
  }

  send(event) {
    if (!this.call || !this.call.send(event)) return false;
    this._mirrorSend("sent", event);
    return true;
  }

  // Typed commands go the same way as speech; before the call is open they wait.
  sendText(text) {
    const clean = text.trim();
    if (!clean) return;
    this.ui.transcript({ role: "user", key: null, text: clean, final: true, typed: true });
    if (this.call && this.call.isOpen && !this.reconnecting) {
      this._sendText(clean);
    } else {
      this.queue.push(clean);
      if (!this.active) this.start();
    }
  }

  _sendText(text) {
    this.send({
      type: "conversation.item.create",
      item: { type: "message", role: "user", content: [{ type: "input_text", text }] },
    });
    this.send({ type: "response.create" });
    this.ui.status("thinking");
  }

  _callHandlers() {
    return {
      "input_audio_buffer.speech_started": () => this.ui.status("listening"),
      "input_audio_buffer.speech_stopped": () => this.ui.status("thinking"),
      "output_audio_buffer.started": () => {
        this.speaking = true;
        this.ui.status("speaking");
      },
      "output_audio_buffer.stopped": () => {
        this.speaking = false;
        this.ui.status("listening");
      },
      "output_audio_buffer.cleared": () => {
        this.speaking = false;
        this.ui.status("listening");
      },
      "response.done": (event) => {
        const response = event.response || {};
        if (response.status === "failed") {
          const error = (response.status_details && response.status_details.error) || {};
          this.ui.notice("error", error.message || "The assistant could not answer.");
        }
        // The voice may still be playing after generation ends; the buffer events say when.
        if (!this.speaking) this.ui.status("listening");
      },
      "conversation.item.input_audio_transcription.delta": (event) =>
        this.ui.transcript({ role: "user", key: event.item_id, text: event.delta || "", append: true }),
      "conversation.item.input_audio_transcription.completed": (event) =>
        this.ui.transcript({ role: "user", key: event.item_id, text: event.transcript || "", final: true }),
      "conversation.item.input_audio_transcription.failed": () =>
        this.ui.notice("error", "Your words could not be transcribed; please say it again."),
      "response.output_audio_transcript.delta": (event) =>
        this.ui.transcript({ role: "assistant", key: event.item_id, text: event.delta || "", append: true }),
      "response.output_audio_transcript.done": (event) =>
        this.ui.transcript({ role: "assistant", key: event.item_id, text: event.transcript || "", final: true }),
      "response.output_text.delta": (event) =>
        this.ui.transcript({ role: "assistant", key: event.item_id, text: event.delta || "", append: true }),
      "response.output_text.done": (event) =>
        this.ui.transcript({ role: "assistant", key: event.item_id, text: event.text || "", final: true }),
      error: (event) => {
        const error = event.error || {};
        this.ui.notice("error", error.message || "The voice service reported an error.");
      },
    };
  }

  _mirrorHandlers() {
    return {
      "tool.result": (message) => {
        if (typeof message.call_id !== "string" || typeof message.output !== "string") return;
        // The server answers a resent event again (after a reconnect the mirror resends
        // what it had not seen acknowledged); a second function_call_output would make
        // the assistant answer twice.
        if (!this._firstAnswer(message.call_id)) return;
        this.send({
          type: "conversation.item.create",
          item: { type: "function_call_output", call_id: message.call_id, output: message.output },
        });
        this.send({ type: "response.create" });
        const result = parseToolOutput(message.output);
        if (result.ok) {
          this.earcons.play("success");
          this.ui.notice("tool-ok", toolLabel(message.name));
        } else {
          this.earcons.play("failure");
          this.ui.notice("tool-failed", toolMessage(result, "That could not be done."));
        }
      },
      "session.ended": (message) => {
        const reason = typeof message.reason === "string" && message.reason ? message.reason : "";
        this.stop({ reason: reason ? `Voice session ended: ${reason}` : "Voice session ended." });
      },
      error: (message) => {
        const error = message.error && typeof message.error === "object" ? message.error : message;
        this.ui.notice("error", typeof error.message === "string" ? error.message : "The site reported an error.");
      },
    };
  }

  // True the first time a call id is seen; the oldest ids are forgotten past the cap.
  _firstAnswer(callId) {
    if (this.answeredCalls.has(callId)) return false;
    this.answeredCalls.add(callId);
    if (this.answeredCalls.size > ANSWERED_CALLS_KEPT) {
      this.answeredCalls.delete(this.answeredCalls.values().next().value);
    }
    return true;
  }

  _mirrorState(mirror, state, reason) {
    if (mirror !== this.mirror || !this.active) return;
    if (state === "failed") {
      // Without the mirror no tool call can run: a fresh session is the way back. A
      // call being placed again hears of it when it opens (_opened).
      this.mirrorFailure = reason || "the site stopped answering";
      if (!this.reconnecting) this._lost(this.mirrorFailure);
      return;
    }
    const down = state === "reconnecting";
    if (down === this.mirrorDown) return;
    this.mirrorDown = down;
    // While the call itself is being placed again, the status says that already, and
    // _opened says what stands once it is open.
    if (this.reconnecting) return;
    if (down) {
      this.ui.status("reconnecting", MIRROR_DOWN);
    } else {
      this.ui.status(this.speaking ? "speaking" : "listening", "Reconnected.");
    }
  }

  _connectionState(call, state) {
    if (call !== this.call) return;
    if (state === "connected") {
      clearTimeout(this.disconnectTimer);
      this.disconnectTimer = null;
    } else if (state === "disconnected") {
      clearTimeout(this.disconnectTimer);
      this.disconnectTimer = setTimeout(() => this._lost("the connection dropped"), DISCONNECTED_GRACE_MS);
    } else if (state === "failed") {
      this._lost("the connection failed");
    }
  }

  _channelClosed(call) {
    if (call !== this.call) return;
    // session.ended may be on its way over the mirror; give it a moment to arrive first.
    setTimeout(() => {
      if (call === this.call && this.active) this._lost("the call was closed");
    }, 1000);
  }

  _teardownCall() {
    clearTimeout(this.disconnectTimer);
    if (this.call) this.call.close();
    this.call = null;
    if (this.mirror) this.mirror.hangup();
    this.mirror = null;
    this.unmirrored = [];
    this.speaking = false;
  }

  // The call is gone but the user still wants voice: a new key, a new call, with backoff.
  async _lost(why, { attempts = 0 } = {}) {
    if (!this.active || this.reconnecting) return;
    this.reconnecting = true;
    this.reconnectAttempt = attempts;
    this._teardownCall();
    const generation = ++this.generation;
    this.ui.status("reconnecting", `The call was lost (${why}); trying again.`);
    while (this.active && generation === this.generation) {
      if (this.reconnectAttempt >= MAX_RECONNECT_ATTEMPTS) {
        this._fail(new VoiceError("Voice could not reconnect. Press Start voice to try again."));
        return;
      }
      const delay = Math.max(backoffDelay(this.reconnectAttempt + 1), this.retryAfterMs || 0);
      this.retryAfterMs = 0;
      this.reconnectAttempt += 1;
      await new Promise((resolve) => setTimeout(resolve, delay));
      if (!this.active || generation !== this.generation) return;
      try {
        await this._connect(generation);
        return; // Open again: a later loss starts a new loop.
      } catch (error) {
        if (generation !== this.generation) return;
        if (!(error instanceof VoiceError) || !error.retryable) {
          this._fail(error);
          return;
        }
        this.retryAfterMs = error.retryAfterMs;
        this.ui.status("reconnecting", `Still trying: ${error.message}`);
      }
    }
  }

  _fail(error) {
    const message = error instanceof VoiceError ? error.message : `Voice stopped: ${error && error.message}`;
    this._shutdown();
    this.ui.status("error", message);
  }

  stop({ reason = "" } = {}) {
    if (!this.active) return;
    this._shutdown();
    this.earcons.play("hangup");
    this.ui.status("idle", reason);
  }

  _shutdown() {
    // Typed commands still waiting for the call were shown in the transcript as said:
    // say they were not sent, so nobody waits for an answer to them.
    if (this.queue.length) {
      const count = this.queue.length;
      this.ui.notice(
        "info",
        count === 1
          ? "Your typed command was not sent."
          : `Your ${count} typed commands were not sent.`,
      );
    }
    this.generation += 1;
    this.active = false;
    this.wantMuted = false; // the panel shows "Mute" again (ui.active(false))
    this.reconnecting = false;
    this.queue = [];
    this._teardownCall();
    this._releaseStream();
    this.ui.active(false);
  }

  _releaseStream() {
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    this.stream = null;
    this.ui.microphone(null);
  }

  async audioEnergy() {
    return this.call ? this.call.audioEnergy() : 0;
  }
}
