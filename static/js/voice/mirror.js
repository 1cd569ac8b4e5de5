// The mirror: every data-channel event of a call, copied to the site over a websocket so
// the server can record it and run the assistant's tool calls. Events wait in a resend
// buffer until the server acknowledges their sequence number, so a dropped socket loses
// nothing: on reconnect everything unacknowledged is sent again, in order.

// Audio payloads are large and useless on the server; these events are not mirrored.
const UNMIRRORED_TYPES = new Set(["response.output_audio.delta", "input_audio_buffer.append"]);

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 10000;
// Past this the site is taken as gone for good: the panel says so instead of spinning.
const MAX_ATTEMPTS = 12;
// A server that takes the connection but never completes the handshake counts as down.
const CONNECT_TIMEOUT_MS = 10000;
// A socket that stayed up this long was taken by the server: its drop starts the
// backoff afresh. Not every open: the server accepts a socket it cannot serve yet
// (its database or channel layer down) only to say so and close it.
const STABLE_MS = 10000;
// After an outage the backlog can be more than the server takes at once (its
// VOICE_MIRROR_MESSAGE_BURST, 500, then VOICE_MIRROR_MESSAGES_PER_SECOND, 100; past
// them it ends the call): resends go out in slices, 80 a second, and events sent
// meanwhile queue behind them, so the server still gets everything in order.
const RESEND_SLICE = 200;
const RESEND_PAUSE_MS = 2500;

export function mirrorable(event) {
  return Boolean(event && typeof event.type === "string" && !UNMIRRORED_TYPES.has(event.type));
}

