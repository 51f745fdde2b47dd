"""elapsed_seconds and eta_seconds (contract v1.1): worked out when the task is read.

Event times are the database's clock, so to get exact figures the tests move a task's history
back in time in their own database, as if the events had been spread over minutes.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from tests.helpers import Service


async def shift(service: Service, task_id: str, seconds_ago: list[float]) -> None:
    """Place the task's events (oldest first) at these many seconds before now, and its task row
    times with them."""
    connection = await asyncpg.connect(service.database_url)
    try:
        async with connection.transaction():
            seqs = await connection.fetch(
                "SELECT seq FROM events WHERE tenant = 't1' AND task_id = $1 ORDER BY seq", task_id
            )
            assert len(seqs) == len(seconds_ago)
            for row, ago in zip(seqs, seconds_ago, strict=True):
                await connection.execute(
                    "UPDATE events SET time = now() - make_interval(secs => $2) WHERE seq = $1",
                    row["seq"],
                    ago,
                )
            await connection.execute(
                """
                UPDATE tasks t SET
                  created_at = (SELECT min(time) FROM events e
                                WHERE e.tenant = t.tenant AND e.task_id = t.id),
                  updated_at = (SELECT max(time) FROM events e
                                WHERE e.tenant = t.tenant AND e.task_id = t.id),
                  started_at = (SELECT min(time) FROM events e WHERE e.tenant = t.tenant
                                AND e.task_id = t.id AND e.type IN ('started', 'progress')),
                  finished_at = CASE WHEN status IN ('succeeded', 'failed', 'cancelled')
                                THEN (SELECT max(time) FROM events e
                                      WHERE e.tenant = t.tenant AND e.task_id = t.id) END
                WHERE tenant = 't1' AND id = $1
                """,
                task_id,
            )
    finally:
        await connection.close()


async def timing(service: Service, task_id: str) -> tuple[Any, Any]:
    task = await service.api.task(task_id)
    listed = [t for t in (await service.api.list_tasks())["items"] if t["id"] == task_id]
    assert listed and abs((listed[0]["elapsed_seconds"] or 0) - (task["elapsed_seconds"] or 0)) < 1
    return task["elapsed_seconds"], task["eta_seconds"]


async def test_a_pending_task_has_neither(service: Service) -> None:
    await service.api.create_task(id="job")
    assert await timing(service, "job") == (None, None)


async def test_a_running_task_counts_from_its_start(service: Service) -> None:
    await service.api.create_task(id="job")
    await service.api.event("job", "started")
    await shift(service, "job", [100, 60])
    elapsed, eta = await timing(service, "job")
    assert 60 <= elapsed < 62
    assert eta is None  # no progress yet


async def test_eta_extrapolates_the_recent_rate(service: Service) -> None:
    await service.api.create_task(id="job")
    await service.api.event("job", "started")
    for percent in (10, 20, 30):
        await service.api.event("job", "progress", {"percent": percent})
    # 10% -> 30% in 20 s: 1%/s; 70% left, the last report 5 s ago: 65 s to go
    await shift(service, "job", [40, 30, 25, 15, 5])
    elapsed, eta = await timing(service, "job")
    assert 30 <= elapsed < 32
    assert 63 <= eta <= 65


async def test_eta_follows_done_and_total(service: Service) -> None:
    await service.api.create_task(id="job")
    await service.api.event("job", "progress", {"done": 100, "total": 1000})
    await service.api.event("job", "progress", {"done": 300})
    # 10% -> 30% in 10 s: 2%/s, 70% left, reported just now: 35 s
    await shift(service, "job", [20, 10, 0])
    _, eta = await timing(service, "job")
    assert 33 <= eta <= 35


async def test_eta_looks_at_the_last_ten_reports_only(service: Service) -> None:
    await service.api.create_task(id="job")
    await service.api.event("job", "started")
    # a slow start (1% in 1000 s), then 10 reports at 1%/s
    await service.api.event("job", "progress", {"percent": 1})
    for percent in range(41, 51):
        await service.api.event("job", "progress", {"percent": percent})
    await shift(service, "job", [3000, 2000, 2000, *range(9, -1, -1)])
    _, eta = await timing(service, "job")
    assert 49 <= eta <= 50


async def test_an_overdue_task_has_eta_zero(service: Service) -> None:
    await service.api.create_task(id="job")
    await service.api.event("job", "progress", {"percent": 10})
    await service.api.event("job", "progress", {"percent": 20})
    # 10%/10 s: 80 s to go as of the last report, which was 100 s ago
    await shift(service, "job", [200, 110, 100])
    assert (await timing(service, "job"))[1] == 0


async def test_no_eta_without_advance(service: Service) -> None:
    await service.api.create_task(id="job")
    await service.api.event("job", "progress", {"percent": 50, "stage": "download"})
    await service.api.event("job", "progress", {"percent": 5, "stage": "unpack"})
    await shift(service, "job", [30, 20, 10])
    assert (await timing(service, "job"))[1] is None


async def test_a_finished_task_keeps_its_run_time_and_has_no_eta(service: Service) -> None:
    await service.api.create_task(id="job")
    await service.api.event("job", "started")
    await service.api.event("job", "progress", {"percent": 50})
    await service.api.event("job", "succeeded")
    await shift(service, "job", [500, 400, 300, 100])
    first = await timing(service, "job")
    assert first == (300.0, None)
    assert await timing(service, "job") == first  # it no longer moves
