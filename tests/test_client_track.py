"""``track()``: lifecycle events around a block, coalesced progress, cancellation, leases."""

from __future__ import annotations

import asyncio

import pytest

from service.client import AsyncTaskstream, RetryPolicy, TaskFinished
from tests.faults import running_proxy
from tests.helpers import Service

FAST = RetryPolicy(retries=3, backoff=0.01, max_backoff=0.05)


def connect(service: Service, base_url: str | None = None) -> AsyncTaskstream:
    return AsyncTaskstream(base_url or service.base_url, service.token(), retry=FAST)


async def types_of(service: Service, task_id: str) -> list[str]:
    return [event["type"] for event in await service.api.history(task_id)]


async def test_a_block_that_ends_normally_succeeds(service: Service) -> None:
    async with (
        connect(service) as client,
        client.track(kind="build", title="Build", metadata={"n": 1}, id="b") as task,
    ):
        assert task.task.id == "b"
        task.progress(percent=10, message="compiling", stage="compile")
        await task.log("halfway")
        task.progress(done=5, total=10)
        task.result = {"artifacts": 3}
    assert await types_of(service, "b") == [
        "created",
        "started",
        "progress",
        "log",
        "progress",
        "succeeded",
    ]
    final = await service.api.task("b")
    assert (final["status"], final["result"], final["title"]) == (
        "succeeded",
        {"artifacts": 3},
        "Build",
    )
    assert (final["done"], final["total"], final["message"], final["stage"]) == (
        5,
        10,
        "compiling",
        "compile",
    )
    started = (await service.api.history("b"))[1]
    assert started["data"]["worker"]


async def test_an_exception_fails_the_task_and_propagates(service: Service) -> None:
    async with connect(service) as client:
        with pytest.raises(ValueError, match="disk full"):
            async with client.track(kind="build", id="b") as task:
                task.progress(percent=30)
                raise ValueError("disk full")
    assert await types_of(service, "b") == ["created", "started", "progress", "failed"]
    final = await service.api.task("b")
    assert final["status"] == "failed"
    assert final["error"] == {"message": "disk full", "code": "ValueError"}


async def test_high_rate_progress_is_coalesced_without_losing_order(service: Service) -> None:
    async with (
        connect(service) as client,
        client.track(kind="import", id="i", progress_interval=0.05) as task,
    ):
        for done in range(1, 2001):
            task.progress(done=done, total=2000)
            if done % 500 == 0:
                await task.log(f"at {done}")
            if done % 50 == 0:
                await asyncio.sleep(0.01)
    history = await service.api.history("i")
    types = [event["type"] for event in history]
    progress = [event["data"]["done"] for event in history if event["type"] == "progress"]
    assert 4 <= len(progress) < 400, len(progress)
    assert progress == sorted(set(progress)) and progress[-1] == 2000
    assert types[:2] == ["created", "started"] and types[-1] == "succeeded"
    logs = [index for index, type in enumerate(types) if type == "log"]
    messages = [history[index]["data"]["message"] for index in logs]
    assert messages == [f"at {n}" for n in (500, 1000, 1500, 2000)]
    for index in logs:  # the value recorded just before each log went out just before it
        assert history[index - 1]["type"] == "progress"
        assert history[index - 1]["data"]["done"] == int(history[index]["data"]["message"][3:])
    assert (await service.api.task("i"))["percent"] == 100


async def test_track_survives_a_flaky_connection(service: Service) -> None:
    async with (
        running_proxy(service.base_url) as proxy,
        connect(service, proxy.base_url) as client,
    ):
        proxy.drop_after_forward("POST /v1/tasks ")
        proxy.drop_after_forward("POST /v1/events/batch", times=2)
        proxy.answer("POST /v1/events/batch", 503)
        async with client.track(kind="k", id="t") as task:
            task.progress(percent=50)
            await task.log("one")
            await task.log("two")
    assert await types_of(service, "t") == [
        "created",
        "started",
        "progress",
        "log",
        "log",
        "succeeded",
    ]


async def test_cancel_from_the_block_appends_cancelled_once(service: Service) -> None:
    async with connect(service) as client, client.track(kind="k", id="t") as task:
        task.progress(percent=5)
        await task.cancel("not needed")
        with pytest.raises(TaskFinished):
            task.progress(percent=6)
        with pytest.raises(TaskFinished):
            await task.log("after")
    assert await types_of(service, "t") == ["created", "started", "progress", "cancelled"]
    assert (await service.api.history("t"))[-1]["data"] == {"reason": "not needed"}


async def test_a_cancel_request_reaches_the_worker(service: Service) -> None:
    canceller = AsyncTaskstream(service.base_url, service.token(scopes="tasks:cancel"), retry=FAST)
    seen: list[int] = []

    async def cancel_soon(task_id: str) -> None:
        await asyncio.sleep(0.2)
        first = await canceller.cancel(task_id, reason="user clicked")
        again = await canceller.cancel(task_id)
        assert not first.replayed and again.replayed and again.event == first.event

    async with (
        canceller,
        connect(service) as client,
        client.track(kind="k", id="t", raise_on_cancel=True, progress_interval=0.02) as task,
    ):
        cancelling = asyncio.create_task(cancel_soon(task.task.id))
        for percent in range(100):
            task.progress(percent=percent)
            seen.append(percent)
            await asyncio.sleep(0.02)
    await cancelling
    assert task.cancel_requested and len(seen) < 100
    types = await types_of(service, "t")
    assert types[-1] == "cancelled" and "cancel_requested" in types and "failed" not in types
    final = await service.api.task("t")
    assert final["status"] == "cancelled" and final["cancel_requested"] is True


async def test_a_cancel_request_seen_without_raising(service: Service) -> None:
    async with (
        connect(service) as client,
        client.track(kind="k", id="t", progress_interval=0.02) as task,
    ):
        await client.cancel("t")
        while not task.cancel_requested:
            task.progress(percent=1)
            await asyncio.sleep(0.02)
        await task.cancel("stopping as asked")
    types = await types_of(service, "t")
    assert types[-1] == "cancelled" and types.count("cancelled") == 1


async def test_the_lease_is_kept_alive_while_the_block_runs(service: Service) -> None:
    async with connect(service) as client, client.track(kind="k", id="t", lease_seconds=1):
        await asyncio.sleep(2.2)
    history = await service.api.history("t")
    renewals = [event["data"] for event in history if event["type"] == "log"]
    assert len(renewals) >= 4
    assert renewals[0] == {"level": "debug", "message": "lease renewed"}
    assert history[-1]["type"] == "succeeded"
    assert (await service.api.task("t"))["lease_seconds"] == 1
