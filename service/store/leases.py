"""Leases: a running task whose worker fell silent for its ``lease_seconds`` is failed.

Every replica sweeps. The failure is appended like any other event, with the version the sweep
read as ``expected_version``: if the worker spoke meanwhile, or another replica failed the task
first, the append is refused (version conflict, invalid transition) and nothing happens, so a
task is failed exactly once however many replicas see it expire.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from service import metrics
from service.domain.models import ErrorInfo, EventType, FailedData
from service.domain.payload import CheckedEvent
from service.domain.state import json_text
from service.store import queries
from service.store.appender import Appended, Appender, AppendEvent
from service.store.database import UNAVAILABLE, Database

log = logging.getLogger(__name__)

SWEEP_BATCH = 500
LEASE_EXPIRED = "lease_expired"


def _expiry(lease_seconds: int) -> CheckedEvent:
    data = FailedData(
        error=ErrorInfo(
            code=LEASE_EXPIRED,
            message=f"no event for {lease_seconds} s: the lease expired and the worker is"
            " presumed gone",
        )
    )
    return CheckedEvent(EventType.FAILED, data, json_text(data.model_dump(exclude_none=True)))


class LeaseSweeper:
    def __init__(self, database: Database, appender: Appender, *, interval: float) -> None:
        self._database = database
        self._appender = appender
        self._interval = interval

    async def run(self) -> None:
        failing = False  # say so once, not every interval, while the database is away
        while True:
            try:
                await self.sweep()
                failing = False
            except (*UNAVAILABLE, asyncpg.PostgresError) as error:
                if not failing:
                    log.warning(
                        "lease sweep failed (%s); retrying every %.1fs", error, self._interval
                    )
                failing = True
            await asyncio.sleep(self._interval)

    async def sweep(self) -> int:
        """Fail every task whose lease expired; how many this call failed."""
        failed = 0
        while True:
            async with self._database.connection() as connection:
                rows = await connection.fetch(queries.EXPIRED_LEASES, SWEEP_BATCH)
            if not rows:
                return failed
            commands = [
                AppendEvent(
                    row["tenant"],
                    row["id"],
                    _expiry(row["lease_seconds"]),
                    expected_version=row["version"],
                )
                for row in rows
            ]
            outcomes = await self._appender.submit(commands, "lease")
            done = sum(isinstance(outcome, Appended) for outcome in outcomes)
            failed += done
            if done:
                metrics.leases_expired.inc(done)
                log.info("failed %d task(s) whose lease expired", done)
            if len(rows) < SWEEP_BATCH or not done:
                return failed
