"""The Python client of taskstream: ``Taskstream`` (blocking) and ``AsyncTaskstream``.

Needs only httpx and pydantic: nothing of the service's web or database stack is imported.
"""

from service.client.clients import AsyncTaskstream, AsyncTracker, Taskstream, Tracker
from service.client.errors import (
    CancelRequested,
    Conflict,
    ConnectionFailed,
    Forbidden,
    InvalidTransition,
    NotFound,
    PayloadTooLarge,
    ProblemError,
    RateLimited,
    ServerError,
    TaskExists,
    TaskstreamError,
    Unauthorized,
    ValidationError,
    VersionConflict,
)
from service.client.models import Appended, BatchItemResult, Reset, Snapshot, StreamItem
from service.client.retry import RetryPolicy
from service.client.tracking import TaskFinished
from service.domain.models import (
    BatchItem,
    Event,
    EventType,
    ProgressData,
    Task,
    TaskPage,
    TaskStatus,
)

__all__ = [
    "Appended",
    "AsyncTaskstream",
    "AsyncTracker",
    "BatchItem",
    "BatchItemResult",
    "CancelRequested",
    "Conflict",
    "ConnectionFailed",
    "Event",
    "EventType",
    "Forbidden",
    "InvalidTransition",
    "NotFound",
    "PayloadTooLarge",
    "ProblemError",
    "ProgressData",
    "RateLimited",
    "Reset",
    "RetryPolicy",
    "ServerError",
    "Snapshot",
    "StreamItem",
    "Task",
    "TaskExists",
    "TaskFinished",
    "TaskPage",
    "TaskStatus",
    "Taskstream",
    "TaskstreamError",
    "Tracker",
    "Unauthorized",
    "ValidationError",
    "VersionConflict",
]
