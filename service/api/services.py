"""What handlers need, built once in the app factory and handed over by dependency injection."""

from __future__ import annotations

from dataclasses import dataclass

from service.api.ratelimit import AppendLimiter
from service.settings import Settings
from service.store.appender import Appender
from service.store.database import Database
from service.store.reader import Reader
from service.stream.streams import Streams


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    database: Database
    appender: Appender
    reader: Reader
    streams: Streams
    limiter: AppendLimiter | None
    """Appends per subject, when TASKSTREAM_APPEND_RATE_PER_SECOND is set."""
