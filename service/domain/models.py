"""The wire models: what clients send and receive. Pydantic only, so a client can import them."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

INT64_MAX = 2**63 - 1

TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
TaskId = Annotated[str, StringConstraints(pattern=TASK_ID_PATTERN)]
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
IdempotencyKey = Annotated[str, StringConstraints(pattern=IDEMPOTENCY_KEY_PATTERN)]
Int64 = Annotated[int, Field(ge=0, le=INT64_MAX)]


_task_id = re.compile(TASK_ID_PATTERN)


def is_task_id(value: str) -> bool:
    """Ids outside the pattern cannot exist, so they need no database round trip."""
    return _task_id.match(value) is not None


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class EventType(StrEnum):
    CREATED = "created"
    STARTED = "started"
    PROGRESS = "progress"
    LOG = "log"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CANCEL_REQUESTED = "cancel_requested"


class Strict(BaseModel):
    """Requests are strict: wrong types are refused, never coerced; unknown members are refused."""

    model_config = ConfigDict(strict=True, extra="forbid")


class EventData(BaseModel):
    """Event data is strict about the members it knows and keeps any others as given."""

    model_config = ConfigDict(strict=True, extra="allow")


class CreatedData(EventData):
    kind: str
    title: str | None = None
    metadata: dict[str, Any] | None = None


class StartedData(EventData):
    worker: str | None = None


class ProgressData(EventData):
    percent: Annotated[float, Field(ge=0, le=100)] | None = None
    done: Int64 | None = None
    total: Annotated[int, Field(gt=0, le=INT64_MAX)] | None = None
    message: str | None = None
    stage: str | None = None

    @model_validator(mode="after")
    def percent_or_done(self) -> ProgressData:
        if self.percent is None and self.done is None:
            raise ValueError("percent or done is required")
        return self


class LogData(EventData):
    level: Literal["debug", "info", "warning", "error"]
    message: str


class SucceededData(EventData):
    result: Any = None


class ErrorInfo(EventData):
    message: str
    code: str | None = None


class FailedData(EventData):
    error: ErrorInfo


class CancelledData(EventData):
    reason: str | None = None


class CancelRequestedData(EventData):
    reason: str | None = None


DATA_MODELS: dict[EventType, type[EventData]] = {
    EventType.CREATED: CreatedData,
    EventType.STARTED: StartedData,
    EventType.PROGRESS: ProgressData,
    EventType.LOG: LogData,
    EventType.SUCCEEDED: SucceededData,
    EventType.FAILED: FailedData,
    EventType.CANCELLED: CancelledData,
    EventType.CANCEL_REQUESTED: CancelRequestedData,
}


class CreateTask(Strict):
    id: TaskId | None = None
    kind: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    title: Annotated[str, StringConstraints(max_length=2000)] | None = None
    metadata: dict[str, Any] | None = None
    lease_seconds: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None


class CancelTask(Strict):
    reason: Annotated[str, StringConstraints(max_length=2000)] | None = None


class AppendEvent(Strict):
    type: str
    data: dict[str, Any] = Field(default_factory=dict)
    expected_version: Annotated[int, Field(ge=0, le=INT64_MAX)] | None = None


class BatchItem(AppendEvent):
    task_id: TaskId
    idempotency_key: IdempotencyKey | None = None


class Batch(Strict):
    events: Annotated[list[Any], Field(max_length=1000)]


class Task(BaseModel):
    id: str
    tenant: str
    kind: str
    title: str | None
    status: TaskStatus
    percent: float | None
    done: int | None
    total: int | None
    message: str | None
    stage: str | None
    result: Any
    error: dict[str, Any] | None
    metadata: dict[str, Any] | None
    version: int
    last_seq: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested: bool = False
    lease_seconds: int | None = None
    elapsed_seconds: float | None = None
    eta_seconds: float | None = None


class Event(BaseModel):
    seq: int
    task_id: str
    tenant: str
    version: int
    type: EventType
    data: dict[str, Any]
    time: datetime


class TaskPage(BaseModel):
    items: list[Task]
    next_cursor: str | None
    as_of_seq: int


class EventPage(BaseModel):
    items: list[Event]
    next_after: int | None


class BatchResult(BaseModel):
    status: int
    event: Event | None = None
    error: dict[str, Any] | None = None
    cancel_requested: bool = False


class BatchResults(BaseModel):
    results: list[BatchResult]
