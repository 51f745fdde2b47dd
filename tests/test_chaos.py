"""Chaos with real processes: the service killed mid-append, a replica killed under its
streams, a replica drained with SIGTERM under load.

Writers (tests/chaos.py) append singles, batches and creates with idempotency keys and retry
through every failure, so at the end each operation they issued must be stored exactly once,
as it was acknowledged, and every task must be the fold of its events. Followers behave as
EventSources do and must end with exactly the history of ``/v1/events``, once, in order.
Each test reports what it measured on a ``RESULT`` line (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import secrets
import signal
from pathlib import Path

import pytest

from tests.chaos import (
    Balancer,
    Follower,
    Writers,
    api,
    assert_log_consistent,
    every_follower_reaches,
    every_follower_streaming,
    followers_of_every_kind,
    reconnects,
    replicas,
    report,
    resumed_within,
    stop_all,
)
from tests.processes import Server, start_server

pytestmark = pytest.mark.chaos

KILLS = 3
WRITERS = 6
OPERATIONS_BETWEEN = 40
"""Operations acknowledged before each kill and after the last one."""
EXIT_SECONDS = 10


async def test_sigkill_mid_append_keeps_every_acknowledged_append_and_no_half_written_task(
    servers: list[Server], tmp_path: Path, database_url: str
) -> None:
    server = await start_server(servers, tmp_path, database_url, secrets.token_urlsafe(32))
    loop = asyncio.get_running_loop()
    in_flight: list[int] = []
    restarts: list[float] = []
    async with Writers(Balancer([server]), WRITERS) as writers:
        for _ in range(KILLS):
            target = writers.acknowledged + OPERATIONS_BETWEEN
            await writers.until(
                lambda target=target: writers.acknowledged >= target and writers.in_flight > 0,
                "appends flowing",
                seconds=60,
            )
            in_flight.append(writers.in_flight)
            server.signal(signal.SIGKILL)
            assert await server.wait(10) == -signal.SIGKILL
            killed = loop.time()
            await server.start()  # the same port; the writers keep retrying meanwhile
            restarts.append(loop.time() - killed)
        target = writers.acknowledged + OPERATIONS_BETWEEN
        await writers.until(lambda: writers.acknowledged >= target, "appends after", seconds=60)
        await writers.finish()

    ledger = writers.ledger
    assert not ledger.unexpected, ledger.unexpected
    events = await assert_log_consistent(api(server), ledger)
    report(
        "sigkill mid-append",
        kills=KILLS,
        writers_in_flight_at_each_kill=in_flight,
        events=len(events),
        tasks=len(ledger.tasks),
        failed_attempts=ledger.failed_attempts,
        committed_but_unanswered_recovered=ledger.recovered,
        restart_to_ready_seconds=[round(seconds, 2) for seconds in restarts],
    )


async def _streaming_on(doomed: Server, writers: Writers, readers: Balancer) -> list[Follower]:
    """Followers of every kind, all streaming from ``doomed`` while the writers write."""
    await writers.until(lambda: len(writers.task_ids) >= 4, "tasks created", seconds=30)
    followers = followers_of_every_kind(readers, doomed, writers.task_ids)
    target = writers.acknowledged + OPERATIONS_BETWEEN
    await writers.until(lambda: writers.acknowledged >= target, "appends flowing", seconds=60)
    await every_follower_streaming(followers)
    return followers


async def _after_the_move(
    writers: Writers, followers: list[Follower], survivor: Server
) -> list[dict[str, object]]:
    """More appends, then the writers stop; the log is checked and every follower must end
    with exactly its part of it."""
    target = writers.acknowledged + OPERATIONS_BETWEEN
    await writers.until(lambda: writers.acknowledged >= target, "appends after", seconds=60)
    await writers.finish()
    assert not writers.ledger.unexpected, writers.ledger.unexpected
    events = await assert_log_consistent(api(survivor), writers.ledger)
    await every_follower_reaches(followers, events)
    for follower in followers:
        follower.assert_got_exactly(events)
    return events


async def test_clients_of_a_killed_replica_resume_on_another_and_lose_nothing(
    servers: list[Server], tmp_path: Path, database_url: str
) -> None:
    doomed, survivor = await replicas(servers, tmp_path, database_url)
    routes, readers = Balancer([doomed, survivor]), Balancer([doomed])
    loop = asyncio.get_running_loop()
    async with Writers(routes, WRITERS) as writers:
        followers = await _streaming_on(doomed, writers, readers)
        try:
            doomed.signal(signal.SIGKILL)
            killed = loop.time()
            assert await doomed.wait(10) == -signal.SIGKILL
            routes.route_to(survivor)  # the load balancer's health check notices
            readers.route_to(survivor)
            events = await _after_the_move(writers, followers, survivor)
        finally:
            await stop_all(followers)

    for follower in followers:
        ended = [c for c in follower.connections if c.base_url == doomed.base_url]
        assert ended and ended[-1].end in ("reset", "eof"), follower
        assert follower.connections[-1].base_url == survivor.base_url, follower
    report(
        "replica killed",
        events=len(events),
        followers=len(followers),
        reconnects=reconnects(followers),
        all_resumed_within_seconds=round(resumed_within(followers, killed), 2),
        failed_attempts=writers.ledger.failed_attempts,
        committed_but_unanswered_recovered=writers.ledger.recovered,
    )


async def test_sigterm_drains_a_replica_under_load_and_its_clients_resume_on_another(
    servers: list[Server], tmp_path: Path, database_url: str
) -> None:
    draining, survivor = await replicas(servers, tmp_path, database_url)
    routes, readers = Balancer([draining, survivor]), Balancer([draining])
    loop = asyncio.get_running_loop()
    async with Writers(routes, WRITERS) as writers:
        followers = await _streaming_on(draining, writers, readers)
        try:
            in_flight = writers.in_flight
            draining.signal(signal.SIGTERM)
            signalled = loop.time()
            routes.route_to(survivor)
            readers.route_to(survivor)
            status = await draining.wait(EXIT_SECONDS)
            exited = loop.time() - signalled
            assert status == 0, f"exit status {status}:\n{draining.output()}"
            events = await _after_the_move(writers, followers, survivor)
        finally:
            await stop_all(followers)

    for follower in followers:
        drained = [c for c in follower.connections if c.base_url == draining.base_url]
        assert all(c.end == "clean" for c in drained), f"not ended by the last chunk: {follower}"
        assert not any(c.cut_mid_frame for c in drained), f"a frame was cut: {follower}"
    report(
        "sigterm drain",
        exit_seconds=round(exited, 2),
        writers_in_flight_at_signal=in_flight,
        events=len(events),
        reconnects=reconnects(followers),
        all_resumed_within_seconds=round(resumed_within(followers, signalled), 2),
        failed_attempts=writers.ledger.failed_attempts,
        committed_but_unanswered_recovered=writers.ledger.recovered,
    )
