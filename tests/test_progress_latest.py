"""``?progress=latest`` (contract v1.1): a subscriber that falls behind may lose superseded
``progress`` events of a task, never any other event, instead of being cut off."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service.stream.frames import Frame as StreamFrame
from service.stream.latest import LatestProgress
from tests.helpers import Service, assert_ok, scrape, value
from tests.sse import Frame, SseClient, wait_ready

SMALL_BUFFER = {"stream_buffer_bytes": 16384}
# Room for the logs of a whole burst (which are never dropped) and little more.
ROOM_FOR_LOGS = {"stream_buffer_bytes": 131072}
PADDING = "x" * 3000  # big events: the kernel buffers megabytes for a stalled reader
TASKS = ("a", "b", "c")


def progress(task_id: str, n: int) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "type": "progress",
        "data": {"percent": n % 1000 / 10, "message": f"{n} {PADDING}"},
    }


async def append_burst(service: Service, rounds: int) -> list[dict[str, Any]]:
    """Rounds of 20 progress events per task, with a log of each task in every round."""
    events: list[dict[str, Any]] = []
    for r in range(rounds):
        items: list[dict[str, Any]] = []
        for task_id in TASKS:
            items.extend(progress(task_id, r * 20 + n) for n in range(20))
            log = {"level": "info", "message": f"round {r}"}
            items.append({"task_id": task_id, "type": "log", "data": log})
        results = assert_ok(await service.api.batch(items))["results"]
        assert all(result["status"] == 201 for result in results), results[0]
        events.extend(result["event"] for result in results)
    return events


async def read_through(client: SseClient, seq: int, seconds: float = 30) -> list[Frame]:
    frames: list[Frame] = []
    async with asyncio.timeout(seconds):
        while not frames or int(frames[-1].id or 0) < seq:
            frame = await client.next_event(seconds=seconds)
            assert frame is not None, "the stream ended: the subscriber was cut off"
            frames.append(frame)
    return frames


async def open_stalled(service: Service, params: list[tuple[str, str | int]]) -> SseClient:
    await wait_ready(service.client)
    start = (await service.api.list_tasks())["as_of_seq"]
    client = await SseClient.open(
        service.base_url,
        "/v1/stream",
        token=service.token(),
        params=params,
        last_event_id=start,
        rcvbuf=4096,
    )
    assert client.status == 200
    assert await client.next_frame() is not None  # retry:, then it stops reading
    return client


@pytest.mark.parametrize("service", [ROOM_FOR_LOGS], indirect=True)
async def test_a_subscriber_behind_loses_only_superseded_progress(service: Service) -> None:
    for task_id in TASKS:
        await service.api.create_task(id=task_id)
    before = await scrape(service.client)
    async with await open_stalled(service, [("progress", "latest")]) as client:
        appended = await append_burst(service, rounds=60)  # ~12 MB for a stalled reader
        frames = await read_through(client, appended[-1]["seq"])
        assert not client.ended
    received = [frame.json() for frame in frames]
    seqs = [event["seq"] for event in received]
    assert seqs == sorted(set(seqs)), "out of order or duplicated"
    by_seq = {event["seq"]: event for event in appended}
    assert all(by_seq[event["seq"]] == event for event in received)
    kept = {event["seq"] for event in received}
    missing = [event for event in appended if event["seq"] not in kept]
    assert missing, "nothing was dropped: the reader never fell behind"
    assert {event["type"] for event in missing} == {"progress"}
    dropped = "taskstream_progress_dropped_total"
    after = await scrape(service.client)
    assert value(after, dropped) - value(before, dropped) == len(missing)
    cut = "taskstream_slow_subscriber_disconnects_total"
    assert value(after, cut) == value(before, cut)
    for task_id in TASKS:  # each task's last progress always arrives
        last = [e for e in appended if e["task_id"] == task_id and e["type"] == "progress"][-1]
        assert last["seq"] in kept


@pytest.mark.parametrize("service", [ROOM_FOR_LOGS], indirect=True)
async def test_without_the_option_the_same_subscriber_is_cut_off(service: Service) -> None:
    for task_id in TASKS:
        await service.api.create_task(id=task_id)
    before = await scrape(service.client)
    async with await open_stalled(service, []) as client:
        appended = await append_burst(service, rounds=60)
        with pytest.raises(AssertionError, match="cut off"):
            await read_through(client, appended[-1]["seq"])
    cut = "taskstream_slow_subscriber_disconnects_total"
    assert value(await scrape(service.client), cut) == value(before, cut) + 1


@pytest.mark.parametrize("service", [SMALL_BUFFER], indirect=True)
async def test_events_that_cannot_be_dropped_still_cut_off_a_stalled_subscriber(
    service: Service,
) -> None:
    await service.api.create_task(id="a")
    async with await open_stalled(service, [("progress", "latest")]) as client:
        logs = [
            {"task_id": "a", "type": "log", "data": {"level": "info", "message": PADDING}}
            for _ in range(1000)
        ]
        for _ in range(5):
            assert_ok(await service.api.batch(logs))
        async with asyncio.timeout(30):
            while await client.read_raw(65536) > 0:
                pass
        assert client.ended


async def test_the_option_takes_all_or_latest_only(service: Service) -> None:
    await wait_ready(service.client)
    for option in ("all", "latest"):
        async with await SseClient.open(
            service.base_url, "/v1/stream", token=service.token(), params=[("progress", option)]
        ) as client:
            assert client.status == 200
    async with await SseClient.open(
        service.base_url, "/v1/stream", token=service.token(), params=[("progress", "some")]
    ) as client:
        response_body = await client.json()
        assert client.status in (400, 422), response_body
        assert response_body["code"] == "validation_error"


# ------------------------------------------------------------------ the rule, case by case


def frame(seq: int, task_id: str, type: str, data: str) -> StreamFrame:
    body = (
        f'id: {seq}\nevent: {type}\ndata: {{"seq":{seq},"task_id":"{task_id}","tenant":"t",'
        f'"version":1,"type":"{type}","data":{data},"time":"2026-11-28T00:00:00.000000Z"}}\n\n'
    )
    return StreamFrame(seq, "t", task_id, "k", type, body.encode())


def kept(*frames: StreamFrame) -> list[int]:
    waiting = LatestProgress(limit=1 << 20)
    for item in frames:
        assert waiting.add([item])
    return [item.seq for item in waiting.take()]


def test_a_later_progress_with_the_same_members_supersedes() -> None:
    assert kept(
        frame(1, "a", "progress", '{"percent":1}'),
        frame(2, "a", "log", '{"level":"info","message":"m"}'),
        frame(3, "a", "progress", '{"percent":2}'),
    ) == [2, 3]


def test_a_later_progress_missing_a_member_does_not() -> None:
    assert kept(
        frame(1, "a", "progress", '{"percent":1,"stage":"parse"}'),
        frame(2, "a", "progress", '{"percent":2}'),
        frame(3, "a", "progress", '{"percent":3}'),
    ) == [1, 3]


def test_progress_of_other_tasks_and_other_types_stay() -> None:
    assert kept(
        frame(1, "a", "progress", '{"percent":1}'),
        frame(2, "b", "progress", '{"percent":1}'),
        frame(3, "a", "succeeded", "{}"),
        frame(4, "b", "progress", '{"percent":2,"message":"m"}'),
    ) == [1, 3, 4]


def test_what_waits_is_bounded() -> None:
    waiting = LatestProgress(limit=1000)
    logs = [frame(n, "a", "log", '{"level":"info","message":"m"}') for n in range(1, 20)]
    assert not waiting.add(logs)
