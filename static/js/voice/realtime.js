// The WebRTC call to an OpenAI-Realtime-compatible upstream (OpenAI GA or the site's own
// engine: the same code, only `calls_url` differs), and the token request that precedes it.

const ICE_GATHERING_WAIT_MS = 2000;
// A server that accepts the connection but never answers must not stall a reconnect.
const TOKEN_TIMEOUT_MS = 15000;
const CALLS_TIMEOUT_MS = 20000;

// A failure with a message a person can act on. `retryable` tells the reconnect loop
// whether trying again could help; `retryAfterMs` honours a server's Retry-After.
export class VoiceError extends Error {
  constructor(message, { code = "error", status = 0, retryable = false, retryAfterMs = 0 } = {}) {
    super(message);
    this.name = "VoiceError";
    this.code = code;
    this.status = status;
    this.retryable = retryable;
    this.retryAfterMs = retryAfterMs;
  }
}

const MICROPHONE_MESSAGES = {
  NotAllowedError:
    "Microphone access was denied. Allow the microphone for this site (the camera/microphone icon in the address bar, or the browser's site settings), then press Start voice again.",
  SecurityError:
    "The browser blocks the microphone on this page. Open the site over HTTPS (or localhost) and allow the microphone.",
  NotFoundError: "No microphone was found. Connect one (or enable it in the system settings) and try again.",
  NotReadableError:
    "The microphone is busy or could not be started. Close other apps or tabs that use it, then try again.",
  OverconstrainedError: "The microphone does not support the requested settings. Try another microphone.",
  AbortError: "The microphone could not be started. Try again.",
};

export async function openMicrophone() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new VoiceError(
      "This browser cannot use a microphone here. Use a current browser over HTTPS (or localhost).",
      { code: "microphone_unsupported" },
    );
  }
  try {
    return await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
  } catch (error) {
    const name = error && error.name;
    const message =
      MICROPHONE_MESSAGES[name] ||
      `The microphone could not be opened${error && error.message ? ` (${error.message})` : ""}. Check the browser's microphone settings and try again.`;
    throw new VoiceError(message, { code: `microphone_${name || "error"}` });
  }
}

async function fetchWithin(url, options, timeoutMs) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    return await fetch(url, { ...options, signal: controller.signal });
  } finally {
    clearTimeout(timer);
  }
}

function readCookie(name) {
  for (const part of document.cookie.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return "";
}

// The server's error envelope is `{"error": {"code", "message"}}`; anything else (an HTML
// error page from a proxy, an empty body) still gets a message that names the status.
async function errorFromResponse(response, what) {
  let message = "";
  let code = `http_${response.status}`;
  try {
    const body = await response.json();
    if (body && body.error) {
      if (typeof body.error === "string") message = body.error;
      else {
        message = typeof body.error.message === "string" ? body.error.message : "";
        code = typeof body.error.code === "string" && body.error.code ? body.error.code : code;
      }
    }
  } catch {
    // Not JSON: fall through to the generic message.
  }
  if (!message) message = `${what} failed (HTTP ${response.status}).`;
  const retryAfterSeconds = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  const retryAfterMs = Number.isFinite(retryAfterSeconds) ? retryAfterSeconds * 1000 : 0;
  if (response.status === 429 && retryAfterSeconds > 0) {
    message = `${message} (try again in ${retryAfterSeconds} s)`;
  }
  const retryable = response.status === 429 || response.status >= 500;
  return new VoiceError(message, { code, status: response.status, retryable, retryAfterMs });
}

export async function mintToken({ tokenUrl, terminal, csrfToken }) {
  let response;
  try {
    response = await fetchWithin(tokenUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        "X-CSRFToken": readCookie("csrftoken") || csrfToken || "",
      },
      body: JSON.stringify({ terminal }),
    }, TOKEN_TIMEOUT_MS);
  } catch {
    throw new VoiceError("The site could not be reached or did not answer. Check the network connection.", {
      code: "network",
      retryable: true,
    });
  }
  if (!response.ok) throw await errorFromResponse(response, "Starting voice");
  let token;
  try {
    token = await response.json();
  } catch {
    throw new VoiceError("The site sent an unreadable voice token.", { code: "bad_token", retryable: true });
  }
  if (!token || typeof token.value !== "string" || typeof token.calls_url !== "string") {
    throw new VoiceError("The site sent an incomplete voice token.", { code: "bad_token", retryable: true });
  }
  return token;
}

function waitForIceGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

// One WebRTC call. `mint` returns a fresh token; it is called again once if /calls answers
// 401 (a key that expired between minting and posting the offer).
function stopped() {
  return new VoiceError("The call was stopped.", { code: "stopped" });
}

export class RealtimeCall {
  constructor({ stream, audioElement, onEvent, onOpen, onClose, onConnectionState }) {
    this.stream = stream;
    this.audioElement = audioElement;
    this.onEvent = onEvent;
    this.onOpen = onOpen;
    this.onClose = onClose;
    this.onConnectionState = onConnectionState;
    this.pc = null;
    this.channel = null;
    this.callId = "";
    this.closed = false;
    this.openWaiters = [];
    // The stream this call put on the shared <audio>: a call closed late (stopped,
    // then answered after a new call began) must not take the new call's voice off it.
    this.remote = null;
  }

