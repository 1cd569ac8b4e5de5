// The voice panel on a terminal page: renders what a VoiceSession reports (status,
// microphone level, transcript, notices) and turns clicks and typing into its calls.

import { LevelMeter } from "./meter.js";
import { VoiceSession } from "./session.js";

const STATUS_TEXT = {
  idle: "Voice is off",
  connecting: "Connecting…",
  listening: "Listening",
  thinking: "Thinking…",
  speaking: "Speaking",
  reconnecting: "Reconnecting…",
  error: "Voice error",
};

const SPEAKER = { user: "You", assistant: "Assistant" };
const NOTICE_LABEL = { error: "Error", tool: "Tool", "tool-ok": "Done", "tool-failed": "Failed", info: "Note" };
// Enough scroll-back for a session; older lines go so a long call does not grow the page.
const MAX_LINES = 200;

function mountPanel(root) {
  const toggle = root.querySelector("[data-voice-toggle]");
  const mute = root.querySelector("[data-voice-mute]");
  const status = root.querySelector("[data-voice-status]");
  const statusText = root.querySelector("[data-voice-status-text]");
  const statusDetail = root.querySelector("[data-voice-detail]");
  const transcript = root.querySelector("[data-transcript]");
  const form = root.querySelector("[data-voice-compose]");
  const input = form.querySelector("input[name='text']");
  const audio = root.querySelector("[data-voice-audio]");
  const announcer = root.querySelector("[data-voice-announce]");
  const meter = new LevelMeter(root.querySelector("[data-voice-meter]"));
  const lines = new Map();

  // Reads a finished line out once, whole (the transcript itself is not live).
  function announce(text) {
    announcer.textContent = text;
  }

  function addLine(role, who, text, variant = "") {
    const item = document.createElement("li");
    item.className = `voice-line voice-line--${role}`;
    if (variant) item.classList.add(`voice-line--${variant}`);
    item.dataset.role = role;
    const label = document.createElement("span");
    label.className = "voice-line__who";
    label.textContent = who;
    const body = document.createElement("span");
    body.className = "voice-line__text";
    body.textContent = text;
    item.append(label, body);
    transcript.append(item);
    while (transcript.children.length > MAX_LINES) {
      const oldest = transcript.firstElementChild;
      for (const [key, line] of lines) if (line === oldest) lines.delete(key);
      oldest.remove();
    }
    transcript.hidden = false;
    transcript.scrollTop = transcript.scrollHeight;
    return item;
  }

  const ui = {
    status(name, detail = "") {
      root.dataset.state = name;
      status.dataset.state = name;
      statusText.textContent = STATUS_TEXT[name] || name;
      statusDetail.textContent = detail;
      statusDetail.hidden = !detail;
    },
    active(on) {
      toggle.textContent = on ? "Stop voice" : "Start voice";
      toggle.setAttribute("aria-pressed", on ? "true" : "false");
      mute.disabled = !on;
      if (!on) {
        mute.setAttribute("aria-pressed", "false");
        mute.textContent = "Mute";
      }
    },
    microphone(stream) {
      if (stream) meter.start(stream);
      else meter.stop();
    },
    transcript({ role, key, text, append = false, final = false, typed = false }) {
      const keyed = key ? `${role}:${key}` : null;
      let line = keyed ? lines.get(keyed) : null;
      if (!line) {
        if (!text) return;
        line = addLine(role, typed ? `${SPEAKER[role]} (typed)` : SPEAKER[role] || role, "");
        if (keyed) lines.set(keyed, line);
      }
      const body = line.querySelector(".voice-line__text");
      body.textContent = append ? body.textContent + text : text;
      transcript.scrollTop = transcript.scrollHeight;
      if (final && body.textContent) {
        announce(`${line.querySelector(".voice-line__who").textContent}: ${body.textContent}`);
      }
    },
    notice(kind, text) {
      if (!text) return;
      const label = NOTICE_LABEL[kind] || "Note";
      addLine("notice", label, text, kind);
      announce(`${label}: ${text}`);
    },
  };

  const session = new VoiceSession({
    tokenUrl: root.dataset.tokenUrl,
    terminal: root.dataset.terminal,
    csrfToken: root.dataset.csrfToken,
    audioElement: audio,
    ui,
  });
  // Lets the browser tests read call statistics (remote audio energy) from the page.
  root.voiceSession = session;

  toggle.addEventListener("click", () => {
    if (session.active) session.stop();
    else session.start();
  });

  mute.addEventListener("click", () => {
    const muted = !session.muted;
    session.setMuted(muted);
    mute.setAttribute("aria-pressed", muted ? "true" : "false");
    mute.textContent = muted ? "Unmute" : "Mute";
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) {
      input.focus();
      return;
    }
    session.sendText(text);
    input.value = "";
  });

  // Leaving the page ends the session on the server instead of waiting for a timeout.
  window.addEventListener("pagehide", () => session.stop());
  ui.status("idle");
  ui.active(false);
}

for (const root of document.querySelectorAll("[data-voice-panel]")) mountPanel(root);
