// Type declarations of /static/taskstream.js and of what the taskstream API sends.
// tests/test_dashboard_types.py holds them to the service's OpenAPI document and event models.

/** Where a task is in its life. */
export type TaskStatus = "pending" | "running" | "succeeded" | "failed" | "cancelled";

/** Every event type a stream or history may carry. */
export type EventType =
  | "created"
  | "started"
  | "progress"
  | "log"
  | "succeeded"
  | "failed"
  | "cancelled"
  | "cancel_requested";

/** A task's current state (GET /v1/tasks/{id}, a listing's items, a stream's snapshot). */
export interface Task {
  id: string;
  tenant: string;
  kind: string;
  title: string | null;
  status: TaskStatus;
  /** 0..100 */
  percent: number | null;
  done: number | null;
  total: number | null;
  message: string | null;
  stage: string | null;
  /** The `result` of the succeeded event. */
  result: unknown;
  /** The `error` of the failed event, e.g. `{ message, code }`. */
  error: Record<string, unknown> | null;
  metadata: Record<string, unknown> | null;
  /** 1 for created, +1 per event. */
  version: number;
  /** The seq of the task's newest event. */
  last_seq: number;
  /** RFC 3339, UTC, microseconds: "2026-11-28T01:02:03.000000Z". */
  created_at: string;
  updated_at: string;
  started_at: string | null;
  finished_at: string | null;
  /** A cancel was requested (it stays true after the task finishes). */
  cancel_requested: boolean;
  lease_seconds: number | null;
  /** Run time so far (or in all, once finished), when the task was read. */
  elapsed_seconds: number | null;
  /** Seconds to 100 % at the recent pace, when the task was read; null unless running. */
  eta_seconds: number | null;
}

export interface CreatedData {
  kind: string;
  title?: string | null;
  metadata?: Record<string, unknown> | null;
}

export interface StartedData {
  worker?: string | null;
}

/** percent or done is always given; percent is derived from done and total when absent. */
export interface ProgressData {
  percent?: number | null;
  done?: number | null;
  total?: number | null;
  message?: string | null;
  stage?: string | null;
}

export interface LogData {
  level: "debug" | "info" | "warning" | "error";
  message: string;
}

export interface SucceededData {
  result?: unknown;
}

export interface ErrorInfo {
  message: string;
  code?: string | null;
}

export interface FailedData {
  error: ErrorInfo;
}

export interface CancelledData {
  reason?: string | null;
}

export interface CancelRequestedData {
  reason?: string | null;
}

/** Each event type's `data`. Members beyond these are kept as the worker sent them. */
export interface EventDataMap {
  created: CreatedData;
  started: StartedData;
  progress: ProgressData;
  log: LogData;
  succeeded: SucceededData;
  failed: FailedData;
  cancelled: CancelledData;
  cancel_requested: CancelRequestedData;
}

/** One event of type T. */
export interface TaskEventOf<T extends EventType> {
  /** Global position: strictly increasing, the SSE `id:`. */
  seq: number;
  task_id: string;
  tenant: string;
  version: number;
  type: T;
  data: EventDataMap[T];
  /** RFC 3339, UTC, microseconds. */
  time: string;
}

/** Any event; narrow it with `event.type`. */
export type TaskEvent = { [T in EventType]: TaskEventOf<T> }[EventType];

/** GET /v1/tasks */
export interface TaskPage {
  items: Task[];
  next_cursor: string | null;
  /** Resume /v1/stream from here to see exactly the changes this listing does not show. */
  as_of_seq: number;
}

/** GET /v1/tasks/{id}/events and GET /v1/events */
export interface EventPage {
  items: TaskEvent[];
  next_after: number | null;
}

/** `event: reset`: history up to the watermark was pruned; reload state. */
export interface ResetData {
  reason: "history_pruned";
  pruned_through_seq: number;
}

/** live: the stream is open. reconnecting: lost, retrying. offline: the browser is offline or
 * the server has not answered for 10 s (still retrying). closed: stopped for good. */
export type ConnectionState = "connecting" | "live" | "reconnecting" | "offline" | "closed";

/** A stream given up because retrying cannot help (401, 403, 404). */
export interface StreamError {
  status: number;
  /** The problem+json body, when there was one. */
  problem: { type: string; title: string; status: number; detail: string; code: string } | null;
}

/** Typed callbacks, one per event type. */
export type EventHandlers = { [T in EventType]?: (event: TaskEventOf<T>) => void };

export interface WatchOptions {
  /** A token with tasks:read, sent as ?access_token= (an EventSource cannot set headers); a
   * function is asked again for each new connection. */
  token?: string | (() => string | null);
  /** Default: the page's origin. */
  baseUrl?: string;
  /** Resume after this seq (a listing's as_of_seq, or a seq seen before). */
  lastEventId?: number | null;
  /** "latest": when this subscriber falls behind, the server may drop superseded progress
   * events of a task (never another type) instead of cutting the stream. */
  progress?: "all" | "latest";
  on?: EventHandlers;
  onEvent?: (event: TaskEvent) => void;
  onState?: (state: ConnectionState) => void;
  /** History was pruned past the resume position. watchTask reloads by itself (a fresh
   * snapshot follows); a watchTasks caller must reload its state (e.g. list again). */
  onReset?: (reset: ResetData) => void;
  onError?: (error: StreamError) => void;
  /** For runtimes without a global EventSource (Node: the `eventsource` package). */
  EventSource?: { new (url: string): EventSource };
  fetch?: typeof fetch;
}

export interface TaskWatchOptions extends WatchOptions {
  /** A task already read: the stream resumes after its last_seq and onTask folds onto it. */
  task?: Task;
  onSnapshot?: (task: Task) => void;
  /** The task after the snapshot and after every event. */
  onTask?: (task: Task) => void;
  /** The task finished (or was finished already); the stream is closed. */
  onEnd?: (task: Task | null) => void;
}

export interface TasksWatchOptions extends WatchOptions {
  taskId?: string | string[];
  type?: EventType | EventType[];
  kind?: string | string[];
}

export interface Watch {
  /** The seq of the last event or snapshot received. */
  readonly lastEventId: number | null;
  readonly state: ConnectionState;
  /** watchTask: the task folded from the snapshot and the events since. */
  readonly task: Task | null;
  /** Stop; no callback is called afterwards. */
  close(): void;
}

export const EVENT_TYPES: readonly EventType[];
export const TASK_STATUSES: readonly TaskStatus[];
export const TERMINAL_STATUSES: readonly TaskStatus[];

/** Follow one task: its snapshot (unless resuming), its events, closed after the last one. */
export function watchTask(taskId: string, options?: TaskWatchOptions): Watch;
/** Follow every task of the tenant (GET /v1/stream), optionally filtered. */
export function watchTasks(options?: TasksWatchOptions): Watch;
/** The task after the event, folded as the server folds it (`task` itself if already in). */
export function applyEvent(task: Task, event: TaskEvent): Task;
/** The task a created event describes. */
export function taskFromCreated(event: TaskEventOf<"created">): Task;
export function isFinished(task: Pick<Task, "status">): boolean;
/** A JWT's claims, unverified (the server verifies), or null. */
export function tokenClaims(token: string): Record<string, unknown> | null;
export function tokenScopes(token: string): Set<string>;
