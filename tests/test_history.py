"""Reading history: one task's events, the tenant's events with filters, keyset pagination."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from tests.helpers import Service, assert_event, assert_field_errors, assert_ok, assert_problem


async def seed(service: Service) -> list[dict[str, Any]]:
    """Two kinds, three tasks, every event type; returns the tenant's whole history."""
    api = service.api
    await api.create_task(id="a", kind="alpha")
    await api.create_task(id="b", kind="beta")
    await api.create_task(id="c", kind="alpha")
    await api.event("a", "started")
    await api.event("b", "progress", {"percent": 10})
    await api.event("a", "log")
    await api.event("c", "log")
    await api.event("b", "log")
    await api.event("a", "progress", {"done": 1, "total": 2})
    await api.event("c", "cancelled")
    await api.event("a", "succeeded")
    await api.event("b", "failed")
    events = await api.all_events()
    assert len(events) == 12
    return events


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [event["seq"] for event in events]


# ----------------------------------------------------------------------------- one task


async def test_task_history_is_ascending_and_complete(service: Service) -> None:
    everything = await seed(service)
    history = await service.api.history("a")
    assert history == [event for event in everything if event["task_id"] == "a"]
    assert [event["version"] for event in history] == [1, 2, 3, 4, 5]
    assert [e["type"] for e in history] == ["created", "started", "log", "progress", "succeeded"]
    for event in history:
        assert_event(event)


async def test_task_history_pages_with_after(service: Service) -> None:
    everything = await seed(service)
    history = [event for event in everything if event["task_id"] == "a"]
    page = await service.api.history_page("a", limit=2)
    assert page["items"] == history[:2]
    assert page["next_after"] is not None
    page2 = await service.api.history_page("a", limit=2, after=page["next_after"])
    assert page2["items"] == history[2:4]
    assert await service.api.history("a", limit=2) == history
    assert await service.api.history("a", after=history[2]["seq"]) == history[3:]
    assert await service.api.history("a", after=0) == history


async def test_task_history_next_after_null_only_when_nothing_remains(service: Service) -> None:
    api = service.api
    await api.create_task(id="a")
    for _ in range(4):
        await api.event("a", "log")
    page = await api.history_page("a", limit=4)
    assert len(page["items"]) == 4
    assert page["next_after"] is not None
    last = await api.history_page("a", limit=4, after=page["next_after"])
    assert len(last["items"]) == 1
    if last["next_after"] is not None:
        assert (await api.history_page("a", after=last["next_after"]))["items"] == []
    end = await api.history_page("a", after=last["items"][-1]["seq"])
    assert end == {"items": [], "next_after": None}


async def test_task_history_default_page_is_100(service: Service) -> None:
    api = service.api
    await api.create_task(id="a")
    items = [{"task_id": "a", "type": "log", "data": {"level": "info", "message": str(i)}}
             for i in range(150)]  # fmt: skip
    assert_ok(await api.batch(items))
    page = await api.history_page("a")
    assert len(page["items"]) == 100
    assert page["next_after"] is not None
    assert len((await api.history_page("a", limit=10000))["items"]) == 151


async def test_task_history_of_unknown_task_is_404(service: Service) -> None:
    assert_problem(await service.api.get("/v1/tasks/none/events"), 404, "task_not_found")


QUERY_ERRORS = [
    ({"after": "-1"}, "after"),
    ({"after": "x"}, "after"),
    ({"after": "1.5"}, "after"),
    ({"limit": "0"}, "limit"),
    ({"limit": "-5"}, "limit"),
    ({"limit": "10001"}, "limit"),
    ({"limit": "ten"}, "limit"),
]


@pytest.mark.parametrize(("params", "field"), QUERY_ERRORS)
async def test_task_history_bad_query_is_422(
    service: Service, params: dict[str, str], field: str
) -> None:
    await service.api.create_task(id="a")
    response = await service.api.get("/v1/tasks/a/events", params=params)
    assert_field_errors(assert_problem(response, 422, "validation_error"), field)


# ----------------------------------------------------------------------------- /v1/events


async def test_events_lists_the_whole_tenant_ascending(service: Service) -> None:
    everything = await seed(service)
    assert seqs(everything) == sorted(set(seqs(everything)))
    assert {event["task_id"] for event in everything} == {"a", "b", "c"}
    assert all(event["tenant"] == "t1" for event in everything)
    times = [event["time"] for event in everything]
    assert times == sorted(times), "time never decreases as seq increases"


