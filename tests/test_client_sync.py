"""The blocking client does what the async one does. The service runs in this test's event
loop, so every blocking call runs in a thread (``asyncio.to_thread``)."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.client import (
    InvalidTransition,
    NotFound,
    RetryPolicy,
    Snapshot,
    StreamItem,
    Taskstream,
)
from service.domain.models import Event
from tests.faults import running_proxy
from tests.helpers import Service

FAST = RetryPolicy(retries=3, backoff=0.01, max_backoff=0.05)


def connect(service: Service, base_url: str | None = None, scopes: str | None = None) -> Taskstream:
    token = service.token(scopes=scopes) if scopes else service.token()
    return Taskstream(base_url or service.base_url, token, retry=FAST)


async def test_calls_and_refusals(service: Service) -> None:
    def work() -> list[Event]:
        with connect(service) as client:
            task = client.create_task("build", title="B", id="t")
            assert client.get_task("t") == task
            assert not client.append("t", "started").replayed
            results = client.append_batch(
                [
                    {"task_id": "t", "type": "progress", "data": {"done": 1, "total": 2}},
                    {"task_id": "t", "type": "nonsense", "data": {}},
                ]
            )
            assert [r.status for r in results] == [201, 422]
            client.append("t", "succeeded", {"result": "ok"})
            with pytest.raises(InvalidTransition):
                client.append("t", "log", {"level": "info", "message": "late"})
            with pytest.raises(NotFound):
                client.get_task("nope")
            client.create_task("deploy", id="u")
            assert [t.id for t in client.list_tasks(page_size=1)] == ["u", "t"]
            assert client.list_tasks_page(kind="deploy").items[0].id == "u"
            assert list(client.export(task_id="t")) == list(client.events(task_id="t"))
            assert [e.task_id for e in client.events(type="created", page_size=1)] == ["t", "u"]
            return list(client.history("t", page_size=2))

    history = await asyncio.to_thread(work)
    assert [e.type for e in history] == ["created", "started", "progress", "succeeded"]


async def test_retries_append_exactly_once(service: Service) -> None:
    async with running_proxy(service.base_url) as proxy:

        def work() -> None:
            with connect(service, proxy.base_url) as client:
                proxy.drop_after_forward("POST /v1/tasks ")
                client.create_task("build", id="t")
                proxy.answer("POST /v1/tasks/t/events", 503, times=2)
                assert not client.append("t", "started").replayed
                proxy.drop_after_forward("POST /v1/tasks/t/events")
                assert client.append("t", "progress", {"percent": 1}).replayed
                proxy.drop_after_forward("POST /v1/events/batch")
                items = [{"task_id": "t", "type": "log", "data": {"level": "info", "message": "m"}}]
                assert client.append_batch(items)[0].status == 200

        await asyncio.to_thread(work)
    assert [e["type"] for e in await service.api.history("t")] == [
        "created",
        "started",
        "progress",
        "log",
    ]
    assert len(await service.api.all_tasks()) == 1


async def test_track_success_failure_and_coalescing(service: Service) -> None:
    def work() -> None:
        with connect(service) as client:
            with client.track(kind="import", id="ok", progress_interval=0.05) as task:
                for done in range(1, 1001):
                    task.progress(done=done, total=1000, stage="load")
                    if done == 500:
                        task.log("half")
                    if done % 100 == 0:
                        time.sleep(0.02)
                task.result = 7
            with pytest.raises(KeyError), client.track(kind="import", id="bad") as task:
                task.progress(percent=1)
                raise KeyError("missing")

    await asyncio.to_thread(work)
    history = await service.api.history("ok")
    types = [e["type"] for e in history]
    assert types[:2] == ["created", "started"] and types[-1] == "succeeded"
    assert history[-1]["data"] == {"result": 7}
    half = types.index("log")
    assert history[half - 1]["data"]["done"] == 500
    progress = [e["data"]["done"] for e in history if e["type"] == "progress"]
    assert progress == sorted(set(progress)) and progress[-1] == 1000 and len(progress) < 200
    failed = (await service.api.task("bad"))["error"]
    assert failed == {"message": "'missing'", "code": "KeyError"}


async def test_track_sees_a_cancel_request(service: Service) -> None:
    created = asyncio.Event()
    loop = asyncio.get_running_loop()

    def work() -> int:
        with connect(service) as client:
            with client.track(
                kind="k", id="t", raise_on_cancel=True, progress_interval=0.02
            ) as task:
                loop.call_soon_threadsafe(created.set)
                for percent in range(100):
                    task.progress(percent=percent)
                    time.sleep(0.02)
            return percent

    worker = asyncio.create_task(asyncio.to_thread(work))
    await created.wait()
    await service.as_(scopes="tasks:cancel").post("/v1/tasks/t/cancel", json={})
    assert await worker < 99
    assert (await service.api.task("t"))["status"] == "cancelled"


@pytest.mark.parametrize("service", [{"retry_ms": 50}], indirect=True)
async def test_subscribe_resumes_after_cuts(service: Service) -> None:
    await service.api.create_task(id="t")
    async with running_proxy(service.base_url) as proxy:

        def read() -> list[StreamItem]:
            with connect(service, proxy.base_url) as client:
                return list(client.subscribe("t"))

        reader = asyncio.create_task(asyncio.to_thread(read))
        for round in range(4):
            while proxy.seen("GET /v1/tasks/t/stream") <= round:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            for percent in range(round * 5, round * 5 + 5):
                await service.api.event("t", "progress", {"percent": percent})
            await asyncio.sleep(0.05)
            proxy.cut()
        await service.api.event("t", "succeeded")
        items = await asyncio.wait_for(reader, 20)
    history = await service.api.history("t")
    assert isinstance(items[0], Snapshot)
    assert [i.seq for i in items[1:] if isinstance(i, Event)] == [e["seq"] for e in history[1:]]
