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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.chaos import (
    Balancer,
    Connection,
    Follower,
    Writers,
    finish_and_check,
    flowing,
    reconnects,
    replicas,
    report,
    resumed_within,
    stop_all,
    streaming_under_load,
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
            await flowing(writers, OPERATIONS_BETWEEN)
            in_flight.append(writers.in_flight)
            server.signal(signal.SIGKILL)
            assert await server.wait(10) == -signal.SIGKILL
            killed = loop.time()
            await server.start()  # the same port; the writers keep retrying meanwhile
            restarts.append(loop.time() - killed)
        events = await finish_and_check(writers, [], server, OPERATIONS_BETWEEN)
    ledger = writers.ledger
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


@dataclass
class Departure:
    """A replica that left while followers streamed from it and writers wrote through it."""

    gone: Server
    survivor: Server
    writers: Writers
    followers: list[Follower]
    events: list[dict[str, Any]]
    signalled: float
    in_flight: int  # writers' requests in flight when the signal was sent
    exit_status: int
    exit_seconds: float

    def connections_to_the_gone(self, follower: Follower) -> list[Connection]:
        return [c for c in follower.connections if c.base_url == self.gone.base_url]

    def report(self, scenario: str) -> None:
        report(
            scenario,
            exit_seconds=round(self.exit_seconds, 2),
            writers_in_flight_at_signal=self.in_flight,
            events=len(self.events),
            followers=len(self.followers),
            reconnects=reconnects(self.followers),
            all_resumed_within_seconds=round(resumed_within(self.followers, self.signalled), 2),
            failed_attempts=self.writers.ledger.failed_attempts,
            committed_but_unanswered_recovered=self.writers.ledger.recovered,
        )


async def replica_leaves(
    servers: list[Server], tmp_path: Path, database_url: str, signum: int
) -> Departure:
    """Two replicas; writers through both, followers of every kind on the first. Once both
    flow, the first gets ``signum`` and the balancer routes everything to the second; after
    more appends the writers finish, the log is checked, and every follower must end with
    exactly its part of it."""
    gone, survivor = await replicas(servers, tmp_path, database_url)
    routes, readers = Balancer([gone, survivor]), Balancer([gone])
    loop = asyncio.get_running_loop()
    async with Writers(routes, WRITERS) as writers:
        followers = await streaming_under_load(writers, readers, gone, OPERATIONS_BETWEEN)
        try:
            in_flight = writers.in_flight
            gone.signal(signum)
            signalled = loop.time()
            routes.route_to(survivor)  # what the balancer's health check soon does
            readers.route_to(survivor)
            status = await gone.wait(EXIT_SECONDS)
            exit_seconds = loop.time() - signalled
            events = await finish_and_check(writers, followers, survivor, OPERATIONS_BETWEEN)
        finally:
            await stop_all(followers)
    for follower in followers:
        follower.assert_got_exactly(events)
        assert follower.connections[-1].base_url == survivor.base_url, follower
    return Departure(
        gone, survivor, writers, followers, events, signalled, in_flight, status, exit_seconds
    )


async def test_clients_of_a_killed_replica_resume_on_another_and_lose_nothing(
    servers: list[Server], tmp_path: Path, database_url: str
) -> None:
    departure = await replica_leaves(servers, tmp_path, database_url, signal.SIGKILL)
    assert departure.exit_status == -signal.SIGKILL
    for follower in departure.followers:
        ended = departure.connections_to_the_gone(follower)
        assert ended and ended[-1].end in ("reset", "eof"), follower
    departure.report("replica killed")


async def test_sigterm_drains_a_replica_under_load_and_its_clients_resume_on_another(
    servers: list[Server], tmp_path: Path, database_url: str
) -> None:
    departure = await replica_leaves(servers, tmp_path, database_url, signal.SIGTERM)
    assert departure.exit_status == 0, f"exit {departure.exit_status}:\n{departure.gone.output()}"
    for follower in departure.followers:
        drained = departure.connections_to_the_gone(follower)
        assert all(c.end == "clean" for c in drained), f"not ended by the last chunk: {follower}"
        assert not any(c.cut_mid_frame for c in drained), f"a frame was cut: {follower}"
    departure.report("sigterm drain")
