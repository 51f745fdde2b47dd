"""Connections: URL forms for asyncpg and SQLAlchemy, and the pool the service runs on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# Raised when the database cannot be reached (as opposed to refusing a statement): the service
# answers 503 and the client retries, rather than a 500.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    PoolTimeout,
    DBAPIError,
    asyncpg.InterfaceError,
    # The connection broke mid-statement (ConnectionDoesNotExistError) or could not be made.
    asyncpg.PostgresConnectionError,
    # Ended by a fast shutdown or pg_terminate_backend (57P01), a crash (57P02), or a server
    # still starting (57P03).
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    # A pooled connection that received the server's farewell while idle, used before asyncpg
    # noticed it was closed ("cannot switch to state ...").
    asyncpg.InternalClientError,
)


def sqlalchemy_url(url: str) -> str:
    """``postgresql://…`` → ``postgresql+asyncpg://…`` (other forms are passed through)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def asyncpg_dsn(url: str) -> str:
    """The plain libpq form asyncpg understands, whatever driver suffix the URL carries."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.startswith("postgresql+"):
        return "postgresql://" + rest
    return url


def _as_text(value: str) -> str:
    return value


class Database:
    """The process's connection pool.

    SQLAlchemy owns pooling (sizing, pre-ping, disposal); the store talks to the asyncpg
    connection underneath directly, because the append and read paths are the hot path and
    asyncpg's prepared-statement cache and array binds matter there.
    """

    def __init__(self, url: str, *, pool_size: int) -> None:
        self.engine: AsyncEngine = create_async_engine(
            sqlalchemy_url(url),
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=10,
            # JSON stays text end to end: it is spliced into responses, never decoded.
            json_deserializer=_as_text,
        )

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """An asyncpg connection checked out of the pool for the duration of the block.

        No ping on checkout (a round trip on every request); instead a connection that fails
        with a connection-level error is discarded rather than returned to the pool.
        """
        async with self.engine.connect() as connection:
            raw = await connection.get_raw_connection()
            try:
                yield raw.driver_connection
            except UNAVAILABLE:
                await connection.invalidate()
                raise

    def pool_usage(self) -> dict[str, int]:
        """Connections by state: checked out, idle in the pool, and the pool's size."""
        pool: Any = self.engine.pool
        return {"in_use": pool.checkedout(), "idle": pool.checkedin(), "size": pool.size()}

    async def close(self) -> None:
        await self.engine.dispose()
