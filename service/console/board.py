"""What ``taskstream tail`` knows of the tasks it watches: their state, kept current by folding
each streamed event with the service's own fold (``service.domain.state``), and their pace."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from service.client import Event, EventType, Task, TaskStatus
from service.domain.models import DATA_MODELS, CreatedData
from service.domain.state import OPEN, TaskState, apply, created, json_text

PACE_EVENTS = 10
"""Progress events the ETA is worked out from: the service's ``eta_seconds`` uses as many."""
KEPT_FINISHED_FACTOR = 2
"""Finished tasks kept, in multiples of the rows shown: memory stays bounded over a long tail."""


@dataclass
class Row:
    state: TaskState
    pace: deque[tuple[datetime, float]] = field(default_factory=lambda: deque(maxlen=PACE_EVENTS))
    """(time, percent) of the latest progress events."""
    eta_hint: tuple[float, float] | None = None
    """The service's ``eta_seconds`` and the monotonic time it was read, until there is pace."""

    def elapsed(self, now: datetime) -> float | None:
        started = self.state.started_at
        if started is None:
            return None
        return ((self.state.finished_at or now) - started).total_seconds()

    def eta(self, now: datetime) -> float | None:
        """Seconds to 100% at the pace of the latest progress events, as the service's
        ``eta_seconds``; None unless the task is running and advancing."""
        state = self.state
        if state.status is not TaskStatus.RUNNING or state.percent is None or state.percent >= 100:
            return None
        if len(self.pace) >= 2:
            (first_at, first), (last_at, last) = self.pace[0], self.pace[-1]
            if last > first and last_at > first_at:
                rate = (last - first) / (last_at - first_at).total_seconds()
                return max(0.0, (100 - state.percent) / rate - (now - last_at).total_seconds())
        if self.eta_hint is not None:
            eta, read_at = self.eta_hint
            return max(0.0, eta - (time.monotonic() - read_at))
        return None


def task_state(task: Task) -> TaskState:
    """A Task as the fold's state. The Task only says *whether* a cancel is pending, not at
    which position, which is all the fold and this view need of it."""
    fields = task.model_dump(exclude={"cancel_requested"})
    for name in ("result", "error", "metadata"):
        fields[name] = None if fields[name] is None else json_text(fields[name])
    return TaskState(**fields, cancel_seq=task.last_seq if task.cancel_requested else None)


class Board:
    """The watched tasks by id; ``shown()`` is what the table displays."""

    def __init__(self, statuses: Iterable[str] = (), rows: int = 50) -> None:
        self.statuses = frozenset(TaskStatus(status) for status in statuses)
        self.rows = rows
        self._tasks: dict[str, Row] = {}

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._tasks

    def load(self, tasks: Iterable[Task]) -> None:
        """Tasks as the service answered them (a listing, a snapshot, a single read)."""
        read_at = time.monotonic()
        for task in tasks:
            hint = None if task.eta_seconds is None else (task.eta_seconds, read_at)
            self._tasks[task.id] = Row(task_state(task), eta_hint=hint)
        self._forget_old()

    def apply(self, event: Event) -> TaskState:
        """The task's state once ``event`` is in it: folded now, or already (an event at or
        below the task's ``last_seq`` came before the read that loaded the task).

        Raises InvalidTransition when the event does not follow the known state, and KeyError
        for an event (other than ``created``) of a task that was never loaded.
        """
        row = self._tasks.get(event.task_id)
        if row is not None and event.seq <= row.state.last_seq:
            return row.state
        if event.type is EventType.CREATED:
            details = CreatedData.model_validate(event.data)
            state = created(event.tenant, event.task_id, details, event.seq, event.time)
            self._tasks[event.task_id] = Row(state)
            self._forget_old()
            return state
        if row is None:
            raise KeyError(event.task_id)
        data = DATA_MODELS[event.type].model_validate(event.data)
        row.state = apply(row.state, event.type, data, event.seq, event.time)
        if event.type is EventType.PROGRESS and row.state.percent is not None:
            row.pace.append((event.time, row.state.percent))
        return row.state

    def matches(self, state: TaskState) -> bool:
        return not self.statuses or state.status in self.statuses

    def shown(self, room: int) -> tuple[list[Row], int]:
        """The rows to display (at most ``rows``, and ``room``), open tasks first (newest
        first), then the latest finished; and how many matching tasks did not fit."""
        matching = [row for row in self._tasks.values() if self.matches(row.state)]
        matching.sort(key=_display_order)
        limit = max(1, min(self.rows, room))
        return matching[:limit], max(0, len(matching) - limit)

    def _forget_old(self) -> None:
        finished = [row for row in self._tasks.values() if row.state.status not in OPEN]
        excess = len(finished) - KEPT_FINISHED_FACTOR * self.rows
        if excess > 0:
            finished.sort(key=lambda row: row.state.finished_at or row.state.updated_at)
            for row in finished[:excess]:
                del self._tasks[row.state.id]


def _display_order(row: Row) -> tuple[int, float]:
    state = row.state
    if state.status in OPEN:
        return (0 if state.status is TaskStatus.RUNNING else 1), -state.created_at.timestamp()
    return 2, -(state.finished_at or state.updated_at).timestamp()