@pytest.mark.parametrize(
    "params",
    [
        {"task_id": "a"},
        {"task_id": "b"},
        {"task_id": "nope"},
        {"type": "log"},
        {"type": "created"},
        {"kind": "alpha"},
        {"kind": "beta", "type": "log"},
        {"task_id": "a", "type": "progress"},
        {"kind": "alpha", "task_id": "b"},
    ],
)
async def test_events_filters(service: Service, params: dict[str, str]) -> None:
    everything = await seed(service)
    kinds = {"a": "alpha", "b": "beta", "c": "alpha"}

    def matches(event: dict[str, Any]) -> bool:
        return (
            params.get("task_id", event["task_id"]) == event["task_id"]
            and params.get("type", event["type"]) == event["type"]
            and params.get("kind", kinds[event["task_id"]]) == kinds[event["task_id"]]
        )

    expected = [event for event in everything if matches(event)]
    assert await service.api.all_events(**params) == expected
    assert await service.api.all_events(**params, limit=1) == expected


async def test_events_after(service: Service) -> None:
    everything = await seed(service)
    assert await service.api.all_events(after=0) == everything
    middle = everything[5]["seq"]
    assert await service.api.all_events(after=middle) == everything[6:]
    assert await service.api.all_events(after=everything[-1]["seq"]) == []
    assert await service.api.all_events(after=2**62) == []


async def test_events_since_is_inclusive_and_until_exclusive(service: Service) -> None:
    everything = await seed(service)
    pivot = everything[6]["time"]
    since = await service.api.all_events(since=pivot)
    assert since == [event for event in everything if event["time"] >= pivot]
    assert everything[6] in since
    until = await service.api.all_events(until=pivot)
    assert until == [event for event in everything if event["time"] < pivot]
    assert everything[6] not in until
    window = await service.api.all_events(since=everything[2]["time"], until=pivot)
    assert window == [e for e in everything if everything[2]["time"] <= e["time"] < pivot]


async def test_events_since_accepts_rfc3339_offsets(service: Service) -> None:
    everything = await seed(service)
    pivot = datetime.fromisoformat(everything[4]["time"].replace("Z", "+00:00"))
    in_utc = pivot.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    in_plus_two = pivot.astimezone(timezone_plus(2)).isoformat()
    expected = [event for event in everything if event["time"] >= in_utc]
    assert await service.api.all_events(since=in_utc) == expected
    assert await service.api.all_events(since=in_plus_two) == expected


def timezone_plus(hours: int) -> timezone:
    return timezone(timedelta(hours=hours))


async def test_events_since_in_the_future_is_empty(service: Service) -> None:
    await seed(service)
    future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    page = await service.api.events_page(since=future)
    assert page == {"items": [], "next_after": None}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        *QUERY_ERRORS,
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01T00:00:00Z"}, "until"),
        ({"since": "12345"}, "since"),
        ({"since": "2026-11-28T01:02:03"}, "since"),
        ({"until": "28/11/2026"}, "until"),
    ],
)
async def test_events_bad_query_is_422(
    service: Service, params: dict[str, str], field: str
) -> None:
    response = await service.api.get("/v1/events", params=params)
    assert_field_errors(assert_problem(response, 422, "validation_error"), field)


async def test_events_limit_bounds(service: Service) -> None:
    everything = await seed(service)
    page = await service.api.events_page(limit=1)
    assert page["items"] == everything[:1]
    assert page["next_after"] is not None
    assert (await service.api.events_page(limit=10000))["items"] == everything


async def test_events_default_page_is_100(service: Service) -> None:
    api = service.api
    await api.create_task(id="a")
    items = [{"task_id": "a", "type": "log", "data": {"level": "info", "message": str(i)}}
             for i in range(120)]  # fmt: skip
    assert_ok(await api.batch(items))
    page = await api.events_page()
    assert len(page["items"]) == 100
    rest = await api.events_page(after=page["next_after"])
    assert len(rest["items"]) == 21
    assert seqs(page["items"] + rest["items"]) == sorted(set(seqs(page["items"] + rest["items"])))


