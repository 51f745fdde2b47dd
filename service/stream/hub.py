"""Fan-out: which subscribers an event goes to, and each subscriber's state.

Subscriptions are indexed by tenant, then by one of their filters (task id, else type, else
kind, else none), so publishing an event costs O(subscribers it may match), not O(all).
Each frame was encoded once by the listener; a subscriber gets the same bytes as every other.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from service import metrics
from service.stream.frames import KEEP_ALIVE_FRAME, Frame
from service.stream.latest import LatestProgress
from service.stream.transport import Sink

log = logging.getLogger("taskstream.hub")


class End(enum.Enum):
    """Why a stream ended."""

    TERMINAL = "the task finished"
    LOST = "the client went away"
    SLOW = "the client fell too far behind"
    SHUTDOWN = "the server is shutting down"
    UNAVAILABLE = "the database became unreachable"


@dataclass(frozen=True, slots=True)
class Selection:
    """The events of one tenant a stream wants; an empty filter means any value."""

    tenant: str
    task_ids: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()

    def matches(self, frame: Frame) -> bool:
        return (
            (not self.task_ids or frame.task_id in self.task_ids)
            and (not self.types or frame.type in self.types)
            and (not self.kinds or frame.kind in self.kinds)
        )


class Subscriber:
    """One open stream.

    It starts in backfill: the handler reads the table from ``last_sent`` while the hub
    already routes live frames here, kept in a bounded backlog. At the handoff the backlog's
    frames above ``last_sent`` go out and the subscriber is live; from then on every frame is
    written as it is published, and ``last_sent`` drops any frame already sent. A backlog over
    its bound is dropped and the handler reads the table again instead: nothing is lost.

    A live subscriber whose client falls behind is cut off, unless it asked for
    ``?progress=latest``: then its frames wait in ``behind`` (stream/latest.py) while the
    handler waits for the socket to drain.
    """

    __slots__ = (
        "backlog",
        "backlog_bytes",
        "behind",
        "end",
        "ends_on_terminal",
        "from_table",
        "last_sent",
        "last_write",
        "latest_progress",
        "limit",
        "overflowed",
        "resumed",
        "selection",
        "sent",
        "sink",
        "waiter",
        "woken",
    )

    def __init__(
        self,
        selection: Selection,
        *,
        last_sent: int,
        resumed: bool = False,
        limit: int,
        ends_on_terminal: bool,
        latest_progress: bool = False,
    ) -> None:
        self.selection = selection
        self.resumed = resumed
        self.latest_progress = latest_progress
        self.behind: LatestProgress | None = None
        self.sent = 0  # frames written live
        self.from_table = 0  # events sent from the table (backfill)
        self.last_sent = last_sent
        self.limit = limit
        self.ends_on_terminal = ends_on_terminal
        self.sink: Sink | None = None
        self.backlog: list[Frame] = []
        self.backlog_bytes = 0
        self.overflowed = False
        self.end: End | None = None
        self.last_write = 0.0
        # An asyncio.Event costs ~800 bytes (its deque of waiters); a flag and a future made
        # only while the handler waits cost almost nothing, at 10,000 streams a process.
        self.woken = False
        self.waiter: asyncio.Future[None] | None = None

    # -- called by the hub, synchronously

    def deliver(self, frames: list[Frame], now: float, joined: bytes | None = None) -> None:
        """Write ``frames`` (``joined``: their chunks, joined once for every subscriber)."""
        if self.end is not None:
            return
        sink = self.sink
        if sink is None:
            self._keep(frames)
            return
        last = self.last_sent
        if frames[0].seq <= last:
            frames = [frame for frame in frames if frame.seq > last]
            if not frames:
                return
            joined = None
        self.last_sent = frames[-1].seq
        if self.behind is not None:
            if not self.behind.add(frames):
                self.cut_off()
            return
        self.last_write = now
        self.sent += len(frames)
        if not sink.write(frames, joined):
            self._fell_behind()
        elif self.ends_on_terminal and frames[-1].terminal:
            self.finish(End.TERMINAL)

    def _fell_behind(self) -> None:
        if self.latest_progress:
            self.behind = LatestProgress(self.limit)
            self.wake()  # the handler waits for the socket to drain, then catches up
        else:
            self.cut_off()

    def catch_up(self, now: float) -> None:
        """Called by the handler once the socket drained: send what waited."""
        behind, sink = self.behind, self.sink
        if behind is None or sink is None or self.end is not None:
            return
        self.behind = None
        frames = behind.take()
        if frames:
            self.last_write = now
            self.sent += len(frames)
            if not sink.write(frames):
                self._fell_behind()
            elif self.ends_on_terminal and frames[-1].terminal:
                self.finish(End.TERMINAL)

    def keep_alive(self, now: float) -> None:
        if self.sink is not None and self.end is None and self.behind is None:
            self.last_write = now
            if not self.sink.write((KEEP_ALIVE_FRAME,)):
                self.cut_off()

    def _keep(self, frames: list[Frame]) -> None:
        if self.overflowed:
            return
        self.backlog.extend(frames)
        self.backlog_bytes += sum(len(frame.body) for frame in frames)
        if self.backlog_bytes > self.limit:
            self.backlog.clear()
            self.backlog_bytes = 0
            self.overflowed = True

    # -- called by the stream's handler

    def backfilled(self, last_seq: int, *, terminal: bool) -> None:
        """The handler sent the table's events up to ``last_seq``."""
        self.last_sent = last_seq
        if terminal and self.ends_on_terminal:
            self.finish(End.TERMINAL)

    def go_live(self, sink: Sink, now: float) -> bool:
        """Hand over from backfill to live; False if the backlog overflowed (read on)."""
        if self.overflowed:
            self.overflowed = False
            return False
        backlog = self.backlog
        self.backlog = []
        self.backlog_bytes = 0
        self.sink = sink
        self.last_write = now
        if backlog:
            self.deliver(backlog, now)
        return True

    def finish(self, end: End) -> None:
        if self.end is None:
            self.end = end
            self.wake()

    def wake(self) -> None:
        """Tell the handler there is something to do: the end, or frames to send."""
        self.woken = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def woken_up(self) -> None:
        if not self.woken:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        self.woken = False

    def cut_off(self) -> None:
        if self.end is None:
            metrics.slow_disconnects.inc()
        self.finish(End.SLOW)
        if self.sink is not None:
            self.sink.close()

    # -- transport.Watcher

    def lost(self) -> None:
        self.finish(End.LOST)

    def stop(self) -> None:
        self.finish(End.SHUTDOWN)


