"""``?progress=latest``: what a subscriber that fell behind still has to receive.

Such a subscriber is not cut off when its socket backs up. Its frames wait here instead, in
seq order, until the socket drains; meanwhile a ``progress`` frame replaces the waiting
``progress`` frame of the same task that it supersedes: one whose data members it all carries
again, so nothing the client folds into the task (percent, done, total, message, stage) is
lost by the drop. Every other frame waits as it is. If what waits still outgrows the bound,
the subscriber is cut off after all, and resumes as any other would.
"""

from __future__ import annotations

import msgspec

from service import metrics
from service.stream.frames import Frame

PROGRESS = "progress"
_DATA = b"\ndata: "


class _Event(msgspec.Struct):
    data: dict[str, msgspec.Raw]


_decode = msgspec.json.Decoder(_Event).decode


def _members(frame: Frame) -> frozenset[str]:
    """The data members of a progress frame (parsed only here, for subscribers behind)."""
    start = frame.body.index(_DATA) + len(_DATA)
    return frozenset(_decode(frame.body[start:].rstrip()).data)


class LatestProgress:
    """Frames waiting for a subscriber's socket to drain."""

    __slots__ = ("frames", "limit", "pending_bytes", "progress")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.frames: list[Frame | None] = []
        self.pending_bytes = 0
        self.progress: dict[str, tuple[int, frozenset[str]]] = {}
        """Task id → index in ``frames`` of its waiting progress frame, and that frame's
        data members."""

    def add(self, frames: list[Frame]) -> bool:
        """Keep ``frames`` (dropping what they supersede); False once over the bound."""
        for frame in frames:
            if frame.type == PROGRESS:
                members = _members(frame)
                waiting = self.progress.get(frame.task_id)
                if waiting is not None and waiting[1] <= members:
                    superseded = self.frames[waiting[0]]
                    assert superseded is not None
                    self.frames[waiting[0]] = None
                    self.pending_bytes -= len(superseded.chunk)
                    metrics.progress_dropped.inc()
                self.progress[frame.task_id] = (len(self.frames), members)
            self.frames.append(frame)
            self.pending_bytes += len(frame.chunk)
        return self.pending_bytes <= self.limit

    def take(self) -> list[Frame]:
        """What is left to send, in seq order."""
        return [frame for frame in self.frames if frame is not None]
