"""Liveness and readiness; both open without a token."""

from __future__ import annotations

import asyncio

from litestar import get
from litestar.response.base import ASGIResponse

from service.api.auth import PUBLIC
from service.api.responses import json_response
from service.api.services import Services
from service.domain.problems import NotReady
from service.domain.wire import encode
from service.store.migrate import schema_problem


@get("/healthz", opt={PUBLIC: True}, summary="The process runs", tags=["operations"])
async def healthz() -> ASGIResponse:
    return json_response(encode({"status": "ok"}))


@get(
    "/readyz",
    opt={PUBLIC: True},
    summary="The database answers at a current schema and the listener is connected",
    tags=["operations"],
)
async def readyz(services: Services) -> ASGIResponse:
    """503 ``not_ready`` with the reason while the database is down, the schema is behind or
    the listener is not connected."""
    try:
        async with asyncio.timeout(services.settings.readiness_timeout_seconds):
            async with services.database.connection() as connection:
                problem = await schema_problem(connection)
    except TimeoutError:
        problem = "database did not answer in time"
    except Exception as error:  # any failure to reach the database is the reason, not a 500
        problem = f"database unreachable: {type(error).__name__}: {error}"
    if problem is None and not services.streams.listener.ready:
        problem = services.streams.listener.problem
    if problem is not None:
        raise NotReady(problem)
    return json_response(encode({"status": "ready"}))
