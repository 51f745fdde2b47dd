// taskstream.js: follow taskstream tasks live over Server-Sent Events.
//
// A small ES module with no dependencies; copy it, or import it from /static/taskstream.js.
// Types: /static/taskstream.d.ts. Guide: docs/frontend.md.
//
//   import { watchTask } from "/static/taskstream.js";
//   const watch = watchTask("report-42", {
//     token,
//     onTask: (task) => render(task),   // the snapshot, then the task after every event
//     onEnd: (task) => done(task),      // after the terminal event; the stream is closed
//   });
//
// What it adds to a bare EventSource:
// - resume: it remembers the last seq and resumes after it, also when it has to open a new
//   EventSource, so nothing is missed and nothing is seen twice;
// - recovery: a browser's EventSource retries by itself after a network error, but gives up for
//   good on an answer that is not a 200 event stream (a proxy's 502, say). Then this module
//   asks the server what the matter is and retries with backoff, or stops where retrying is
//   pointless (401, 403, 404, 204);
// - terminal close: a task's stream is closed after its succeeded/failed/cancelled event;
// - typed callbacks per event type, the task folded from its events, the connection state.

export const EVENT_TYPES = Object.freeze([
  "created",
  "started",
  "progress",
  "log",
  "succeeded",
  "failed",
  "cancelled",
  "cancel_requested",
]);
export const TASK_STATUSES = Object.freeze([
  "pending",
  "running",
  "succeeded",
  "failed",
  "cancelled",
]);
export const TERMINAL_STATUSES = Object.freeze(["succeeded", "failed", "cancelled"]);

const NEXT_STATUS = {
  started: "running",
  progress: "running",
  succeeded: "succeeded",
  failed: "failed",
  cancelled: "cancelled",
};
const RECONNECT_MIN_MS = 1000;
const RECONNECT_MAX_MS = 30000;
const OFFLINE_AFTER_MS = 10000;

/** True once the task has finished (succeeded, failed or cancelled). */
export function isFinished(task) {
  return TERMINAL_STATUSES.includes(task.status);
}

/** The task a `created` event describes, as GET /v1/tasks/{id} would answer right after it. */
export function taskFromCreated(event) {
  const data = event.data || {};
  return {
    id: event.task_id,
    tenant: event.tenant,
    kind: data.kind,
    title: data.title ?? null,
    status: "pending",
    percent: null,
    done: null,
    total: null,
    message: null,
    stage: null,
    result: null,
    error: null,
    metadata: data.metadata ?? null,
    version: event.version,
    last_seq: event.seq,
    created_at: event.time,
    updated_at: event.time,
    started_at: null,
    finished_at: null,
    cancel_requested: false,
    lease_seconds: null,
    elapsed_seconds: null,
    eta_seconds: null,
  };
}

/**
 * The task after `event`, folded as the server folds it: a new object, or `task` itself when
 * the event is one the task already reflects (its seq is not above the task's last_seq).
 * `elapsed_seconds` and `eta_seconds` depend on the clock: they are left as they were.
 */
export function applyEvent(task, event) {
  if (event.seq <= task.last_seq) return task;
  const data = event.data || {};
  const next = {
    ...task,
    version: event.version,
    last_seq: event.seq,
    updated_at: event.time,
  };
  const status = NEXT_STATUS[event.type];
  if (status) next.status = status;
  if (next.status === "running" && next.started_at === null) next.started_at = event.time;
  if (TERMINAL_STATUSES.includes(status)) next.finished_at = event.time;
  switch (event.type) {
    case "progress": {
      for (const name of ["done", "total", "message", "stage"]) {
        if (data[name] !== undefined && data[name] !== null) next[name] = data[name];
      }
      if (typeof data.percent === "number") next.percent = data.percent;
      else if (typeof data.done === "number" && next.total) {
        next.percent = Math.min(100, (data.done * 100) / next.total);
      }
      break;
    }
    case "succeeded":
      next.percent = 100;
      next.result = data.result ?? null;
      break;
    case "failed":
      next.error = data.error ?? null;
      break;
    case "cancel_requested":
      next.cancel_requested = true;
      break;
  }
  return next;
}

