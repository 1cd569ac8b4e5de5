// The terminal page: one shared picture, kept in step with everyone else watching.
//
// The server renders the first state into the page (json_script "terminal-state"), so a
// picture shows before the socket connects; after that every change arrives over
// ws/terminals/<slug>/ and goes through the one `handlers[type]` table below. States
// carry a version: an older one is ignored, a gap asks the server for a fresh state.

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 15000;
const NOTICE_MS = 6000;
const READY_JOB_MS = 8000;
const PROMPT_PREVIEW_CHARS = 40;
// The server closes with 4003 when this viewer may no longer watch: retrying would only
// be refused again. (4001, logged out elsewhere, reconnects as whoever the session is now.)
const FINAL_CLOSE_CODES = new Set([4003]);

const root = document.getElementById("terminal");
const el = {
  banner: document.getElementById("terminal-banner"),
  connection: document.getElementById("terminal-connection"),
  viewers: document.getElementById("terminal-viewers"),
  current: document.getElementById("terminal-current"),
  picture: document.getElementById("terminal-picture"),
  empty: document.getElementById("terminal-empty"),
  emptyCreate: document.getElementById("terminal-empty-create"),
  emptyWait: document.getElementById("terminal-empty-wait"),
  title: document.getElementById("terminal-title"),
  position: document.getElementById("terminal-position"),
  prompt: document.getElementById("terminal-prompt"),
  controls: document.getElementById("terminal-controls"),
  strip: document.getElementById("terminal-strip"),
  notice: document.getElementById("terminal-notice"),
  jobs: document.getElementById("terminal-jobs"),
  jobsTitle: document.getElementById("jobs-title"),
  jobsAnnounce: document.getElementById("terminal-jobs-announce"),
  jobsEmpty: document.getElementById("terminal-jobs-empty"),
};

const view = {
  version: -1,
  imageId: null,
  canControl: false,
  neighbours: [],
};

let socket = null;
let attempt = 0;
let reconnectTimer = null;
let stopped = false;
let firstStateAfterOpen = true;
let syncPending = false;
let noticeTimer = null;

// --- rendering ---------------------------------------------------------------------

function renderImage(image) {
  if (!image) {
    el.picture.hidden = true;
    el.picture.removeAttribute("src");
    el.picture.alt = "";
    el.empty.hidden = false;
    el.title.textContent = "";
    el.position.textContent = "";
    el.prompt.textContent = "";
    el.current.dataset.imageId = "";
    view.imageId = null;
    return;
  }
  if (el.picture.getAttribute("src") !== image.url) el.picture.src = image.url;
  el.picture.alt = image.title;
  el.picture.hidden = false;
  el.empty.hidden = true;
  el.title.textContent = image.title;
  el.position.textContent = image.count ? `${image.position} of ${image.count}` : "";
  el.prompt.textContent = image.prompt === image.title ? "" : image.prompt;
  el.current.dataset.imageId = String(image.id);
  view.imageId = image.id;
}

function stripItem(neighbour) {
  const item = document.createElement("li");
  item.className = "strip__item";
  if (neighbour.id === view.imageId) item.setAttribute("aria-current", "true");

  const thumb = document.createElement(view.canControl ? "button" : "span");
  thumb.className = "strip__thumb";
  if (view.canControl) {
    thumb.type = "button";
    thumb.dataset.imageId = String(neighbour.id);
    thumb.setAttribute("aria-label", `Show ${neighbour.title} (number ${neighbour.position})`);
  }
  if (neighbour.thumbnail_url) {
    const img = document.createElement("img");
    img.src = neighbour.thumbnail_url;
    // A button already has a label; a plain thumbnail needs its own text.
    img.alt = view.canControl ? "" : neighbour.title;
    img.loading = "lazy";
    thumb.append(img);
  }
  const position = document.createElement("span");
  position.className = "strip__position";
  position.setAttribute("aria-hidden", "true");
  position.textContent = String(neighbour.position);
  thumb.append(position);
  item.append(thumb);
  return item;
}

function renderStrip() {
  // Keep keyboard focus on the same thumbnail when the strip is rebuilt under it.
  const focusedId = el.strip.contains(document.activeElement)
    ? document.activeElement.dataset.imageId
    : null;
  el.strip.replaceChildren(...view.neighbours.map(stripItem));
  if (!focusedId) return;
  // Moved out of the strip (three either side): the current picture's thumbnail takes
  // the focus, so a keyboard user stays in the strip instead of back at the page's top.
  const again =
    el.strip.querySelector(`[data-image-id="${CSS.escape(focusedId)}"]`) ||
    el.strip.querySelector('[aria-current="true"] button') ||
    el.strip.querySelector("button");
  again?.focus();
}

function renderViewers(viewers) {
  if (typeof viewers === "number") el.viewers.textContent = String(viewers);
}

