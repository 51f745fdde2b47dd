"""Retention: ``taskstream prune`` and ``taskstream purge`` as an operator runs them, and what
clients see afterwards: a stream resumed into pruned history is told so (``event: reset``)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.helpers import Service, settled
from tests.processes import TASKSTREAM
from tests.sse import SseClient, wait_ready


async def taskstream(service: Service, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TASKSTREAM")}
    env.update(TASKSTREAM_DATABASE_URL=service.database_url, TASKSTREAM_JWT_SECRET=service.secret)
    process = await asyncio.create_subprocess_exec(
        str(TASKSTREAM),
        *args,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def age(service: Service, through_seq: int, days: float) -> None:
    """Make every event up to ``through_seq`` ``days`` old, keeping times in seq order."""
    connection = await asyncpg.connect(service.database_url)
    try:
        await connection.execute(
            "UPDATE events SET time = time - make_interval(secs => $2) WHERE seq <= $1",
            through_seq,
            days * 86400,
        )
    finally:
        await connection.close()


async def count_events(service: Service) -> int:
    connection = await asyncpg.connect(service.database_url)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM events"))
    finally:
        await connection.close()


async def history_with_old_part(service: Service) -> tuple[list[Any], list[Any]]:
    """Two finished tasks and a running one, whose first events are 40 days old; returns the
    old events and the recent ones (the tenant's whole log is their concatenation)."""
    for task_id in ("a", "b", "c"):
        await service.api.create_task(id=task_id)
        await service.api.event(task_id, "started")
        await service.api.event(task_id, "progress", {"percent": 50, "stage": "old"})
    await service.api.event("a", "succeeded")
    await service.api.event("b", "failed")
    old = await service.api.all_events()
    await age(service, old[-1]["seq"], days=40)
    await service.api.event("c", "progress", {"percent": 80, "stage": "new"})
    await service.api.event("c", "log")
    recent = (await service.api.all_events())[len(old) :]
    return old, recent


async def test_prune_removes_old_history_in_batches_and_keeps_the_tasks(
    service: Service, tmp_path: Path
) -> None:
    old, recent = await history_with_old_part(service)
    tasks_before = [settled(await service.api.task(t)) for t in ("a", "b", "c")]
    status, out, err = await taskstream(
        service, tmp_path, "prune", "--older-than", "30d", "--batch", "3"
    )
    assert status == 0, err
    watermark = old[-1]["seq"]
    assert f"removed {len(old)} event(s)" in out, out
    assert f"complete after seq {watermark}" in out, out
    assert await service.api.all_events() == recent
    assert [settled(await service.api.task(t)) for t in ("a", "b", "c")] == tasks_before
    again = await taskstream(service, tmp_path, "prune", "--older-than", "30d")
    assert again[0] == 0 and "removed 0 event(s)" in again[1], again


async def test_prune_of_nothing_old_changes_nothing(service: Service, tmp_path: Path) -> None:
    await service.api.create_task(id="a")
    status, out, _ = await taskstream(service, tmp_path, "prune", "--older-than", "1d")
    assert status == 0
    assert "removed 0 event(s)" in out and "complete after seq 0" in out, out
    assert await count_events(service) == 1


@pytest.mark.parametrize("older_than", ["30", "d", "0d", "-1d", "3y"])
async def test_prune_wants_an_age(service: Service, tmp_path: Path, older_than: str) -> None:
    status, _, err = await taskstream(service, tmp_path, "prune", "--older-than", older_than)
    assert status == 2 and "age" in err, err


async def test_a_stream_resumed_into_pruned_history_gets_reset_then_the_rest(
    service: Service, tmp_path: Path
) -> None:
    old, recent = await history_with_old_part(service)
    assert (await taskstream(service, tmp_path, "prune", "--older-than", "30d"))[0] == 0
    watermark = old[-1]["seq"]
    await wait_ready(service.client)
    token = service.token()
    for path, resume, expected in (
        ("/v1/stream", 0, recent),
        ("/v1/stream", old[2]["seq"], recent),
        ("/v1/tasks/c/stream", old[0]["seq"], [e for e in recent if e["task_id"] == "c"]),
    ):
        async with await SseClient.open(
            service.base_url, path, token=token, last_event_id=resume
        ) as client:
            reset = await client.next_event()
            assert reset is not None and reset.event == "reset", reset
            assert reset.id == str(watermark)
            assert reset.json() == {"reason": "history_pruned", "pruned_through_seq": watermark}
            frames = await client.events(len(expected))
            assert [json.loads(frame.data) for frame in frames] == expected


async def test_no_reset_when_nothing_the_client_lacks_was_pruned(
    service: Service, tmp_path: Path
) -> None:
    old, recent = await history_with_old_part(service)
    assert (await taskstream(service, tmp_path, "prune", "--older-than", "30d"))[0] == 0
    await wait_ready(service.client)
    token = service.token()
    async with await SseClient.open(
        service.base_url, "/v1/stream", token=token, last_event_id=old[-1]["seq"]
    ) as resumed:
        first = await resumed.next_event()
        assert first is not None and first.json() == recent[0]
    async with await SseClient.open(service.base_url, "/v1/tasks/c/stream", token=token) as fresh:
        snapshot = await fresh.next_event()
        assert snapshot is not None and snapshot.event == "snapshot"
        live = await service.api.event("c", "log")
        after = await fresh.next_event()
        assert after is not None and after.json() == live  # no reset after a snapshot


async def test_purge_removes_a_tenant_entirely_and_says_so(
    service: Service, tmp_path: Path
) -> None:
    other = service.as_(tenant="t2")
    for task_id in ("a", "b"):
        await service.api.create_task(id=task_id)
        await service.api.event(task_id, "started")
    await other.create_task(id="a")
    status, out, err = await taskstream(service, tmp_path, "purge", "--tenant", "t1")
    assert status == 0, err
    assert "removed 2 task(s) and 4 event(s) of tenant 't1'" in out, out
    assert (await service.api.list_tasks())["items"] == []
    assert await service.api.all_events() == []
    assert [t["id"] for t in (await other.list_tasks())["items"]] == ["a"]
    assert len(await other.all_events()) == 1


async def test_purge_of_one_task(service: Service, tmp_path: Path) -> None:
    await service.api.create_task(id="a")
    await service.api.create_task(id="b")
    status, out, _ = await taskstream(service, tmp_path, "purge", "--tenant", "t1", "--task", "a")
    assert status == 0
    assert "removed 1 task(s) and 1 event(s) of task 'a' of tenant 't1'" in out, out
    assert [t["id"] for t in (await service.api.list_tasks())["items"]] == ["b"]
