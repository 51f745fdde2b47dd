"""The real alembic migrations: reversible, and producing exactly the declared schema."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from service.store.migrate import downgrade, upgrade
from service.store.schema import metadata

DatabaseFactory = Callable[..., Awaitable[str]]


async def schema_diff(database_url: str) -> list[Any]:
    engine = create_async_engine(database_url.replace("postgresql://", "postgresql+asyncpg://", 1))
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
            )
    finally:
        await engine.dispose()


async def user_tables(database_url: str) -> set[str]:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        return {row["table_name"] for row in rows}
    finally:
        await connection.close()


async def alembic_revision(database_url: str) -> str | None:
    connection = await asyncpg.connect(database_url)
    try:
        return await connection.fetchval("SELECT version_num FROM alembic_version")
    finally:
        await connection.close()


async def test_upgrade_downgrade_upgrade_on_a_fresh_database(
    database_factory: DatabaseFactory,
) -> None:
    url = await database_factory(migrated=False)

    await asyncio.to_thread(upgrade, url)
    assert {"tasks", "events"} <= await user_tables(url)
    head = await alembic_revision(url)
    assert head

    await asyncio.to_thread(downgrade, url, "base")
    assert await user_tables(url) <= {"alembic_version"}

    await asyncio.to_thread(upgrade, url)
    assert {"tasks", "events"} <= await user_tables(url)
    assert await alembic_revision(url) == head
    assert await schema_diff(url) == []


async def test_upgrade_twice_is_a_no_op(database_factory: DatabaseFactory) -> None:
    url = await database_factory(migrated=False)
    await asyncio.to_thread(upgrade, url)
    revision = await alembic_revision(url)
    await asyncio.to_thread(upgrade, url)
    assert await alembic_revision(url) == revision


async def test_migrated_schema_matches_the_declared_metadata(database_url: str) -> None:
    assert await schema_diff(database_url) == []


async def upgrade_in_a_process(url: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from service.store.migrate import upgrade; upgrade(sys.argv[1])",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode(errors="replace")


async def test_replicas_migrating_at_once_both_succeed(database_factory: DatabaseFactory) -> None:
    url = await database_factory(migrated=False)
    await asyncio.gather(*(upgrade_in_a_process(url) for _ in range(3)))
    assert await schema_diff(url) == []
