"""Retention: pruning old history, and purging a tenant's data on request.

Pruning removes the oldest events, a bounded batch per transaction, so appends and readers
never wait on one long delete. Each batch raises the watermark ``pruned_through_seq`` in the
same transaction, so the watermark always covers every event that is gone. Since times grow
with seq, "older than" is a prefix of the log: everything up to the newest event older than the
cutoff. Task rows stay, with their final state and phase times; below the watermark a task's
history may have holes. A stream resumed from below the watermark is told so with an
``event: reset`` (stream/streams.py) rather than silently missing what was removed.

Purging removes everything of a tenant (or of one of its tasks): events first, then the task
rows, in batches. It leaves the watermark alone: what a purge removes is not history a client
of another tenant could miss, and the tenant's own clients have nothing left to resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from service.store import queries
from service.store.database import Database

BATCH = 10_000


@dataclass(frozen=True, slots=True)
class Pruned:
    events: int
    pruned_through_seq: int


@dataclass(frozen=True, slots=True)
class Purged:
    events: int
    tasks: int


async def prune(database: Database, older_than: datetime, *, batch: int = BATCH) -> Pruned:
    """Remove every event older than ``older_than``, ``batch`` rows per transaction."""
    async with database.connection() as connection:
        through = await connection.fetchval(queries.NEWEST_SEQ_BEFORE, older_than)
        watermark: int = await connection.fetchval(queries.PRUNED_THROUGH)
        removed = 0
        while through is not None and watermark < through:
            count, watermark = await connection.fetchrow(
                queries.PRUNE_BATCH, watermark, through, batch
            )
            removed += count
    return Pruned(removed, watermark)


async def purge(
    database: Database, tenant: str, task_id: str | None = None, *, batch: int = BATCH
) -> Purged:
    """Remove a tenant's events and tasks (or one task's), ``batch`` rows per transaction."""
    totals = {queries.PURGE_EVENTS: 0, queries.PURGE_TASKS: 0}
    async with database.connection() as connection:
        for statement in totals:  # events first: they reference their task
            while True:
                status = await connection.execute(statement, tenant, task_id, batch)
                count = int(status.split()[-1])
                totals[statement] += count
                if count < batch:
                    break
    return Purged(totals[queries.PURGE_EVENTS], totals[queries.PURGE_TASKS])
