"""The process's one LISTEN connection: wake-ups in, table reads, frames out to the hub.

A notification carries nothing the listener relies on; it only says "read the table". The
table is read after the hub's position in seq order, and because positions are handed out in
commit order (see queries.WRITE_GROUP), reading ``seq > position`` never skips an event. So a
lost notification only delays (the poll catches up), and a lost connection only pauses: after
reconnecting, the listener reads on from where it was.

asyncpg details this relies on: the connection is its own, not a pooled one (returning a
connection to a pool runs ``UNLISTEN *``); notifications arrive only between transactions, so
the reads run on pool connections; a dead connection is ``terminate()``d, since ``close()``
can hang on a half-open socket.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

from service import metrics
from service.store import queries
from service.store.database import asyncpg_dsn
from service.store.reader import Reader
from service.stream.frames import event_frame
from service.stream.hub import Hub

log = logging.getLogger("taskstream.listener")

PAGE = 1000
"""Rows per read of the table: the most frames one publish hands the hub."""
MAX_BACKOFF_SECONDS = 5.0


class Listener:
    def __init__(
        self,
        url: str,
        reader: Reader,
        hub: Hub,
        *,
        poll_seconds: float,
        probe_seconds: float,
    ) -> None:
        self._dsn = asyncpg_dsn(url)
        self._reader = reader
        self._hub = hub
        self._poll_seconds = poll_seconds
        self._probe_seconds = probe_seconds
        self._wakeup = asyncio.Event()
        self._connection: Any = None
        self._started = False
        self.attempted = asyncio.Event()
        """Set once the first attempt to connect and catch up has succeeded or failed."""
        self.ready = False
        """Connected, listening, and caught up with the table at least once since."""
        self.problem = "the listener has not connected yet"

    async def run(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._connect()
                await self._catch_up()
                self.ready = True
                metrics.listener_connected.set(1)
                self.attempted.set()
                backoff = 0.1
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.ready = False
                metrics.listener_connected.set(0)
                self.problem = f"listener: {type(error).__name__}: {error}"
                log.warning("%s; reconnecting in %.1fs", self.problem, backoff)
            finally:
                self._drop()
                self.attempted.set()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            metrics.listener_reconnects.inc()

    async def _connect(self) -> None:
        connection = await asyncpg.connect(self._dsn, timeout=self._probe_seconds)
        self._connection = connection
        connection.add_termination_listener(lambda _: self._wakeup.set())
        await connection.add_listener(queries.CHANNEL, self._notified)
        if not self._started:
            # Streams without a resume position start from now; older events are read by
            # each stream's backfill, never by the listener.
            self._hub.position = await self._reader.newest_seq()
            self._started = True

    def _notified(self, *_: object) -> None:
        self._wakeup.set()

    async def _follow(self) -> None:
        """Read on each notification, and every ``poll_seconds`` anyway after a probe."""
        while True:
            try:
                await asyncio.wait_for(self._wakeup.wait(), self._poll_seconds)
            except TimeoutError:
                await self._probe()
            if self._connection.is_closed():
                raise ConnectionError("the LISTEN connection closed")
            self._wakeup.clear()
            await self._catch_up()

    async def _probe(self) -> None:
        """A half-open connection delivers nothing and reports nothing; a query reveals it."""
        try:
            await asyncio.wait_for(self._connection.fetchval("SELECT 1"), self._probe_seconds)
        except TimeoutError:
            raise ConnectionError(f"no answer to a probe in {self._probe_seconds}s") from None

    async def _catch_up(self) -> None:
        if not len(self._hub):
            # Nobody to deliver to: follow the head without reading or encoding the events.
            # A stream that opens later reads the table itself (its backfill), from its own
            # position, after joining the hub, so nothing this skips can be missed.
            self._hub.position = await self._reader.newest_seq()
        else:
            while True:
                rows = await self._reader.stream_tail(self._hub.position, limit=PAGE)
                if rows:
                    self._hub.publish([event_frame(row) for row in rows])
                if len(rows) < PAGE:
                    break
        metrics.listener_position.set(self._hub.position)

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.terminate()
            self._connection = None
        self._wakeup.clear()