# ----------------------------------------------------------------------------- concurrency


def resume_after(page: dict[str, Any], after: int) -> int:
    """Where a polling reader continues: next_after, or past the last item once at the end."""
    if page["next_after"] is not None:
        return int(page["next_after"])
    return int(page["items"][-1]["seq"]) if page["items"] else after


async def test_pages_read_during_concurrent_appends_never_skip_or_repeat(service: Service) -> None:
    api = service.api
    task_ids = [f"w{index}" for index in range(6)]
    for task_id in task_ids:
        await api.create_task(id=task_id)
    stop = asyncio.Event()

    async def writer(task_id: str) -> None:
        count = 0
        while not stop.is_set():
            if count % 4 == 3:
                items = [
                    {"task_id": task_id, "type": "log", "data": {"level": "info", "message": "b"}}
                    for _ in range(5)
                ]
                assert_ok(await api.batch(items))
            else:
                await api.event(task_id, "log", {"level": "info", "message": str(count)})
            count += 1

    writers = [asyncio.create_task(writer(task_id)) for task_id in task_ids]
    read: list[dict[str, Any]] = []
    per_task: list[dict[str, Any]] = []
    after = 0
    task_after = 0
    try:
        for _ in range(60):
            page = await api.events_page(after=after, limit=7)
            read.extend(page["items"])
            after = resume_after(page, after)
            task_page = await api.history_page("w0", after=task_after, limit=3)
            per_task.extend(task_page["items"])
            task_after = resume_after(task_page, task_after)
            await asyncio.sleep(0.002)
    finally:
        stop.set()
        await asyncio.gather(*writers)
    read.extend(await api.all_events(after=after, limit=7))
    per_task.extend(await api.history("w0", after=task_after, limit=3))

    everything = await api.all_events()
    assert len(everything) > 100, "the writers did not get going"
    assert seqs(read) == sorted(set(seqs(read))), "a page repeated or went backwards"
    assert seqs(read) == seqs(everything), "a concurrent page skipped an event"
    assert read == everything
    times = [event["time"] for event in everything]
    assert times == sorted(times), "time never decreases as seq increases"
    w0 = [event for event in everything if event["task_id"] == "w0"]
    assert per_task == w0
    assert [event["version"] for event in w0] == list(range(1, len(w0) + 1))


async def test_as_of_seq_covers_the_listing_exactly_under_concurrent_appends(
    service: Service,
) -> None:
    api = service.api
    task_ids = [f"w{index}" for index in range(5)]
    for task_id in task_ids:
        await api.create_task(id=task_id)
    stop = asyncio.Event()

    async def writer(task_id: str) -> None:
        while not stop.is_set():
            await api.event(task_id, "progress", {"percent": 1})

    writers = [asyncio.create_task(writer(task_id)) for task_id in task_ids]
    listings = []
    try:
        for _ in range(15):
            listings.append(await api.list_tasks())
            await asyncio.sleep(0.005)
    finally:
        stop.set()
        await asyncio.gather(*writers)
    everything = await api.all_events()
    for listing in listings:
        as_of = listing["as_of_seq"]
        for task in listing["items"]:
            shown = [e for e in everything if e["task_id"] == task["id"] and e["seq"] <= as_of]
            assert task["version"] == len(shown), (as_of, task)
            assert task["last_seq"] == shown[-1]["seq"], (as_of, task)


async def test_as_of_seq_is_at_least_every_listed_last_seq(service: Service) -> None:
    api = service.api
    await seed(service)
    page = await api.list_tasks()
    assert all(task["last_seq"] <= page["as_of_seq"] for task in page["items"])
    await api.create_task(id="later")
    later = await api.task("later")
    assert later["last_seq"] > page["as_of_seq"]
    assert (await api.list_tasks())["as_of_seq"] >= later["last_seq"]


async def test_events_after_as_of_seq_are_exactly_the_later_changes(service: Service) -> None:
    api = service.api
    for index in range(4):
        await api.create_task(id=f"p{index}")
    first = await api.list_tasks(limit=2)
    await api.event("p0", "started")
    assert first["as_of_seq"] < (await api.task("p0"))["last_seq"]
    everything = await api.all_events()
    after = [event for event in everything if event["seq"] > first["as_of_seq"]]
    assert [event["type"] for event in after] == ["started"]