export function mirrorUrl(sessionId) {
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${window.location.host}/ws/voice/${encodeURIComponent(sessionId)}/`;
}

// Full jitter keeps many browsers from reconnecting in lockstep after a server restart.
export function backoffDelay(attempt) {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

export class Mirror {
  // `handlers` maps server message types (tool.result, session.ended, error) to functions;
  // `onState` hears "open", "reconnecting" and "failed".
  constructor({ url, handlers = {}, onState = () => {} }) {
    this.url = url;
    this.handlers = handlers;
    this.onState = onState;
    this.seq = 0;
    this.pending = new Map();
    this.socket = null;
    this.attempt = 0;
    this.timer = null;
    this.openedAt = 0;
    this.resendAttempt = 0;
    this.resendWaiting = false;
    this.written = 0; // the highest seq written, in order, on the current socket
    this.pacer = null;
    this.lastError = "";
    this.closing = false;
    this.retireTimer = null;
    this._open();
  }

  get unacknowledged() {
    return this.pending.size;
  }

  send(direction, event) {
    if (this.closing || !mirrorable(event)) return;
    this.seq += 1;
    const message = { type: "mirror.event", seq: this.seq, direction, event };
    this.pending.set(this.seq, message);
    if (this.pacer === null) this._flush(); // nothing waits ahead of it: it goes now
  }

  // Writes what waits after `written`, in order, at most a slice now and the rest
  // slice by slice.
  _flush() {
    clearTimeout(this.pacer);
    this.pacer = null;
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    let sent = 0;
    for (const [seq, message] of this.pending) {
      if (seq <= this.written) continue;
      if (sent === RESEND_SLICE) {
        this.pacer = setTimeout(() => this._flush(), RESEND_PAUSE_MS);
        return;
      }
      socket.send(JSON.stringify(message));
      this.written = seq;
      sent += 1;
    }
  }

  // Everything unacknowledged goes again, from the start.
  _resendAll() {
    this.written = 0;
    this._flush();
  }

  _open() {
    const socket = new WebSocket(this.url);
    this.socket = socket;
    const connectTimer = setTimeout(() => {
      if (socket.readyState === WebSocket.CONNECTING) socket.close();
    }, CONNECT_TIMEOUT_MS);
    socket.onopen = () => {
      clearTimeout(connectTimer);
      if (socket !== this.socket) return;
      this.openedAt = Date.now();
      this.lastError = "";
      this.onState("open");
      this._resendAll();
      this._maybeFinishRetirement();
    };
    socket.onmessage = (message) => {
      if (socket !== this.socket) return;
      let data;
      try {
        data = JSON.parse(message.data);
      } catch {
        return;
      }
      if (!data || typeof data.type !== "string") return;
      if (data.type === "mirror.ack") {
        this.attempt = 0;
        this.resendAttempt = 0;
        this.pending.delete(data.seq);
        this._maybeFinishRetirement();
        return;
      }
      if (data.type === "error") this.lastError = String(data.code || "");
      // An event the server refused will be refused again: resending it cannot help.
      if (data.type === "error" && Number.isInteger(data.seq)) {
        this.pending.delete(data.seq);
        this._maybeFinishRetirement();
      }
      // The server could not store an event (its database failed) and kept the socket:
      // send what waits again, after a growing pause, until it is acknowledged.
      if (data.type === "error" && data.code === "unavailable" && !Number.isInteger(data.seq)) {
        this._scheduleResend();
      }
      const handler = this.handlers[data.type];
      if (handler) handler(data);
    };
    socket.onclose = (event) => {
      clearTimeout(connectTimer);
      if (socket !== this.socket) return;
      this.socket = null;
      clearTimeout(this.pacer);
      this.pacer = null;
      this.resendWaiting = false;
      if (this.openedAt && Date.now() - this.openedAt >= STABLE_MS) this.attempt = 0;
      this.openedAt = 0;
      if (this.closing && this.pending.size === 0) return;
      // Too many sockets of this user: the session stays open for one that fits (a
      // tab closed elsewhere), so this one tries again, later and later.
      const crowded = event.code === 4429 && this.lastError === "too_many_sockets";
      // Other 4xxx close codes are the server refusing this session (ended, not
      // yours): reconnecting cannot help.
      if (event.code >= 4000 && event.code < 5000 && !crowded) {
        this.onState("failed", event.reason || "");
        this.closing = true;
        return;
      }
      this._scheduleReconnect();
    };
  }

  _scheduleReconnect() {
    if (this.attempt >= MAX_ATTEMPTS) {
      this.onState("failed", "");
      this.closing = true;
      return;
    }
    this.onState("reconnecting");
    const delay = backoffDelay(this.attempt);
    this.attempt += 1;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this._open(), delay);
  }

  _scheduleResend() {
    if (this.resendWaiting) return;
    this.resendWaiting = true;
    const delay = backoffDelay(this.resendAttempt);
    this.resendAttempt += 1;
    // On the pacer: events sent meanwhile wait behind the resend, in order. A socket
    // that closes meanwhile resends everything when it opens again.
    clearTimeout(this.pacer);
    this.pacer = setTimeout(() => {
      this.resendWaiting = false;
      this._resendAll();
    }, delay);
  }

  // Ends the session on the server once everything sent has been acknowledged; a socket
  // that is down keeps reconnecting until then, for at most `graceMs`.
  hangup({ graceMs = 15000 } = {}) {
    if (this.closing) return;
    this.closing = true;
    this.retireTimer = setTimeout(() => this._finish(), graceMs);
    this._maybeFinishRetirement();
  }

  _maybeFinishRetirement() {
    if (this.closing && this.pending.size === 0) this._finish();
  }

  _finish() {
    clearTimeout(this.timer);
    clearTimeout(this.retireTimer);
    clearTimeout(this.pacer);
    this.pacer = null;
    const socket = this.socket;
    this.socket = null;
    this.pending.clear();
    if (!socket) return;
    if (socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ type: "mirror.hangup" }));
      socket.close(1000);
    } else if (socket.readyState === WebSocket.CONNECTING) {
      socket.onopen = () => {
        socket.send(JSON.stringify({ type: "mirror.hangup" }));
        socket.close(1000);
      };
    }
  }
}