/** The claims of a JWT, read without checking its signature (the server checks it), or null. */
export function tokenClaims(token) {
  try {
    const part = token.split(".")[1];
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "===".slice((base64.length + 3) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

/** The scopes a token grants, from its `scope` claim (space-separated). */
export function tokenScopes(token) {
  const scope = tokenClaims(token)?.scope;
  return new Set(typeof scope === "string" ? scope.split(" ").filter(Boolean) : []);
}

/** Follow one task: `snapshot` first (unless resuming), its events, closed after the last. */
export function watchTask(taskId, options = {}) {
  const path = `/v1/tasks/${encodeURIComponent(taskId)}/stream`;
  return new Watch(path, {}, options, true);
}

/**
 * Follow every task of the tenant (GET /v1/stream), optionally filtered. Resume from a
 * listing's `as_of_seq` to see exactly the changes the listing does not show.
 */
export function watchTasks(options = {}) {
  const params = {};
  if (options.taskId) params.task_id = [].concat(options.taskId);
  if (options.type) params.type = [].concat(options.type);
  if (options.kind) params.kind = [].concat(options.kind);
  return new Watch("/v1/stream", params, options, false);
}

class Watch {
  #path;
  #params;
  #options;
  #single;
  #source = null;
  #timer = null;
  #wake = null;
  #recovering = false;
  #offlineTimer = null;
  #outageSince = null;
  #attempts = 0;
  #task = null;
  #state = "connecting";
  #lastEventId;
  #onOnline = () => this.#online();
  #onOffline = () => this.#setState("offline");

  constructor(path, params, options, single) {
    this.#path = path;
    this.#params = params;
    this.#options = options;
    this.#single = single;
    this.#task = options.task ?? null;
    const from = options.lastEventId ?? options.task?.last_seq;
    this.#lastEventId = from === undefined || from === null ? null : Number(from);
    globalThis.addEventListener?.("online", this.#onOnline);
    globalThis.addEventListener?.("offline", this.#onOffline);
    if (single && this.#task && isFinished(this.#task)) {
      queueMicrotask(() => this.#state !== "closed" && this.#end());
    } else {
      this.#open();
    }
  }

  /** The seq of the last event (or snapshot) received: where a new stream would resume. */
  get lastEventId() {
    return this.#lastEventId;
  }

  /** connecting, live, reconnecting, offline, or closed (for good). */
  get state() {
    return this.#state;
  }

  /** The task as folded from the snapshot and the events since (watchTask only). */
  get task() {
    return this.#task;
  }

  /** Stop following; no callback is called afterwards. */
  close() {
    this.#stop();
    this.#state = "closed";
  }

  #url() {
    const base = this.#options.baseUrl ?? globalThis.location?.origin;
    const url = new URL(this.#path, base);
    for (const [name, values] of Object.entries(this.#params)) {
      for (const value of values) url.searchParams.append(name, value);
    }
    if (this.#options.progress === "latest") url.searchParams.set("progress", "latest");
    const { token } = this.#options;
    const value = typeof token === "function" ? token() : token;
    if (value) url.searchParams.set("access_token", value);
    // The browser's own reconnections send Last-Event-ID, which the server prefers to this.
    if (this.#lastEventId !== null) {
      url.searchParams.set("last_event_id", String(this.#lastEventId));
    }
    return url.href;
  }

  #open() {
    const EventSourceClass = this.#options.EventSource ?? globalThis.EventSource;
    const source = new EventSourceClass(this.#url());
    this.#source = source;
    source.onopen = () => {
      if (source !== this.#source) return;
      this.#attempts = 0;
      this.#setState("live");
    };
    source.onerror = () => {
      if (source !== this.#source) return;
      if (source.readyState === 2) this.#recover(); // CLOSED: the browser gave up
      else this.#setState("reconnecting"); // CONNECTING: the browser retries by itself
    };
    const listen = (type, handle) =>
      source.addEventListener(type, (message) => {
        if (source === this.#source) handle(message);
      });
    listen("snapshot", (message) => this.#snapshot(message));
    listen("reset", (message) => this.#reset(message));
    for (const type of EVENT_TYPES) listen(type, (message) => this.#event(message));
  }

  #snapshot(message) {
    const task = JSON.parse(message.data);
    this.#lastEventId = task.last_seq;
    this.#task = task;
    this.#call("onSnapshot", task);
    this.#call("onTask", task);
    if (isFinished(task)) this.#end();
  }

  #event(message) {
    const event = JSON.parse(message.data);
    if (this.#lastEventId !== null && event.seq <= this.#lastEventId) return;
    this.#lastEventId = event.seq;
    this.#options.on?.[event.type]?.(event);
    this.#call("onEvent", event);
    if (this.#state === "closed") return; // a callback closed it
    if (this.#single && this.#task) {
      this.#task = applyEvent(this.#task, event);
      this.#call("onTask", this.#task);
    }
    if (this.#single && TERMINAL_STATUSES.includes(event.type)) this.#end();
  }

  #reset(message) {
    // Events up to the watermark were pruned: what the caller holds may lack some of them, so
    // it must reload its state. A task's stream does that itself: it starts over without a
    // resume position, which sends a fresh snapshot.
    const reset = JSON.parse(message.data);
    this.#call("onReset", reset);
    if (this.#state === "closed") return;
    if (this.#single) {
      this.#lastEventId = null;
      this.#source.close();
      this.#open();
    } else {
      this.#lastEventId = Math.max(this.#lastEventId ?? 0, reset.pruned_through_seq);
    }
  }

  #end() {
    this.#stop();
    this.#state = "closed";
    this.#call("onState", "closed");
    this.#call("onEnd", this.#task);
  }

  #stop() {
    this.#source?.close();
    this.#source = null;
    clearTimeout(this.#timer);
    clearTimeout(this.#offlineTimer);
    this.#wake?.();
    globalThis.removeEventListener?.("online", this.#onOnline);
    globalThis.removeEventListener?.("offline", this.#onOffline);
  }

  #online() {
    if (this.#state === "closed") return;
    this.#setState("reconnecting");
    if (this.#recovering) {
      this.#wake?.(); // a recovery waiting out its backoff tries at once
    } else {
      // Back online: the old connection may be dead without knowing it (nothing tells an
      // EventSource that a silent TCP connection is gone), so a new one resumes from here.
      this.#source?.close();
      this.#open();
    }
  }

  // The EventSource is closed for good: ask the server why, with the same request, then
  // retry after a backoff, or stop where a retry cannot succeed.
  async #recover() {
    this.#source?.close();
    this.#source = null;
    if (this.#state === "closed") return;
    this.#recovering = true;
    this.#setState("reconnecting");
    const delay = this.#backoff();
    this.#attempts += 1;
    await new Promise((resolve) => {
      this.#wake = resolve;
      this.#timer = setTimeout(resolve, delay);
    });
    this.#wake = null;
    const { status, problem } =
      this.#state === "closed" ? { status: -1, problem: null } : await this.#ask();
    this.#recovering = false;
    if (this.#state === "closed") return;
    if (status === 204) {
      this.#end(); // a finished task with nothing after our position
    } else if (status === 401 || status === 403 || status === 404) {
      this.#stop();
      this.#state = "closed";
      this.#call("onState", "closed");
      this.#call("onError", { status, problem });
    } else if (status === 200) {
      this.#open();
    } else {
      if (status === 429) this.#attempts = Math.max(this.#attempts, 4);
      this.#recover();
    }
  }

  // The answer's status (0 when the server cannot be reached) and problem, then hang up.
  async #ask() {
    const fetcher = this.#options.fetch ?? globalThis.fetch.bind(globalThis);
    const abort = new AbortController();
    try {
      const response = await fetcher(this.#url(), {
        headers: { Accept: "text/event-stream" },
        cache: "no-store",
        signal: abort.signal,
      });
      const problem = response.status >= 400 ? await response.json().catch(() => null) : null;
      return { status: response.status, problem };
    } catch {
      return { status: 0, problem: null };
    } finally {
      abort.abort();
    }
  }

  // No wait the first time (the cause may be a 204 or 401 to learn at once), then 1 s, 2 s,
  // 4 s ... up to 30 s, each with jitter so that many pages do not come back in step.
  #backoff() {
    if (this.#attempts === 0) return 0;
    const ceiling = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** (this.#attempts - 1));
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  // reconnecting turns into offline once the outage has lasted OFFLINE_AFTER_MS, or at once
  // when the browser knows it is offline; it stays so until the stream is live again.
  #setState(state) {
    if (this.#state === "closed") return;
    clearTimeout(this.#offlineTimer);
    if (state === "reconnecting" || state === "offline") {
      this.#outageSince ??= Date.now();
      const waited = Date.now() - this.#outageSince;
      if (globalThis.navigator?.onLine === false || waited >= OFFLINE_AFTER_MS) {
        state = "offline";
      } else if (state === "reconnecting") {
        const wait = OFFLINE_AFTER_MS - waited;
        this.#offlineTimer = setTimeout(() => this.#setState("reconnecting"), wait);
      }
    } else {
      this.#outageSince = null;
    }
    if (state === this.#state) return;
    this.#state = state;
    this.#call("onState", state);
  }

  #call(name, value) {
    this.#options[name]?.(value);
  }
}
