"""``subscribe`` / ``subscribe_all``: typed items, resumption after cuts, clean ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import pytest

from service.client import (
    AsyncTaskstream,
    Event,
    Forbidden,
    NotFound,
    RateLimited,
    RetryPolicy,
    Snapshot,
    StreamItem,
    TaskStatus,
    Unauthorized,
)
from service.client.sse import Decoder, Message
from tests.faults import running_proxy
from tests.helpers import Service

FAST = RetryPolicy(retries=3, backoff=0.01, max_backoff=0.05)
T = TypeVar("T")

# The service's `retry:` (ms): how soon a subscriber reconnects after a cut.
QUICK_RETRY = {"retry_ms": 50}


def connect(
    service: Service, base_url: str | None = None, scopes: str | None = None
) -> AsyncTaskstream:
    token = service.token(scopes=scopes) if scopes else service.token()
    return AsyncTaskstream(base_url or service.base_url, token, retry=FAST)


async def collect(items: AsyncIterator[T], into: list[T], count: int | None = None) -> None:
    async for item in items:
        into.append(item)
        if count is not None and len(into) >= count:
            return


async def until(condition: Callable[[], object], seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 (a condition on another task's list)
            await asyncio.sleep(0.01)


def test_the_decoder_follows_the_event_stream_rules() -> None:
    decoder = Decoder()
    stream = (
        b"\xef\xbb\xbfretry: 1500\n\n: keep-alive\r\n"
        b'id: 7\r\nevent: progress\r\ndata: {"a":\r\ndata:1}\r\n\r\n'
        b"id: 8\rdata:  two spaces\r\rid: 9\n\n"
        b"event: x\ndata: cut off"
    )
    messages = [m for byte in range(len(stream)) for m in decoder.feed(stream[byte : byte + 1])]
    assert messages == [
        Message(event="progress", data='{"a":\n1}', id="7"),
        Message(event="message", data=" two spaces", id="8"),
    ]
    assert decoder.retry_ms == 1500 and decoder.last_event_id == "9"
    decoder.restart()
    assert decoder.feed(b"data: fresh\n\n") == [Message(event="message", data="fresh", id="9")]


async def test_subscribe_gives_a_snapshot_then_events_until_the_end(service: Service) -> None:
    async with connect(service) as client:
        await client.create_task("build", id="t")
        items: list[StreamItem] = []
        reader = asyncio.create_task(collect(client.subscribe("t"), items))
        await until(lambda: items)
        await client.append("t", "started")
        await client.append("t", "progress", {"percent": 50})
        await client.append("t", "succeeded", {"result": 1})
        await asyncio.wait_for(reader, 5)
        snapshot, *events = items
        assert isinstance(snapshot, Snapshot) and snapshot.task.status is TaskStatus.PENDING
        assert snapshot.seq == snapshot.task.last_seq
        assert [e.type for e in events if isinstance(e, Event)] == [
            "started",
            "progress",
            "succeeded",
        ]

        history = [e async for e in client.history("t")]
        resumed = [i async for i in client.subscribe("t", last_event_id=history[1].seq)]
        assert resumed == history[2:]
        assert [i async for i in client.subscribe("t", last_event_id=history[-1].seq)] == []
        finished = [i async for i in client.subscribe("t")]
        assert len(finished) == 1 and isinstance(finished[0], Snapshot)


@pytest.mark.parametrize("service", [{"max_streams_per_subject": 1}], indirect=True)
async def test_subscribe_refusals_raise(service: Service) -> None:
    async with connect(service) as client, connect(service, scopes="tasks:write") as writer:
        with pytest.raises(NotFound):
            [i async for i in client.subscribe("missing")]
        with pytest.raises(Forbidden):
            [i async for i in writer.subscribe_all()]
        async with AsyncTaskstream(service.base_url, "expired", retry=FAST) as stranger:
            with pytest.raises(Unauthorized):
                [i async for i in stranger.subscribe_all(last_event_id=0)]
        first = client.subscribe_all(last_event_id=0)
        opened = asyncio.create_task(anext(first))
        await asyncio.sleep(0.3)  # the first stream is open (and waiting for an event)
        with pytest.raises(RateLimited) as refused:
            [i async for i in client.subscribe_all(last_event_id=0)]
        assert refused.value.code == "too_many_streams"
        opened.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await opened
        await first.aclose()


async def test_a_stream_that_ends_at_once_is_reopened(service: Service) -> None:
    """The service answers 200, ``retry:`` and the end while it is not ready."""
    not_ready = {"Content-Type": "text/event-stream"}
    async with running_proxy(service.base_url) as proxy, connect(service, proxy.base_url) as client:
        await client.create_task("build", id="t")
        proxy.answer(
            "GET /v1/tasks/t/stream", 200, times=2, headers=not_ready, body=b"retry: 20\n\n"
        )
        await client.append("t", "succeeded")
        items = [i async for i in client.subscribe("t")]
        assert len(items) == 1 and isinstance(items[0], Snapshot)
        assert items[0].task.status is TaskStatus.SUCCEEDED
        assert proxy.seen("GET /v1/tasks/t/stream") == 3


@pytest.mark.parametrize("service", [QUICK_RETRY], indirect=True)
async def test_subscribe_resumes_after_cuts_with_nothing_lost_or_repeated(service: Service) -> None:
    async with running_proxy(service.base_url) as proxy, connect(service, proxy.base_url) as client:
        await client.create_task("build", id="t")
        await client.append("t", "started")
        items: list[StreamItem] = []
        reader = asyncio.create_task(collect(client.subscribe("t"), items))
        for round in range(5):
            for percent in range(round * 10, round * 10 + 10):
                await service.api.event("t", "progress", {"percent": percent})
            await until(lambda seen=round * 10: len(items) > seen)
            proxy.cut()  # some events may be in flight, some appended while disconnected
        await service.api.event("t", "succeeded")
        await asyncio.wait_for(reader, 10)
        assert proxy.seen("GET /v1/tasks/t/stream") >= 6
    history = await service.api.history("t")
    assert isinstance(items[0], Snapshot)
    assert [e.seq for e in items[1:] if isinstance(e, Event)] == [e["seq"] for e in history[2:]]


@pytest.mark.parametrize("service", [QUICK_RETRY], indirect=True)
async def test_subscribe_all_resumes_and_filters(service: Service) -> None:
    async with running_proxy(service.base_url) as proxy, connect(service, proxy.base_url) as client:
        await client.create_task("build", id="a")
        await client.create_task("deploy", id="b")
        items: list[StreamItem] = []
        reader = asyncio.create_task(collect(client.subscribe_all(kind="build"), items, count=30))
        await until(lambda: proxy.seen("GET /v1/stream") >= 1)
        proxy.cut()  # before any event: the position read first still resumes without a gap
        for number in range(30):
            await service.api.event("b", "log", {"level": "info", "message": str(number)})
            await service.api.event("a", "log", {"level": "info", "message": str(number)})
            if number % 10 == 5:
                proxy.cut()
        await asyncio.wait_for(reader, 10)
    messages = [item.data["message"] for item in items if isinstance(item, Event)]
    assert messages == [str(n) for n in range(30)]
    assert {item.task_id for item in items if isinstance(item, Event)} == {"a"}