  // Resolves when the data channel opens; rejects if the connection fails, the call is
  // closed, or `timeoutMs` passes first.
  opened(timeoutMs) {
    if (this.isOpen) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      waiter.timer = setTimeout(
        () => this._settleOpen(new VoiceError("The call did not connect in time.", { code: "timeout", retryable: true })),
        timeoutMs,
      );
      this.openWaiters.push(waiter);
    });
  }

  _settleOpen(error) {
    for (const waiter of this.openWaiters.splice(0)) {
      clearTimeout(waiter.timer);
      if (error) waiter.reject(error);
      else waiter.resolve();
    }
  }

  async connect({ token, mint }) {
    let current = token;
    for (let attempt = 0; ; attempt += 1) {
      this._createPeer();
      const offer = await this.pc.createOffer();
      await this.pc.setLocalDescription(offer);
      await waitForIceGathering(this.pc, ICE_GATHERING_WAIT_MS);
      if (this.closed) throw stopped();
      let response;
      try {
        response = await fetchWithin(
          current.calls_url,
          {
            method: "POST",
            body: this.pc.localDescription.sdp,
            headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${current.value}` },
          },
          CALLS_TIMEOUT_MS,
        );
      } catch {
        this._closePeer();
        throw new VoiceError("The voice service could not be reached or did not answer.", {
          code: "network",
          retryable: true,
        });
      }
      if (response.status === 401 && attempt === 0 && mint) {
        this._closePeer();
        // Stopped meanwhile: a new key would open a voice session nothing ends.
        if (this.closed) throw stopped();
        current = await mint();
        continue;
      }
      if (!response.ok) {
        this._closePeer();
        throw await errorFromResponse(response, "Connecting the call");
      }
      const answer = await response.text();
      const location = response.headers.get("Location") || "";
      this.callId = location.split("/").filter(Boolean).pop() || "";
      if (this.closed) throw stopped();
      try {
        await this.pc.setRemoteDescription({ type: "answer", sdp: answer });
      } catch (error) {
        this._closePeer();
        throw new VoiceError(`The voice service sent an unusable answer (${error.message}).`, {
          code: "bad_answer",
          retryable: true,
        });
      }
      return current;
    }
  }

  _createPeer() {
    const pc = new RTCPeerConnection();
    this.pc = pc;
    for (const track of this.stream.getAudioTracks()) pc.addTrack(track, this.stream);
    pc.ontrack = (event) => {
      if (pc !== this.pc) return;
      const [remote] = event.streams;
      this.remote = remote || new MediaStream([event.track]);
      this.audioElement.srcObject = this.remote;
      const playing = this.audioElement.play();
      if (playing) playing.catch(() => {});
    };
    pc.onconnectionstatechange = () => {
      if (pc !== this.pc) return;
      if (pc.connectionState === "failed") {
        this._settleOpen(new VoiceError("The call could not connect.", { code: "ice_failed", retryable: true }));
      }
      if (this.onConnectionState) this.onConnectionState(pc.connectionState);
    };
    const channel = pc.createDataChannel("oai-events");
    this.channel = channel;
    channel.onopen = () => {
      if (channel !== this.channel) return;
      if (this.onOpen) this.onOpen();
      this._settleOpen(null);
    };
    channel.onclose = () => {
      if (channel === this.channel && !this.closed && this.onClose) this.onClose();
    };
    channel.onmessage = (message) => {
      if (channel !== this.channel || typeof message.data !== "string") return;
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return; // A malformed upstream message is not an event; nothing to act on.
      }
      if (event && typeof event.type === "string") this.onEvent(event);
    };
  }

  get isOpen() {
    return Boolean(this.channel && this.channel.readyState === "open");
  }

  send(event) {
    if (!this.isOpen) return false;
    this.channel.send(JSON.stringify(event));
    return true;
  }

  // Remote audio energy so far: proof the assistant's voice actually arrived.
  async audioEnergy() {
    if (!this.pc) return 0;
    let energy = 0;
    const stats = await this.pc.getStats();
    stats.forEach((report) => {
      if (report.type === "inbound-rtp" && report.kind === "audio") energy += report.totalAudioEnergy || 0;
    });
    return energy;
  }

  _closePeer() {
    if (this.channel) {
      this.channel.onclose = null;
      try {
        this.channel.close();
      } catch {
        // Already closed.
      }
    }
    if (this.pc) this.pc.close();
    this.channel = null;
    this.pc = null;
  }

  // Ends the call; the microphone stream belongs to the caller and stays open.
  close() {
    this.closed = true;
    this._settleOpen(stopped());
    this._closePeer();
    if (this.audioElement && this.remote && this.audioElement.srcObject === this.remote) {
      this.audioElement.srcObject = null;
    }
    this.remote = null;
  }
}
