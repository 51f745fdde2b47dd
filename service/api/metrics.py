"""``GET /metrics``: Prometheus text format, open without a token like the health checks."""

from __future__ import annotations

import asyncio
import contextlib

from litestar import get
from litestar.response.base import ASGIResponse

from service import metrics
from service.api.auth import PUBLIC
from service.api.services import Services
from service.store.database import UNAVAILABLE


@get(
    "/metrics",
    opt={PUBLIC: True},
    summary="Prometheus metrics",
    tags=["operations"],
    media_type=metrics.CONTENT_TYPE,
)
async def prometheus_metrics(services: Services) -> ASGIResponse:
    """Appends, latencies, streams, frames, cut-offs, the listener, the pool; the listener's
    lag is measured now, against the newest seq in the table (skipped if the database does not
    answer within the readiness timeout: the scrape still succeeds)."""
    position = services.streams.hub.position
    with contextlib.suppress(TimeoutError, *UNAVAILABLE):
        async with asyncio.timeout(services.settings.readiness_timeout_seconds):
            newest = await services.reader.newest_seq()
        metrics.newest_seq.set(newest)
        metrics.listener_lag.set(max(0, newest - position))
    for state, count in services.database.pool_usage().items():
        metrics.pool_connections.labels(state).set(count)
    return ASGIResponse(body=metrics.render(), media_type=metrics.CONTENT_TYPE)
