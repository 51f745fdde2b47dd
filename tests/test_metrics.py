"""``/metrics``: what an operator scrapes, over real HTTP, counted as things really happen.

Metrics are process-wide (prometheus-client), and several services may have run in this test
process before, so each test compares a scrape before with a scrape after.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.helpers import Samples, Service, assert_ok, scrape, value
from tests.processes import Server, start_server
from tests.sse import SseClient, wait_ready


async def scrape_until(
    client: httpx.AsyncClient, done: Callable[[Samples], bool], seconds: float = 10
) -> Samples:
    """Scrape, as a monitoring system would, until ``done`` holds."""
    async with asyncio.timeout(seconds):
        while True:
            samples = await scrape(client)
            if done(samples):
                return samples
            await asyncio.sleep(0.05)


async def test_metrics_are_open_and_name_what_the_contract_names(service: Service) -> None:
    response = await service.client.get("/metrics")  # no token
    assert response.status_code == 200
    await service.api.create_task(id="job")
    samples = await scrape(service.client)
    names = {name for name, _ in samples}
    for expected in (
        "taskstream_events_appended_total",
        "taskstream_streams_open",
        "taskstream_append_seconds_bucket",
        "taskstream_frames_delivered_total",
        "taskstream_slow_subscriber_disconnects_total",
        "taskstream_listener_reconnects_total",
        "taskstream_listener_lag_events",
        "taskstream_backfilled_events_total",
        "taskstream_pool_connections",
    ):
        assert expected in names, expected
    assert value(samples, "taskstream_pool_connections", state="size") == 5


async def test_appends_are_counted_by_type_and_timed_by_endpoint(service: Service) -> None:
    before = await scrape(service.client)
    await service.api.create_task(id="job")
    await service.api.event("job", "started")
    for percent in (10, 20, 30):
        await service.api.event("job", "progress", {"percent": percent})
    items = [{"task_id": "job", "type": "log", "data": {"level": "info", "message": "m"}}] * 4
    assert_ok(await service.api.batch(items))
    replay = await service.api.append("job", "log", idempotency_key="k")
    assert replay.status_code == 201
    assert (await service.api.append("job", "log", idempotency_key="k")).status_code == 200
    assert (await service.api.append("job", "started")).status_code == 409
    after = await scrape(service.client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    appended = "taskstream_events_appended_total"
    assert delta(appended, type="created") == 1
    assert delta(appended, type="started") == 1  # the refused one is not counted
    assert delta(appended, type="progress") == 3
    assert delta(appended, type="log") == 5  # the replay is not counted
    timed = "taskstream_append_seconds_count"
    assert delta(timed, endpoint="create") == 1
    assert delta(timed, endpoint="single") == 7
    assert delta(timed, endpoint="batch") == 1
    assert delta("taskstream_append_group_events_count") >= 1


async def test_streams_frames_and_backfills_are_counted(service: Service) -> None:
    await wait_ready(service.client)
    created = await service.api.create_task(id="job")
    before = await scrape(service.client)
    token = service.token()
    first = await SseClient.open(service.base_url, "/v1/stream", token=token)
    second = await SseClient.open(
        service.base_url, "/v1/stream", token=token, last_event_id=created["last_seq"] - 1
    )
    async with first, second:
        assert (await second.next_event()) is not None  # the created event, from the table
        opened = await scrape(service.client)
        assert (
            value(opened, "taskstream_streams_open") - value(before, "taskstream_streams_open") == 2
        )
        event = await service.api.event("job", "log")
        for client in (first, second):
            frames = await client.events_through(event["seq"])
            assert frames[-1].json()["seq"] == event["seq"]
        live = await scrape(service.client)
    delivered = "taskstream_frames_delivered_total"
    assert value(live, delivered) - value(before, delivered) == 2
    backfilled = "taskstream_backfilled_events_total"
    assert value(live, backfilled) - value(before, backfilled) == 1
    open_before = value(before, "taskstream_streams_open")
    closed = await scrape_until(  # the server notices the closed connections
        service.client, lambda s: value(s, "taskstream_streams_open") == open_before
    )
    ended = "taskstream_streams_ended_total"
    assert value(closed, ended, reason="lost") - value(before, ended, reason="lost") == 2


async def test_the_listener_counts_its_reconnects_and_reports_no_lag(service: Service) -> None:
    await wait_ready(service.client)
    before = await scrape(service.client)
    admin = await asyncpg.connect(service.database_url)
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
    finally:
        await admin.close()
    assert killed == 1
    reconnects = "taskstream_listener_reconnects_total"
    await scrape_until(
        service.client,
        lambda s: (
            value(s, reconnects) > value(before, reconnects)
            and value(s, "taskstream_listener_connected") == 1
        ),
    )
    created = await service.api.create_task(id="job")
    await scrape_until(
        service.client,
        lambda s: (
            value(s, "taskstream_events_newest_seq") == created["last_seq"]
            and value(s, "taskstream_listener_lag_events") == 0
        ),
    )


async def test_every_worker_reports_the_sum_of_all_workers(
    servers: list[Server], tmp_path: Path, database_url: str
) -> None:
    """Under ``--workers 2`` a scrape answered by either worker counts both workers' appends."""
    server = await start_server(
        servers, tmp_path, database_url, secrets.token_urlsafe(32), workers=2
    )
    response = await server.client.post(
        "/v1/tasks", json={"id": "job", "kind": "k"}, headers=server.auth()
    )
    assert response.status_code == 201
    appends = 40
    for n in range(appends):
        # a connection of its own each time, so that both workers take some
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            body = {"type": "log", "data": {"level": "info", "message": str(n)}}
            answer = await client.post("/v1/tasks/job/events", json=body, headers=server.auth())
            assert answer.status_code == 201, answer.text
    seen: set[float] = set()
    for _ in range(10):
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            samples: Any = await scrape(client)
            seen.add(value(samples, "taskstream_events_appended_total", type="log"))
    assert seen == {appends}


@pytest.mark.parametrize("service", [{"lease_check_seconds": 0.05}], indirect=True)
async def test_expired_leases_are_counted(service: Service) -> None:
    before = await scrape(service.client)
    await service.api.create_task(id="job", lease_seconds=1)
    await service.api.event("job", "started")
    name = "taskstream_leases_expired_total"
    await scrape_until(service.client, lambda s: value(s, name) > value(before, name))
    await asyncio.sleep(0.3)  # further sweeps find nothing more to fail
    assert value(await scrape(service.client), name) == value(before, name) + 1
