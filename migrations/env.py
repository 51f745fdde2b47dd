"""Alembic environment: async engine, one advisory lock so replicas can migrate at once."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from service.store.database import sqlalchemy_url
from service.store.schema import metadata

# Any constant works; it only has to differ from the keys the service locks elsewhere.
MIGRATION_LOCK_KEY = 0x7461736B_6D696772  # "taskmigr"


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection, target_metadata=metadata, transaction_per_migration=False
    )
    with context.begin_transaction():
        # Taken inside the migration transaction, before alembic reads alembic_version, so a
        # second replica waits here and then finds the schema already at head.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()


async def run_async() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None, "set sqlalchemy.url on the alembic Config"
    # A short connect timeout: `serve` retries, and a shutdown must not wait a minute for a
    # migration thread stuck connecting to a database that does not answer.
    engine = create_async_engine(sqlalchemy_url(url), connect_args={"timeout": 5})
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported")
asyncio.run(run_async())
