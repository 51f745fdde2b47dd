"""The read path: tasks, listings and history pages, and exports streamed from one snapshot."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from service.domain.models import is_task_id
from service.domain.problems import TaskNotFound, invalid
from service.domain.state import StoredEvent, TaskState, task_from_row
from service.domain.wire import parse_timestamp
from service.store import queries
from service.store.database import Database

EXPORT_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class EventFilter:
    """A selection of a tenant's events, in seq order after ``after``."""

    tenant: str
    after: int = 0
    task_id: list[str] = field(default_factory=list)
    type: list[str] = field(default_factory=list)
    kind: list[str] = field(default_factory=list)
    since: datetime | None = None
    until: datetime | None = None

    def query(
        self, *, limit: int | None, columns: str = queries.EVENT_COLUMNS
    ) -> tuple[str, list[Any]]:
        names = [name for name in ("task_id", "type", "kind") if getattr(self, name)]
        names += [name for name in ("since", "until") if getattr(self, name) is not None]
        arguments: list[Any] = [self.tenant, self.after, *(getattr(self, n) for n in names)]
        if limit is not None:
            arguments.append(limit)
        return queries.select_events(names, limited=limit is not None, columns=columns), arguments


@dataclass(frozen=True, slots=True)
class TaskPage:
    items: list[TaskState]
    next_cursor: str | None
    as_of_seq: int


@dataclass(frozen=True, slots=True)
class EventPage:
    items: list[StoredEvent]
    next_after: int | None


def encode_cursor(task: TaskState) -> str:
    raw = msgspec.json.encode([task.created_at.isoformat(), task.id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created_at, task_id = msgspec.json.decode(
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        )
    except (ValueError, TypeError, RecursionError, binascii.Error, msgspec.DecodeError):
        created_at, task_id = None, None
    moment = parse_timestamp(created_at) if isinstance(created_at, str) else None
    if moment is None or not isinstance(task_id, str) or not is_task_id(task_id):
        raise invalid("cursor", "not a cursor this service handed out")
    return moment, task_id


class Reader:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def task(self, tenant: str, task_id: str) -> TaskState:
        async with self._database.connection() as connection:
            row = await connection.fetchrow(queries.GET_TASK, tenant, task_id)
        if row is None:
            raise TaskNotFound(f"task {task_id!r} does not exist")
        return task_from_row(row)

    async def tasks(
        self,
        tenant: str,
        *,
        status: list[str],
        kind: list[str],
        cursor: str | None,
        limit: int,
    ) -> TaskPage:
        names: list[str] = []
        arguments: list[Any] = [tenant]
        for name, values in (("status", status), ("kind", kind)):
            if values:
                names.append(name)
                arguments.append(values)
        if cursor is not None:
            names.append("cursor")
            arguments.extend(decode_cursor(cursor))
        arguments.append(limit + 1)
        # One snapshot for the page and its position, so resuming a stream from as_of_seq
        # yields exactly the changes the page does not show.
        async with (
            self._database.connection() as connection,
            connection.transaction(isolation="repeatable_read", readonly=True),
        ):
            rows = await connection.fetch(queries.list_tasks(names), *arguments)
            as_of_seq = await connection.fetchval(queries.NEWEST_SEQ)
        items = [task_from_row(row) for row in rows[:limit]]
        next_cursor = encode_cursor(items[-1]) if len(rows) > limit else None
        return TaskPage(items, next_cursor, as_of_seq)

    async def task_history(self, tenant: str, task_id: str, *, after: int, limit: int) -> EventPage:
        async with self._database.connection() as connection:
            rows = await connection.fetch(queries.TASK_HISTORY, tenant, task_id, after, limit + 1)
            if not rows and not await connection.fetchval(queries.TASK_EXISTS, tenant, task_id):
                raise TaskNotFound(f"task {task_id!r} does not exist")
        return _page(rows, limit)

    async def events(self, selection: EventFilter, *, limit: int) -> EventPage:
        sql, arguments = selection.query(limit=limit + 1)
        async with self._database.connection() as connection:
            rows = await connection.fetch(sql, *arguments)
        return _page(rows, limit)

    async def stream_page(self, selection: EventFilter, *, limit: int) -> tuple[list[Any], int]:
        """Rows of ``queries.STREAM_COLUMNS``, from which stream frames are built (the JSON data
        and the time come as text, so building a frame decodes nothing), and the pruning
        watermark, read after them: if pruning removed events the rows would have held, the
        watermark read next covers them."""
        sql, arguments = selection.query(limit=limit, columns=queries.STREAM_COLUMNS)
        async with self._database.connection() as connection:
            rows: list[Any] = await connection.fetch(sql, *arguments)
            pruned: int = await connection.fetchval(queries.PRUNED_THROUGH)
        return rows, pruned

    async def stream_tail(self, after: int, *, limit: int) -> list[Any]:
        """Every tenant's events after ``after``, as ``stream_page`` rows: the listener's read."""
        async with self._database.connection() as connection:
            rows: list[Any] = await connection.fetch(queries.EVENTS_AFTER, after, limit)
        return rows

    async def newest_seq(self) -> int:
        async with self._database.connection() as connection:
            seq: int = await connection.fetchval(queries.NEWEST_SEQ)
        return seq

    async def export(self, selection: EventFilter) -> AsyncIterator[list[StoredEvent]]:
        """The whole selection as committed when the export began, in chunks: constant memory."""
        sql, arguments = selection.query(limit=None)
        async with (
            self._database.connection() as connection,
            connection.transaction(isolation="repeatable_read", readonly=True),
        ):
            cursor = await connection.cursor(sql, *arguments)
            while rows := await cursor.fetch(EXPORT_CHUNK):
                yield [StoredEvent(*row) for row in rows]


def _page(rows: list[Any], limit: int) -> EventPage:
    items = [StoredEvent(*row) for row in rows[:limit]]
    return EventPage(items, items[-1].seq if len(rows) > limit else None)
