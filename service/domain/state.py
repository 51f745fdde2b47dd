"""A task's state is a pure fold of its events; the state machine says which events may follow."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import msgspec

from service.domain.models import (
    CancelRequestedData,
    CreatedData,
    EventData,
    EventType,
    FailedData,
    ProgressData,
    SucceededData,
    TaskStatus,
)
from service.domain.problems import InvalidTransition

OPEN = frozenset({TaskStatus.PENDING, TaskStatus.RUNNING})

# The status each event type leads to; None keeps the status (log).
NEXT_STATUS: dict[EventType, TaskStatus | None] = {
    EventType.STARTED: TaskStatus.RUNNING,
    EventType.PROGRESS: TaskStatus.RUNNING,
    EventType.LOG: None,
    EventType.SUCCEEDED: TaskStatus.SUCCEEDED,
    EventType.FAILED: TaskStatus.FAILED,
    EventType.CANCELLED: TaskStatus.CANCELLED,
    EventType.CANCEL_REQUESTED: None,
}
ALLOWED_FROM: dict[EventType, frozenset[TaskStatus]] = {
    EventType.STARTED: frozenset({TaskStatus.PENDING}),
    EventType.PROGRESS: OPEN,
    EventType.LOG: OPEN,
    EventType.SUCCEEDED: OPEN,
    EventType.FAILED: OPEN,
    EventType.CANCELLED: OPEN,
    EventType.CANCEL_REQUESTED: OPEN,
}


def transition(status: TaskStatus, event_type: EventType) -> TaskStatus:
    """The status after ``event_type``, or InvalidTransition."""
    if event_type is EventType.CREATED:
        raise InvalidTransition("created is only written when the task is created")
    if status not in ALLOWED_FROM[event_type]:
        raise InvalidTransition(
            f"{event_type.value} is not allowed while the task is {status.value}"
        )
    return NEXT_STATUS[event_type] or status


def json_text(value: Any) -> str:
    return msgspec.json.encode(value).decode()


class TaskState(NamedTuple):
    """One row of ``tasks``; JSON members are kept as JSON text, as the database hands them over.

    ``cancel_seq`` is the position of the task's cancel request. ``elapsed_seconds`` and
    ``eta_seconds`` depend on the clock and on recent history, so they are worked out by the
    query that reads the task (queries.TASK_TIMING) and are None wherever no query did.

    A named tuple rather than a dataclass: the fold copies it once per event, and ``_replace``
    is several times cheaper than ``dataclasses.replace`` on the batch path.
    """

    tenant: str
    id: str
    kind: str
    title: str | None
    status: TaskStatus
    percent: float | None
    done: int | None
    total: int | None
    message: str | None
    stage: str | None
    result: str | None
    error: str | None
    metadata: str | None
    version: int
    last_seq: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_seq: int | None = None
    lease_seconds: int | None = None
    elapsed_seconds: float | None = None
    eta_seconds: float | None = None

    @property
    def cancel_pending(self) -> bool:
        """A cancel was requested and the task has not finished yet."""
        return self.cancel_seq is not None and self.status in OPEN


def created(
    tenant: str,
    task_id: str,
    data: CreatedData,
    seq: int,
    time: datetime,
    lease_seconds: int | None = None,
) -> TaskState:
    return TaskState(
        tenant=tenant,
        id=task_id,
        kind=data.kind,
        title=data.title,
        status=TaskStatus.PENDING,
        percent=None,
        done=None,
        total=None,
        message=None,
        stage=None,
        result=None,
        error=None,
        metadata=None if data.metadata is None else json_text(data.metadata),
        version=1,
        last_seq=seq,
        created_at=time,
        updated_at=time,
        started_at=None,
        finished_at=None,
        lease_seconds=lease_seconds,
    )


def apply(
    state: TaskState, event_type: EventType, data: EventData, seq: int, time: datetime
) -> TaskState:
    """Fold one event into the task: the only place that knows what an event does to a task."""
    status = transition(state.status, event_type)
    changes: dict[str, Any] = {
        "status": status,
        "version": state.version + 1,
        "last_seq": seq,
        "updated_at": time,
    }
    if status is TaskStatus.RUNNING and state.started_at is None:
        changes["started_at"] = time
    if status not in OPEN:
        changes["finished_at"] = time
    if isinstance(data, ProgressData):
        changes.update(_progress(state, data))
    elif isinstance(data, SucceededData):
        changes["percent"] = 100.0
        changes["result"] = None if data.result is None else json_text(data.result)
    elif isinstance(data, FailedData):
        changes["error"] = json_text(data.error.model_dump(exclude_unset=True))
    elif isinstance(data, CancelRequestedData):
        changes["cancel_seq"] = seq
    return state._replace(**changes)


def _progress(state: TaskState, data: ProgressData) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for name in ("done", "total", "message", "stage"):
        value = getattr(data, name)
        if value is not None:
            changes[name] = value
    total = data.total if data.total is not None else state.total
    if data.percent is not None:
        changes["percent"] = float(data.percent)
    elif data.done is not None and total:
        changes["percent"] = min(100.0, data.done * 100.0 / total)
    return changes


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One row of ``events`` with its data as JSON text."""

    seq: int
    task_id: str
    tenant: str
    version: int
    type: str
    data: str
    time: datetime


def task_from_row(row: Mapping[str, Any]) -> TaskState:
    """From a database record of the ``tasks`` columns."""
    fields = dict(row)
    fields["status"] = TaskStatus(fields["status"])
    return TaskState(**fields)
