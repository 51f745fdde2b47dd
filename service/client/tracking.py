"""``track()``: a task's lifecycle around a block of code, written once for both clients.

The block's thread (or coroutine) only records progress; a background loop sends it at most
once per ``progress_interval`` and renews the lease. Every send — the background loop's, a
log, the terminal event — goes through ``_send`` under one lock and carries the pending
progress first, in the same batch: so progress can be coalesced, but nothing is ever
reordered around a log or a lifecycle event, and nothing but superseded progress is dropped.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from typing import Any, Literal

from service.client.errors import CancelRequested, TaskstreamError
from service.client.operations import Operations, TrackOptions, new_key
from service.client.steps import Acquire, Lock, Op, Signal, Wait
from service.domain.models import EventType, LogData, ProgressData, Task

logger = logging.getLogger("taskstream.client")

WORKER = f"{socket.gethostname()}:{os.getpid()}"
LEASE_RENEWAL = {"level": "debug", "message": "lease renewed"}

Item = tuple[EventType, dict[str, Any]]


class TaskFinished(RuntimeError):
    """The tracked task already has its terminal event (``cancel()`` was called)."""


class Tracking:
    """The state of one ``track()`` block and the operations that act on it."""

    def __init__(
        self, operations: Operations, options: TrackOptions, *, lock: Lock, wake: Signal
    ) -> None:
        self.options = options
        self.result: Any = None
        self.cancel_requested = False
        self._operations = operations
        self._lock = lock
        self._wake = wake
        self._task: Task | None = None
        self._progress: dict[str, Any] = {}  # every progress field given so far, latest values
        self._unsent = False  # _progress changed since it was last sent
        self._last_flush = -math.inf
        self._last_append = time.monotonic()
        self._finished = False
        self._stopping = False
        self._failure: TaskstreamError | None = None

    @property
    def task(self) -> Task:
        """The task as created (``get_task`` reads its current state)."""
        if self._task is None:
            raise RuntimeError("the task is created when the track() block is entered")
        return self._task

    # ------------------------------------------------------------------ the block's calls

    def start(self) -> Op[Task]:
        """Create the task and append ``started``."""
        options = self.options
        self._task = yield from self._operations.create_task(
            options.kind, options.title, options.metadata, options.id, options.lease_seconds
        )
        appended = yield from self._operations.append(
            self._task.id, EventType.STARTED, {"worker": WORKER}
        )
        self._last_append = time.monotonic()
        self.cancel_requested = appended.cancel_requested
        return self._task

    def progress(
        self,
        percent: float | None = None,
        done: int | None = None,
        total: int | None = None,
        message: str | None = None,
        stage: str | None = None,
    ) -> None:
        """Record progress; it is sent within ``progress_interval``, coalesced with later
        calls (each field keeps its latest value). Never blocks.

        Raises ``CancelRequested`` once a cancel is known, with ``raise_on_cancel``, and the
        failure of an earlier background send, once.
        """
        if self._finished:
            raise TaskFinished(f"task {self.task.id} is finished")
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        if self.cancel_requested and self.options.raise_on_cancel:
            raise CancelRequested(f"cancel of task {self.task.id} requested")
        given: dict[str, Any] = {"percent": percent, "done": done, "total": total}
        given.update(message=message, stage=stage)
        update = {name: value for name, value in given.items() if value is not None}
        merged = {**self._progress, **update}
        if "done" in update and "percent" not in update:
            merged.pop("percent", None)  # let the service derive it from done and total
        self._progress = ProgressData.model_validate(merged).model_dump(exclude_none=True)
        self._unsent = True
        self._wake.set()

    def log(
        self, message: str, level: Literal["debug", "info", "warning", "error"] = "info"
    ) -> Op[None]:
        """Append a log event (after any pending progress)."""
        data = LogData(level=level, message=message).model_dump()
        yield from self._send_now([(EventType.LOG, data)])

    def cancel(self, reason: str | None = None) -> Op[None]:
        """Append ``cancelled`` now; the task is finished, the block's exit adds nothing."""
        data = {} if reason is None else {"reason": reason}
        yield from self._send_now([(EventType.CANCELLED, data)], final=True)

    def finish(self, error: BaseException | None) -> Op[bool]:
        """The terminal event for how the block ended; ``True``: swallow ``error``.

        A normal end appends ``succeeded`` (with ``result`` if set), ``CancelRequested``
        appends ``cancelled`` (and is swallowed), any other exception ``failed``. If that
        append fails, the block's own exception is what the caller sees.
        """
        if self._finished:
            return False
        if error is None:
            item = (EventType.SUCCEEDED, {} if self.result is None else {"result": self.result})
        elif isinstance(error, CancelRequested):
            item = (EventType.CANCELLED, {"reason": str(error)})
        else:
            code = type(error).__name__
            item = (EventType.FAILED, {"error": {"message": str(error) or code, "code": code}})
        try:
            yield from self._send_now([item], final=True)
        except TaskstreamError:
            if error is None:
                raise
            logger.warning("could not record the end of task %s", self.task.id, exc_info=True)
            return False
        return isinstance(error, CancelRequested)

    # ------------------------------------------------------------------ the background loop

    def keep_alive(self) -> Op[None]:
        """Send progress at most once per interval; renew the lease when nothing else was
        appended for a third of it. Ends when ``stop()`` is called."""
        while True:
            yield Wait(self._wake, self._until_due())
            self._wake.clear()
            if self._stopping:
                return
            now = time.monotonic()
            progress_due = self._unsent and now >= self._last_flush + self.options.progress_interval
            lease_due = self._lease_due(now)
            if not (progress_due or lease_due):
                continue
            renewal = [] if self._unsent else [(EventType.LOG, LEASE_RENEWAL)]
            yield Acquire(self._lock)
            try:
                if not self._finished:
                    yield from self._send(renewal)
            except TaskstreamError as error:
                logger.warning("task %s: a background append failed: %s", self.task.id, error)
                self._failure = error
            finally:
                self._lock.release()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def _until_due(self) -> float | None:
        moments = []
        if self._unsent:
            moments.append(self._last_flush + self.options.progress_interval)
        if self.options.lease_seconds is not None:
            moments.append(self._last_append + self.options.lease_seconds / 3)
        return max(0.0, min(moments) - time.monotonic()) if moments else None

    def _lease_due(self, now: float) -> bool:
        lease = self.options.lease_seconds
        return lease is not None and now >= self._last_append + lease / 3

    # ------------------------------------------------------------------ sending

    def _send_now(self, items: list[Item], *, final: bool = False) -> Op[None]:
        yield Acquire(self._lock)
        try:
            if self._finished:
                raise TaskFinished(f"task {self.task.id} is finished")
            yield from self._send(items)
            self._finished = final
        finally:
            self._lock.release()

    def _send(self, items: list[Item]) -> Op[None]:
        """The pending progress, then ``items``, as one batch (the lock is held).

        A refused item raises. A refused progress item raises only when it was sent alone;
        otherwise ``progress()`` raises it later, as for the background loop's sends.
        """
        batch = []
        if self._unsent:
            # Cleared before _progress is read: a progress() call in between (another
            # thread) sets it again, so its value is sent next time rather than lost.
            self._unsent = False
            batch.append((EventType.PROGRESS, self._progress))
        batch += items
        if not batch:
            return
        self._last_flush = time.monotonic()
        events = [
            {"task_id": self.task.id, "type": type, "data": data, "idempotency_key": new_key()}
            for type, data in batch
        ]
        try:
            results = yield from self._operations.append_batch(events)
        except TaskstreamError:
            self._unsent = self._unsent or len(batch) > len(items)
            raise
        self._last_append = time.monotonic()
        self.cancel_requested = self.cancel_requested or any(r.cancel_requested for r in results)
        refusals = [result.exception() for result in results]
        progress_refusal = refusals.pop(0) if len(batch) > len(items) else None
        for refusal in refusals:
            if refusal is not None:
                raise refusal
        if progress_refusal is not None:
            if not items:
                raise progress_refusal
            self._failure = progress_refusal
