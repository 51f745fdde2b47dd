"""One stream's life: answer, backfill from the table, hand over to live, end.

The handoff is what makes resuming lossless. The subscriber joins the hub *before* the first
read of the table, so every event published from then on reaches its backlog; the backfill
reads the table in pages until a short page, and the switch to live happens synchronously
after that read: what the read saw went out from the table, what came later is in the backlog,
and ``last_sent`` drops what was in both.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Coroutine, Iterator
from typing import Any

from service import metrics
from service.domain.problems import TooManyStreams
from service.settings import Settings
from service.store.database import UNAVAILABLE
from service.store.reader import EventFilter, Reader
from service.stream.frames import TERMINAL_TYPES, frame_text, reset_frame, retry_frame
from service.stream.hub import End, Hub, Selection, Subscriber
from service.stream.listener import Listener
from service.stream.transport import DirectSink, QueuedSink, Sink, http_protocol

BACKFILL_PAGE = 2000
"""Rows per backfill read; each page goes out as one write."""

HEADERS = (
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
)
"""A tuple: each answer sends a list of its own, which middleware may extend in place."""
SUMMARY = "taskstream.stream"
"""Scope key of a stream's summary, for the request log (api/requestlog.py)."""
CHUNKED = (b"transfer-encoding", b"chunked")
"""Said explicitly when frames are written to the socket as chunks (DirectSink)."""


