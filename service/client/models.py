"""Client-side shapes of answers; the wire models themselves come from the service."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from service.client.errors import ProblemError, problem_error
from service.domain.models import BatchResult, Event, Task


class Appended(BaseModel):
    """The answer to an append (or a cancel request)."""

    event: Event
    replayed: bool
    """``True`` on 200: an earlier request with the same key had appended ``event``."""
    cancel_requested: bool
    """The service says someone asked to cancel the task (``Cancel-Requested: true``)."""


class BatchItemResult(BatchResult):
    """One item's answer in a batch; each item succeeds or fails on its own."""

    @property
    def ok(self) -> bool:
        return self.status in (200, 201)

    def exception(self) -> ProblemError | None:
        """The item's refusal as the exception a single append would have raised."""
        if self.ok:
            return None
        return problem_error(self.status, self.error or {"status": self.status})


class Snapshot(BaseModel):
    """A task stream's first item when it starts without a resume position."""

    type: Literal["snapshot"] = "snapshot"
    seq: int
    task: Task


class Reset(BaseModel):
    """History below ``pruned_through_seq`` is gone: what was missed must be reloaded."""

    type: Literal["reset"] = "reset"
    seq: int
    reason: str
    pruned_through_seq: int


StreamItem = Event | Snapshot | Reset