@dataclass(slots=True)
class _Routes:
    """One tenant's subscribers, each in exactly one of these places."""

    unfiltered: set[Subscriber] = field(default_factory=set)
    by_task: dict[str, set[Subscriber]] = field(default_factory=dict)
    by_type: dict[str, set[Subscriber]] = field(default_factory=dict)
    by_kind: dict[str, set[Subscriber]] = field(default_factory=dict)

    def places(self, selection: Selection) -> list[set[Subscriber]]:
        for keys, index in (
            (selection.task_ids, self.by_task),
            (selection.types, self.by_type),
            (selection.kinds, self.by_kind),
        ):
            if keys:
                return [index.setdefault(key, set()) for key in keys]
        return [self.unfiltered]

    def remove(self, subscriber: Subscriber) -> None:
        selection = subscriber.selection
        for keys, index in (
            (selection.task_ids, self.by_task),
            (selection.types, self.by_type),
            (selection.kinds, self.by_kind),
        ):
            if keys:
                for key in keys:
                    members = index.get(key)
                    if members is not None:
                        members.discard(subscriber)
                        if not members:
                            del index[key]
                return
        self.unfiltered.discard(subscriber)

    def empty(self) -> bool:
        return not (self.unfiltered or self.by_task or self.by_type or self.by_kind)

    def matching(self, frame: Frame) -> Iterable[Subscriber]:
        yield from self.unfiltered
        yield from self.filtered(frame)

    def filtered(self, frame: Frame) -> Iterable[Subscriber]:
        for index, key in (
            (self.by_task, frame.task_id),
            (self.by_type, frame.type),
            (self.by_kind, frame.kind),
        ):
            members = index.get(key)
            if members:
                for subscriber in members:
                    if subscriber.selection.matches(frame):
                        yield subscriber


