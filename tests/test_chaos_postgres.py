"""Postgres restarted under the service, with streams open and writers writing.

On a cluster of the test's own (tests/throwaway.py), never the shared server. The listener
must notice, ``/readyz`` must say so (503) and recover (200), open streams must carry on or
resume, and writers retrying through the outage must end with every operation stored once.
``fast`` is a clean shutdown (every connection told to go), ``immediate`` a crash (backends
killed, recovery from the WAL at the next start).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from tests.chaos import (
    Balancer,
    Writers,
    finish_and_check,
    first_event_after,
    readiness_becomes,
    reconnects,
    report,
    stop_all,
    streaming_under_load,
)
from tests.helpers import Api, scrape, value
from tests.processes import Server, start_server
from tests.throwaway import Cluster, throwaway_cluster, unavailable_reason

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.skipif(
        unavailable_reason() is not None, reason=f"no throwaway Postgres: {unavailable_reason()}"
    ),
]

WRITERS = 4
OPERATIONS_BETWEEN = 30
RECONNECTS = "taskstream_listener_reconnects_total"
APPEND_ERRORS = "taskstream_append_errors_total"
REFUSED_DURING_OUTAGE = 20
"""Attempts the writers must see refused before Postgres comes back: the outage is real."""


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with throwaway_cluster() as cluster:
        yield cluster


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgres_restart_with_streams_open_loses_nothing(
    servers: list[Server], tmp_path: Path, cluster: Cluster, mode: str
) -> None:
    url = await cluster.create_database()
    server = await start_server(servers, tmp_path, url, secrets.token_urlsafe(32))
    route = Balancer([server])
    loop = asyncio.get_running_loop()
    async with Writers(route, WRITERS) as writers:
        followers = await streaming_under_load(writers, route, server, OPERATIONS_BETWEEN)
        try:
            before = await scrape(server.client)
            await cluster.stop(mode)
            stopped = loop.time()
            noticed = await readiness_becomes(server, 503)
            acknowledged_before = writers.acknowledged
            refused = writers.ledger.failed_attempts + REFUSED_DURING_OUTAGE
            await writers.until(
                lambda: writers.ledger.failed_attempts >= refused, "appends refused", seconds=30
            )
            acknowledged_during_outage = writers.acknowledged - acknowledged_before
            await cluster.start()
            started = loop.time()
            recovered = await readiness_becomes(server, 200)
            events = await finish_and_check(writers, followers, server, OPERATIONS_BETWEEN)
            after = await scrape(server.client)
        finally:
            await stop_all(followers)
    for follower in followers:
        follower.assert_got_exactly(events)
    # What an operator saw: the listener reconnected, appends failed as unavailable (503),
    # none as refused (500), and the listener is connected again.
    listener_reconnects = value(after, RECONNECTS) - value(before, RECONNECTS)
    assert listener_reconnects >= 1, listener_reconnects
    assert value(after, APPEND_ERRORS, reason="database_refused") == 0, after
    assert value(after, "taskstream_listener_connected") == 1
    report(
        f"postgres restart ({mode})",
        readyz_503_after_seconds=round(noticed, 2),
        outage_seconds=round(started - stopped, 2),
        readyz_200_after_start_seconds=round(recovered, 2),
        first_event_after_start_seconds=round(first_event_after(followers[0], started), 2),
        acknowledged_during_outage=acknowledged_during_outage,
        events=len(events),
        stream_reconnects=reconnects(followers),
        listener_reconnects=int(listener_reconnects),
        appends_refused_as_unavailable=int(
            value(after, APPEND_ERRORS, reason="database_unavailable")
        ),
        failed_attempts=writers.ledger.failed_attempts,
        committed_but_unanswered_recovered=writers.ledger.recovered,
    )


# An append that is inside its write statement when Postgres goes: a trigger holds the insert
# of a `log` event whose message is "hold" (pg_sleep is interrupted by either shutdown).
HOLD = """
CREATE FUNCTION chaos_hold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.type = 'log' AND NEW.data->>'message' = 'hold' THEN PERFORM pg_sleep(60); END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER chaos_hold BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION chaos_hold();
"""
RELEASE = "DROP TRIGGER chaos_hold ON events"
HELD = {"level": "info", "message": "hold"}


async def _execute(url: str, statement: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _until_held(url: str) -> None:
    """Until an append sleeps in the trigger, inside its write statement (holding the lock).

    Polled: a NOTIFY from the trigger would only be delivered at a commit that never comes."""
    connection = await asyncpg.connect(url)
    try:
        async with asyncio.timeout(30):
            while not await connection.fetchval(  # noqa: ASYNC110
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
            ):
                await asyncio.sleep(0.02)
    finally:
        await connection.close()


def _append_held(api: Api, batch: bool) -> Callable[[], Awaitable[list[int]]]:
    """The held append (with a neighbour after it, as a batch); what it was answered, per
    event."""

    async def single() -> list[int]:
        return [(await api.append("job", "log", HELD, idempotency_key="held")).status_code]

    async def in_batch() -> list[int]:
        items = [
            {"task_id": "job", "type": "log", "data": HELD, "idempotency_key": "held"},
            {"task_id": "job", "type": "progress", "data": {"percent": 5}, "idempotency_key": "n"},
        ]
        response = await api.batch(items)
        assert response.status_code == 200, response.text
        return [result["status"] for result in response.json()["results"]]

    return in_batch if batch else single


@pytest.mark.parametrize("mode", ["fast", "immediate"])
@pytest.mark.parametrize("batch", [False, True], ids=["single", "batch"])
async def test_an_append_cut_off_by_a_postgres_restart_is_answered_503_and_stored_once(
    servers: list[Server], tmp_path: Path, cluster: Cluster, mode: str, batch: bool
) -> None:
    """The answer for "the database went away" is 503, at whatever moment it went: the client
    retries with its key. (A 500 says the database refused the event, and a worker that
    believes it stops retrying.) The retry then stores the event once."""
    url = await cluster.create_database()
    await _execute(url, HOLD)
    server = await start_server(servers, tmp_path, url, secrets.token_urlsafe(32))
    api = Api(server.client, server.token())
    await api.create_task(id="job")
    append = _append_held(api, batch)

    in_flight = asyncio.create_task(append())
    await _until_held(url)
    await cluster.stop(mode)
    statuses = await in_flight
    await cluster.start()
    await readiness_becomes(server, 200)
    await _execute(url, RELEASE)
    retried = await append()

    history = await api.history("job")
    assert [e["data"] for e in history if e["type"] == "log"] == [HELD], history
    assert all(status == 503 for status in statuses), (
        f"an append cut off by a {mode} shutdown was answered {statuses}:\n{server.output()}"
    )
    assert all(status in (200, 201) for status in retried), retried
