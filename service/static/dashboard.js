// The dashboard at /: the tenant's tasks, live through one EventSource on /v1/stream.
//
// State lives in `tasks` (id -> entry) and is updated as each event arrives; the DOM is
// updated once per animation frame for whatever changed since the last one (`dirty`), so a
// burst of events costs one style and layout pass, not one per event.

import {
  applyEvent,
  isFinished,
  taskFromCreated,
  tokenClaims,
  tokenScopes,
  watchTasks,
} from "./taskstream.js";

const TOKEN_KEY = "taskstream.token";
const PAGE_SIZE = 1000;
const MAX_TASKS = 10000;
const LOG_LIMIT = 500;
const PACE_SAMPLES = 10;
const ANNOUNCE_EVERY_MS = 2000;
const CONNECTION_TEXT = {
  idle: "Not connected",
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  offline: "Offline, retrying",
  closed: "Disconnected",
};

const $ = (id) => document.getElementById(id);
const rows = $("task-rows");
const rowTemplate = $("row-template");
const statusFilter = $("filter-status");
const kindFilter = $("filter-kind");
const dialog = $("detail");

let token = null;
let scopes = new Set();
let watch = null;
let generation = 0; // bumped by every (re)load: answers of an older one are dropped
let retryTimer = 0;
let loadAttempts = 0;
let truncated = false;
let clockOffset = 0; // the server's clock minus ours, in ms
let clockSeeded = false;

const tasks = new Map();
const kinds = new Set();
const counts = new Map();
const dirty = new Set();
let fresh = []; // entries of tasks created since the last frame, oldest first
let frame = 0;
let summaryDirty = true;
let finishedSinceAnnounce = [];
let announceTimer = 0;
let detail = null;
let wantedKind = "";

// ------------------------------------------------------------------------------ start

// A token in the fragment (#token=...), taken out of the address bar, the history and any
// screenshot of them; null when there is none.
function tokenFromFragment() {
  const value = new URLSearchParams(location.hash.slice(1)).get("token");
  if (value) history.replaceState(null, "", location.pathname + location.search);
  return value;
}

function start() {
  const fromUrl = tokenFromFragment();
  if (fromUrl) sessionStorage.setItem(TOKEN_KEY, fromUrl);
  window.addEventListener("hashchange", () => {
    const value = tokenFromFragment();
    if (value) signIn(value);
  });
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("token-input").value.trim());
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  statusFilter.addEventListener("change", applyFilters);
  kindFilter.addEventListener("change", applyFilters);
  rows.addEventListener("click", (event) => {
    const button = event.target.closest("button.open");
    if (button) openDetail(button.closest(".task-row").dataset.id, button);
  });
  $("detail-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", closeDetail);
  $("cancel").addEventListener("click", requestCancel);
  setInterval(tick, 1000);
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved);
  else signOut("");
}

function signIn(value) {
  const claims = tokenClaims(value);
  if (!claims || typeof claims.tenant !== "string") {
    signOut("That is not a taskstream token (a JWT with a tenant claim).");
    return;
  }
  if (typeof claims.exp === "number" && claims.exp * 1000 < Date.now()) {
    signOut("That token has expired; mint a new one.");
    return;
  }
  scopes = tokenScopes(value);
  if (!scopes.has("tasks:read")) {
    signOut("That token lacks the tasks:read scope, which the dashboard needs.");
    return;
  }
  token = value;
  sessionStorage.setItem(TOKEN_KEY, value);
  const who = $("who");
  who.textContent = `tenant ${claims.tenant} · ${claims.sub ?? "?"} · ${[...scopes].join(" ")}`;
  who.hidden = false;
  $("sign-in").hidden = true;
  $("sign-out").hidden = false;
  $("board").hidden = false;
  load();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  token = null;
  generation += 1;
  watch?.close();
  watch = null;
  clearTimeout(retryTimer);
  if (dialog.open) dialog.close();
  statusFilter.value = kindFilter.value = "";
  clearTasks();
  showSignIn(message);
}

function showSignIn(message) {
  $("board").hidden = true;
  $("who").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  $("token-error").textContent = message;
  setConnection("idle");
  $("token-input").value = "";
  $("token-input").focus();
}