class Streams:
    """The process's streams: the hub, the listener feeding it, and the per-subject limit."""

    def __init__(self, settings: Settings, reader: Reader, hub: Hub, listener: Listener):
        self.settings = settings
        self.reader = reader
        self.hub = hub
        self.listener = listener
        self.stopping = False
        self.retry = retry_frame(settings.retry_ms)
        self._backfills = asyncio.Semaphore(settings.backfill_concurrency)
        self._per_subject: dict[str, int] = {}

    @property
    def ready(self) -> bool:
        return self.listener.ready and not self.stopping

    @contextlib.contextmanager
    def slot(self, subject: str) -> Iterator[None]:
        """Holds one of the subject's streams for the block; 429 when none is left."""
        count = self._per_subject.get(subject, 0)
        if count >= self.settings.max_streams_per_subject:
            retry_after = max(1, math.ceil(self.settings.retry_ms / 1000))
            raise TooManyStreams(
                f"at most {self.settings.max_streams_per_subject} concurrent streams per subject",
                headers={"Retry-After": str(retry_after)},
            )
        self._per_subject[subject] = count + 1
        try:
            yield
        finally:
            remaining = self._per_subject.pop(subject) - 1
            if remaining:
                self._per_subject[subject] = remaining

    def subscriber(
        self,
        selection: Selection,
        *,
        after: int,
        resumed: bool,
        task: bool,
        latest_progress: bool,
    ) -> Subscriber:
        """``resumed``: ``after`` is the client's own position (Last-Event-ID)."""
        return Subscriber(
            selection,
            last_sent=after,
            resumed=resumed,
            limit=self.settings.stream_buffer_bytes,
            ends_on_terminal=task,
            latest_progress=latest_progress,
        )

    async def answer(self, send: Any, body: bytes) -> None:
        """A stream that ends at once, such as a finished task's snapshot."""
        await send({"type": "http.response.start", "status": 200, "headers": [*HEADERS]})
        await send({"type": "http.response.body", "body": body})

    async def not_ready(self, send: Any) -> None:
        """Just ``retry:``, then the end: an EventSource tries again, where a 5xx (or any other
        error status) would stop it for good."""
        await self.answer(send, self.retry)

    async def no_content(self, send: Any) -> None:
        """204: a finished task with nothing after the resume position; an EventSource stops."""
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def run(
        self, subscriber: Subscriber, first: bytes, scope: Any, receive: Any, send: Any
    ) -> None:
        """Stream to ``subscriber`` after sending ``first``, until one of :class:`End`."""
        protocol = http_protocol(scope)
        watching: asyncio.Future[Any] | None = None
        if protocol is not None:
            protocol.watcher = subscriber
        else:
            watching = asyncio.ensure_future(_watch(receive, subscriber))
        self.hub.subscribe(subscriber)
        metrics.streams_open.inc()
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [*HEADERS, *(() if protocol is None else (CHUNKED,))],
                }
            )
            await send({"type": "http.response.body", "body": first, "more_body": True})
            del first  # a snapshot can be large, and this frame lives as long as the stream
            sink: Sink = (
                DirectSink(protocol, self.settings.stream_buffer_bytes)
                if protocol is not None
                else QueuedSink(self.settings.stream_buffer_bytes, subscriber.wake)
            )
            loop = asyncio.get_running_loop()
            try:
                while subscriber.end is None:
                    await self._backfill(subscriber, send)
                    if subscriber.end is None and subscriber.go_live(sink, loop.time()):
                        break
            except UNAVAILABLE:
                subscriber.finish(End.UNAVAILABLE)
            await self._live(subscriber, sink, send)
        finally:
            self.hub.unsubscribe(subscriber)
            end = (subscriber.end or End.LOST).name.lower()
            metrics.streams_open.dec()
            metrics.streams_ended.labels(end).inc()
            scope[SUMMARY] = {
                "frames": subscriber.sent,
                "backfilled": subscriber.from_table,
                "end": end,
            }
            if protocol is not None:
                protocol.watcher = None
            if watching is not None:
                watching.cancel()
        if subscriber.end is not End.LOST:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _backfill(self, subscriber: Subscriber, send: Any) -> None:
        """Send the table's events after ``last_sent`` until a read comes back short.

        The next page is read while the current one is being sent, so a long replay keeps
        both the database and the socket busy.
        """
        rows = await self._page(subscriber, send, subscriber.last_sent)
        while rows and subscriber.end is None:
            last = rows[-1]
            reading = (
                asyncio.ensure_future(self._page(subscriber, send, last[0]))
                if len(rows) == BACKFILL_PAGE
                else None
            )
            body = "".join([frame_text(row) for row in rows]).encode()
            metrics.backfilled_events.inc(len(rows))
            subscriber.from_table += len(rows)
            try:
                await send({"type": "http.response.body", "body": body, "more_body": True})
            finally:
                rows = await reading if reading is not None else []
            subscriber.backfilled(last[0], terminal=last[4] in TERMINAL_TYPES)

    async def _page(self, subscriber: Subscriber, send: Any, after: int) -> list[Any]:
        """The next page after ``after``. If pruning removed events after the subscriber's
        position, a resuming client is sent ``event: reset`` first and the stream goes on after
        the watermark (a stream that began with a snapshot has nothing to reload)."""
        wanted = subscriber.selection
        selection = EventFilter(
            tenant=wanted.tenant,
            after=after,
            task_id=sorted(wanted.task_ids),
            type=sorted(wanted.types),
            kind=sorted(wanted.kinds),
        )
        async with self._backfills:
            rows, pruned = await self.reader.stream_page(selection, limit=BACKFILL_PAGE)
        if pruned > subscriber.last_sent:
            if subscriber.resumed:
                body = reset_frame(pruned)
                await send({"type": "http.response.body", "body": body, "more_body": True})
            subscriber.backfilled(pruned, terminal=False)
            rows = [row for row in rows if row[0] > pruned]
        return rows

    async def _live(self, subscriber: Subscriber, sink: Sink, send: Any) -> None:
        """Wait for the end; under a :class:`QueuedSink`, also send what it collects; for a
        subscriber behind (``?progress=latest``), wait for the socket and catch up."""
        loop = asyncio.get_running_loop()
        while True:
            await subscriber.woken_up()
            if isinstance(sink, QueuedSink) and sink.pending:
                body = sink.take()
                await send({"type": "http.response.body", "body": body, "more_body": True})
            while subscriber.behind is not None and subscriber.end is None:
                await _first(sink.drained(), subscriber.woken_up())
                subscriber.catch_up(loop.time())
            if subscriber.end is not None:
                return

    def stop(self) -> None:
        """Shutdown: refuse new streams (not ready) and end the open ones cleanly."""
        self.stopping = True
        self.hub.stop_all()


async def _first(*waits: Coroutine[Any, Any, None]) -> None:
    """Until the first of ``waits`` is done; the others are cancelled."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def _watch(receive: Any, subscriber: Subscriber) -> None:
    """Under a server without :class:`HttpProtocol`, a vanished client shows in ``receive``."""
    while (await receive())["type"] != "http.disconnect":
        pass
    subscriber.lost()
