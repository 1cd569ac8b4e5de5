// Live progress on an image page: poll the status endpoint once a second until the
// picture is ready or has failed, then show the finished page without a reload.
// Polling reads the database, so it works whichever process runs the generator.
//
// A finished picture gains a title, a description, a size and a download link that the
// pending page never had. Rather than rebuild each of them here, the script fetches the
// page itself and swaps in the server-rendered article, so the result is exactly what a
// reload would show.

const POLL_MS = 1000;
const MAX_BACKOFF_MS = 10000;
const FINISHED = new Set(["ready", "failed"]);

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

// Used only when the finished page cannot be fetched: the picture or the reason at
// least, from the status answer.
function showReady(data) {
  const img = document.createElement("img");
  img.className = "image-page__picture";
  img.src = data.image_url;
  img.alt = data.title;
  if (data.width && data.height) {
    img.width = data.width;
    img.height = data.height;
  }
  stage.replaceChildren(img);
  const title = document.getElementById("image-title");
  if (title && data.title) title.textContent = data.title;
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

// Screen readers hear the outcome once, from a live region that outlives the swap (the
// template renders it empty beside the article; made here only if a page lacks it).
function announce(text) {
  let region = document.getElementById("image-announcement");
  if (!region) {
    region = document.createElement("p");
    region.id = "image-announcement";
    region.className = "visually-hidden";
    region.setAttribute("role", "status");
    document.body.append(region);
  }
  region.textContent = text;
}

// The page as the server renders it now; null when it cannot be had (offline, an error
// page, a changed layout), in which case the caller keeps its own rendering.
async function fetchFinishedArticle() {
  try {
    const response = await fetch(window.location.pathname, {
      headers: { Accept: "text/html" },
      cache: "no-store",
    });
    if (!response.ok) return null;
    // Our own server-rendered page, parsed inert (its scripts never run).
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    const article = fresh.querySelector("article.image-page");
    return article ? { article, title: fresh.title } : null;
  } catch {
    return null;
  }
}

// A keyboard user resting inside the article when it is swapped keeps their place: the
// same link or control in the new one, else its title.
function focusWithin(article) {
  const active = document.activeElement;
  if (!active || active === article || !article.contains(active)) return null;
  return { id: active.id, href: active.getAttribute("href"), text: active.textContent };
}

function focusAgain(article, { id, href, text }) {
  const candidates = [...article.querySelectorAll("a[href], button, input, select, textarea")];
  const sameLink = (node) => href !== null && node.getAttribute("href") === href;
  const same =
    (id && article.querySelector(`#${CSS.escape(id)}`)) ||
    candidates.find((node) => sameLink(node) && node.textContent === text) ||
    candidates.find(sameLink);
  if (same) {
    same.focus();
    return;
  }
  const title = article.querySelector("h1");
  if (title) {
    title.tabIndex = -1;
    title.focus();
  }
}

async function finish(data) {
  const finished = await fetchFinishedArticle();
  const current = document.querySelector("article.image-page");
  if (finished && current) {
    const focus = focusWithin(current);
    const fresh = document.importNode(finished.article, true);
    current.replaceWith(fresh);
    if (finished.title) document.title = finished.title;
    if (focus) focusAgain(fresh, focus);
  } else {
    handlers[data.status](data);
  }
  announce(data.status === "ready" ? "The picture is ready." : "The picture could not be made.");
}

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
    if (FINISHED.has(data.status)) {
      await finish(data);
      return;
    }
    handler(data);
  } catch (error) {
    // A dropped connection or a restarting server: keep trying, more slowly, and say so
    // (in the live region), so a frozen percentage is not taken for a stuck picture.
    next = Math.min(delay * 2, MAX_BACKOFF_MS);
    if (!statusText.dataset.offline) {
      statusText.dataset.offline = "true";
      statusText.textContent = `${statusText.textContent.trim()} Connection lost — retrying…`;
    }
  }
  setTimeout(() => poll(next), next);
}

if (stage && statusText) setTimeout(() => poll(POLL_MS), POLL_MS);