// ------------------------------------------------------------------------------ the API

class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || `HTTP ${status}`);
    this.status = status;
  }
}

async function api(path, init = {}) {
  const response = await fetch(path, {
    ...init,
    headers: { Authorization: `Bearer ${token}`, Accept: "application/json", ...init.headers },
    cache: "no-store",
  });
  if (!response.ok) {
    throw new ApiError(response.status, await response.json().catch(() => null));
  }
  const date = Date.parse(response.headers.get("Date") ?? "");
  if (!Number.isNaN(date)) observeClock(date + 500);
  return response.json();
}

function refused(error) {
  if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
    signOut(`The server refused the token: ${error.message}`);
    return true;
  }
  return false;
}

// ------------------------------------------------------------------------------ loading

// The listing, then one stream resumed from the first page's as_of_seq: the stream sends
// exactly the changes the listing does not show. Later pages may be newer than that position;
// events a task already reflects are skipped by their seq (applyEvent).
async function load() {
  const mine = ++generation;
  watch?.close();
  watch = null;
  clearTimeout(retryTimer);
  setConnection(loadAttempts ? "reconnecting" : "connecting");
  const items = [];
  let first = null;
  let cursor = null;
  try {
    do {
      const query = `limit=${PAGE_SIZE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
      const page = await api(`/v1/tasks?${query}`);
      if (mine !== generation) return;
      first ??= page;
      items.push(...page.items);
      cursor = page.next_cursor;
    } while (cursor && items.length < MAX_TASKS);
  } catch (error) {
    if (mine !== generation || refused(error)) return;
    // The server is away (or not ready): try again, backing off, and say so.
    loadAttempts += 1;
    setConnection(loadAttempts > 3 ? "offline" : "reconnecting");
    const delay = Math.min(30000, 500 * 2 ** loadAttempts) * (0.5 + Math.random() / 2);
    retryTimer = setTimeout(() => mine === generation && load(), delay);
    return;
  }
  loadAttempts = 0;
  truncated = cursor !== null;
  clearTasks();
  const listedAt = Date.now();
  for (const task of items) {
    const entry = addTask(task, listedAt);
    rows.append(entry.row);
  }
  applyFilters(); // the kind chosen before a reload is back among the options now
  schedule();
  watch = watchTasks({
    token,
    lastEventId: first.as_of_seq,
    progress: "latest",
    onEvent,
    onState: setConnection,
    onReset: () => load(), // history was pruned under us: start over from a fresh listing
    onError: ({ status, problem }) => {
      if (status !== 401 && status !== 403) setConnection("closed");
      else signOut(`The server refused the token: ${problem?.detail ?? status}`);
    },
  });
  if (detail) loadHistory(detail);
}

function clearTasks() {
  tasks.clear();
  counts.clear();
  dirty.clear();
  fresh = [];
  rows.replaceChildren();
  // The kinds come back with the tasks; a kind that was chosen stays chosen.
  kinds.clear();
  wantedKind = kindFilter.value;
  for (const option of [...kindFilter.options].slice(1)) option.remove();
  summaryDirty = true;
}

function addTask(task, listedAt) {
  const row = rowTemplate.content.firstElementChild.cloneNode(true);
  row.dataset.id = task.id;
  const entry = {
    task,
    row,
    shown: {},
    pace: [],
    listedEta: task.eta_seconds,
    listedAt,
    cells: {
      title: row.querySelector(".title"),
      id: row.querySelector(".id"),
      kind: row.querySelector(".kind"),
      badge: row.querySelector(".badge"),
      flag: row.querySelector(".flag"),
      meter: row.querySelector(".meter"),
      fill: row.querySelector(".fill"),
      percent: row.querySelector(".percent"),
      message: row.querySelector(".c-message"),
      stage: row.querySelector(".c-stage"),
      elapsed: row.querySelector(".c-elapsed .value"),
      eta: row.querySelector(".c-eta .value"),
    },
  };
  entry.cells.title.textContent = task.title || task.id;
  entry.cells.id.textContent = task.id;
  entry.cells.kind.textContent = task.kind;
  entry.cells.meter.setAttribute("aria-label", `Progress of ${task.title || task.id}`);
  if (task.status === "running" && task.elapsed_seconds !== null && task.started_at) {
    observeClock(Date.parse(task.started_at) + task.elapsed_seconds * 1000);
  }
  tasks.set(task.id, entry);
  count(task.status, 1);
  addKind(task.kind);
  paint(entry);
  return entry;
}

// ------------------------------------------------------------------------------ events

function onEvent(event) {
  observeClock(Date.parse(event.time));
  let entry = tasks.get(event.task_id);
  if (!entry) {
    // Only a created event introduces a task; others are of tasks beyond the listing's cap.
    if (event.type !== "created") return;
    entry = addTask(taskFromCreated(event), Date.now());
    fresh.push(entry);
  } else {
    const before = entry.task;
    const after = applyEvent(before, event);
    if (after === before) return;
    entry.task = after;
    if (after.status !== before.status) {
      count(before.status, -1);
      count(after.status, 1);
      if (isFinished(after)) finished(after);
    }
    if (event.type === "progress" && after.percent !== null) {
      entry.pace.push({ time: Date.parse(event.time), percent: after.percent, at: Date.now() });
      if (entry.pace.length > PACE_SAMPLES) entry.pace.shift();
    }
    dirty.add(entry);
  }
  if (detail && detail.id === event.task_id) {
    detail.pending.push(event);
    if (detail.pending.length > LOG_LIMIT) detail.pending.shift();
  }
  schedule();
}

function count(status, delta) {
  counts.set(status, (counts.get(status) ?? 0) + delta);
  summaryDirty = true;
}

function addKind(kind) {
  if (kinds.has(kind)) return;
  kinds.add(kind);
  const option = new Option(kind, kind, false, kind === wantedKind);
  const after = [...kindFilter.options].slice(1).find((o) => o.value.localeCompare(kind) > 0);
  kindFilter.add(option, after ?? null);
}

function finished(task) {
  finishedSinceAnnounce.push(task);
  if (!announceTimer) announceTimer = setTimeout(announce, ANNOUNCE_EVERY_MS);
}

// Screen readers hear finished tasks, a few words every couple of seconds at most.
function announce() {
  announceTimer = 0;
  const done = finishedSinceAnnounce;
  finishedSinceAnnounce = [];
  if (!done.length) return;
  $("announcer").textContent =
    done.length === 1
      ? `${done[0].title || done[0].id} ${done[0].status}.`
      : `${done.length} tasks finished.`;
}

// ------------------------------------------------------------------------------ painting

function schedule() {
  if (!frame) frame = requestAnimationFrame(flush);
}

function flush() {
  frame = 0;
  if (fresh.length) {
    const fragment = document.createDocumentFragment();
    for (let i = fresh.length - 1; i >= 0; i -= 1) fragment.append(fresh[i].row);
    rows.prepend(fragment);
    fresh = [];
  }
  for (const entry of dirty) paint(entry);
  dirty.clear();
  if (summaryDirty) paintSummary();
  if (detail) paintDetail();
}

function paint(entry) {
  const { task, shown, cells, row } = entry;
  if (shown.status !== task.status) {
    row.dataset.status = task.status;
    cells.badge.textContent = task.status;
    row.hidden = !matches(task);
  }
  const percent = task.percent ?? 0;
  if (shown.percent !== task.percent) {
    cells.fill.style.transform = `scaleX(${percent / 100})`;
    cells.meter.setAttribute("aria-valuenow", String(Math.round(percent)));
    cells.percent.textContent = task.percent === null ? "—" : `${formatPercent(task.percent)}%`;
  }
  if (shown.message !== task.message) {
    cells.message.textContent = task.message ?? "";
    cells.message.title = task.message ?? "";
  }
  if (shown.stage !== task.stage) cells.stage.textContent = task.stage ?? "";
  const cancelling = task.cancel_requested && !isFinished(task);
  if (shown.cancel !== cancelling) cells.flag.hidden = !cancelling;
  entry.shown = {
    status: task.status,
    percent: task.percent,
    message: task.message,
    stage: task.stage,
    cancel: cancelling,
  };
  paintClock(entry, Date.now());
}

function paintClock(entry, now) {
  const elapsed = formatDuration(elapsedSeconds(entry, now));
  const eta = formatDuration(etaSeconds(entry, now));
  const { shown, cells } = entry;
  if (shown.elapsed !== elapsed) cells.elapsed.textContent = shown.elapsed = elapsed;
  if (shown.eta !== eta) cells.eta.textContent = shown.eta = eta;
}

// Elapsed and ETA move with the clock: once a second, for the running tasks.
function tick() {
  const now = Date.now();
  for (const entry of tasks.values()) {
    if (entry.task.status === "running" || entry.shown.eta !== "—") paintClock(entry, now);
  }
  if (detail) paintDetailClock(now);
}

function paintSummary() {
  summaryDirty = false;
  const total = tasks.size;
  let visible = 0;
  for (const entry of tasks.values()) if (!entry.row.hidden) visible += 1;
  const parts = ["pending", "running", "succeeded", "failed", "cancelled"]
    .filter((status) => counts.get(status))
    .map((status) => `${counts.get(status)} ${status}`);
  const filtered = visible !== total ? `showing ${visible} of ` : "";
  const more = truncated ? ` (the newest ${total}; older tasks are not shown)` : "";
  $("summary").textContent = `${filtered}${total} task${total === 1 ? "" : "s"}${more}${
    parts.length ? ": " + parts.join(", ") : ""
  }`;
  const empty = $("empty");
  empty.hidden = visible > 0;
  empty.textContent = total
    ? "No task matches the filters."
    : "No tasks yet. They appear here as soon as a worker creates one.";
}

function matches(task) {
  return (
    (!statusFilter.value || task.status === statusFilter.value) &&
    (!kindFilter.value || task.kind === kindFilter.value)
  );
}

function applyFilters() {
  for (const entry of tasks.values()) entry.row.hidden = !matches(entry.task);
  paintSummary();
}

// ------------------------------------------------------------------------------ clock

function observeClock(serverTime) {
  // An event's time is at most "now" on the server when it reaches us: the largest offset
  // seen is the best estimate (a listing's Date header seeds it, to the second).
  const offset = serverTime - Date.now();
  if (offset > clockOffset || !clockSeeded) clockOffset = offset;
  clockSeeded = true;
}

function elapsedSeconds(entry, now) {
  const { task } = entry;
  if (!task.started_at) return null;
  const end = task.finished_at ? Date.parse(task.finished_at) : now + clockOffset;
  return Math.max(0, (end - Date.parse(task.started_at)) / 1000);
}

// The rate of the last few progress events seen, extrapolated to 100 %, less the time since
// the newest of them (as the server works it out); before two of them arrive, the listing's.
function etaSeconds(entry, now) {
  const { task, pace } = entry;
  if (task.status !== "running" || task.percent === null || task.percent >= 100) return null;
  if (pace.length >= 2) {
    const first = pace[0];
    const last = pace[pace.length - 1];
    if (last.time > first.time && last.percent > first.percent) {
      const rate = (last.percent - first.percent) / (last.time - first.time);
      return Math.max(0, (100 - task.percent) / rate / 1000 - (now - last.at) / 1000);
    }
  }
  if (entry.listedEta !== null && entry.listedEta !== undefined) {
    return Math.max(0, entry.listedEta - (now - entry.listedAt) / 1000);
  }
  return null;
}

function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  const minutes = String(Math.floor(s / 60) % 60).padStart(2, "0");
  if (s < 86400) return `${Math.floor(s / 3600)}h ${minutes}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor(s / 3600) % 24}h`;
}

// 42 %, 42 % for 42.4, 7.5 % below ten: as many digits as say something.
function formatPercent(value) {
  if (Number.isInteger(value) || value >= 10) return String(Math.round(value));
  return value.toFixed(1);
}

// ------------------------------------------------------------------------------ connection

function setConnection(state) {
  const element = $("connection");
  if (element.dataset.state === state) return;
  element.dataset.state = state;
  $("connection-text").textContent = CONNECTION_TEXT[state] ?? state;
  // A stream that was refused for good (not the token: that signs out) is retried by a reload.
  if (state === "closed" && token) {
    const mine = generation;
    retryTimer = setTimeout(() => mine === generation && load(), 5000);
  }
}

// ------------------------------------------------------------------------------ detail view

// History first, then live: events of this task that the stream delivers while the history
// loads are kept in `pending`, and whatever the history already holds is dropped by seq.
function openDetail(id, opener) {
  const entry = tasks.get(id);
  if (!entry) return;
  detail = { id, opener, pending: [], lastSeq: 0, loaded: false, shown: {}, liveText: "" };
  $("detail-title").textContent = entry.task.title || entry.task.id;
  $("log").replaceChildren();
  $("log-note").textContent = "Loading the history…";
  $("cancel-note").textContent = "";
  paintDetail();
  if (!dialog.open) dialog.showModal();
  loadHistory(detail);
}

async function loadHistory(view) {
  const items = [];
  let after = 0;
  let skipped = 0;
  view.loaded = false;
  try {
    for (;;) {
      const path = `/v1/tasks/${encodeURIComponent(view.id)}/events`;
      const page = await api(`${path}?after=${after}&limit=1000`);
      if (detail !== view) return;
      items.push(...page.items);
      if (items.length > LOG_LIMIT) skipped += items.splice(0, items.length - LOG_LIMIT).length;
      if (page.next_after === null) break;
      after = page.next_after;
    }
  } catch (error) {
    if (detail !== view || refused(error)) return;
    $("log-note").textContent = `The history could not be loaded: ${error.message}`;
    return;
  }
  view.lastSeq = items.length ? items[items.length - 1].seq : 0;
  view.loaded = true;
  $("log").replaceChildren(...items.map(logItem));
  $("log-note").textContent = skipped
    ? `The ${skipped} oldest events are not shown.`
    : "";
  paintDetail();
}

function closeDetail() {
  const opener = detail?.opener;
  detail = null;
  if (opener?.isConnected) opener.focus();
}

function paintDetail() {
  const entry = tasks.get(detail.id);
  if (!entry) return;
  const { task } = entry;
  const shown = detail.shown;
  if (shown.task !== task) {
    shown.task = task;
    const status = $("detail-status");
    status.textContent = task.status;
    status.dataset.status = task.status;
    $("detail-progress").dataset.status = task.status;
    const percent = task.percent ?? 0;
    $("detail-meter").querySelector(".fill").style.transform = `scaleX(${percent / 100})`;
    $("detail-meter").setAttribute("aria-valuenow", String(Math.round(percent)));
    $("detail-percent").textContent =
      task.percent === null ? "—" : `${formatPercent(task.percent)}%`;
    paintFields(entry);
    paintCancel(task);
    // What a screen reader hears: the status, and progress in steps of 10 %.
    const step = task.percent === null ? "" : `, ${Math.floor(task.percent / 10) * 10}%`;
    const live = `${task.status}${step}`;
    if (live !== detail.liveText) {
      detail.liveText = live;
      $("detail-live").textContent = `${task.title || task.id}: ${live}`;
    }
  }
  if (detail.loaded && detail.pending.length) {
    const log = $("log");
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    const fresh = detail.pending.filter((event) => event.seq > detail.lastSeq);
    detail.pending = [];
    if (fresh.length) {
      detail.lastSeq = fresh[fresh.length - 1].seq;
      log.append(...fresh.map(logItem));
      while (log.childElementCount > LOG_LIMIT) log.firstElementChild.remove();
      if (atBottom) log.scrollTop = log.scrollHeight;
    }
  }
}

function paintFields(entry) {
  const { task } = entry;
  const fields = [
    ["Id", task.id],
    ["Kind", task.kind],
    ["Message", task.message],
    ["Stage", task.stage],
    ["Done", task.done === null ? null : task.total ? `${task.done} of ${task.total}` : task.done],
    ["Elapsed", formatDuration(elapsedSeconds(entry, Date.now())), "elapsed"],
    ["ETA", formatDuration(etaSeconds(entry, Date.now())), "eta"],
    ["Created", formatTime(task.created_at)],
    ["Started", formatTime(task.started_at)],
    ["Finished", formatTime(task.finished_at)],
    ["Result", task.result, "json"],
    ["Error", task.error, "json"],
    ["Metadata", task.metadata, "json"],
  ];
  const list = [];
  for (const [name, value, kind] of fields) {
    if (value === null || value === undefined || value === "") continue;
    const term = document.createElement("dt");
    term.textContent = name;
    const definition = document.createElement("dd");
    if (kind === "json") {
      const pre = document.createElement("pre");
      pre.textContent = JSON.stringify(value, null, 2);
      definition.append(pre);
    } else {
      definition.textContent = String(value);
      if (kind) definition.dataset.clock = kind;
    }
    list.push(term, definition);
  }
  $("detail-fields").replaceChildren(...list);
}

function paintDetailClock(now) {
  const entry = tasks.get(detail.id);
  if (!entry) return;
  for (const definition of $("detail-fields").querySelectorAll("[data-clock]")) {
    const seconds =
      definition.dataset.clock === "elapsed" ? elapsedSeconds(entry, now) : etaSeconds(entry, now);
    definition.textContent = formatDuration(seconds);
  }
}

function paintCancel(task) {
  const button = $("cancel");
  const allowed = scopes.has("tasks:write") || scopes.has("tasks:cancel");
  button.hidden = !allowed || isFinished(task);
  button.disabled = task.cancel_requested || detail.cancelling === true;
  button.textContent = task.cancel_requested ? "Cancellation requested" : "Request cancellation";
}

async function requestCancel() {
  const view = detail;
  if (!view) return;
  view.cancelling = true;
  $("cancel").disabled = true;
  $("cancel-note").textContent = "Asking the task's worker to stop…";
  try {
    await api(`/v1/tasks/${encodeURIComponent(view.id)}/cancel`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ reason: "requested from the dashboard" }),
    });
    if (detail === view) {
      $("cancel-note").textContent =
        "Cancellation requested: the task stops when its worker acknowledges it.";
    }
  } catch (error) {
    if (refused(error)) return;
    if (detail === view) $("cancel-note").textContent = `Cancellation failed: ${error.message}`;
  } finally {
    view.cancelling = false;
    if (detail === view) {
      view.shown.task = null;
      paintDetail();
    }
  }
}

function logItem(event) {
  const item = document.createElement("li");
  item.dataset.type = event.type;
  const seq = document.createElement("span");
  seq.className = "seq";
  seq.textContent = `#${event.seq}`;
  const time = document.createElement("time");
  time.dateTime = event.time;
  time.textContent = new Date(event.time).toLocaleTimeString([], { hour12: false });
  const type = document.createElement("span");
  type.className = "type";
  type.textContent = event.type;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = describe(event);
  item.append(seq, time, type, text);
  return item;
}

function describe(event) {
  const data = event.data || {};
  switch (event.type) {
    case "created":
      return [data.kind, data.title].filter(Boolean).join(": ");
    case "started":
      return data.worker ? `by ${data.worker}` : "";
    case "progress": {
      const parts = [];
      if (typeof data.percent === "number") parts.push(`${formatPercent(data.percent)}%`);
      if (typeof data.done === "number") {
        parts.push(data.total ? `${data.done}/${data.total}` : `${data.done} done`);
      }
      if (data.stage) parts.push(`[${data.stage}]`);
      if (data.message) parts.push(data.message);
      return parts.join(" ");
    }
    case "log":
      return `${data.level}: ${data.message}`;
    case "succeeded":
      return data.result === undefined || data.result === null
        ? ""
        : short(JSON.stringify(data.result));
    case "failed":
      return [data.error?.message, data.error?.code && `(${data.error.code})`]
        .filter(Boolean)
        .join(" ");
    default:
      return data.reason ?? "";
  }
}

function short(text) {
  return text.length > 200 ? `${text.slice(0, 199)}…` : text;
}

function formatTime(value) {
  return value ? new Date(value).toLocaleString([], { hour12: false }) : null;
}

start();