class Hub:
    """Routes published frames to subscribers; one per process."""

    def __init__(self, *, heartbeat_seconds: float) -> None:
        self.heartbeat_seconds = heartbeat_seconds
        self.position = 0
        """The newest seq published, for the listener to resume from."""
        self._tenants: dict[str, _Routes] = {}
        self._subscribers: set[Subscriber] = set()

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(self, subscriber: Subscriber) -> None:
        routes = self._tenants.setdefault(subscriber.selection.tenant, _Routes())
        for members in routes.places(subscriber.selection):
            members.add(subscriber)
        self._subscribers.add(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber not in self._subscribers:
            return
        self._subscribers.discard(subscriber)
        tenant = subscriber.selection.tenant
        routes = self._tenants[tenant]
        routes.remove(subscriber)
        if routes.empty():
            del self._tenants[tenant]

    def publish(self, frames: list[Frame]) -> None:
        """Deliver frames (in seq order) to every subscriber they match.

        Targets are collected before anything is written, because a write may end a
        subscriber (cut off, finished) and its handler then leaves the hub.
        """
        if not frames:
            return
        self.position = frames[-1].seq
        now = asyncio.get_running_loop().time()
        if len(frames) == 1:
            frame = frames[0]
            routes = self._tenants.get(frame.tenant)
            if routes is not None:
                targets = list(routes.matching(frame))
                for subscriber in targets:
                    subscriber.deliver(frames, now)
                metrics.frames_delivered.inc(len(targets))
            return
        # Several frames (the listener read them together): a tenant's unfiltered subscribers
        # all get the same bytes, joined once; filtered ones get their own selection.
        by_tenant: dict[str, list[Frame]] = {}
        for frame in frames:
            by_tenant.setdefault(frame.tenant, []).append(frame)
        batches: dict[Subscriber, list[Frame]] = {}
        shared: list[tuple[list[Subscriber], list[Frame], bytes]] = []
        for tenant, tenant_frames in by_tenant.items():
            routes = self._tenants.get(tenant)
            if routes is None:
                continue
            if routes.unfiltered:
                joined = b"".join(frame.chunk for frame in tenant_frames)
                shared.append((list(routes.unfiltered), tenant_frames, joined))
            for frame in tenant_frames:
                for subscriber in routes.filtered(frame):
                    batch = batches.get(subscriber)
                    if batch is None:
                        batches[subscriber] = [frame]
                    else:
                        batch.append(frame)
        delivered = 0
        for subscribers, tenant_frames, joined in shared:
            for subscriber in subscribers:
                subscriber.deliver(tenant_frames, now, joined)
            delivered += len(subscribers) * len(tenant_frames)
        for subscriber, batch in batches.items():
            subscriber.deliver(batch, now)
            delivered += len(batch)
        metrics.frames_delivered.inc(delivered)

    def stop_all(self) -> None:
        for subscriber in list(self._subscribers):
            subscriber.stop()

    async def keep_alive(self) -> None:
        """Write a comment to every live stream idle for a heartbeat interval.

        Besides keeping proxies from timing out an idle response, the write is what reveals a
        peer that vanished without closing its connection.
        """
        interval = self.heartbeat_seconds
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(interval / 4, 1.0))
            now = loop.time()
            for subscriber in [s for s in self._subscribers if now - s.last_write >= interval]:
                subscriber.keep_alive(now)