function renderControls() {
  // Nothing to step through on an empty terminal: the empty state offers what can be
  // done instead, and the buttons appear with the first picture.
  el.controls.hidden = !view.canControl || view.imageId === null;
  el.emptyCreate.hidden = !view.canControl;
  el.emptyWait.hidden = view.canControl;
  // aria-disabled, not disabled: a disabled button drops the keyboard focus resting on
  // it to the page, and a reconnect would send a keyboard user back to the top.
  // navigate() refuses while offline anyway, and says so.
  const online = socket !== null && socket.readyState === WebSocket.OPEN;
  for (const button of el.controls.querySelectorAll("button")) {
    button.setAttribute("aria-disabled", online ? "false" : "true");
  }
}

function applyState(state) {
  if (typeof state.version !== "number" || state.version < view.version) return; // stale
  const gap = view.version >= 0 && state.version > view.version + 1;
  view.version = state.version;
  el.current.dataset.version = String(state.version);
  renderImage(state.image ?? null);
  if (typeof state.can_control === "boolean") view.canControl = state.can_control;
  let stripKnowsCurrent = true;
  if (Array.isArray(state.neighbours)) {
    view.neighbours = state.neighbours;
  } else {
    stripKnowsCurrent =
      view.imageId === null || view.neighbours.some((n) => n.id === view.imageId);
  }
  renderStrip();
  renderViewers(state.viewers);
  renderControls();
  // A state that arrives by itself after a gap, or whose picture the strip does not
  // hold, may have skipped changes the strip and count depend on: ask for all of it.
  if (!firstStateAfterOpen && (gap || !stripKnowsCurrent)) requestSync();
  firstStateAfterOpen = false;
}

function showNotice(text) {
  el.notice.textContent = text;
  el.notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    el.notice.hidden = true;
    el.notice.textContent = "";
  }, NOTICE_MS);
}

function setConnection(status, text) {
  root.dataset.connection = status;
  el.connection.textContent = text;
  const offline = status === "offline" || status === "closed";
  el.banner.hidden = !offline;
  el.banner.textContent = offline ? text : "";
  renderControls();
}

// --- progress of pictures being made for this terminal ----------------------------

function shortPrompt(image) {
  const text = image.title || image.prompt || "a picture";
  return text.length > PROMPT_PREVIEW_CHARS ? `${text.slice(0, PROMPT_PREVIEW_CHARS)}…` : text;
}

function shownJob(id) {
  return el.jobs.querySelector(`[data-job-id="${CSS.escape(String(id))}"]`);
}

function jobItem(id) {
  let item = shownJob(id);
  if (!item) {
    item = document.createElement("li");
    item.className = "job";
    item.dataset.jobId = String(id);
    el.jobs.append(item);
  }
  return item;
}

function inTheMaking(item) {
  return item.dataset.status === "queued" || item.dataset.status === "generating";
}

function jobsInTheMaking() {
  return [...el.jobs.children].some(inTheMaking);
}

function renderJobsEmpty() {
  el.jobsEmpty.hidden = el.jobs.children.length > 0;
}

function removeJob(item) {
  // A keyboard user on its Dismiss button or its link would otherwise be dropped to
  // the top of the page: the next job takes the focus, or the section's title.
  const hadFocus = item.contains(document.activeElement);
  const next = item.nextElementSibling || item.previousElementSibling;
  item.remove();
  renderJobsEmpty();
  if (hadFocus) (next?.querySelector("a, button") || el.jobsTitle).focus();
}

const JOB_NEWS = {
  queued: (text) => `Queued: ${text}.`,
  ready: (text) => `Ready: ${text}.`,
  failed: (text) => `Could not make ${text}.`,
};

function renderJob(image, { quiet = false } = {}) {
  const item = jobItem(image.id);
  // Said once when a job starts and when it ends, not at every step of its progress.
  const news = !quiet && item.dataset.status !== image.status && JOB_NEWS[image.status];
  if (news) el.jobsAnnounce.textContent = news(`“${shortPrompt(image)}”`);
  item.dataset.status = image.status;
  const label = document.createElement("span");
  label.className = "job__label";
  const parts = [label];

  if (image.status === "failed") {
    label.textContent = `Could not make “${shortPrompt(image)}”: ${image.error || "no reason given."}`;
    const dismiss = document.createElement("button");
    dismiss.type = "button";
    dismiss.className = "job__dismiss";
    dismiss.textContent = "Dismiss";
    dismiss.addEventListener("click", () => removeJob(item));
    parts.push(dismiss);
  } else if (image.status === "ready") {
    const link = document.createElement("a");
    link.href = image.url;
    link.textContent = shortPrompt(image);
    label.append("Ready: ", link);
    setTimeout(() => removeJob(item), READY_JOB_MS);
  } else {
    const progress = Math.max(0, Math.min(100, Number(image.progress) || 0));
    const verb = image.status === "queued" ? "Queued" : "Generating";
    label.textContent = `${verb} “${shortPrompt(image)}” ${progress}%`;
    const bar = document.createElement("progress");
    bar.max = 100;
    bar.value = progress;
    bar.setAttribute("aria-hidden", "true");
    parts.push(bar);
  }
  item.replaceChildren(...parts);
  renderJobsEmpty();
}

// --- messages from the server ------------------------------------------------------

