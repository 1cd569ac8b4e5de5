// Live progress on an image page: poll the status endpoint once a second until the
// picture is ready or has failed, then show it (or the reason) without a reload.
// Polling reads the database, so it works whichever process runs the generator.

const POLL_MS = 1000;
const MAX_BACKOFF_MS = 10000;

const stage = document.getElementById("image-stage");
const statusText = document.getElementById("image-status-text");
const bar = document.getElementById("image-progress");
const badge = document.getElementById("image-status-badge");

const STATUS_LABELS = { queued: "Queued", generating: "Generating", ready: "Ready", failed: "Failed" };

function setBadge(status) {
  if (!badge) return;
  badge.textContent = STATUS_LABELS[status] || status;
  badge.className = `badge badge--${status}`;
}

function showProgress(data) {
  const progress = Math.max(0, Math.min(100, Number(data.progress) || 0));
  if (bar) bar.value = progress;
  statusText.textContent =
    data.status === "queued" ? "Queued — waiting for a free generator…" : `Generating… ${progress}%`;
  setBadge(data.status);
}

function showReady(data) {
  const img = document.createElement("img");
  img.className = "image-page__picture";
  img.src = data.image_url;
  img.alt = data.title;
  if (data.width && data.height) {
    img.width = data.width;
    img.height = data.height;
  }
  const note = document.createElement("p");
  note.className = "visually-hidden";
  note.setAttribute("role", "status");
  note.textContent = "The picture is ready.";
  stage.replaceChildren(img, note);
  setBadge("ready");
}

function showFailed(data) {
  if (bar) bar.remove();
  statusText.textContent = `This picture could not be made: ${data.error || "the generator gave no reason."}`;
  const pending = statusText.closest(".pending");
  if (pending) pending.className = "pending pending--failed";
  setBadge("failed");
}

const handlers = {
  queued: showProgress,
  generating: showProgress,
  ready: showReady,
  failed: showFailed,
};

async function poll(delay) {
  let next = POLL_MS;
  try {
    const response = await fetch(stage.dataset.statusUrl, {
      headers: { Accept: "application/json" },
      cache: "no-store",
    });
    if (!response.ok) throw new Error(`status ${response.status}`);
    const data = await response.json();
    const handler = handlers[data.status];
    if (!handler) throw new Error(`unknown status ${data.status}`);
    delete statusText.dataset.offline;
    handler(data);
    if (data.status === "ready" || data.status === "failed") return;
  } catch (error) {
    // A dropped connection or a restarting server: keep trying, more slowly.
    next = Math.min(delay * 2, MAX_BACKOFF_MS);
    statusText.dataset.offline = "true";
  }
  setTimeout(() => poll(next), next);
}

if (stage && statusText) setTimeout(() => poll(POLL_MS), POLL_MS);
