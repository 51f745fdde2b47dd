"""Retries through real injected failures: exactly one event per logical call."""

from __future__ import annotations

import socket
import time

import pytest

from service.client import (
    AsyncTaskstream,
    ConnectionFailed,
    RateLimited,
    RetryPolicy,
    ServerError,
)
from tests.faults import running_proxy
from tests.helpers import Service

FAST = RetryPolicy(retries=3, backoff=0.01, max_backoff=0.05)
APPEND = "POST /v1/tasks/t/events "


async def test_503_answers_are_retried_and_the_event_appended_once(service: Service) -> None:
    async with (
        running_proxy(service.base_url) as proxy,
        AsyncTaskstream(proxy.base_url, service.token(), retry=FAST) as client,
    ):
        await client.create_task("build", id="t")
        proxy.answer(APPEND, 503, times=2)
        appended = await client.append("t", "progress", {"percent": 5})
        assert not appended.replayed
        assert proxy.seen(APPEND) == 3
        proxy.answer(APPEND, 503, times=4)
        with pytest.raises(ServerError) as failed:
            await client.append("t", "progress", {"percent": 6})
        assert failed.value.status == 503 and proxy.seen(APPEND) == 7
    history = await service.api.history("t")
    assert [e["type"] for e in history] == ["created", "progress"]


async def test_a_connection_dropped_after_the_commit_appends_once(service: Service) -> None:
    async with (
        running_proxy(service.base_url) as proxy,
        AsyncTaskstream(proxy.base_url, service.token(), retry=FAST) as client,
    ):
        proxy.drop_after_forward("POST /v1/tasks ")
        task = await client.create_task("build", id="t")
        assert task.version == 1
        assert proxy.seen("POST /v1/tasks ") == 2

        proxy.drop_after_forward(APPEND)
        appended = await client.append("t", "progress", {"percent": 5})
        assert appended.replayed and proxy.seen(APPEND) == 2

        proxy.drop_after_forward("POST /v1/events/batch", times=2)
        results = await client.append_batch(
            [
                {"task_id": "t", "type": "progress", "data": {"percent": 7}},
                {"task_id": "t", "type": "log", "data": {"level": "info", "message": "m"}},
            ]
        )
        assert [r.status for r in results] == [200, 200]
        assert proxy.seen("POST /v1/events/batch") == 3
    history = await service.api.history("t")
    assert [e["type"] for e in history] == ["created", "progress", "progress", "log"]
    assert len(await service.api.all_tasks()) == 1


@pytest.mark.parametrize(
    "service", [{"append_rate_per_second": 0.5, "append_burst": 4}], indirect=True
)
async def test_429_waits_for_retry_after(service: Service) -> None:
    async with AsyncTaskstream(service.base_url, service.token(), retry=FAST) as client:
        await client.create_task("build", id="t")
        for percent in (1, 2, 3):
            await client.append("t", "progress", {"percent": percent})
        refused = await service.api.append("t", "progress", {"percent": 4})
        assert refused.status_code == 429
        wait = float(refused.headers["retry-after"])
        began = time.monotonic()
        appended = await client.append("t", "progress", {"percent": 4})
        assert time.monotonic() - began >= wait - 0.05
        assert appended.event.version == 5
        impatient = RetryPolicy(retries=3, backoff=0.01, max_retry_after=0.5)
        async with AsyncTaskstream(service.base_url, service.token(), retry=impatient) as hurried:
            with pytest.raises(RateLimited) as limited:
                await hurried.append("t", "progress", {"percent": 6})
            assert limited.value.retry_after is not None and limited.value.retry_after >= 1
    history = await service.api.history("t")
    assert [e["data"].get("percent") for e in history[1:]] == [1, 2, 3, 4]


async def test_429_from_a_proxy_with_an_http_date(service: Service) -> None:
    async with (
        running_proxy(service.base_url) as proxy,
        AsyncTaskstream(proxy.base_url, service.token(), retry=FAST) as client,
    ):
        await client.create_task("build", id="t")
        proxy.answer(APPEND, 429, headers={"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"})
        proxy.answer(APPEND, 429, headers={"Retry-After": "1"})
        began = time.monotonic()
        await client.append("t", "log", {"level": "info", "message": "m"})
        assert time.monotonic() - began >= 0.95
        assert proxy.seen(APPEND) == 3
    assert len(await service.api.history("t")) == 2


async def test_no_service_raises_connection_failed_after_the_retries() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    policy = RetryPolicy(retries=2, backoff=0.01)
    async with AsyncTaskstream(f"http://127.0.0.1:{port}", "token", retry=policy) as client:
        with pytest.raises(ConnectionFailed, match="no answer after 3 attempts"):
            await client.get_task("t")
        with pytest.raises(ConnectionFailed):
            [t async for t in client.subscribe_all(last_event_id=0)]