const handlers = {
  "terminal.state": (message) => {
    // The server took this socket: the next drop starts its backoff afresh. Not on
    // "open": a server that accepts only to say it is busy (4503, 4429) would
    // otherwise be asked again every half second.
    attempt = 0;
    syncPending = false;
    applyState(message);
  },
  "terminal.viewers": (message) => renderViewers(message.viewers),
  "image.progress": (message) => {
    const image = message.image;
    if (!image || typeof image.id !== "number") return;
    renderJob(image);
    // A finished picture joins the terminal's collection: refresh the strip and count.
    if (image.status === "ready") requestSync();
  },
  // The jobs as they stand, when the socket opens or the page catches up: progress
  // sent while this page was away never reached it.
  "terminal.jobs": (message) => {
    if (!Array.isArray(message.images)) return;
    const listed = new Set();
    for (const image of message.images) {
      if (!image || typeof image.id !== "number") continue;
      listed.add(image.id);
      const shown = shownJob(image.id);
      // A failure is news to a page that showed the job being made, not to one that
      // never saw it.
      if (image.status === "failed" && !shown) continue;
      renderJob(image, { quiet: !shown });
    }
    // Shown as being made and no longer listed: it ended while this page was away
    // (its picture, if it was made, is in the state).
    for (const item of [...el.jobs.children]) {
      if (inTheMaking(item) && !listed.has(Number(item.dataset.jobId))) removeJob(item);
    }
  },
  error: (message) => {
    syncPending = false;
    showNotice(message.message || "Something went wrong. Please try again.");
  },
};

function onMessage(event) {
  let message;
  try {
    message = JSON.parse(event.data);
  } catch {
    return;
  }
  const handler = message && handlers[message.type];
  if (handler) handler(message);
}

// --- talking to the server ---------------------------------------------------------

function send(message) {
  if (socket === null || socket.readyState !== WebSocket.OPEN) {
    showNotice("Not connected — the change was not sent. Reconnecting…");
    return false;
  }
  socket.send(JSON.stringify(message));
  return true;
}

function requestSync() {
  if (syncPending) return;
  syncPending = send({ type: "terminal.sync" });
}

function navigate(action, imageId) {
  if (!view.canControl || view.imageId === null) return;
  const message = { type: "terminal.navigate", action };
  if (action === "goto") message.image_id = imageId;
  send(message);
}

function socketUrl() {
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${window.location.host}${root.dataset.socketPath}`;
}

function connect() {
  clearTimeout(reconnectTimer);
  reconnectTimer = null;
  if (stopped) return;
  const ws = new WebSocket(socketUrl());
  socket = ws;
  ws.addEventListener("open", () => {
    // The server sends the whole state on connect: that is the re-sync.
    firstStateAfterOpen = true;
    syncPending = false;
    setConnection("open", "Live");
    // Jobs shown as being made may have ended while no socket was open (or before
    // the first one): ask how they stand.
    if (jobsInTheMaking()) syncPending = send({ type: "terminal.sync", jobs: true });
  });
  ws.addEventListener("message", onMessage);
  ws.addEventListener("close", (event) => {
    if (socket !== ws) return;
    socket = null;
    if (FINAL_CLOSE_CODES.has(event.code)) {
      stopped = true;
      setConnection("closed", "This terminal is no longer available to you. Reload to try again.");
      return;
    }
    scheduleReconnect();
  });
}

function scheduleReconnect() {
  // Capped exponential backoff with jitter, so a restarted server is not hit by every
  // viewer at the same instant.
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
  const delay = ceiling / 2 + Math.random() * (ceiling / 2);
  attempt += 1;
  setConnection("offline", "Reconnecting…");
  reconnectTimer = setTimeout(connect, delay);
}

function reconnectNow() {
  if (reconnectTimer !== null) connect();
}

// --- input -------------------------------------------------------------------------

const KEY_ACTIONS = { ArrowRight: "next", ArrowLeft: "previous", Home: "first", End: "last" };

function isTyping(target) {
  return (
    target instanceof HTMLElement &&
    (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName))
  );
}

document.addEventListener("keydown", (event) => {
  const action = KEY_ACTIONS[event.key];
  if (!action || !view.canControl || view.imageId === null || event.defaultPrevented) return;
  if (event.altKey || event.ctrlKey || event.metaKey || event.shiftKey || isTyping(event.target)) {
    return;
  }
  event.preventDefault();
  navigate(action);
});

el.controls.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (button) navigate(button.dataset.action);
});

el.strip.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-image-id]");
  if (button) navigate("goto", Number(button.dataset.imageId));
});

window.addEventListener("online", reconnectNow);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") reconnectNow();
});

// --- start -------------------------------------------------------------------------

const initial = JSON.parse(document.getElementById("terminal-state").textContent);
applyState(initial);
firstStateAfterOpen = true;
// Pictures already being made when the page opened; the socket reports their progress.
for (const job of JSON.parse(document.getElementById("terminal-jobs-now").textContent)) {
  renderJob(job, { quiet: true });
}
connect();
