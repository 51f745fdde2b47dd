"""Positions are handed out in commit order: a reader polling ``seq > last`` never misses one.

Eight appenders, each with its own connection, write while a deferred constraint trigger makes
every transaction sleep a random time at COMMIT (after its positions were taken) and rolls some
back. A reader polls throughout. It must end with exactly the committed events, in order. The
same run without the advisory lock must lose events, which shows the test can see the failure.
"""

from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest

from service.domain.models import CreatedData
from service.domain.payload import check_event
from service.domain.problems import Problem
from service.store import queries
from service.store.appender import Appended, Appender, AppendEvent, CreateTask
from service.store.database import Database

WRITERS = 8
APPENDS_PER_WRITER = 25
TASKS = 6

CHAOS = """
CREATE FUNCTION chaos_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('chaos.fired', true) = 'yes' THEN RETURN NULL; END IF;
  PERFORM set_config('chaos.fired', 'yes', true);
  PERFORM pg_sleep(random() * 0.02);
  IF random() < 0.1 THEN RAISE EXCEPTION 'injected rollback'; END IF;
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER chaos AFTER INSERT ON events
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION chaos_at_commit();
"""

# The mechanism removed: positions taken without the lock that orders them.
LOCK = "(SELECT pg_advisory_xact_lock($1::bigint)) AS serialised"
WITHOUT_LOCK = queries.WRITE_GROUP.replace(LOCK, "(SELECT $1::bigint) AS serialised")


async def _create_tasks(url: str) -> list[str]:
    database = Database(url, pool_size=1)
    appender = Appender(database, group_max=100, committers=1)
    await appender.start()
    ids = [f"task-{n}" for n in range(TASKS)]
    try:
        outcomes = await appender.submit(
            [
                CreateTask("t", task_id, CreatedData(kind="k"), '{"kind":"k"}', None, None)
                for task_id in ids
            ],
            "create",
        )
        assert all(isinstance(o, Appended) for o in outcomes), outcomes
    finally:
        await appender.close()
        await database.close()
    return ids


async def _writer(url: str, ids: list[str], seed: int) -> list[Appended]:
    database = Database(url, pool_size=1)
    appender = Appender(database, group_max=100, committers=1)
    await appender.start()
    rng = random.Random(seed)
    acknowledged: list[Appended] = []
    try:
        for n in range(APPENDS_PER_WRITER):
            commands = [
                AppendEvent(
                    "t",
                    rng.choice(ids),
                    check_event("progress", {"percent": rng.random() * 100, "n": n}, 65536),
                )
                for _ in range(rng.randint(1, 3))
            ]
            for outcome in await appender.submit(commands, "batch"):
                if isinstance(outcome, Appended):
                    acknowledged.append(outcome)
                else:
                    assert isinstance(outcome, Problem)
    finally:
        await appender.close()
        await database.close()
    return acknowledged


async def _run(url: str) -> tuple[list[int], list[int], list[int]]:
    """(what the reader saw, what the table holds, what the writers were told was appended)."""
    ids = await _create_tasks(url)
    reader = await asyncpg.connect(url)
    try:
        await reader.execute(CHAOS)
        writers = asyncio.gather(*(_writer(url, ids, seed) for seed in range(WRITERS)))
        seen: list[int] = []
        last = 0
        while True:
            done = writers.done()
            rows = await reader.fetch("SELECT seq FROM events WHERE seq > $1 ORDER BY seq", last)
            seen.extend(row["seq"] for row in rows)
            if rows:
                last = rows[-1]["seq"]
            if done:
                break
            await asyncio.sleep(0.001)
        acknowledged = [a.event.seq for batch in writers.result() for a in batch]
        stored = [row["seq"] for row in await reader.fetch("SELECT seq FROM events ORDER BY seq")]
        times = [row["time"] for row in await reader.fetch("SELECT time FROM events ORDER BY seq")]
        assert times == sorted(times), "time decreased while seq increased"
        await _assert_versions_match_tasks(reader)
    finally:
        await reader.close()
    return seen, stored, sorted(acknowledged)


async def _assert_versions_match_tasks(connection: asyncpg.Connection) -> None:
    """Writers raced on the same few tasks: versions stay gapless and task rows current."""
    rows = await connection.fetch(
        """
        SELECT t.id, t.version, t.last_seq, array_agg(e.version ORDER BY e.seq) AS versions,
               max(e.seq) AS newest
        FROM tasks t JOIN events e ON e.tenant = t.tenant AND e.task_id = t.id
        GROUP BY t.id, t.version, t.last_seq
        """
    )
    for row in rows:
        assert row["versions"] == list(range(1, len(row["versions"]) + 1)), row["id"]
        assert (row["version"], row["last_seq"]) == (len(row["versions"]), row["newest"])


@pytest.mark.timeout(120)
async def test_reader_sees_every_committed_event_in_order(database_url: str) -> None:
    seen, stored, acknowledged = await _run(database_url)
    assert seen == stored
    created = list(range(1, TASKS + 1))
    assert sorted(set(stored) - set(created)) == acknowledged
    assert len(acknowledged) > WRITERS * APPENDS_PER_WRITER  # most of them committed


@pytest.mark.timeout(120)
async def test_without_the_lock_a_reader_misses_events(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert LOCK in queries.WRITE_GROUP
    monkeypatch.setattr(queries, "WRITE_GROUP", WITHOUT_LOCK)
    seen, stored, _ = await _run(database_url)
    assert set(seen) < set(stored), "expected the reader to skip late commits"
